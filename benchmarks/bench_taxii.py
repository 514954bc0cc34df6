"""TAXII 2.1 serving: stormwatch vs the OASIS reference server (medallion 3.0.0), same client workload.

Usage::

    .venv/bin/python benchmarks/bench_taxii.py --medallion-venv /path/to/venv-with-medallion
    .venv/bin/python benchmarks/bench_taxii.py --skip-medallion            # stormwatch only
    .venv/bin/python benchmarks/bench_taxii.py --db-url postgresql://postgres@127.0.0.1:5432/test

Workload (one run, same for every server): N synthetic STIX 2.1 indicators POSTed in envelopes of
500, then read back by the real ``taxii2-client`` (``as_pages(collection.get_objects,
per_request=100)``), every page timed. The client and the server run in separate processes on
loopback. medallion runs from its own virtual environment with the memory backend and the same
config as ``shared/research/cti/medallion`` (``max_page_size`` 100); it is a baseline only and is
not part of stormwatch.

1. medallion at 4,000 objects and stormwatch at 4,000 objects: served objects/s and the ratio;
2. stormwatch alone at 1,000 and 100,000 objects: per-page latency (median, p95, the last 10 pages)
   — flat in the collection size means the 100,000-object median is within 2x of the 1,000 one.

Results go to ``benchmarks/results/taxii.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests
from taxii2client.v21 import Collection, as_pages

TAXII = "application/taxii+json;version=2.1"
ROOT = Path(__file__).resolve().parent.parent
USER, PASSWORD = "partner", "partner-pass"
MEDALLION_COLLECTION = "c3e1a9b7-2d4f-4a6c-b8e0-9f1d3c5a7e03"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def indicator(i: int) -> dict[str, Any]:
    ts = "2024-02-14T12:00:00.000Z"
    octets = f"{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.uuid4()}",
        "created": ts,
        "modified": ts,
        "name": f"bench indicator {i}",
        "indicator_types": ["malicious-activity"],
        "pattern_type": "stix",
        "pattern": f"[ipv4-addr:value = '10.{octets}']",
        "valid_from": ts,
    }


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            requests.get(url, auth=(USER, PASSWORD), headers={"Accept": TAXII}, timeout=2)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def load(objects_url: str, n: int, batch: int = 500) -> float:
    s = requests.Session()
    s.auth = (USER, PASSWORD)
    t0 = time.perf_counter()
    for k in range(0, n, batch):
        chunk = [indicator(i) for i in range(k, min(n, k + batch))]
        r = s.post(
            objects_url,
            data=json.dumps({"objects": chunk}),
            headers={"Accept": TAXII, "Content-Type": TAXII},
            timeout=3600,
        )
        r.raise_for_status()
        assert r.json()["success_count"] == len(chunk), r.text[:300]
    return time.perf_counter() - t0


def read_all(collection_url: str, n: int, page: int = 100, repeats: int = 1) -> dict[str, Any]:
    """The client workload: taxii2-client, pages of 100, every page timed (``repeats`` full reads)."""
    col = Collection(collection_url, user=USER, password=PASSWORD)
    times: list[float] = []
    got = 0
    total = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        last = t0
        for env in as_pages(col.get_objects, per_request=page):
            now = time.perf_counter()
            times.append(now - last)
            last = now
            got += len(env.get("objects", []))
        total += time.perf_counter() - t0
    assert got == n * repeats, (got, n)
    ms = sorted(t * 1000 for t in times)
    return {
        "objects": n,
        "full_reads": repeats,
        "pages": len(times),
        "read_s": round(total, 3),
        "served_obj_per_s": round(got / total, 1),
        "page_ms_first": round(times[0] * 1000, 2),
        "page_ms_median": round(statistics.median(ms), 2),
        "page_ms_p95": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "page_ms_last10_median": round(statistics.median(t * 1000 for t in times[-10:]), 2),
    }


def run_stormwatch(n: int, db_url: str | None, workdir: Path, repeats: int = 1) -> dict[str, Any]:
    db = db_url or f"sqlite:///{workdir / f'taxii-{n}.db'}"
    py = sys.executable
    sw = [py, "-m", "stormwatch", "--db", db]
    cid = subprocess.run(
        [*sw, "intel", "taxii", "add-collection", "bench"], check=True, capture_output=True, text=True
    ).stdout.strip()
    subprocess.run([*sw, "intel", "taxii", "grant", cid, USER, "--write"], check=True)
    port = free_port()
    proc = subprocess.Popen([*sw, "intel", "taxii", "serve", "--port", str(port), "--user", f"{USER}:{PASSWORD}"])
    try:
        base = f"http://127.0.0.1:{port}/taxii2/"
        wait_up(base, proc)
        col_url = f"{base}api1/collections/{cid}/"
        ingest = load(col_url + "objects/", n, batch=500)
        res = {"server": "stormwatch", "backend": db.split(":", 1)[0], "n": n, "ingest_s": round(ingest, 2)}
        res.update(read_all(col_url, n, repeats=repeats))
        return res
    finally:
        proc.terminate()
        proc.wait(30)


def run_medallion(n: int, venv: Path, workdir: Path) -> dict[str, Any]:
    port = free_port()
    mdir = workdir / "medallion"
    mdir.mkdir(exist_ok=True)
    make_data = ROOT.parent / "shared" / "research" / "cti" / "medallion" / "make_data.py"
    subprocess.run([str(venv / "bin" / "python"), str(make_data), str(port)], cwd=mdir, check=True)
    log = open(mdir / "medallion.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "medallion"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "WARN",
            "config.json",
        ],
        cwd=mdir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/taxii2/"
        wait_up(base, proc)
        col_url = f"http://127.0.0.1:{port}/cti/collections/{MEDALLION_COLLECTION}/"
        ingest = load(col_url + "objects/", n, batch=500)
        res = {"server": "medallion 3.0.0 (memory backend)", "n": n, "ingest_s": round(ingest, 2)}
        res.update(read_all(col_url, n))
        return res
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument(
        "--medallion-venv", type=Path, default=Path(os.environ.get("MEDALLION_VENV", "/work/medallion-venv"))
    )
    p.add_argument("--skip-medallion", action="store_true")
    p.add_argument("--db-url", help="PostgreSQL URL for stormwatch's store (default: a temporary SQLite file)")
    p.add_argument("--compare-n", type=int, default=4000)
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--large", type=int, default=100_000)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "taxii.json")
    a = p.parse_args()
    out: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "command": " ".join(["python", "benchmarks/bench_taxii.py", *sys.argv[1:]]),
        "workload": "taxii2-client as_pages(get_objects, per_request=100) over N indicators",
    }
    with tempfile.TemporaryDirectory(prefix="bench-taxii-") as tmp:
        work = Path(tmp)

        def db_for(n: int) -> str | None:
            if not a.db_url:
                return None
            schema = f"bench_taxii_{n}_{uuid.uuid4().hex[:6]}"
            sep = "&" if "?" in a.db_url else "?"
            return f"{a.db_url}{sep}schema={schema}"

        sw = run_stormwatch(a.compare_n, db_for(a.compare_n), work)
        print(json.dumps(sw), flush=True)
        out["stormwatch_compare"] = sw
        if not a.skip_medallion:
            md = run_medallion(a.compare_n, a.medallion_venv, work)
            print(json.dumps(md), flush=True)
            out["medallion_compare"] = md
            out["ratio_served_obj_per_s"] = round(sw["served_obj_per_s"] / md["served_obj_per_s"], 1)
        small = run_stormwatch(a.small, db_for(a.small), work, repeats=10)
        print(json.dumps(small), flush=True)
        large = run_stormwatch(a.large, db_for(a.large), work)
        print(json.dumps(large), flush=True)
        out["stormwatch_small"], out["stormwatch_large"] = small, large
        out["page_latency_ratio_large_over_small"] = round(large["page_ms_median"] / small["page_ms_median"], 2)
        out["last_pages_latency_ratio"] = round(large["page_ms_last10_median"] / small["page_ms_last10_median"], 2)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if "ratio" in k}))


if __name__ == "__main__":
    main()
