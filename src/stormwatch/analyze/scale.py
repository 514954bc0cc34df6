"""Request scores on one scale for account judgement, whatever detector produced them.

Account judgement's thresholds (``params``: an event is *high* at 0.5, content 0.8 reaches review,
cohort members need 0.3 / 0.5 / 0.8, the account model's features count requests above 0.3 ... 0.9)
were set and fitted on the scale of the shipped first tier, whose presets flag 5 % / 2 % / 0.5 % of
benign security questions at 0.413 / 0.482 / 0.556 (strict / balanced / permissive). Other
detectors are calibrated probabilities too, but on other data: the cascade's combiner puts the same
three false-positive rates at 0.785 / 0.943 / 0.971, so on its raw scores a defender's question at
0.9 counts as "high-scoring content" and the review queue fills with security professionals, while
the rules that need corroborated content above 0.8 see every benign security question there.

:class:`ScoreScale` maps a model's score onto the reference scale through its presets: in logit space,
piecewise linear through (model preset -> reference preset) for the three presets, slope 1 beyond the
outer ones (a logit more above ``permissive`` stays a logit more). The map is monotone, so each
account's ranking by a single request is the model's own, and a preset means the same false-positive
rate on benign security questions whichever detector scored: a request at or above the model's
``balanced`` threshold is at or above 0.482 in analysis. The shipped first tier maps to itself
(identity, bit for bit). Category probabilities are scaled by the same factor as the request's
score, so their shares are kept.

``scale_for(store, version)`` finds the presets of a registered model version (stored with the
registration; for older registrations read from the artifact's files) and returns None (no mapping)
for the reference model, for a version the registry does not know, or when presets cannot be found.
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stormwatch.analyze.params import REFERENCE_PRESETS

__all__ = ["PRESET_NAMES", "ScoreScale", "describe", "presets_of", "scale_for"]

log = logging.getLogger(__name__)

PRESET_NAMES = ("strict", "balanced", "permissive")
_EPS = 1e-6


def _logits(p: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    q = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    out: np.ndarray[Any, np.dtype[np.float64]] = np.log(q) - np.log1p(-q)
    return out


@dataclass(frozen=True, slots=True)
class ScoreScale:
    """A monotone map of one model's request scores onto the reference scale (see the module doc)."""

    version: str
    model: tuple[float, ...]  # the model's preset thresholds (strict, balanced, permissive)
    reference: tuple[float, ...]  # the reference presets they map to

    @classmethod
    def from_presets(cls, version: str, presets: dict[str, float]) -> ScoreScale | None:
        """None when the presets are incomplete, not increasing, or equal to the reference (no map)."""
        try:
            model = tuple(float(presets[k]) for k in PRESET_NAMES)
        except (KeyError, TypeError, ValueError):
            return None
        reference = tuple(float(REFERENCE_PRESETS[k]) for k in PRESET_NAMES)
        if not all(0.0 < x < 1.0 for x in model) or any(b <= a for a, b in itertools.pairwise(model)):
            return None
        if all(abs(a - b) < 1e-9 for a, b in zip(model, reference, strict=True)):
            return None
        return cls(version, model, reference)

    def apply(self, scores: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The scores on the reference scale (same shape; 0 and 1 stay where they are)."""
        p = np.asarray(scores, dtype=np.float64)
        z, xs, ys = _logits(p), _logits(self.model), _logits(self.reference)
        mapped = np.interp(z, xs, ys)  # inside the presets: piecewise linear
        mapped = np.where(z < xs[0], z - xs[0] + ys[0], mapped)  # beyond: slope 1
        mapped = np.where(z > xs[-1], z - xs[-1] + ys[-1], mapped)
        out: np.ndarray[Any, np.dtype[np.float64]] = 1.0 / (1.0 + np.exp(-mapped))
        out = np.where(p <= 0.0, 0.0, np.where(p >= 1.0, 1.0, out))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "model_presets": dict(zip(PRESET_NAMES, self.model, strict=True)),
            "reference_presets": dict(zip(PRESET_NAMES, self.reference, strict=True)),
        }


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def presets_of(entry: Any) -> dict[str, float] | None:
    """The preset thresholds of a registry entry (``stormwatch.score.models.ModelEntry``): stored at
    registration, else read from its files (the combiner's for a cascade, ``meta.json`` for an
    encoder, the artifact for a first tier); None when they cannot be found."""
    stored = entry.metadata.get("presets")
    if isinstance(stored, dict) and stored:
        return {str(k): float(v) for k, v in stored.items()}
    try:
        if entry.kind == "cascade" and entry.encoder_path:
            data = _read_json(Path(entry.encoder_path) / "combiner.json")
            found = data.get("thresholds") if data else None
        elif entry.kind == "encoder" and entry.encoder_path:
            data = _read_json(Path(entry.encoder_path) / "meta.json")
            found = (data.get("presets") or data.get("thresholds")) if data else None
        elif entry.kind == "first_tier" and entry.path:
            from stormwatch.detect.model import load_model

            found = load_model(Path(entry.path)).thresholds
        else:
            found = None
    except Exception as exc:  # an unreadable artifact means "no map", said in the log
        log.warning("model %s: presets not readable (%s): its scores are used as they are", entry.version, exc)
        return None
    if not isinstance(found, dict):
        return None
    return {str(k): float(v) for k, v in found.items()}


def scale_for(store: Any, version: str) -> ScoreScale | None:
    """The map for the scores of model ``version`` in ``store`` (None: use them as they are)."""
    from stormwatch.score.models import get_model

    try:
        entry = get_model(store, version)
    except Exception:  # a store without a model registry (a test double, Spark chunks)
        return None
    if entry is None:
        return None
    presets = presets_of(entry)
    return ScoreScale.from_presets(version, presets) if presets else None


def describe(scale: ScoreScale | None) -> dict[str, Any] | None:
    """What ``analyze``'s summary reports as ``score_scale`` (None: the scores are used as they are)."""
    return scale.to_dict() if scale is not None else None
