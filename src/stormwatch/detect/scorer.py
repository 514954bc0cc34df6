"""Choosing the detectors: one function every command and endpoint calls.

``load_scorer(name)`` returns an object with the first tier's scoring interface (``version``,
``thresholds``, ``score_with_categories``, ``score_texts``, ``explain_text``):

* ``first_tier``: the lexical model alone (fast; English-centred); the default of ``score``,
  ``analyze``, ``serve`` and ``eval`` (:data:`DEFAULT_DETECTORS`);
* ``cascade``: first tier -> gate -> encoder -> combiner (:mod:`.cascade`); the default of
  ``classify`` (:data:`CLASSIFY_DEFAULT_DETECTORS`: per-request screening, where quality matters
  and volume is small), opt-in elsewhere until account judgement is refitted to its scores and
  while it is ~26x slower at platform scale (``docs/detection.md`` has the measurement);
* ``encoder``: the second tier alone, on every prompt (for evaluation).

The choice comes from ``--detectors``, else ``STORMWATCH_DETECTORS``, else ``[detect] detectors``
in ``stormwatch.toml``, else the command's default (:func:`resolve_detectors`). Asking for
``cascade`` or ``encoder`` without the ``encoder`` extra (onnxruntime, tokenizers) or its artifact
is an input error; when the command's default needs the extra and it is missing (``classify``),
the first tier is used with one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.detect.scorer_protocol import Scorer
from stormwatch.errors import InputError

__all__ = [
    "CLASSIFY_DEFAULT_DETECTORS",
    "DEFAULT_DETECTORS",
    "DETECTOR_CHOICES",
    "EncoderOnly",
    "Scorer",
    "load_scorer",
    "resolve_detectors",
    "scorer_for",
]

DETECTOR_CHOICES = ("cascade", "first_tier", "encoder")
#: score, analyze, serve and eval: the cascade is opt-in there until account judgement is refitted to it
DEFAULT_DETECTORS = "first_tier"
#: classify (per-request screening): the cascade, or the first tier with a warning without the encoder
CLASSIFY_DEFAULT_DETECTORS = "cascade"
log = logging.getLogger(__name__)
_warned: set[str] = set()


class EncoderOnly:
    """The second tier alone, with the first tier's interface."""

    def __init__(self, path: str | Path | None = None) -> None:
        from stormwatch.detect.encoder import load_encoder

        self.encoder = load_encoder(path)
        self.version = self.encoder.version
        self.thresholds = dict(self.encoder.thresholds)

    def score_with_categories(self, texts: Sequence[str]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        return self.encoder.score_with_categories(texts)

    def score_texts(self, texts: Sequence[str]) -> npt.NDArray[np.float64]:
        return self.encoder.score_with_categories(texts)[0]

    def explain_text(self, text: str, top: int = 8) -> list[dict[str, Any]]:
        return self.encoder.explain_text(text, top=top)


def resolve_detectors(configured: str | None, default: str = DEFAULT_DETECTORS) -> tuple[str, bool]:
    """(name, asked_for) from the settings' value (CLI option > environment > stormwatch.toml), else
    the command's ``default`` (not asked for: a missing encoder falls back to the first tier)."""
    if configured:
        if configured not in DETECTOR_CHOICES:
            raise InputError(f"unknown detectors {configured!r}", hint=f"one of {', '.join(DETECTOR_CHOICES)}")
        return configured, True
    if default not in DETECTOR_CHOICES:
        raise ValueError(f"unknown default detectors {default!r}")
    return default, False


def scorer_for(settings: Any, *, model_path: str | Path | None = None, encoder_path: str | Path | None = None) -> Any:
    """The scorer the settings (``DetectSettings``) choose."""
    name, asked = resolve_detectors(getattr(settings, "detectors", None))
    return load_scorer(name, model_path=model_path, encoder_path=encoder_path, asked=asked)


def encoder_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    from stormwatch.detect.encoder import default_encoder_path

    try:
        return default_encoder_path().is_dir()  # STORMWATCH_ENCODER may name a folder that is not there
    except FileNotFoundError:
        return False


def load_scorer(
    name: str = DEFAULT_DETECTORS,
    *,
    model_path: str | Path | None = None,
    encoder_path: str | Path | None = None,
    asked: bool = True,
) -> Any:
    """The scorer ``name`` (see the module doc); ``model_path`` is the first tier's artifact."""
    from stormwatch.detect.model import load_model

    if name == "first_tier":
        return load_model(model_path)
    if encoder_path is None and not asked and not encoder_available():
        if name not in _warned:
            _warned.add(name)
            log.warning(
                "the %s detectors need the encoder extra (pip install 'stormwatch[encoder]'); "
                "using the first tier alone",
                name,
            )
        return load_model(model_path)
    if name == "encoder":
        return EncoderOnly(encoder_path)
    if name == "cascade":
        from stormwatch.detect.cascade import load_cascade

        return load_cascade(model_path, encoder_path)
    raise InputError(f"unknown detectors {name!r}", hint=f"one of {', '.join(DETECTOR_CHOICES)}")
