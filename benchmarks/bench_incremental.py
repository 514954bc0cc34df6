"""Benchmark: incremental ``stormwatch analyze`` after new events vs a full run, in the same run.

Steps (setup is cached in --workdir; pass --fresh to rebuild it):

1. ``stormwatch simulate --accounts N --events E``; the events (sorted by time) are split into all
   but the last ``--new`` events and the last ``--new`` events.
2. The first part is ingested with the accounts and the intel into SQLite (cached) and a copy is
   analysed in full (scoring included): the "from scratch" numbers and the base database.
3. The last ``--new`` events are ingested into a copy of the base database; the copy is copied again.
4. ``analyze --json`` (incremental) on one copy and ``analyze --json --full`` on the other, each in a
   child process under ``/usr/bin/time``: wall time, CPU seconds (user + system, scoring workers
   included), peak RSS and analyze's own stage split.
5. Both results are compared (levels, risks, clusters as partitions, actors, review ranks).

The machine may be shared: every child runs under ``nice``; the load average is reported next to the
numbers, and CPU seconds alongside wall time.

    python benchmarks/bench_incremental.py [--events 1000000] [--accounts 20000] [--new 10000]
        [--workdir /tmp/bench_incremental] [--out benchmarks/results/incremental.json]
        [--vs-account-model VERSION [--pairs 3]]

``--vs-account-model``: after the measurement above, ``analyze --full --no-score`` on copies of the
database with the new events, alternately with the default account model and with VERSION (e.g. the
previous one): median wall / CPU seconds and judge-stage seconds of each, and their ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def child(cmd: list[str], env: dict[str, str]) -> tuple[dict[str, float], str]:
    """Run ``cmd`` (niced) under ``/usr/bin/time``: wall, CPU seconds (user + system, its worker
    processes included) and peak RSS of that command alone. (``wait4`` of a child forked from this
    process would report this process's own peak as the child's.)"""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        stats = Path(tmp) / "time.txt"
        timer = ["/usr/bin/time", "-f", "%e %U %S %M", "-o", str(stats)] if Path("/usr/bin/time").exists() else []
        t = time.perf_counter()
        res = subprocess.run([*timer, "nice", "-n", "10", *cmd], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t
        if res.returncode not in (0, 10):
            sys.exit(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
        measured: dict[str, float] = {"wall_s": round(wall, 2)}
        if timer:
            e, u, sy, m = stats.read_text().split()[-4:]
            measured = {"wall_s": round(float(e), 2), "cpu_s": round(float(u) + float(sy), 2),
                        "peak_rss_mib": round(int(m) / 1024)}  # fmt: skip
    return measured, res.stdout


def copy_db(src: Path, dst: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        s, d = Path(f"{src}{suffix}"), Path(f"{dst}{suffix}")
        if d.exists():
            d.unlink()
        if s.exists():
            shutil.copy(s, d)


def result_of(db: Path) -> dict[str, Any]:
    c = sqlite3.connect(db)
    try:
        j = {r[0]: r[1:] for r in c.execute(
            "SELECT account_id, level, risk, actor, confidence, review_rank, within_budget, cluster_id"
            " FROM account_judgements")}  # fmt: skip
        members: dict[str, list[str]] = {}
        for cid, a in c.execute("SELECT cluster_id, account_id FROM cluster_members"):
            members.setdefault(cid, []).append(a)
        actors = dict(c.execute("SELECT cluster_id, actor FROM clusters").fetchall())
    finally:
        c.close()
    clusters = {(tuple(sorted(m)), actors.get(cid)) for cid, m in members.items()}
    return {"judgements": j, "clusters": clusters}


def same(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    ja, jb = a["judgements"], b["judgements"]
    diff = [k for k in set(ja) | set(jb) if k not in ja or k not in jb
            or abs(ja[k][1] - jb[k][1]) > 1e-9 or ja[k][:1] + ja[k][2:] != jb[k][:1] + jb[k][2:]]  # fmt: skip
    return {"accounts_differing": len(diff), "clusters_equal": a["clusters"] == b["clusters"]}


def vs_account_model(
    exe: list[str], env: dict[str, str], w: Path, db: Path, baseline: str, pairs: int
) -> dict[str, Any]:
    """``analyze --full --no-score`` on copies of ``db`` with the default account model and with
    ``baseline``, in turns (default, baseline, default, ...): medians and the ratio default / baseline."""
    import statistics

    runs: dict[str, list[dict[str, Any]]] = {"default": [], "baseline": []}
    for _ in range(pairs):
        for which, extra in (("default", {}), ("baseline", {"STORMWATCH_ACCOUNT_MODEL": baseline})):
            copy = w / f"vs-{which}.db"
            copy_db(db, copy)
            m, out = child([*exe, "analyze", "--json", "--full", "--no-score"],
                           dict(env, STORMWATCH_DB=f"sqlite:///{copy}", **extra))  # fmt: skip
            s = json.loads(out)
            runs[which].append({"wall_s": m["wall_s"], "cpu_s": m["cpu_s"], "peak_rss_mib": m["peak_rss_mib"],
                                "judge_s": s["seconds"]["link_attribute_judge"], "review": s["review"],
                                "enforce": s["enforce"], "raised_by_model": s.get("raised_by_model", 0)})  # fmt: skip
    med = {w_: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for w_, rs in runs.items()}
    return {
        "baseline_model": baseline,
        "runs": runs,
        "median": med,
        "ratio_wall": round(med["default"]["wall_s"] / max(med["baseline"]["wall_s"], 1e-9), 3),
        "ratio_cpu": round(med["default"]["cpu_s"] / max(med["baseline"]["cpu_s"], 1e-9), 3),
        "ratio_judge": round(med["default"]["judge_s"] / max(med["baseline"]["judge_s"], 1e-9), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--accounts", type=int, default=20_000)
    ap.add_argument("--new", type=int, default=10_000, help="events arriving after the first analysis")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_incremental"))
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--rescratch", action="store_true", help="measure the from-scratch analysis again")
    ap.add_argument(
        "--vs-account-model",
        default=None,
        help="also time `analyze --full --no-score` with this account model against the default, in turns",
    )
    ap.add_argument("--pairs", type=int, default=3, help="turns of --vs-account-model")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "stormwatch"]
    w = args.workdir
    sim, base = w / "sim", w / "base.db"
    if args.fresh and w.exists():
        shutil.rmtree(w)
    w.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    report: dict[str, Any] = {"events_target": args.events, "accounts": args.accounts, "new_events": args.new}
    if not (sim / "truth.json").exists():
        child([*exe, "simulate", "--out", str(sim), "--seed", str(args.seed), "--accounts", str(args.accounts),
               "--events", str(args.events), "-q"], env)  # fmt: skip
    ingested = w / "ingested.db"
    if not ingested.exists():
        lines = (sim / "events.jsonl").read_bytes().splitlines(keepends=True)
        (w / "old.jsonl").write_bytes(b"".join(lines[: len(lines) - args.new]))
        (w / "new.jsonl").write_bytes(b"".join(lines[len(lines) - args.new :]))
        del lines
        benv = dict(env, STORMWATCH_DB=f"sqlite:///{w / 'building.db'}")
        child([*exe, "ingest", str(w / "old.jsonl"), "--accounts", str(sim / "accounts.jsonl"), "-q"], benv)
        child([*exe, "intel", "import", str(sim / "intel.stix.json")], benv)
        copy_db(w / "building.db", ingested)
    if not base.exists() or args.rescratch:
        copy_db(ingested, w / "building.db")
        report["load_before_scratch"] = os.getloadavg()
        m, out = child([*exe, "analyze", "--json", "--full"], dict(env, STORMWATCH_DB=f"sqlite:///{w / 'building.db'}"))
        (w / "scratch.json").write_text(json.dumps({"measure": m, "summary": json.loads(out),
                                                    "load": report.pop("load_before_scratch")}))  # fmt: skip
        copy_db(w / "building.db", base)
    scratch = json.loads((w / "scratch.json").read_text())
    summary = scratch["summary"]
    report["from_scratch"] = {**scratch["measure"], "events": summary["events_scanned"],
                              "stages_s": summary["seconds"], "load_before": scratch.get("load")}  # fmt: skip
    inc, full = w / "inc.db", w / "full.db"
    copy_db(base, inc)
    child([*exe, "ingest", str(w / "new.jsonl"), "-q"], dict(env, STORMWATCH_DB=f"sqlite:///{inc}"))
    copy_db(inc, full)
    report["load_before"] = os.getloadavg()
    m_inc, out_inc = child([*exe, "analyze", "--json"], dict(env, STORMWATCH_DB=f"sqlite:///{inc}"))
    m_full, out_full = child([*exe, "analyze", "--json", "--full"], dict(env, STORMWATCH_DB=f"sqlite:///{full}"))
    report["load_after"] = os.getloadavg()
    s_inc, s_full = json.loads(out_inc), json.loads(out_full)
    keys = ("mode", "events_scanned", "accounts_recomputed", "accounts_judged", "components_judged", "seconds")
    report["incremental"] = {**m_inc, **{k: s_inc[k] for k in keys}}
    report["full"] = {**m_full, **{k: s_full[k] for k in keys}}
    report["ratio_wall"] = round(m_inc["wall_s"] / max(m_full["wall_s"], 1e-9), 3)
    report["ratio_cpu"] = round(m_inc["cpu_s"] / max(m_full["cpu_s"], 1e-9), 3)
    report["same_result"] = same(result_of(inc), result_of(full))
    if args.vs_account_model:
        report["vs_account_model"] = vs_account_model(exe, env, w, full, args.vs_account_model, args.pairs)
    report["nproc"] = os.cpu_count()
    report["targets"] = ("analyze (scoring included) <= 60 s at 1M events / 20k accounts on 2 cores, peak RSS <= 2 GiB;"
                         " incremental rerun after 10k new events <= 10 s")  # fmt: skip
    text = json.dumps(report, indent=2, default=list)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
