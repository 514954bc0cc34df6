"""Ranking metrics in numpy (no scikit-learn needed at run time)."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt

__all__ = ["auprc", "fpr_at", "recall_at_fpr", "roc_auc"]

Arr = npt.NDArray[np.float64]


def _check(y: npt.ArrayLike, s: npt.ArrayLike) -> tuple[npt.NDArray[np.int64], Arr]:
    ya = np.asarray(y, dtype=np.int64)
    sa = np.asarray(s, dtype=np.float64)
    if ya.shape != sa.shape:
        raise ValueError("labels and scores differ in shape")
    return ya, sa


def auprc(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Average precision (step-wise area under the precision-recall curve), ties grouped."""
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


def roc_auc(y: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney with midranks)."""
    ya, sa = _check(y, s)
    npos = int(ya.sum())
    nneg = len(ya) - npos
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(sa, kind="mergesort")
    ranks = np.empty(len(sa), dtype=np.float64)
    ss = sa[order]
    # midranks for ties
    bounds = np.r_[0, np.flatnonzero(np.diff(ss)) + 1, len(ss)]
    for lo, hi in itertools.pairwise(bounds):
        ranks[order[lo:hi]] = (lo + hi + 1) / 2.0
    return float((ranks[ya == 1].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def recall_at_fpr(y: npt.ArrayLike, s: npt.ArrayLike, fpr: float) -> float:
    """Recall at the lowest threshold whose false-positive rate is <= ``fpr``."""
    ya, sa = _check(y, s)
    neg = np.sort(sa[ya == 0])[::-1]
    pos = sa[ya == 1]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    k = int(np.floor(fpr * len(neg)))
    t = neg[k] if k < len(neg) else -np.inf
    return float(np.mean(pos > t))


def fpr_at(neg_scores: npt.ArrayLike, threshold: float) -> float:
    ns = np.asarray(neg_scores, dtype=np.float64)
    return float(np.mean(ns >= threshold)) if len(ns) else float("nan")
