"""Ranking metrics: AUPRC (average precision), ROC AUC, recall at a false-positive rate.

Computed with scikit-learn (``average_precision_score``, ``roc_auc_score``, ``roc_curve``) when it
is installed (the ``train`` extra, which ``stormwatch train`` and LOSO evaluation need anyway);
otherwise with the NumPy implementations below (``*_numpy``), so ``stormwatch eval`` of a shipped
model works on a scoring-only install. ``metrics_backend()`` says which one runs;
``STORMWATCH_METRICS=numpy`` forces the fallback. Both give the same values within 1e-9
(``tests/test_detect_metrics_backends.py`` checks it on random data with ties;
``benchmarks/bench_metrics.py`` times both).

Conventions (both backends): a metric that needs both classes returns NaN when one is missing;
ties in scores are grouped (one threshold per distinct score).
"""

from __future__ import annotations

import itertools
import os
from functools import cache
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "auprc",
    "auprc_numpy",
    "fpr_at",
    "metrics_backend",
    "recall_at_fpr",
    "recall_at_fpr_numpy",
    "roc_auc",
    "roc_auc_numpy",
]

Arr = npt.NDArray[np.float64]
BACKEND_ENV = "STORMWATCH_METRICS"


def _check(y: npt.ArrayLike, s: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], Arr]:
    ya = np.asarray(y, dtype=np.int64)
    sa = np.asarray(s, dtype=np.float64)
    if ya.shape != sa.shape:
        raise ValueError("labels and scores differ in shape")
    return ya, sa


@cache
def _sklearn_metrics() -> Any:
    try:
        from sklearn import metrics
    except ImportError:
        return None
    return metrics


def metrics_backend() -> str:
    """``"sklearn"`` when scikit-learn is importable (and not overridden), else ``"numpy"``."""
    if os.environ.get(BACKEND_ENV, "").lower() == "numpy":
        return "numpy"
    return "sklearn" if _sklearn_metrics() is not None else "numpy"


def _both_classes(ya: npt.NDArray[np.int64]) -> bool:
    npos = int(ya.sum())
    return 0 < npos < len(ya)


def auprc(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Average precision (step-wise area under the precision-recall curve), ties grouped."""
    ya, sa = _check(y, s)
    if not _both_classes(ya):
        return float("nan")
    if metrics_backend() == "numpy":
        return auprc_numpy(ya, sa)
    return float(_sklearn_metrics().average_precision_score(ya, sa))


def roc_auc(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Area under the ROC curve (ties count one half)."""
    ya, sa = _check(y, s)
    if not _both_classes(ya):
        return float("nan")
    if metrics_backend() == "numpy":
        return roc_auc_numpy(ya, sa)
    return float(_sklearn_metrics().roc_auc_score(ya, sa))


def recall_at_fpr(y: npt.ArrayLike, s: npt.ArrayLike, fpr: float) -> float:
    """Recall at the lowest threshold whose false-positive rate is <= ``fpr``."""
    ya, sa = _check(y, s)
    if not _both_classes(ya):
        return float("nan")
    if metrics_backend() == "numpy":
        return recall_at_fpr_numpy(ya, sa, fpr)
    # Every distinct score is a threshold (no dropped points): the best recall among the points
    # whose false-positive rate is within the target.
    fprs, tprs, _ = _sklearn_metrics().roc_curve(ya, sa, drop_intermediate=False)
    return float(np.max(tprs[fprs <= fpr]))


def fpr_at(neg_scores: npt.ArrayLike, threshold: float) -> float:
    """Share of ``neg_scores`` at or above ``threshold`` (NaN for none)."""
    ns = np.asarray(neg_scores, dtype=np.float64)
    return float(np.mean(ns >= threshold)) if len(ns) else float("nan")


# -- the NumPy fallback ---------------------------------------------------------------------------
def auprc_numpy(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    ya, sa = _check(y, s)
    npos = int(ya.sum())
    if npos == 0 or npos == len(ya):
        return float("nan")
    order = np.argsort(-sa, kind="mergesort")
    ys, ss = ya[order], sa[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(1 - ys)
    last = np.r_[np.flatnonzero(np.diff(ss)), len(ss) - 1]  # end of each tie group
    tp, fp = tp[last], fp[last]
    precision = tp / (tp + fp)
    recall = tp / npos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc_numpy(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Mann-Whitney U with midranks for ties."""
    ya, sa = _check(y, s)
    npos = int(ya.sum())
    nneg = len(ya) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(sa, kind="mergesort")
    ranks = np.empty(len(sa), dtype=np.float64)
    ss = sa[order]
    bounds = np.r_[0, np.flatnonzero(np.diff(ss)) + 1, len(ss)]
    for lo, hi in itertools.pairwise(bounds):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return float((ranks[ya == 1].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def recall_at_fpr_numpy(y: npt.ArrayLike, s: npt.ArrayLike, fpr: float) -> float:
    ya, sa = _check(y, s)
    neg = np.sort(sa[ya == 0])[::-1]
    pos = sa[ya == 1]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    k = int(np.floor(fpr * len(neg)))
    t = neg[k] if k < len(neg) else -np.inf
    return float(np.mean(pos > t))
