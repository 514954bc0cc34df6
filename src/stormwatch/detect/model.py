"""The first-tier model: a linear model over hashed word and character n-grams (``features.py``).

The artifact (``first_tier-<version>.json.gz``) holds the feature spec, the dense float32 weights of
the misuse head (base64), the per-LLMT heads (sparse), the Platt calibration, the preset thresholds
and the evaluation that chose them. It is loaded lazily and cached per path.

Scoring uses the C extension ``stormwatch.detect._fast`` when it was built (``pip install -e .``)
and the numpy reference path otherwise; both give bit-identical margins (tested).
Set ``STORMWATCH_DETECT_PURE=1`` to force the numpy path.

Window rule: a text of more than ``window`` tokens (512) is scored as overlapping windows of
``window`` tokens every ``stride`` tokens (256), and its score is the **maximum** window score (each
category: its maximum too). Nothing is truncated. ``explain`` names the window that decided.
"""

from __future__ import annotations

import base64
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

from stormwatch.detect.features import FeatureSpec, featurize, prepare_text, split_windows, tokens_of
from stormwatch.detect.text import FUNCTION_WORDS
from stormwatch.errors import InputError
from stormwatch.vocab import LLMT_IDS

try:  # the optional C fast path
    from stormwatch.detect import _fast
except ImportError:  # pragma: no cover - exercised when the extension is not built
    _fast = None

__all__ = ["FORMAT", "MODEL_ENV", "FirstTierModel", "default_model_path", "fast_available", "load_model"]

FORMAT = "stormwatch.first_tier/2"
MODEL_ENV = "STORMWATCH_DETECT_MODEL"
PURE_ENV = "STORMWATCH_DETECT_PURE"
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def fast_available() -> bool:
    return _fast is not None and not os.environ.get(PURE_ENV)


def _sigmoid(x: FloatArray) -> FloatArray:
    out: FloatArray = 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic
    return out


def encode_f32(values: npt.ArrayLike) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def decode_f32(text: str) -> npt.NDArray[np.float32]:
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(np.float32)


class Units:
    """Per-unit margins of a batch (a unit is a text or one window of a long text)."""

    def __init__(
        self,
        n_units: int,
        margins: FloatArray,
        cats: FloatArray | None,
        owner: IntArray,
        start: IntArray,
        n_tokens: IntArray,
    ) -> None:
        self.n_units = n_units
        self.margins = margins
        self.cats = cats
        self.owner = owner
        self.start = start
        self.n_tokens = n_tokens


class FirstTierModel:
    """Scoring side of the artifact; immutable once built."""

    def __init__(self, artifact: dict[str, Any]) -> None:
        if artifact.get("format") != FORMAT:
            raise ValueError(f"unsupported artifact format {artifact.get('format')!r}; expected {FORMAT}")
        self.artifact = artifact
        self.version: str = artifact["version"]
        self.spec = FeatureSpec(**artifact["features"])
        self.window = self.spec.window
        self.stride = self.spec.stride
        w32 = decode_f32(artifact["weights"])
        if len(w32) != self.spec.n_buckets:
            raise ValueError("artifact weights do not match its feature spec")
        self.w32 = np.ascontiguousarray(w32)
        self.weights = w32.astype(np.float64)
        self.bias = float(artifact["bias"])
        self.cal_a = float(artifact["calibration"]["a"])
        self.cal_b = float(artifact["calibration"]["b"])
        self.thresholds: dict[str, float] = {k: float(v) for k, v in artifact["thresholds"].items()}
        self.cat_ids: tuple[str, ...] = LLMT_IDS
        nc = len(LLMT_IDS)
        cat32 = np.zeros((1 << self.spec.cat_bits, nc), dtype=np.float32)  # bucket-major for the C path
        self.cat_bias = np.zeros(nc, dtype=np.float64)
        for j, cid in enumerate(LLMT_IDS):
            head = artifact["categories"].get(cid)
            if head is None:
                self.cat_bias[j] = -30.0
                continue
            self.cat_bias[j] = float(head["bias"])
            cat32[np.asarray(head["idx"], dtype=np.int64), j] = decode_f32(head["w"])
        self.cat32 = np.ascontiguousarray(cat32)
        self.cat_weights = np.ascontiguousarray(cat32.T.astype(np.float64))  # [nc, n_buckets]

    # -- core -----------------------------------------------------------------------------------
    def units(self, texts: Sequence[str], *, cats: bool = False, pure: bool | None = None) -> Units:
        """Margins per unit (and category margins when ``cats``); C path unless ``pure``."""
        sp = self.spec
        use_fast = fast_available() if pure is None else not pure
        if use_fast and _fast is not None:
            prepared = [prepare_text(t) for t in texts]
            n_units, m, c, o, s, nt = _fast.score(
                prepared, self.w32, self.cat32 if cats else None, len(self.cat_ids), sp.bits,
                sp.cat_bits, sp.char_lo, sp.char_hi, float(sp.char_weight), sp.window, sp.stride, self.bias,
                self.cat_bias if cats else None,
            )  # fmt: skip
            return Units(
                n_units,
                np.frombuffer(m, dtype=np.float64),
                np.frombuffer(c, dtype=np.float64).reshape(n_units, len(self.cat_ids)) if cats else None,
                np.frombuffer(o, dtype=np.int64),
                np.frombuffer(s, dtype=np.int64),
                np.frombuffer(nt, dtype=np.int64),
            )
        fz = featurize(texts, sp)
        margins = fz.margins(self.weights, self.bias)
        cm = None
        if cats:
            cm = np.empty((fz.n_units, len(self.cat_ids)), dtype=np.float64)
            for j in range(len(self.cat_ids)):
                cm[:, j] = fz.cat_margins(self.cat_weights[j], float(self.cat_bias[j]), sp.cat_bits)
        return Units(fz.n_units, margins, cm, fz.owner, fz.start, fz.n_tokens)

    def calibrate(self, margins: FloatArray) -> FloatArray:
        return _sigmoid(self.cal_a * margins + self.cal_b)

    def score_texts(self, texts: Sequence[str]) -> FloatArray:
        """Calibrated misuse probability per text (max over windows for long texts)."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        u = self.units(texts)
        return self.calibrate(self._per_text(u, u.margins, len(texts)))

    def margins_texts(self, texts: Sequence[str], *, pure: bool | None = None) -> FloatArray:
        """Uncalibrated margins per text (max over windows)."""
        if not texts:
            return np.zeros(0, dtype=np.float64)
        u = self.units(texts, pure=pure)
        return self._per_text(u, u.margins, len(texts))

    def score_with_categories(self, texts: Sequence[str]) -> tuple[FloatArray, FloatArray]:
        """(scores, category probabilities [n_texts, 14]).

        A category probability is ``score * P(category | misuse)``, so it never exceeds the score.
        """
        n = len(texts)
        if n == 0:
            return np.zeros(0), np.zeros((0, len(self.cat_ids)))
        u = self.units(texts, cats=True)
        assert u.cats is not None
        unit_scores = self.calibrate(u.margins)
        unit_cats = _sigmoid(u.cats) * unit_scores[:, None]
        if u.n_units == n:
            return unit_scores, unit_cats
        scores = self._per_text(u, unit_scores, n)
        cats = np.zeros((n, len(self.cat_ids)), dtype=np.float64)
        np.maximum.at(cats, u.owner, unit_cats)
        return scores, cats

    @staticmethod
    def _per_text(u: Units, unit_values: FloatArray, n: int) -> FloatArray:
        if u.n_units == n:
            return unit_values
        out = np.full(n, -np.inf)
        np.maximum.at(out, u.owner, unit_values)
        return out

    # -- explanation ----------------------------------------------------------------------------
    def explain_text(self, text: str, top: int = 8) -> list[dict[str, Any]]:
        """Evidence for one text: the deciding window and its strongest words and word pairs.

        A word's contribution is its unigram weight plus its character n-grams' weights (hash
        buckets are shared, so a contribution is the bucket's weight, collisions included).
        """
        from stormwatch.detect.features import bucket_char_grams, bucket_pair, bucket_word

        sp = self.spec
        toks = tokens_of(text)
        starts = split_windows(len(toks), sp.window, sp.stride)
        u = self.units([text], pure=True)
        k = int(np.argmax(u.margins))
        s0 = starts[k]
        win = toks[s0 : s0 + sp.window] if len(toks) > sp.window else toks
        scale = 1.0 / math.sqrt(max(len(win), 1))
        contrib: dict[str, float] = {}
        w = self.weights
        for i, t in enumerate(win):
            c = float(w[bucket_word(t, sp.bits)])
            c += sp.char_weight * sum(float(w[b]) for b in bucket_char_grams(t, sp))
            contrib[t] = contrib.get(t, 0.0) + c * scale
            if i:
                key = f"{win[i - 1]} {t}"
                contrib[key] = contrib.get(key, 0.0) + float(w[bucket_pair(win[i - 1], t, sp.bits)]) * scale
        # never report a feature made only of function words ("a", "that", "give me", ...)
        ranked = sorted(
            ((f, c) for f, c in contrib.items() if not all(w in FUNCTION_WORDS for w in f.split())),
            key=lambda kv: (-abs(kv[1]), kv[0]),
        )[:top]
        evidence: list[dict[str, Any]] = []
        if u.n_units > 1:
            evidence.append(
                {
                    "kind": "window",
                    "detail": f"scored as {u.n_units} windows of {sp.window} tokens (stride {sp.stride});"
                    " the maximum decides",
                    "window": k,
                    "token_start": int(u.start[k]),
                    "token_end": int(u.start[k] + u.n_tokens[k]),
                }
            )
        for f, c in ranked:
            evidence.append({"kind": "ngram", "feature": f, "contribution": round(c, 4)})
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
    if not isinstance(obj, dict):
        raise ValueError("artifact is not a JSON object")
    return obj


@lru_cache(maxsize=4)
def _load(path: str) -> FirstTierModel:
    return FirstTierModel(read_artifact(path))


def load_model(path: str | Path | None = None) -> FirstTierModel:
    """The model at ``path`` (default: :func:`default_model_path`), cached.

    A missing file raises ``FileNotFoundError``; a file that is not a usable artifact (not gzip,
    truncated, not JSON, another format, fields missing) raises :class:`InputError` naming it.
    """
    where = str(Path(path) if path is not None else default_model_path())
    try:
        return _load(where)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        reason = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc) or type(exc).__name__
        raise InputError(
            f"{where}: not a first-tier model artifact: {reason}",
            hint="build one with `stormwatch train -o FILE`, or leave out --model to use the shipped one",
        ) from exc


def logit(p: float) -> float:
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))
