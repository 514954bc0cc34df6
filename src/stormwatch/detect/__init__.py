"""Per-request misuse detection (the first tier): detectors, conversation rule, settings.

Scoring needs only numpy and the standard library; training needs the ``train`` extra.
"""

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
