"""Loading the vendored prompt pools (``stormwatch/data/sim/pools/*.jsonl.xz``).

A pool entry is a ``(source_id, text)`` pair. Pools are grouped by purpose:
``general``, ``assistant``, ``math``, ``code``, ``xstest`` (benign everyday use),
``sec_frr`` / ``sec_malware`` / ``sec_ti`` (legitimate security work: hard negatives),
``mal_cyber`` (malicious cyber requests, further split by LLM TTP id) and ``foreign``
(non-English everyday text, split by language).
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import orjson

Entry = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Pools:
    """Prompt pools in a fixed, deterministic order."""

    by_pool: dict[str, list[Entry]]
    mal_by_ttp: dict[str, list[Entry]]
    foreign_by_lang: dict[str, list[Entry]]
    sources: dict[str, int] = field(default_factory=dict)
    #: share of an operation's requests drawn from ``mal_by_ttp`` (the rest are filled templates)
    dataset_share: float = 0.35

    def get(self, name: str) -> list[Entry]:
        return self.by_pool.get(name, [])

    def with_prompts(self, malicious: list[tuple[str, str, str]], security: list[Entry]) -> Pools:
        """These pools with the operations' requests and the security workers' questions replaced:
        ``malicious`` as ``(id, text, LLMT id)``, every operational request drawn from it (no
        templates); ``security`` shared out over the three hard-negative pools. For evaluating
        account judgement on prompts no detector was trained on (``benchmarks/bench_account_prompts.py``)."""
        if not malicious or not security:
            raise ValueError("with_prompts: both the malicious and the security prompts are needed")
        mal: dict[str, list[Entry]] = {}
        for sid, text, ttp in malicious:
            mal.setdefault(ttp, []).append((sid, text))
        by_pool = dict(self.by_pool)
        by_pool["mal_cyber"] = [(sid, text) for sid, text, _ in malicious]
        for k, name in enumerate(("sec_frr", "sec_malware", "sec_ti")):
            by_pool[name] = security[k::3] or security
        return Pools(by_pool, mal, self.foreign_by_lang, dict(self.sources), dataset_share=1.0)


def data_dir() -> Path:
    """Directory of the vendored simulator data."""
    return Path(str(resources.files("stormwatch").joinpath("data", "sim")))


@lru_cache(maxsize=2)
def load_pools(directory: str | None = None) -> Pools:
    """Read every ``pools/*.jsonl.xz`` file (sorted by name, so the order is stable)."""
    base = Path(directory) if directory else data_dir()
    files = sorted((base / "pools").glob("*.jsonl.xz"))
    if not files:
        raise FileNotFoundError(
            f"no simulator pools under {base / 'pools'}; run python -m stormwatch.simulate.build_pools"
        )
    by_pool: dict[str, list[Entry]] = {}
    mal: dict[str, list[Entry]] = {}
    foreign: dict[str, list[Entry]] = {}
    sources: dict[str, int] = {}
    for path in files:
        n = 0
        for line in lzma.decompress(path.read_bytes()).splitlines():
            if not line:
                continue
            row = orjson.loads(line)
            entry: Entry = (str(row["id"]), str(row["text"]))
            pool = str(row["pool"])
            by_pool.setdefault(pool, []).append(entry)
            if pool == "mal_cyber":
                mal.setdefault(str(row["ttp"]), []).append(entry)
            elif pool == "foreign":
                foreign.setdefault(str(row["lang"]), []).append(entry)
            n += 1
        sources[path.name.split(".")[0]] = n
    return Pools(by_pool=by_pool, mal_by_ttp=mal, foreign_by_lang=foreign, sources=sources)
