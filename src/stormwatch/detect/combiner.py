"""The cascade's combiner: one calibrated probability from the two tiers' logits.

``p = sigmoid(w_first * logit(first) * latin + w_enc * enc_logit + w_script * non_latin + b)``: a
logistic regression fitted on rows neither tier was fitted on (the first tier's ``val``/``test``
rows and the rows of sources it never saw), scored by both tiers as they ship. Cross-fitting the
first tier's scores on its own sources' rows (a refit without the row's source) was tried and ranks
held-out sources lower on leave-source-out (docs/model-card-cascade.md); it stays an option of
:func:`stormwatch.detect.encoder_artifact.fit_combiner_for`. The first tier's logit counts only
for Latin-script text (it was trained almost only on English and cannot read the other scripts);
``non_latin`` shifts the intercept for them. Being
a logistic fit on held-out rows, the output is calibrated (``stormwatch eval`` and the model card
show the reliability table). Presets are chosen like the first tier's: the false-positive rate on
benign security questions.

Stored as ``combiner.json`` next to the encoder artifact: weights, intercept, presets, the gate's
``clear`` line (see :mod:`stormwatch.detect.cascade`), the first-tier and encoder versions it was
fitted for, and its own version (a hash of the rest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.errors import InputError

__all__ = ["Combiner", "features", "fit_combiner", "load_combiner"]

F64 = npt.NDArray[np.float64]
FEATURES = ("first_logit_latin", "encoder_logit", "non_latin")


def _logit(p: npt.ArrayLike) -> F64:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def features(first: npt.ArrayLike, enc_logit: npt.ArrayLike, scripts: Sequence[str]) -> F64:
    non_latin = np.array([s != "latin" for s in scripts], dtype=np.float64)
    return np.column_stack([_logit(first) * (1.0 - non_latin), np.asarray(enc_logit, dtype=np.float64), non_latin])


@dataclass(frozen=True)
class Combiner:
    weights: tuple[float, ...]
    intercept: float
    thresholds: dict[str, float]
    fitted_for: dict[str, str]
    version: str
    clear: float = 0.05  # the first tier clears a prompt below this (and no gate reason)

    def combine(self, first: npt.ArrayLike, enc_logit: npt.ArrayLike, scripts: Sequence[str]) -> F64:
        z = features(first, enc_logit, scripts) @ np.asarray(self.weights) + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40, 40))), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "stormwatch-combiner-1",
            "features": list(FEATURES),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "thresholds": self.thresholds,
            "fitted_for": self.fitted_for,
            "clear": self.clear,
            "version": self.version,
        }


def _version(weights: Sequence[float], intercept: float, thresholds: dict[str, float], clear: float = 0.05) -> str:
    blob = json.dumps([list(weights), intercept, thresholds, clear], sort_keys=True).encode()
    return "combiner-" + hashlib.sha256(blob).hexdigest()[:10]


def fit_combiner(
    first: npt.ArrayLike,
    enc_logit: npt.ArrayLike,
    scripts: Sequence[str],
    labels: npt.ArrayLike,
    hard_negative: npt.ArrayLike,
    *,
    fitted_for: dict[str, str],
    target_fpr: dict[str, float],
    c: float = 1.0,
    clear: float = 0.05,
    sample_weight: npt.ArrayLike | None = None,
) -> Combiner:
    """Fit on held-out rows; presets by FPR on the hard negatives (benign security questions).
    ``sample_weight`` weighs the rows in the fit (not in the presets)."""
    from sklearn.linear_model import LogisticRegression

    x = features(first, enc_logit, scripts)
    y = np.asarray(labels, dtype=np.int64)
    clf = LogisticRegression(C=c, solver="lbfgs", max_iter=2000, tol=1e-8)
    clf.fit(x, y, sample_weight=None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64))
    weights = tuple(round(float(w), 6) for w in clf.coef_[0])
    intercept = round(float(clf.intercept_[0]), 6)
    z = x @ np.asarray(weights) + intercept
    p = 1.0 / (1.0 + np.exp(-z))
    neg = np.sort(p[(y == 0) & np.asarray(hard_negative, dtype=bool)])[::-1]
    thresholds: dict[str, float] = {}
    for name, fpr in target_fpr.items():
        k = int(np.floor(fpr * len(neg)))
        thresholds[name] = round(float(min(0.99, neg[k] + 1e-6)) if k < len(neg) else 0.5, 6)
    return Combiner(
        weights, intercept, thresholds, dict(fitted_for), _version(weights, intercept, thresholds, clear), clear
    )


def load_combiner(path: str | Path | None, encoder_folder: Path) -> Combiner:
    file = Path(path) if path is not None else encoder_folder / "combiner.json"
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
        return Combiner(
            weights=tuple(float(w) for w in d["weights"]),
            intercept=float(d["intercept"]),
            thresholds={k: float(v) for k, v in d["thresholds"].items()},
            fitted_for=dict(d.get("fitted_for", {})),
            version=str(d["version"]),
            clear=float(d.get("clear", 0.05)),
        )
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no combiner here (fit one with `stormwatch train --model encoder`)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{file}: not a combiner file ({exc})") from exc
