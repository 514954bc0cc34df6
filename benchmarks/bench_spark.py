"""Benchmark: the ``local`` engine vs the ``spark`` engine (Spark local[2]) on the same simulated
platform, at growing event counts, and linking alone (Large-Star/Small-Star on Spark vs the
in-memory linker). One run gives every number of docs/scale.md.

Per size: simulate (about 50 events per account over 30 days), ingest into SQLite, import intel,
then time ``stormwatch analyze`` (local) and ``stormwatch export --parquet`` +
``stormwatch analyze --engine spark --master local[2] --events DIR`` on a copy of the same store.
Each command runs in its own process tree; wall time, CPU-seconds of the whole tree (driver, JVM,
Python workers: sampled from /proc plus the reaped children's rusage) and the peak RSS of the
driver process (and of the tree) are recorded. ``--check`` compares the two stores' judgements.

    SPARK_LOCAL_IP=127.0.0.1 python benchmarks/bench_spark.py --events 100000 300000 1000000 \\
        --link-accounts 100000 --out benchmarks/results/spark.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(root: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def _sample(pid: int) -> tuple[float, int]:
    """(CPU seconds, RSS bytes) of one process."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    cpu = (int(parts[11]) + int(parts[12])) / TICK
    with open(f"/proc/{pid}/statm") as f:
        rss = int(f.read().split()[1]) * PAGE
    return cpu, rss


def measure(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; wall, CPU of the whole tree, peak RSS of the driver (the process itself) and tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cpu_seen: dict[int, float] = {}
    peak = {"driver": 0, "tree": 0}
    done = threading.Event()

    def sampler() -> None:
        while not done.is_set():
            total = 0
            for p in _tree(proc.pid):
                try:
                    cpu, rss = _sample(p)
                except (OSError, IndexError, ValueError):
                    continue
                cpu_seen[p] = max(cpu_seen.get(p, 0.0), cpu)
                total += rss
                if p == proc.pid:
                    peak["driver"] = max(peak["driver"], rss)
            peak["tree"] = max(peak["tree"], total)
            done.wait(0.25)

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    out, err = proc.communicate()
    done.set()
    th.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode not in (0, 10):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-3000:]}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(max(reaped, sum(cpu_seen.values())), 2),
        "driver_peak_rss_mb": round(peak["driver"] / 2**20),
        "tree_peak_rss_mb": round(peak["tree"] / 2**20),
        "stdout": out,
    }


def _sw(*args: str) -> list[str]:
    return [sys.executable, "-m", "stormwatch", *args]


def _json_tail(text: str) -> dict[str, Any]:
    line = [x for x in text.splitlines() if x.startswith("{")][-1]
    result: dict[str, Any] = json.loads(line)
    return result


def check(url_a: str, url_b: str) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "src"))
    from stormwatch.store import open_store

    res = []
    for url in (url_a, url_b):
        s = open_store(url)
        try:
            res.append(s.analysis.result())
        finally:
            s.close()
    a = {j.account_id: j for j in res[0].judgements}
    b = {j.account_id: j for j in res[1].judgements}
    parts = [sorted(tuple(sorted(c.members)) for c in r.clusters) for r in res]
    return {
        "accounts": len(a),
        "same_accounts": a.keys() == b.keys(),
        "same_levels": all(a[k].level == b[k].level for k in a if k in b),
        "same_actors": all(a[k].actor == b[k].actor for k in a if k in b),
        "max_risk_diff": max((abs(a[k].risk - b[k].risk) for k in a if k in b), default=0.0),
        "same_clusters": parts[0] == parts[1],
        "judgements_written_once": len(res[1].judgements) == len({j.account_id for j in res[1].judgements}),
    }


def run_size(
    n: int, work: Path, env: dict[str, str], do_check: bool, reuse_store: bool = False, spark_conf: tuple[str, ...] = ()
) -> dict[str, Any]:
    sim = work / f"sim{n}"
    accounts = _accounts(n)
    db_local, db_spark = work / f"local{n}.db", work / f"spark{n}.db"
    if reuse_store and db_spark.exists():
        # the ingested, not yet analysed copy an earlier run left when its spark step failed
        # (a failed spark job writes no judgement): measure the engines again without re-ingesting
        with sqlite3.connect(f"file:{db_spark}?mode=ro", uri=True) as con:
            judged = con.execute("SELECT count(*) FROM account_judgements").fetchone()[0]
        if judged:
            raise SystemExit(f"--reuse-store: {db_spark} holds {judged} judgements (analysed), not a fresh store")
        db_local.unlink(missing_ok=True)
        shutil.copy(db_spark, db_local)
        sim_s = ingest_s = None
    else:
        sim_s, ingest_s = _simulate_and_ingest(n, accounts, sim, db_local, db_spark, env)
    env_l = {**env, "STORMWATCH_DB": f"sqlite:///{db_local}"}
    env_s = {**env, "STORMWATCH_DB": f"sqlite:///{db_spark}"}
    local = measure(_sw("analyze", "--json", "-q"), env_l)
    summary = _json_tail(local.pop("stdout"))
    events = work / f"events{n}"
    shutil.rmtree(events, ignore_errors=True)
    export = measure(_sw("export", "--parquet", str(events), "--json"), env_s)
    exp = _json_tail(export.pop("stdout"))
    conf = [x for c in spark_conf for x in ("--spark-conf", c)]
    spark = measure(
        _sw("analyze", "--engine", "spark", "--master", "local[2]", "--events", str(events), "--json", *conf), env_s
    )
    ssum = _json_tail(spark.pop("stdout"))
    row: dict[str, Any] = {
        "events": exp["events"],
        "accounts": summary["accounts"],
        "simulate_s": None if sim_s is None else round(sim_s, 1),
        "ingest_s": None if ingest_s is None else round(ingest_s, 1),
        "local": {**local, "stages_s": summary.get("seconds")},
        "export": {**export, "parquet_bytes": exp["bytes"], "days": len(exp["days"])},
        "spark": {**spark, "stages_s": ssum.get("seconds"), "link": (ssum.get("scoring") or {}).get("link")},
        "spark_conf": list(spark_conf),
        "parquet_bytes_per_event": round(exp["bytes"] / max(1, exp["events"]), 1),
        "jsonl_bytes": (sim / "events.jsonl").stat().st_size if (sim / "events.jsonl").exists() else None,
    }
    if do_check:
        row["check"] = check(env_l["STORMWATCH_DB"], env_s["STORMWATCH_DB"])
    print(json.dumps({k: v for k, v in row.items()}, default=str), flush=True)
    return row


def _accounts(n: int) -> int:
    """The platform size of ``n`` events: about 50 events per account (a size is keyed by it)."""
    return max(200, n // 50)


def _simulate_and_ingest(
    n: int, accounts: int, sim: Path, db_local: Path, db_spark: Path, env: dict[str, str]
) -> tuple[float, float]:
    t = time.perf_counter()
    if not (sim / "events.jsonl").exists():
        subprocess.run(
            _sw("simulate", "--out", str(sim), "--seed", "1", "--accounts", str(accounts), "--days", "30",
                "--events", str(n), "-q"), env=env, check=True)  # fmt: skip
    sim_s = time.perf_counter() - t
    for db in (db_local, db_spark):
        db.unlink(missing_ok=True)
    env_l = {**env, "STORMWATCH_DB": f"sqlite:///{db_local}"}
    t = time.perf_counter()
    subprocess.run(_sw("ingest", str(sim / "events.jsonl"), "--accounts", str(sim / "accounts.jsonl"), "-q"),
                   env=env_l, check=False)  # fmt: skip
    subprocess.run(_sw("intel", "import", str(sim / "intel.stix.json")), env=env_l, check=True, capture_output=True)
    ingest_s = time.perf_counter() - t
    shutil.copy(db_local, db_spark)
    return sim_s, ingest_s


def link_alone(
    accounts: int,
    env: dict[str, str],
    engines: tuple[str, ...] = ("local", "spark"),
    conf: tuple[str, ...] = (),
    partitions: int = 4,
    lean: bool = False,
) -> dict[str, Any]:
    """The in-memory linker vs spark_link on the same synthetic graph (benchmarks/bench_linking.py)."""
    settings = dict(kv.split("=", 1) for kv in conf)
    code = f"""
import json, sys, time, resource
sys.path.insert(0, {str(ROOT / "benchmarks")!r})
from bench_linking import build
inp, _ = build({accounts}, lean={lean!r})
which = sys.argv[1]
t = time.perf_counter(); c = time.process_time()
if which == "local":
    from stormwatch.analyze.linking import link_accounts
    res = link_accounts(inp)
    rounds = None
else:
    from stormwatch.analyze.engines.spark import spark_session
    from stormwatch.analyze.engines.spark_link import spark_link
    spark = spark_session("local[2]", partitions={partitions}, conf={settings!r})
    t = time.perf_counter()
    st = {{}}
    res = spark_link(spark, inp, st)
    rounds = st["star_rounds"]
import numpy as np
sizes = res.cluster_size[res.cluster_size >= 2]
print(json.dumps({{"edges": int(len(inp.acc)), "values": int(len(inp.value_base)),
    "link_wall_s": round(time.perf_counter() - t, 2), "clusters": int(len(sizes)),
    "largest": int(sizes.max()) if len(sizes) else 0, "rounds": rounds,
    "labels_sha": __import__("hashlib").sha256(res.labels.tobytes()).hexdigest()[:16]}}))
"""
    out: dict[str, Any] = {"accounts": accounts}
    if lean:
        out["graph"] = "lean (no phones, no API keys)"
    if "spark" in engines:
        out["spark_settings"] = {"partitions": partitions, **settings}
    for which in engines:
        m = measure([sys.executable, "-c", code, which], env)
        out[which] = {**m, **_json_tail(m.pop("stdout"))}
    if len(engines) == 2:
        out["same_labels"] = out["local"]["labels_sha"] == out["spark"]["labels_sha"]
    print(json.dumps(out), flush=True)
    return out


def _link_key(row: dict[str, Any]) -> tuple[int, str, tuple[str, ...]]:
    return row["accounts"], str(row.get("graph", "")), tuple(k for k in ("local", "spark") if k in row)


def fit(rows: list[dict[str, Any]], engine: str, key: str) -> tuple[float, float]:
    """Least-squares a + b * events."""
    xs = [r["events"] for r in rows]
    ys = [r[engine][key] + (r["export"][key] if engine == "spark" else 0.0) for r in rows]
    if len(xs) == 1:
        return 0.0, ys[0] / xs[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, nargs="*", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--link-accounts", type=int, nargs="*", default=[100_000])
    ap.add_argument(
        "--link-local-accounts",
        type=int,
        nargs="*",
        default=[],
        help="linking alone with the in-memory linker only (graphs too big for Spark here)",
    )
    ap.add_argument("--link-partitions", type=int, default=4, help="shuffle partitions of the linking-alone spark run")
    ap.add_argument(
        "--link-lean",
        action="store_true",
        help="linking alone on the lean graph (no phones or API keys: ~5.2 edges per account)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/stormwatch-bench-spark"))
    ap.add_argument("--check", action="store_true", help="compare the two engines' judgements at each size")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "spark.json")
    ap.add_argument(
        "--spark-conf",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="passed to the spark engine (e.g. spark.driver.memory=8g for 10M events)",
    )
    ap.add_argument(
        "--reuse-store",
        action="store_true",
        help="reuse the ingested copy (spark<N>.db) an earlier run left when its spark step failed",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the sizes and graphs of an existing --out that this run does not measure again",
    )
    args = ap.parse_args(argv)
    if not args.events and not (args.merge and args.out.exists()):
        ap.error("no sizes to measure or keep: pass --events, or --merge with an existing --out")
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT / "src")}
    args.work.mkdir(parents=True, exist_ok=True)
    conf = tuple(args.spark_conf)
    lean = args.link_lean
    links = [link_alone(a, env, conf=conf, partitions=args.link_partitions, lean=lean) for a in args.link_accounts]
    links += [link_alone(a, env, ("local",), lean=lean) for a in args.link_local_accounts]
    rows = [run_size(n, args.work, env, args.check, args.reuse_store, tuple(args.spark_conf)) for n in args.events]
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        again = {_accounts(n) for n in args.events}  # events vary a little with the seed; accounts do not
        rows = sorted([r for r in old["sizes"] if r["accounts"] not in again] + rows, key=lambda r: r["events"])
        measured = {_link_key(g) for g in links}
        links = [g for g in old["link_alone"] if _link_key(g) not in measured] + links
    fits = {}
    for engine in ("local", "spark"):
        a_w, b_w = fit(rows, engine, "wall_s")
        a_c, b_c = fit(rows, engine, "cpu_s")
        fits[engine] = {"wall_fixed_s": round(a_w, 2), "wall_us_per_event": round(b_w * 1e6, 2),
                        "cpu_fixed_s": round(a_c, 2), "cpu_us_per_event": round(b_c * 1e6, 2)}  # fmt: skip
    lw, sw = fits["local"], fits["spark"]
    slope = sw["wall_us_per_event"] - lw["wall_us_per_event"]
    cross = None if slope >= 0 else (lw["wall_fixed_s"] - sw["wall_fixed_s"]) / (slope / 1e6)
    result = {
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg()},
        "sizes": rows,
        "fits": fits,
        "wall_crossing_events": cross,
        "link_alone": links,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({"fits": fits, "wall_crossing_events": cross}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
