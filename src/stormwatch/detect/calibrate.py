"""First-tier training, calibration: Platt scaling on cross-fitted margins and the preset thresholds
(recipe step 7 in :mod:`stormwatch.detect.train`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.detect.data import Row
from stormwatch.detect.model import FirstTierModel
from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES
from stormwatch.detect.train_fit import (
    _round,
    cross_fitted_margins,
    sample_weights,
)
from stormwatch.detect.train_params import (
    EVERYDAY_SOURCES,
    QUANT_DIGITS,
    FloatArray,
    Progress,
    TrainParams,
    _noop,
)


def fit_platt(margins: FloatArray, y: npt.NDArray[np.int64], w: FloatArray) -> tuple[float, float]:
    """Weighted 1-D logistic fit ``p = sigmoid(a * margin + b)``."""
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000, tol=1e-8)
    clf.fit(margins.reshape(-1, 1), y, sample_weight=w)
    return float(clf.coef_[0, 0]), float(clf.intercept_[0])


def threshold_for_fpr(neg_scores: FloatArray, target: float) -> float:
    """Smallest threshold t with fraction(neg >= t) <= target."""
    if len(neg_scores) == 0:
        return 0.5
    s = np.sort(neg_scores)[::-1]
    k = int(np.floor(target * len(s)))  # number of negatives allowed at or above t
    t = float(s[k]) if k < len(s) else 0.0
    return float(np.nextafter(t, 1.0)) if t < 1.0 else 1.0


def _fpr(scores: FloatArray, t: float) -> float:
    return round(float(np.mean(scores >= t)), 4) if len(scores) else float("nan")


def calibrate_and_threshold(
    art: dict[str, Any],
    rows: Sequence[Row],
    toks: Sequence[list[str]],
    p: TrainParams,
    progress: Progress = _noop,
    val_rows: Sequence[Row] = (),
    cores: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """Platt-calibrate on cross-fitted margins (folds by source) and pick the preset thresholds.

    Calibration weights: every source equal within its class, the malicious class
    ``calibration_prior`` of the total (a benign-heavy prior: the score is not inflated by the
    balanced training mix). A preset's threshold is the largest of: the threshold meeting its
    hard-negative FPR on ``val`` rows, its everyday FPR on ``val`` rows (both scored by the fitted
    model), and its held-out everyday FPR on cross-fitted scores (sources unseen by the scoring
    model); never below 0.05.
    """
    from stormwatch.detect.model import decode_f32

    start = np.append(decode_f32(art["weights"]).astype(np.float64), float(art["bias"]))
    margins = cross_fitted_margins(rows, toks, p, progress, cores, start=start)
    y = np.array([r.label for r in rows], dtype=np.int64)
    w = sample_weights(
        rows, replace(p, hard_negative_weight=1.0, everyday_weight=1.0, benign_share=1.0 - p.calibration_prior)
    )
    a, b = fit_platt(margins, y, w)
    art["calibration"] = {"a": _round([a], QUANT_DIGITS)[0], "b": _round([b], QUANT_DIGITS)[0]}
    model = FirstTierModel(art)
    scores = model.calibrate(margins)
    hard = np.array([r.source in HARD_NEGATIVE_SOURCES and r.label == 0 for r in rows])
    every = np.array([r.source in EVERYDAY_SOURCES and r.label == 0 for r in rows])
    vs = model.score_texts([r.text for r in val_rows]) if val_rows else np.zeros(0)
    vy = np.array([r.label for r in val_rows], dtype=np.int64)
    vhard = np.array([r.source in HARD_NEGATIVE_SOURCES and r.label == 0 for r in val_rows], dtype=bool)
    vevery = np.array([r.source in EVERYDAY_SOURCES and r.label == 0 for r in val_rows], dtype=bool)
    thresholds = {}
    for name in sorted(p.preset_hard_neg_fpr):
        cands = [0.05, threshold_for_fpr(scores[every], p.preset_everyday_held_out_fpr[name])]
        if vhard.any():
            cands.append(threshold_for_fpr(vs[vhard], p.preset_hard_neg_fpr[name]))
        else:  # no val rows: hard negatives held out by source instead
            cands.append(threshold_for_fpr(scores[hard], p.preset_hard_neg_fpr[name]))
        if vevery.any():
            cands.append(threshold_for_fpr(vs[vevery], p.preset_everyday_fpr[name]))
        thresholds[name] = _round([max(cands)])[0]
    art["thresholds"] = thresholds
    art["cross_fit"] = {
        "folds": p.calibration_folds,
        "recall": {k: _fpr(scores[y == 1], t) for k, t in thresholds.items()},
        "hard_negative_fpr": {k: _fpr(scores[hard], t) for k, t in thresholds.items()},
        "everyday_fpr": {k: _fpr(scores[every], t) for k, t in thresholds.items()},
    }
    if len(val_rows):
        art["val"] = {
            "recall": {k: _fpr(vs[vy == 1], t) for k, t in thresholds.items()},
            "hard_negative_fpr": {k: _fpr(vs[vhard], t) for k, t in thresholds.items()},
            "everyday_fpr": {k: _fpr(vs[vevery], t) for k, t in thresholds.items()},
        }
    return art
