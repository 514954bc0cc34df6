"""Benchmark: time a 1M-event ``stormwatch simulate`` run and report events/s and peak RSS.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_simulate.py --accounts 20000 --events 1000000 \
        --out /tmp/sw-bench --result /tmp/bench_simulate.json
"""

from __future__ import annotations

import argparse
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import orjson

from stormwatch.simulate import simulate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="time a simulator run")
    ap.add_argument("--accounts", type=int, default=20000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("/tmp/stormwatch-bench-sim"))
    ap.add_argument("--result", type=Path, default=Path("benchmarks/results/simulate.json"))
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args(argv)
    if args.out.exists():
        shutil.rmtree(args.out)
    t0 = time.perf_counter()
    summary = simulate(
        args.out,
        seed=args.seed,
        accounts=args.accounts,
        days=args.days,
        target_events=args.events,
        progress=False,
    )
    wall = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    size = sum(Path(p).stat().st_size for p in summary.files.values())
    result = {
        "benchmark": "simulate",
        "accounts": args.accounts,
        "days": args.days,
        "target_events": args.events,
        "events": summary.events,
        "wall_s": round(wall, 2),
        "events_per_s": round(summary.events / wall),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "output_bytes": size,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "platform": platform.platform(),
    }
    args.result.parent.mkdir(parents=True, exist_ok=True)
    args.result.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(
        f"events {summary.events}  wall {wall:.1f} s  {summary.events / wall:,.0f} events/s  "
        f"peak RSS {peak_kib / 1024:.0f} MiB  output {size / 1e6:.0f} MB"
    )
    if not args.keep:
        shutil.rmtree(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
