"""benchmarks/bench_train.py: the first tier's training with its fits on one BLAS thread against the
BLAS default, on a 1/16 subset; the two builds are one model (same version, scores within the
rebuild tolerance) and the results file holds what the README's row reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_compares_thread_counts_on_one_model(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--every", "16", "--results", str(out)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(out.read_text())["train_every_16"]
    assert rep["same_version"] and rep["version"].startswith("first_tier-")
    assert rep["within_tolerance"] and rep["max_score_difference"] <= 1e-4
    for side in ("one_thread", "default_threads"):
        assert rep[side]["wall"] > 0 and rep[side]["cpu"] > 0
    ratio = rep["default_threads"]["wall"] / rep["one_thread"]["wall"]
    assert abs(ratio - rep["wall_ratio_default_over_one"]) < 0.01 + 0.01 * ratio


def test_fits_run_on_one_blas_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the benchmark measures is what ships: each L-BFGS-B fit runs with one BLAS thread."""
    import numpy as np
    import scipy.optimize
    from scipy.sparse import csr_matrix
    from threadpoolctl import threadpool_info, threadpool_limits

    from stormwatch.detect.train_fit import fit_logistic

    seen: list[int] = []
    real = scipy.optimize.minimize

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        return real(*args, **kwargs)

    monkeypatch.setattr(scipy.optimize, "minimize", spy)
    rng = np.random.default_rng(0)
    x = csr_matrix(rng.normal(size=(60, 5)))
    y = (rng.random(60) < 0.5).astype(np.int64)
    with threadpool_limits(limits=2, user_api="blas"):  # as OpenBLAS starts on a 2-core machine
        before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        fit_logistic(x, y, np.ones(60), 1.0)
        after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert seen and set(seen) == {1}
    assert after == before  # the limit is the fit's alone
