"""The cascade's combiner: one calibrated probability from the two tiers' logits.

Two designs over the same three features (``first_logit_latin``, ``encoder_logit``, ``non_latin``):

* **linear**: ``p = sigmoid(w_first * logit(first) * latin + w_enc * enc_logit + w_script * non_latin
  + b)``, a logistic regression;
* **trees**: gradient-boosted regression trees summed in logit space (``p = sigmoid(baseline + sum of
  leaves)``), increasing in both tiers' logits (a higher score from either tier never lowers the
  combined one), stored as their nodes (:class:`Trees`).

Either is fitted on rows neither tier was fitted on (the first tier's ``val``/``test`` rows and the
rows of sources it never saw), scored by both tiers as they ship. :func:`choose_design` picks the
design on those rows by leave-source-out inside them (:mod:`stormwatch.detect.combiner_select`), so
the choice is measured on sources the candidate was not fitted on, as leave-source-out measures the
cascade. The first tier's logit counts only for Latin-script text (it was trained almost only on
English and cannot read the other scripts); ``non_latin`` lets the combiner treat other scripts
apart. Being a log-loss fit on held-out rows, the output is calibrated (``stormwatch eval`` and the
model card show the reliability table). Presets are chosen like the first tier's: the
false-positive rate on benign security questions; for trees, on each hard negative's score by the
design fitted without it (5 folds of rows), since trees fitted on a row rank it lower than they
will rank a new one.

Stored as ``combiner.json`` next to the encoder artifact: the design (weights and intercept, or
trees), presets, the gate's ``clear`` line (see :mod:`stormwatch.detect.cascade`), the first-tier
and encoder versions it was fitted for, and its own version (a hash of the rest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.errors import InputError

__all__ = ["Combiner", "Trees", "features", "fit_combiner", "load_combiner"]

F64 = npt.NDArray[np.float64]
FEATURES = ("first_logit_latin", "encoder_logit", "non_latin")
TREE_LEARNING_RATE = 0.05
MAX_TREE_NODES = 200_000  # a combiner.json with more is refused: every read is bounded


def _logit(p: npt.ArrayLike) -> F64:
    q = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    return np.asarray(np.log(q / (1 - q)), dtype=np.float64)


def features(first: npt.ArrayLike, enc_logit: npt.ArrayLike, scripts: Sequence[str]) -> F64:
    non_latin = np.array([s != "latin" for s in scripts], dtype=np.float64)
    return np.column_stack([_logit(first) * (1.0 - non_latin), np.asarray(enc_logit, dtype=np.float64), non_latin])


def _sigmoid(z: F64) -> F64:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(z, -40, 40))), dtype=np.float64)


@dataclass(frozen=True)
class Trees:
    """Boosted regression trees over :data:`FEATURES`, their nodes flattened into one table.

    Node ``i`` is a leaf when ``feature[i] < 0`` (its ``value`` is added to the logit), else rows with
    ``x[feature[i]] <= threshold[i]`` go to ``left[i]``, the others to ``right[i]``; ``roots`` are the
    trees' first nodes. ``raw(x)`` is ``baseline`` plus the leaf reached in every tree."""

    baseline: float
    roots: tuple[int, ...]
    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    value: tuple[float, ...]

    @cached_property
    def _arrays(self) -> tuple[npt.NDArray[np.int64], F64, npt.NDArray[np.int64], npt.NDArray[np.int64], F64]:
        return (
            np.asarray(self.feature, dtype=np.int64),
            np.asarray(self.threshold, dtype=np.float64),
            np.asarray(self.left, dtype=np.int64),
            np.asarray(self.right, dtype=np.int64),
            np.asarray(self.value, dtype=np.float64),
        )

    def raw(self, x: F64) -> F64:
        feat, thr, left, right, value = self._arrays
        node = np.broadcast_to(np.asarray(self.roots), (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        for _ in range(len(feat)):  # the depth bounds it; each pass moves every row one level down
            f = feat[node]
            inner = f >= 0
            if not inner.any():
                break
            go_left = x[rows, np.maximum(f, 0)] <= thr[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        return np.asarray(self.baseline + value[node].sum(axis=1), dtype=np.float64)

    @classmethod
    def from_sklearn(cls, clf: Any) -> Trees:
        """The trees of a fitted binary ``HistGradientBoostingClassifier`` (numeric features)."""
        roots: list[int] = []
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        right: list[int] = []
        value: list[float] = []
        for (predictor,) in clf._predictors:
            nodes, start = predictor.nodes, len(feature)
            roots.append(start)
            for nd in nodes:
                leaf = bool(nd["is_leaf"])
                feature.append(-1 if leaf else int(nd["feature_idx"]))
                threshold.append(0.0 if leaf else float(nd["num_threshold"]))
                left.append(-1 if leaf else start + int(nd["left"]))
                right.append(-1 if leaf else start + int(nd["right"]))
                value.append(float(nd["value"]) if leaf else 0.0)
        baseline = float(np.asarray(clf._baseline_prediction).reshape(-1)[0])
        return cls(baseline, tuple(roots), tuple(feature), tuple(threshold), tuple(left), tuple(right), tuple(value))

    def to_dict(self) -> dict[str, Any]:
        return {
            "learning_rate": TREE_LEARNING_RATE,
            "baseline": self.baseline,
            "roots": list(self.roots),
            "feature": list(self.feature),
            "threshold": list(self.threshold),
            "left": list(self.left),
            "right": list(self.right),
            "value": list(self.value),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trees:
        n = len(d["feature"])
        if n > MAX_TREE_NODES:
            raise ValueError(f"{n} tree nodes (at most {MAX_TREE_NODES})")
        cols = [d[k] for k in ("threshold", "left", "right", "value")]
        if any(len(c) != n for c in cols):
            raise ValueError("tree node columns of different lengths")
        t = cls(
            float(d["baseline"]),
            tuple(int(r) for r in d["roots"]),
            tuple(int(f) for f in d["feature"]),
            tuple(float(v) for v in d["threshold"]),
            tuple(int(v) for v in d["left"]),
            tuple(int(v) for v in d["right"]),
            tuple(float(v) for v in d["value"]),
        )
        t.check()
        return t

    def check(self) -> None:
        """Every pointer inside the table, every feature known, no node visited twice (no cycles)."""
        n = len(self.feature)
        seen = np.zeros(n, dtype=bool)
        for root in self.roots:
            stack = [root]
            while stack:
                i = stack.pop()
                if not 0 <= i < n or seen[i]:
                    raise ValueError(f"tree node {i}: out of range or reached twice")
                seen[i] = True
                if self.feature[i] >= len(FEATURES):
                    raise ValueError(f"tree node {i}: feature {self.feature[i]} unknown")
                if self.feature[i] >= 0:
                    stack += [self.left[i], self.right[i]]


@dataclass(frozen=True)
class Combiner:
    weights: tuple[float, ...]
    intercept: float
    thresholds: dict[str, float]
    fitted_for: dict[str, str]
    version: str
    clear: float = 0.05  # the first tier clears a prompt below this (and no gate reason)
    trees: Trees | None = None
    design: str = "linear"
    selection: dict[str, Any] | None = None  # how the design was chosen (not part of the version)

    def combine(self, first: npt.ArrayLike, enc_logit: npt.ArrayLike, scripts: Sequence[str]) -> F64:
        x = features(first, enc_logit, scripts)
        if self.trees is None:
            return _sigmoid(x @ np.asarray(self.weights) + self.intercept)
        if not self.weights:  # trees for every script; with weights, trees for Latin script only
            return _sigmoid(self.trees.raw(x))
        z = x @ np.asarray(self.weights) + self.intercept
        latin = x[:, 2] == 0
        if latin.any():
            z[latin] = self.trees.raw(x[latin])
        return _sigmoid(z)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format": "stormwatch-combiner-1" if self.trees is None else "stormwatch-combiner-2",
            "design": self.design,
            "features": list(FEATURES),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "thresholds": self.thresholds,
            "fitted_for": self.fitted_for,
            "clear": self.clear,
            "version": self.version,
        }
        if self.trees is not None:
            out["trees"] = self.trees.to_dict()
        if self.selection is not None:
            out["selection"] = self.selection
        return out


def _version(
    weights: Sequence[float], intercept: float, thresholds: dict[str, float], clear: float = 0.05, trees: Any = None
) -> str:
    parts: list[Any] = [list(weights), intercept, thresholds, clear]
    if trees is not None:
        parts.append(trees.to_dict())
    blob = json.dumps(parts, sort_keys=True).encode()
    return "combiner-" + hashlib.sha256(blob).hexdigest()[:10]


def _presets(scores: F64, hard_neg: npt.NDArray[np.bool_], target_fpr: dict[str, float]) -> dict[str, float]:
    neg = np.sort(scores[hard_neg])[::-1]
    thresholds: dict[str, float] = {}
    for name, fpr in target_fpr.items():
        k = int(np.floor(fpr * len(neg)))
        thresholds[name] = round(float(min(0.99, neg[k] + 1e-6)) if k < len(neg) else 0.5, 6)
    return thresholds


def tree_model(leaves: int, rounds: int) -> Any:
    """The trees' learner: scikit-learn's histogram boosting, monotone increasing in both logits
    (its early stopping as scikit-learn sets it: on above 10,000 rows, 10 % held back)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(
        learning_rate=TREE_LEARNING_RATE,
        monotonic_cst=[1, 1, 0],
        random_state=0,
        max_leaf_nodes=leaves,
        max_iter=rounds,
    )


def parse_design(design: str) -> tuple[int, int, bool] | None:
    """``linear`` -> None; ``trees-LxR`` -> (leaves, rounds, False); ``latin-trees-LxR`` -> (leaves,
    rounds, True): trees for Latin-script text only, the linear fit for the other scripts."""
    if design == "linear":
        return None
    latin = design.startswith("latin-")
    try:
        kind, size = design.removeprefix("latin-").split("-", 1)
        leaves, rounds = (int(v) for v in size.split("x"))
    except ValueError:
        kind, leaves, rounds = "", 0, 0
    if kind != "trees" or leaves < 2 or rounds < 1:
        raise ValueError(
            f"combiner design {design!r}: expected 'linear', 'trees-LxR' or 'latin-trees-LxR' (e.g. trees-8x200)"
        )
    return leaves, rounds, latin


PRESET_FOLDS = 5


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
    design: str = "linear",
) -> Combiner:
    """Fit on held-out rows; presets by FPR on the hard negatives (benign security questions).
    ``c``: the linear fit's inverse L2 strength; ``sample_weight`` weighs the rows in the linear
    fit (not in the presets); ``design``: ``linear``, ``trees-LxR`` or ``latin-trees-LxR`` (see
    :func:`parse_design`; the latter keeps the linear fit for non-Latin text, where the first tier
    reads nothing and the encoder's logit is the one signal)."""
    from sklearn.linear_model import LogisticRegression

    x = features(first, enc_logit, scripts)
    y = np.asarray(labels, dtype=np.int64)
    hard = (y == 0) & np.asarray(hard_negative, dtype=bool)
    size = parse_design(design)
    weights: tuple[float, ...] = ()
    intercept = 0.0
    linear = np.zeros(len(y), dtype=np.float64)
    if size is None or size[2]:
        clf = LogisticRegression(C=c, solver="lbfgs", max_iter=2000, tol=1e-8)
        clf.fit(x, y, sample_weight=None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64))
        weights = tuple(round(float(w), 6) for w in clf.coef_[0])
        intercept = round(float(clf.intercept_[0]), 6)
        linear = _sigmoid(x @ np.asarray(weights) + intercept)
    if size is None:
        thresholds = _presets(linear, hard, target_fpr)
        version = _version(weights, intercept, thresholds, clear)
        return Combiner(weights, intercept, thresholds, dict(fitted_for), version, clear)
    leaves, rounds, latin_only = size
    on = x[:, 2] == 0 if latin_only else np.ones(len(y), dtype=bool)
    if len(set(y[on].tolist())) < 2:
        raise ValueError(f"combiner design {design!r}: the rows it fits trees on have one label")
    trees = Trees.from_sklearn(tree_model(leaves, rounds).fit(x[on], y[on]))
    held = linear.copy()  # each row scored by the trees fitted without it (the linear part: 3 weights)
    part = np.random.default_rng(0).integers(0, PRESET_FOLDS, len(y))
    for k in range(PRESET_FOLDS if target_fpr else 0):
        fit, out = on & (part != k), on & (part == k)
        if len(set(y[fit].tolist())) == 2 and out.any():
            held[out] = tree_model(leaves, rounds).fit(x[fit], y[fit]).predict_proba(x[out])[:, 1]
    thresholds = _presets(held, hard, target_fpr)
    version = _version(weights, intercept, thresholds, clear, trees)
    return Combiner(weights, intercept, thresholds, dict(fitted_for), version, clear, trees, design)


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
            trees=Trees.from_dict(d["trees"]) if d.get("trees") is not None else None,
            design=str(d.get("design", "linear")),
            selection=d.get("selection"),
        )
    except FileNotFoundError as exc:
        raise InputError(f"{file}: no combiner here (fit one with `stormwatch train --model encoder`)") from exc
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{file}: not a combiner file ({exc})") from exc
