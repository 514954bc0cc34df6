"""Benchmark: ``stormwatch analyze`` over ~1M simulated events (scoring included).

Steps (setup is cached in --workdir; pass --fresh to rebuild it):

1. ``stormwatch simulate --accounts N --target-events E``
2. ``stormwatch ingest`` + ``stormwatch intel import`` into a fresh SQLite database
3. ``stormwatch analyze --json`` in a child process: wall time, the stage split reported by
   analyze itself (scoring / features / intel / link+attribute+judge) and the child's peak RSS.
4. A second, incremental ``analyze`` (nothing new: measures the global part alone).

    python benchmarks/bench_analyze.py [--events 1000000] [--accounts 20000] [--workdir /tmp/bench_analyze]
        [--detectors first_tier|cascade]

``--detectors cascade`` scores with the cascade (``STORMWATCH_DETECTORS``; a database of its own in the
work folder, the simulated events shared), so the two can be compared on the same events.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - t, res.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_analyze"))
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--detectors", default="first_tier", choices=("first_tier", "cascade"))
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "stormwatch"]
    sim = args.workdir / "sim"
    db = args.workdir / ("bench.db" if args.detectors == "first_tier" else f"bench-{args.detectors}.db")
    env = dict(os.environ, STORMWATCH_DB=f"sqlite:///{db}", STORMWATCH_DETECTORS=args.detectors)
    if args.fresh and args.workdir.exists():
        shutil.rmtree(args.workdir)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if not (sim / "truth.json").exists():
        s, _ = run(
            [
                *exe,
                "simulate",
                "--out",
                str(sim),
                "--seed",
                str(args.seed),
                "--accounts",
                str(args.accounts),
                "--events",
                str(args.events),
            ],
            env,
        )
        print(f"simulate: {s:.0f} s")
    if not db.exists():
        s, _ = run([*exe, "ingest", str(sim / "events.jsonl"), "--accounts", str(sim / "accounts.jsonl"), "-q"], env)
        print(f"ingest: {s:.0f} s")
        run([*exe, "intel", "import", str(sim / "intel.stix.json")], env)
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    wall, out = run([*exe, "analyze", "--json", "--full"], env)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    summary = json.loads(out)
    wall2, out2 = run([*exe, "analyze", "--json"], env)
    _, ev = run([*exe, "analyze", "eval", "--truth", str(sim / "truth.json"), "--json"], env)
    quality = json.loads(ev)
    report = {
        "detectors": args.detectors,
        "model_version": summary.get("model_version"),
        "events": summary["events_scanned"],
        "accounts": summary["accounts"],
        "analyze_wall_s": round(wall, 1),
        "stages_s": summary["seconds"],
        "analyze_without_scoring_s": round(summary["seconds"]["total"] - summary["seconds"]["scoring"], 1),
        "peak_rss_mib": round(max(peak_kib, before) / 1024),
        "incremental_rerun_wall_s": round(wall2, 1),
        "incremental_rerun_stages_s": json.loads(out2)["seconds"],
        "quality": {
            k: quality[k]
            for k in (
                "precision",
                "recall",
                "recall_named_in_intel",
                "recall_links_or_behaviour_only",
                "security_pros_flagged",
                "crowd_ip_accounts_flagged",
                "attribution_accuracy_flagged",
                "cluster_purity_weighted",
            )
        },
        "scoring": summary.get("scoring"),
        "load_average": os.getloadavg(),
        "targets": "analyze (scoring included) <= 60 s on 2 cores (first tier), <= 120 s (cascade); peak RSS <= 2 GiB",
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
