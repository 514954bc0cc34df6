"""Rebuild the simulator's vendored prompt pools from the shared labelled datasets.

Usage::

    python -m stormwatch.simulate.build_pools --shared /work/shared --out src/stormwatch/data/sim

Only rows with ``split_hint == "train"`` are kept, trimmed to the fields the simulator uses
(``id``, ``pool``, ``text`` and, where it applies, ``ttp`` / ``lang``). Every source is written to
its own ``pools/<source>.jsonl.xz`` file so that sources under different licenses (the CC BY-SA
ones in particular) stay separate, and the matching license texts are copied to ``licenses/``.
The output is byte-for-byte deterministic: rows keep the source order, the xz stream carries no
timestamp and the JSON is written with sorted keys.
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from stormwatch.datasets import EVERYDAY_SOURCES

MAX_TEXT = 1800  # longer rows are dropped (they dominate the size and are rare in chat logs)

# MITRE ATT&CK tactic (CyberSecEval `category`) -> our LLM TTP id (taxonomy.md)
MITRE_TO_TTP: dict[str, str] = {
    "Recon": "LLMT-01",
    "Execution": "LLMT-02",
    "Collection": "LLMT-02",
    "Exfil": "LLMT-02",
    "C2": "LLMT-03",
    "Evasion": "LLMT-07",
    "Privilege Escalation": "LLMT-08",
    "Discovery": "LLMT-10",
    "Lateral Movement": "LLMT-10",
    "Persistence": "LLMT-12",
}
INTERPRETER_TO_TTP: dict[str, str] = {
    "Privilege Escalation": "LLMT-08",
    "Container Escape": "LLMT-10",
    "Post Exploitation": "LLMT-12",
    "Social Engineering": "LLMT-04",
    "Reflected Attack": "LLMT-05",
}

# source -> (input file relative to datasets/prompts, license file relative to datasets/licenses, cap)
SOURCES: dict[str, tuple[str, str, int]] = {
    "cyberseceval_mitre": ("cyberseceval_mitre.jsonl", "cyberseceval.LICENSE.txt", 0),
    "cyberseceval_interpreter": ("cyberseceval_interpreter.jsonl", "cyberseceval.LICENSE.txt", 0),
    "cyberseceval_mitre_frr": ("cyberseceval_mitre_frr.jsonl", "cyberseceval.LICENSE.txt", 0),
    "cyberseceval_crwd_malware_analysis": (
        "cyberseceval_crwd_malware_analysis.jsonl",
        "cyberseceval.LICENSE.txt",
        0,
    ),
    "cyberseceval_crwd_threat_intel": (
        "cyberseceval_crwd_threat_intel.jsonl",
        "cyberseceval.LICENSE.txt",
        0,
    ),
    "cyberseceval_instruct": ("cyberseceval_instruct.jsonl", "cyberseceval.LICENSE.txt", 900),
    "jbb_behaviors": ("jbb_behaviors.jsonl", "jailbreakbench-artifacts.LICENSE.txt", 0),
    "xstest": ("xstest.jsonl", "xstest.LICENSE.txt", 0),
    "self_instruct": ("self_instruct.jsonl", "self-instruct.LICENSE.txt", 0),
}
EVERYDAY = EVERYDAY_SOURCES
CC_BY_SA = {
    "dolly15k_partial": "CC BY-SA 3.0",
    "nq_open": "CC BY-SA 3.0",
    "xsid": "CC BY-SA 4.0",
}
LICENSES = {
    "cyberseceval": "MIT",
    "jbb_behaviors": "MIT",
    "xstest": "CC BY 4.0",
    "self_instruct": "Apache-2.0",
    "arena_hard_v01": "Apache-2.0",
    "banking77": "CC BY 4.0",
    "clinc150": "CC BY 3.0",
    "gpteacher": "MIT",
    "gsm8k": "MIT",
    "humaneval": "MIT",
    "hwu64": "CC BY 4.0",
    "mgsm": "CC BY 4.0",
    "mmlu": "MIT",
    "mt_bench": "Apache-2.0",
    "oasst1_prompts": "Apache-2.0",
    "snips": "CC0",
    "vicuna_bench": "Apache-2.0",
    **CC_BY_SA,
}
ASSISTANT_SOURCES = {"banking77", "clinc150", "hwu64", "snips", "xsid"}
GENERAL_SOURCES = {
    "dolly15k_partial",
    "nq_open",
    "oasst1_prompts",
    "vicuna_bench",
    "mt_bench",
    "arena_hard_v01",
}


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                row: dict[str, Any] = orjson.loads(line)
                yield row


def classify(source: str, row: dict[str, Any]) -> dict[str, Any] | None:
    """Map one shared-dataset row to a pool row, or None to drop it."""
    if row.get("split_hint") != "train":
        return None
    text = str(row.get("text") or "").strip()
    if not text or len(text) > MAX_TEXT:
        return None
    meta: dict[str, Any] = row.get("meta") or {}
    cat = str(row.get("category") or "")
    lang = str(meta.get("lang") or "en")
    out: dict[str, Any] = {"id": row["id"], "text": text}
    if source == "cyberseceval_mitre":
        out["pool"], out["ttp"] = "mal_cyber", MITRE_TO_TTP.get(cat, "LLMT-02")
    elif source == "cyberseceval_interpreter":
        out["pool"], out["ttp"] = "mal_cyber", INTERPRETER_TO_TTP.get(cat, "LLMT-12")
    elif source == "jbb_behaviors":
        if cat != "Malware/Hacking":
            if row.get("label") != "benign":
                return None
            out["pool"] = "general"
        elif row.get("label") == "malicious":
            out["pool"], out["ttp"] = "mal_cyber", "LLMT-03"
        else:
            out["pool"] = "sec_frr"
    elif source == "cyberseceval_mitre_frr":
        out["pool"] = "sec_frr"
    elif source == "cyberseceval_crwd_malware_analysis":
        out["pool"] = "sec_malware"
    elif source == "cyberseceval_crwd_threat_intel":
        out["pool"] = "sec_ti"
    elif source == "cyberseceval_instruct":
        out["pool"] = "code"
    elif source == "xstest":
        if row.get("label") != "benign":
            return None
        out["pool"] = "xstest"
    elif source == "self_instruct":
        out["pool"] = "general"
    elif source == "gpteacher":
        out["pool"] = "code" if cat == "codegen" else "general"
    elif source == "humaneval":
        out["pool"] = "code"
    elif source in ("gsm8k", "mmlu"):
        out["pool"] = "math"
    elif lang != "en":
        out["pool"], out["lang"] = "foreign", lang.split("-")[0]
    elif source in ASSISTANT_SOURCES:
        out["pool"] = "assistant"
    elif source in GENERAL_SOURCES:
        if meta.get("needs_context"):
            return None
        out["pool"] = "general"
    else:
        return None
    return out


def _write_xz(path: Path, rows: list[dict[str, Any]]) -> None:
    data = b"".join(orjson.dumps(r, option=orjson.OPT_SORT_KEYS) + b"\n" for r in rows)
    path.write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))


def _cap(rows: list[dict[str, Any]], cap: int) -> list[dict[str, Any]]:
    if not cap or len(rows) <= cap:
        return rows
    # deterministic, order-preserving subsample by hash of the id
    ranked = sorted(rows, key=lambda r: hashlib.sha256(str(r["id"]).encode()).hexdigest())[:cap]
    keep = {str(r["id"]) for r in ranked}
    return [r for r in rows if str(r["id"]) in keep]


def build(shared: Path, out: Path) -> dict[str, int]:
    """Build all pools; returns row counts per source."""
    prompts = shared / "datasets" / "prompts"
    licenses = shared / "datasets" / "licenses"
    pools_dir = out / "pools"
    lic_dir = out / "licenses"
    pools_dir.mkdir(parents=True, exist_ok=True)
    (lic_dir / "everyday").mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    jobs: list[tuple[str, Path, Path, Path, int]] = []
    for source, (fname, lic, cap) in SOURCES.items():
        jobs.append((source, prompts / fname, licenses / lic, lic_dir / lic, cap))
    for source in EVERYDAY:
        lic_name = f"{source}.LICENSE.txt"
        jobs.append(
            (
                source,
                prompts / "everyday" / f"{source}.jsonl",
                licenses / "everyday" / lic_name,
                lic_dir / "everyday" / lic_name,
                0,
            )
        )
    for source, src, lic_src, lic_dst, cap in jobs:
        rows = [r for r in (classify(source, row) for row in _rows(src)) if r is not None]
        rows = _cap(rows, cap)
        _write_xz(pools_dir / f"{source}.jsonl.xz", rows)
        shutil.copyfile(lic_src, lic_dst)
        counts[source] = len(rows)
    manifest = {
        "note": "Built by python -m stormwatch.simulate.build_pools from the shared datasets (train split).",
        "max_text_chars": MAX_TEXT,
        "sources": {
            s: {
                "rows": n,
                "file": f"pools/{s}.jsonl.xz",
                "license": LICENSES.get(s, LICENSES["cyberseceval"]),
            }
            for s, n in counts.items()
        },
    }
    (out / "manifest.json").write_bytes(
        orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
    )
    return counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--shared", type=Path, default=Path("/work/shared"))
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "sim")
    args = ap.parse_args(argv)
    counts = build(args.shared, args.out)
    for source, n in counts.items():
        print(f"{source:40s} {n:6d}")
    print(f"total {sum(counts.values())} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
