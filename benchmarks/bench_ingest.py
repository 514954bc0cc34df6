"""Ingest throughput and peak memory: canonical JSONL -> SQLite (and PostgreSQL with --pg).

Usage::

    .venv/bin/python benchmarks/bench_ingest.py --events 1000000 [--pg postgresql://postgres@127.0.0.1:5432/test]
    .venv/bin/python benchmarks/bench_ingest.py --file sim/events.jsonl

Each ingest runs in its own process (``stormwatch ingest --json``) so its peak RSS is its own.
Peak RSS is measured at two sizes (a quarter and the full count) to show it is flat in the count.
The baseline in the same run is the raw speed of reading and JSON-parsing the same file
(orjson, no validation, no database): the ratio says what validation + storage cost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

WORDS = (
    "the model script server python network explain write code list config user data file how what please "
    "translate summary report email port scan function error debug api request security windows linux "
    "registry process password login company research paper"
).split()


def make_events(path: Path, n: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    accounts = [f"acct_{i:06x}" for i in range(max(n // 50, 10))]
    t0 = 1_790_000_000
    with open(path, "wb") as fh:
        for i in range(n):
            words = rng.choices(WORDS, k=max(5, int(rng.lognormvariate(4.0, 0.6))))
            ev = {
                "event_id": f"evt_{i:012x}",
                "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0 + i * 2)),
                "account_id": rng.choice(accounts),
                "api_key_id": f"key_{rng.randrange(10**6):06d}",
                "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
                "user_agent": "OpenAI/Python 3.57.0",
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": " ".join(words)}],
                "response": " ".join(rng.choices(WORDS, k=20)),
                "conversation_id": f"conv_{i // 4:010x}",
                "refused": False,
            }
            fh.write(orjson.dumps(ev) + b"\n")


def baseline_parse(path: Path) -> float:
    start = time.perf_counter()
    n = 0
    with open(path, "rb") as fh:
        for line in fh:
            orjson.loads(line)
            n += 1
    return n / (time.perf_counter() - start)


def run_ingest(path: Path, db: str) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "stormwatch", "--db", db, "ingest", str(path), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if out.returncode not in (0, 10):
        raise SystemExit(f"ingest failed ({out.returncode}): {out.stderr[-2000:]}")
    summary = json.loads(out.stdout)
    rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {
        "events": summary["read"],
        "stored": summary["stored"],
        "wall_s": round(wall, 2),
        "events_per_s": round(summary["read"] / wall),
        "ingest_s": summary["seconds"],
        "peak_rss_mib": round(max(rss_kib, before) / 1024, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--file", type=Path)
    ap.add_argument("--pg", help="also ingest into this PostgreSQL URL (a fresh schema is used)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ingest.json"))
    args = ap.parse_args()
    results: dict[str, object] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        full = args.file or Path(tmp) / "events.jsonl"
        if not args.file:
            make_events(full, args.events)
        with open(full, "rb") as fh:
            n = sum(1 for _ in fh)
        quarter = Path(tmp) / "quarter.jsonl"
        with open(full, "rb") as src, open(quarter, "wb") as dst:
            for i, line in enumerate(src):
                if i >= n // 4:
                    break
                dst.write(line)
        results["file_mib"] = round(full.stat().st_size / 2**20, 1)
        results["baseline_parse_per_s"] = round(baseline_parse(full))
        # Separate processes; RUSAGE_CHILDREN's max is monotone, so run the small one first.
        results["sqlite_quarter"] = run_ingest(quarter, f"sqlite:///{tmp}/q.db")
        results["sqlite"] = run_ingest(full, f"sqlite:///{tmp}/full.db")
        results["sqlite_rerun"] = run_ingest(full, f"sqlite:///{tmp}/full.db")
        if args.pg:
            schema = f"bench_{os.getpid()}"
            sep = "&" if "?" in args.pg else "?"
            results["postgres"] = run_ingest(full, f"{args.pg}{sep}schema={schema}")
            import psycopg

            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    sq = results["sqlite"]
    assert isinstance(sq, dict)
    results["ratio_sqlite_vs_parse_only"] = round(sq["events_per_s"] / results["baseline_parse_per_s"], 3)  # type: ignore[operator]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
