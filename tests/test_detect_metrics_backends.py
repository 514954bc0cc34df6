"""Ranking metrics: scikit-learn and the NumPy fallback agree within 1e-9 (random data, with ties)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stormwatch.detect import metrics
from stormwatch.detect.metrics import (
    auprc,
    auprc_numpy,
    fpr_at,
    metrics_backend,
    recall_at_fpr,
    recall_at_fpr_numpy,
    roc_auc,
    roc_auc_numpy,
)

pytest.importorskip("sklearn")


def _cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(20261204)
    out = []
    for n in (2, 3, 7, 50, 400, 3000):
        for kind in ("continuous", "ties", "few-values", "separable"):
            y = rng.integers(0, 2, n)
            y[0], y[-1] = 0, 1  # both classes
            if kind == "continuous":
                s = rng.random(n)
            elif kind == "ties":
                s = np.round(rng.random(n), 2)
            elif kind == "few-values":
                s = rng.integers(0, 3, n) / 2.0
            else:
                s = y + rng.random(n) * 0.5
            out.append((y, s))
    return out


@pytest.mark.parametrize("case", range(24))
def test_sklearn_and_numpy_agree(case: int) -> None:
    y, s = _cases()[case]
    assert metrics_backend() == "sklearn"
    assert abs(auprc(y, s) - auprc_numpy(y, s)) < 1e-9
    assert abs(roc_auc(y, s) - roc_auc_numpy(y, s)) < 1e-9
    for f in (0.0, 0.001, 0.01, 0.1, 0.5, 1.0):
        assert abs(recall_at_fpr(y, s, f) - recall_at_fpr_numpy(y, s, f)) < 1e-9, f


def test_fallback_when_forced_or_sklearn_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    y, s = _cases()[10]
    monkeypatch.setenv(metrics.BACKEND_ENV, "numpy")
    assert metrics_backend() == "numpy"
    assert auprc(y, s) == auprc_numpy(y, s) and roc_auc(y, s) == roc_auc_numpy(y, s)
    assert recall_at_fpr(y, s, 0.01) == recall_at_fpr_numpy(y, s, 0.01)
    monkeypatch.delenv(metrics.BACKEND_ENV)
    monkeypatch.setattr(metrics, "_sklearn_metrics", lambda: None)
    assert metrics_backend() == "numpy" and auprc(y, s) == auprc_numpy(y, s)


def test_known_values_and_one_class() -> None:
    y = [0, 0, 1, 1]
    s = [0.1, 0.4, 0.35, 0.8]
    assert auprc(y, s) == pytest.approx(0.8333333333333333)
    assert roc_auc(y, s) == pytest.approx(0.75)
    assert recall_at_fpr(y, s, 0.0) == 0.5 and recall_at_fpr(y, s, 0.5) == 1.0
    for fn in (auprc, roc_auc, auprc_numpy, roc_auc_numpy):
        assert math.isnan(fn([1, 1], [0.2, 0.3])) and math.isnan(fn([0, 0], [0.2, 0.3]))
    assert math.isnan(recall_at_fpr([1, 1], [0.2, 0.3], 0.1))
    assert math.isnan(recall_at_fpr_numpy([0, 0], [0.2, 0.3], 0.1))
    assert math.isnan(fpr_at([], 0.5)) and fpr_at([0.1, 0.6], 0.5) == 0.5
    with pytest.raises(ValueError, match="differ in shape"):
        auprc([0, 1], [0.5])
