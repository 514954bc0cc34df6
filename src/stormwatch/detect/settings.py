"""Detection settings: preset, threshold override and per-category thresholds.

Sources, later ones winning: defaults < ``stormwatch.toml`` ``[detect]`` (current directory, or the
path given) < ``STORMWATCH_DETECT_PRESET`` / ``STORMWATCH_DETECTORS`` < explicit CLI options::

    [detect]
    detectors = "first_tier"     # cascade | first_tier | encoder (see stormwatch.detect.scorer)
    preset = "balanced"          # strict | balanced | permissive
    threshold = 0.7              # optional: overrides the preset's threshold
    category_thresholds = { LLMT-04 = 0.6 }

Preset thresholds come from the model artifact (they are chosen when it is trained, by the
false-positive rate on benign security questions; see docs/detection.md).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stormwatch.vocab import LLMT_IDS

__all__ = ["PRESETS", "DetectSettings", "load_settings"]

PRESETS = ("strict", "balanced", "permissive")
PRESET_ENV = "STORMWATCH_DETECT_PRESET"
DETECTORS_ENV = "STORMWATCH_DETECTORS"


@dataclass(frozen=True)
class DetectSettings:
    preset: str = "balanced"
    threshold: float | None = None
    category_thresholds: dict[str, float] = field(default_factory=dict)
    detectors: str | None = None  # None: the command's default (classify: the cascade; the rest: the first tier)

    def resolved_threshold(self, preset_thresholds: dict[str, float]) -> float:
        if self.threshold is not None:
            return self.threshold
        return float(preset_thresholds[self.preset])


def _validate(preset: str, threshold: Any, cats: Any, detectors: Any = None) -> DetectSettings:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if threshold is not None and not (isinstance(threshold, int | float) and 0.0 <= float(threshold) <= 1.0):
        raise ValueError("threshold must be a number in [0, 1]")
    cats = dict(cats or {})
    for key, value in cats.items():
        if key not in LLMT_IDS:
            raise ValueError(f"unknown category {key!r} in category_thresholds")
        if not (isinstance(value, int | float) and 0.0 <= float(value) <= 1.0):
            raise ValueError(f"category threshold for {key} must be in [0, 1]")
    if detectors is not None and detectors not in ("cascade", "first_tier", "encoder"):
        raise ValueError(f"unknown detectors {detectors!r}; expected cascade, first_tier or encoder")
    return DetectSettings(
        detectors=None if detectors is None else str(detectors),
        preset=preset,
        threshold=None if threshold is None else float(threshold),
        category_thresholds={k: float(v) for k, v in sorted(cats.items())},
    )


def load_settings(
    path: str | Path | None = None,
    *,
    preset: str | None = None,
    threshold: float | None = None,
    env: dict[str, str] | None = None,
    detectors: str | None = None,
) -> DetectSettings:
    """Merge the settings sources (see module doc) into a validated :class:`DetectSettings`."""
    env = dict(os.environ) if env is None else env
    file = Path(path) if path is not None else Path("stormwatch.toml")
    section: dict[str, Any] = {}
    if file.is_file():
        with open(file, "rb") as fh:
            section = dict(tomllib.load(fh).get("detect", {}))
    chosen = preset or env.get(PRESET_ENV) or section.get("preset") or "balanced"
    thr = threshold if threshold is not None else section.get("threshold")
    return _validate(
        str(chosen),
        thr,
        section.get("category_thresholds"),
        detectors or env.get(DETECTORS_ENV) or section.get("detectors"),
    )
