"""Ranking metrics: scikit-learn vs the NumPy fallback in ``stormwatch.detect.metrics``.

Usage::

    .venv/bin/python benchmarks/bench_metrics.py [--repeat 5]

Workload: AUPRC, ROC AUC and recall at 1 % / 0.1 % FPR (what ``stormwatch eval`` computes per
source and overall) on random labels and scores rounded to 3 digits (ties), at 1k, 10k and 100k
rows; the best of ``repeat`` runs per size. Also the one-time cost of ``import sklearn.metrics``
(measured in a fresh interpreter). The largest absolute difference between the two backends is
reported too (must stay below 1e-9).

Results go to ``benchmarks/results/metrics.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from stormwatch.detect import metrics as m

RESULTS = Path(__file__).resolve().parent / "results" / "metrics.json"


def _all(y: np.ndarray, s: np.ndarray, numpy: bool) -> list[float]:
    if numpy:
        return [m.auprc_numpy(y, s), m.roc_auc_numpy(y, s), m.recall_at_fpr_numpy(y, s, 0.01),
                m.recall_at_fpr_numpy(y, s, 0.001)]  # fmt: skip
    return [m.auprc(y, s), m.roc_auc(y, s), m.recall_at_fpr(y, s, 0.01), m.recall_at_fpr(y, s, 0.001)]


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    code = "import time; t = time.perf_counter(); import sklearn.metrics; print(time.perf_counter() - t)"
    imp = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    rng = np.random.default_rng(1)
    rows = []
    for n in (1_000, 10_000, 100_000):
        y = rng.integers(0, 2, n)
        s = np.round(rng.random(n) * 0.5 + y * 0.3, 3)
        diff = max(abs(a - b) for a, b in zip(_all(y, s, False), _all(y, s, True), strict=True))
        rows.append({
            "rows": n,
            "sklearn_ms": round(_best(lambda y=y, s=s: _all(y, s, False), args.repeat) * 1000, 3),
            "numpy_ms": round(_best(lambda y=y, s=s: _all(y, s, True), args.repeat) * 1000, 3),
            "max_abs_difference": diff,
        })  # fmt: skip
    out = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "import_sklearn_metrics_s": round(imp, 3),
        "backend": m.metrics_backend(),
        "sizes": rows,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
