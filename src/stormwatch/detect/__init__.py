"""Per-request misuse detection (the first tier): detectors, conversation rule, settings.

Scoring needs only numpy and the standard library; training needs the ``train`` extra. The names
below are imported on first use (PEP 562), so that the built-in plugin ``stormwatch.detect.plugin``
costs nothing to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stormwatch.detect.base import (
        DEFAULT_DETECTORS,
        Detector,
        DetectorTags,
        KeywordDetector,
        available_detectors,
        check_detector,
        get_detector,
    )
    from stormwatch.detect.conversation import score_conversation
    from stormwatch.detect.model import FirstTierModel, load_model
    from stormwatch.detect.settings import DetectSettings, load_settings

_LAZY: dict[str, str] = {
    "DEFAULT_DETECTORS": "base", "Detector": "base", "DetectorTags": "base", "KeywordDetector": "base",
    "available_detectors": "base", "check_detector": "base", "get_detector": "base",
    "score_conversation": "conversation", "FirstTierModel": "model", "load_model": "model",
    "DetectSettings": "settings", "load_settings": "settings",
}  # fmt: skip

__all__ = [
    "DEFAULT_DETECTORS",
    "DetectSettings",
    "Detector",
    "DetectorTags",
    "FirstTierModel",
    "KeywordDetector",
    "available_detectors",
    "check_detector",
    "get_detector",
    "load_model",
    "load_settings",
    "score_conversation",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stormwatch.detect.{module}"), name)
    globals()[name] = value
    return value
