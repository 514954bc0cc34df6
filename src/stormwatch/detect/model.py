"""The first-tier model: a linear model over word unigrams and bigrams, scored with numpy only.

The artifact (``first_tier-<version>.json.gz``) holds the vocabulary, the weights of the misuse
head and of the per-LLMT heads, the Platt calibration, the preset thresholds and the evaluation
that chose them. It is loaded lazily and cached per path.

Window rule: a text of more than ``window`` tokens (512 by default) is scored as overlapping
windows of ``window`` tokens every ``stride`` tokens (256), and its score is the **maximum** window
score (each category: its maximum too). A harmful ask therefore cannot be diluted by padding it with
benign text, and nothing is truncated. ``explain`` names the window that decided.
"""

from __future__ import annotations

import gzip
import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from stormwatch.detect.features import Featurized, Vocabulary
from stormwatch.detect.taxonomy import LLMT_IDS

__all__ = ["MODEL_ENV", "FirstTierModel", "default_model_path", "load_model"]

MODEL_ENV = "STORMWATCH_DETECT_MODEL"
FloatArray = npt.NDArray[np.float64]


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic
    return out


class FirstTierModel:
    """Scoring side of the artifact; immutable once built."""

    def __init__(self, artifact: dict[str, Any]) -> None:
        self.artifact = artifact
        self.version: str = artifact["version"]
        params = artifact["params"]
        self.window: int = int(params["window"])
        self.stride: int = int(params["stride"])
        self.vocab = Vocabulary(artifact["unigrams"], [tuple(b) for b in artifact["bigrams"]])
        # the artifact stores bigrams in key order, so weights line up with Vocabulary's order
        self.weights = np.asarray(artifact["weights"], dtype=np.float64)
        if len(self.weights) != self.vocab.n_features:
            raise ValueError("artifact weights do not match its vocabulary")
        self.bias = float(artifact["bias"])
        self.cal_a = float(artifact["calibration"]["a"])
        self.cal_b = float(artifact["calibration"]["b"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in artifact["thresholds"].items()}
        self.cat_ids: tuple[str, ...] = LLMT_IDS
        n = self.vocab.n_features
        self.cat_weights = np.zeros((len(LLMT_IDS), n), dtype=np.float64)
        self.cat_bias = np.zeros(len(LLMT_IDS), dtype=np.float64)
        for j, cid in enumerate(LLMT_IDS):
            head = artifact["categories"].get(cid)
            if head is None:
                self.cat_bias[j] = -30.0
                continue
            self.cat_bias[j] = float(head["bias"])
            self.cat_weights[j, np.asarray(head["idx"], dtype=np.int64)] = head["w"]

    # -- core -----------------------------------------------------------------------------------
    def featurize(self, texts: Sequence[str]) -> Featurized:
        return self.vocab.featurize(texts, window=self.window, stride=self.stride)

    def unit_margins(self, fz: Featurized) -> FloatArray:
        return fz.sums(self.weights) + self.bias

    def calibrate(self, margins: FloatArray) -> FloatArray:
        return _sigmoid(self.cal_a * margins + self.cal_b)

    def score_texts(self, texts: Sequence[str]) -> FloatArray:
        """Calibrated misuse probability per text (max over windows for long texts)."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        fz = self.featurize(texts)
        return self._per_text(fz, self.calibrate(self.unit_margins(fz)), len(texts))

    def margins_texts(self, texts: Sequence[str]) -> FloatArray:
        """Uncalibrated margins per text (max over windows)."""
        fz = self.featurize(texts)
        return self._per_text(fz, self.unit_margins(fz), len(texts))

    def score_with_categories(self, texts: Sequence[str]) -> tuple[FloatArray, FloatArray]:
        """(scores, category probabilities [n_texts, 14]).

        A category probability is ``score * P(category | misuse)``, so it never exceeds the score.
        """
        n = len(texts)
        if n == 0:
            return np.zeros(0), np.zeros((0, len(self.cat_ids)))
        fz = self.featurize(texts)
        unit_scores = self.calibrate(self.unit_margins(fz))
        cond = np.empty((fz.n_units, len(self.cat_ids)), dtype=np.float64)
        for j in range(len(self.cat_ids)):
            cond[:, j] = fz.sums(self.cat_weights[j]) + self.cat_bias[j]
        unit_cats = _sigmoid(cond) * unit_scores[:, None]
        scores = self._per_text(fz, unit_scores, n)
        if fz.n_units == n:
            return scores, unit_cats
        cats = np.zeros((n, len(self.cat_ids)), dtype=np.float64)
        np.maximum.at(cats, fz.owner, unit_cats)
        return scores, cats

    @staticmethod
    def _per_text(fz: Featurized, unit_values: FloatArray, n: int) -> FloatArray:
        if fz.n_units == n:
            return unit_values
        out = np.full(n, -np.inf)
        np.maximum.at(out, fz.owner, unit_values)
        return out

    # -- explanation ----------------------------------------------------------------------------
    def explain_text(self, text: str, top: int = 8) -> list[dict[str, Any]]:
        """Evidence for one text: the deciding window and its strongest n-grams."""
        fz = self.featurize([text])
        margins = self.unit_margins(fz)
        u = int(np.argmax(margins))
        mask = fz.unit == u
        feats = fz.feat[mask]
        contrib: dict[int, float] = {}
        scale = float(fz.scale[u])
        for f in feats.tolist():
            contrib[f] = contrib.get(f, 0.0) + float(self.weights[f]) * scale
        ranked = sorted(contrib.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:top]
        evidence: list[dict[str, Any]] = []
        if fz.n_units > 1:
            evidence.append(
                {
                    "kind": "window",
                    "detail": f"scored as {fz.n_units} windows of {self.window} tokens"
                    f" (stride {self.stride});"
                    " the maximum decides",
                    "window": u,
                    "token_start": int(fz.start[u]),
                    "token_end": int(fz.start[u] + fz.n_tokens[u]),
                }
            )
        for f, c in ranked:
            evidence.append(
                {"kind": "ngram", "feature": self.vocab.feature_name(f), "contribution": round(c, 4)}
            )
        return evidence


def default_model_path() -> Path:
    """``$STORMWATCH_DETECT_MODEL`` or the newest ``first_tier-*.json.gz`` shipped in the package."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    from stormwatch.detect.data import model_dir

    found = sorted(model_dir().glob("first_tier-*.json.gz"))
    if not found:
        raise FileNotFoundError(f"no first_tier-*.json.gz in {model_dir()}; run `stormwatch train`")
    return found[-1]


def read_artifact(path: str | Path) -> dict[str, Any]:
    with gzip.open(path, "rb") as fh:
        obj = orjson.loads(fh.read())
    assert isinstance(obj, dict)
    return obj


@lru_cache(maxsize=4)
def _load(path: str) -> FirstTierModel:
    return FirstTierModel(read_artifact(path))


def load_model(path: str | Path | None = None) -> FirstTierModel:
    """The model at ``path`` (default: :func:`default_model_path`), cached."""
    return _load(str(Path(path) if path is not None else default_model_path()))


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))
