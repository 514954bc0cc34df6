"""`stormwatch train` (the first tier) with its fits on one BLAS thread against the BLAS library's
default thread count, in the same run.

Each build runs in a subprocess of its own (``train_artifact`` on the vendored data, or on every
``--every``-th row of it), with ``stormwatch.detect.train_fit.FIT_BLAS_THREADS`` set to ``1`` (what
ships) or ``None`` (OpenBLAS's default: one thread per core). Reported per setting: the median wall
seconds and CPU seconds of the build (``time.process_time``: every thread of the process), their
ratios, the version id, and the largest score difference between the two builds on the vendored
``val``/``test`` prompts (it must stay within ``REBUILD_SCORE_TOLERANCE``: the thread count may not
change the model). Pairs alternate which setting runs first. Results merge into
``benchmarks/results/train.json``.

    python benchmarks/bench_train.py [--every 1] [--repeat 1] [--results PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "train.json"

_BUILD = """
import json, sys, time
from pathlib import Path
from stormwatch.detect import train_fit
from stormwatch.detect.data import default_data_paths, read_rows
from stormwatch.detect.model import FirstTierModel
from stormwatch.detect.train import serialize, train_artifact
train_fit.FIT_BLAS_THREADS = None if sys.argv[1] == "default" else int(sys.argv[1])
every = int(sys.argv[2])
rows = read_rows(default_data_paths())
if every > 1:
    rows = [r for i, r in enumerate(rows) if i % every == 0]
w0, c0 = time.perf_counter(), time.process_time()
art = train_artifact(rows)
wall, cpu = time.perf_counter() - w0, time.process_time() - c0
serialize(art)  # names the build (its version id)
texts = [r.text for r in rows if r.split in ("val", "test")]
scores = FirstTierModel(art).score_texts(texts)
Path(sys.argv[3]).write_text(json.dumps({"wall": wall, "cpu": cpu, "version": art["version"],
                                         "scores": [float(s) for s in scores]}))
"""


def build(threads: str, every: int, out: Path) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, "-c", _BUILD, threads, str(every), str(out)],
        capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"build with {threads} BLAS threads failed:\n{res.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import tempfile

    from threadpoolctl import threadpool_info

    from stormwatch.detect.train import REBUILD_SCORE_TOLERANCE

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--every", type=int, default=1, help="train on every N-th vendored row (1: all, as shipped)")
    ap.add_argument("--repeat", type=int, default=1, help="pairs of builds")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ns = ap.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {"one_thread": [], "default": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ns.repeat):
            order = [("default", "default"), ("one_thread", "1")]
            for name, arg in order if i % 2 == 0 else order[::-1]:
                runs[name].append(build(arg, ns.every, Path(tmp) / f"{name}-{i}.json"))
                print(f"pair {i + 1}/{ns.repeat}: {name} {runs[name][-1]['wall']:.1f} s wall", file=sys.stderr)
    one, base = runs["one_thread"], runs["default"]
    diff = max(
        abs(a - b) for r1, r0 in zip(one, base, strict=True) for a, b in zip(r1["scores"], r0["scores"], strict=True)
    )
    med = {name: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu")} for name, rs in runs.items()}
    blas = sorted({f"{i['internal_api']} {i.get('version')} {i.get('architecture')}" for i in threadpool_info()})
    rep: dict[str, Any] = {
        "command": " ".join(["python benchmarks/bench_train.py", *(argv if argv is not None else sys.argv[1:])]),
        "every": ns.every,
        "repeat": ns.repeat,
        "one_thread": {k: round(v, 2) for k, v in med["one_thread"].items()},
        "default_threads": {k: round(v, 2) for k, v in med["default"].items()},
        "wall_ratio_default_over_one": round(med["default"]["wall"] / med["one_thread"]["wall"], 2),
        "cpu_ratio_default_over_one": round(med["default"]["cpu"] / med["one_thread"]["cpu"], 2),
        "same_version": len({r["version"] for r in one + base}) == 1,
        "version": one[0]["version"],
        "max_score_difference": diff,
        "within_tolerance": diff <= REBUILD_SCORE_TOLERANCE,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(), "blas": blas},
    }
    ns.results.parent.mkdir(parents=True, exist_ok=True)
    stored = json.loads(ns.results.read_text()) if ns.results.exists() else {}
    stored["train_full" if ns.every == 1 else f"train_every_{ns.every}"] = rep
    ns.results.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
    print(json.dumps(rep, indent=2))
    if not rep["same_version"] or not rep["within_tolerance"]:
        raise SystemExit("the BLAS thread count changed the model")
    return rep


if __name__ == "__main__":
    main()
