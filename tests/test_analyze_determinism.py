"""Analysis gives the same result, evidence included, whatever the interpreter's string-hash seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _run(args: list[str], env: dict[str, str]) -> str:
    res = subprocess.run([sys.executable, "-m", "stormwatch", *args], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode in (0, 10), res.stderr[-2000:]
    return res.stdout


@pytest.mark.slow
def test_judgements_and_cited_events_do_not_depend_on_the_hash_seed(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    base = {**os.environ, "PYTHONHASHSEED": "0"}
    _run(["simulate", "--out", str(sim), "--seed", "5", "--accounts", "200", "--days", "7", "-q"], base)
    exports = []
    for seed in ("1", "987654"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "STORMWATCH_DB": f"sqlite:///{tmp_path / f'{seed}.db'}"}
        _run(["ingest", str(sim / "events.jsonl"), "--accounts", str(sim / "accounts.jsonl"), "-q"], env)
        _run(["intel", "import", str(sim / "intel.stix.json")], env)
        _run(["analyze", "-q"], env)
        out = tmp_path / f"{seed}.jsonl"
        _run(["accounts", "export", "-o", str(out)], env)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for r in rows:
            r.pop("analyzed_at", None)
        exports.append(sorted(rows, key=lambda r: r["account_id"]))
    assert exports[0] and exports[0] == exports[1]
    cited = [
        e for r in exports[0] for e in r["evidence"] if e.get("signal") in ("rephrase_after_refusal", "escalation")
    ]
    assert cited and all(e["event_ids"] for e in cited)
