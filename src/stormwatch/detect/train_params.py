"""First-tier training: the recipe's constants and :class:`TrainParams` (see :mod:`stormwatch.detect.train`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stormwatch.datasets import EVERYDAY_SOURCES as _EVERYDAY
from stormwatch.detect.features import FeatureSpec

MODEL_SERIES = "2.1"
# Bump when a change to the training code changes the fitted model for the same data and parameters:
# the version id names data + parameters + this revision, not the weights (see "Reproducibility").
RECIPE_REVISION = 3
QUANT_DIGITS = 6  # significant decimal digits of every stored weight, bias and calibration value
# Largest score difference (absolute, per prompt and per category) between two builds of one
# version on different CPUs / BLAS kernels; measured <= 1e-5 (docs/model-card.md, Reproducibility).
REBUILD_SCORE_TOLERANCE = 1e-4
FloatArray = npt.NDArray[np.float64]
Progress = Callable[[str], None]

# Everyday sources: benign traffic; each is its own source for balancing and vocabulary.
EVERYDAY_SOURCES = frozenset(_EVERYDAY)
# Hard-negative targets of the embedding head's presets (embedding.py imports this; unchanged).
PRESET_TARGET_FPR: dict[str, float] = {"strict": 0.05, "balanced": 0.015, "permissive": 0.005}
# First-tier presets: a preset's threshold is the largest of the thresholds meeting each of these
# false-positive rates (see ``choose_thresholds``):
#   benign security questions (hard negatives), ``val`` split, scored by the shipped model;
#   everyday prompts, ``val`` split, scored by the shipped model;
#   everyday prompts held out by source (cross-fitted: each scored by a model without its source).
PRESET_HARD_NEG_FPR: dict[str, float] = {"strict": 0.05, "balanced": 0.02, "permissive": 0.005}
PRESET_EVERYDAY_FPR: dict[str, float] = {"strict": 0.01, "balanced": 0.005, "permissive": 0.002}
PRESET_EVERYDAY_HELD_OUT_FPR: dict[str, float] = {"strict": 0.02, "balanced": 0.01, "permissive": 0.005}


@dataclass(frozen=True)
class TrainParams:
    # features (see features.py)
    bits: int = 18
    cat_bits: int = 16
    char_lo: int = 0  # 3 enables char 3-5-grams (supported, tested; off: no LOSO gain measured yet, 5x fit time)
    char_hi: int = 5
    char_weight: float = 0.5
    window: int = 512
    stride: int = 256
    # boilerplate stripping (training only)
    boiler_n: int = 8
    boiler_frac: float = 0.02
    boiler_min: int = 5
    # cross-source feature selection
    min_df: int = 2
    min_sources: int = 2
    min_mal_sources: int = 1
    min_benign_sources: int = 1
    # fit
    C: float = 64.0
    gtol: float = 1e-9  # every logistic fit runs until its projected gradient is below this (converged)
    max_iter: int = 3000  # a safety cap only: the misuse head converges in ~400 L-BFGS-B iterations
    cat_C: float = 1.0
    hard_negative_weight: float = 2.0
    everyday_weight: float = 6.0
    benign_share: float = 0.75
    min_cat_positives: int = 5
    # augmentation (fitting only): request framings on benign rows, benign context around attacks
    augment_frames: int = 1  # every k-th benign row gets a copy with a request framing (0: off)
    augment_context: int = 1  # every k-th malicious row gets a copy wrapped in benign context (0: off)
    augment_core: bool = True  # long rows of both labels also fit as their core ask (``core_ask``)
    core_min_tokens: int = 4
    core_max_tokens: int = 20
    # calibration: cross-fitted by source on the fit rows, with a benign-heavy prior
    calibration_folds: int = 4
    calibration_prior: float = 0.2
    preset_hard_neg_fpr: dict[str, float] = field(default_factory=lambda: dict(PRESET_HARD_NEG_FPR))
    preset_everyday_fpr: dict[str, float] = field(default_factory=lambda: dict(PRESET_EVERYDAY_FPR))
    preset_everyday_held_out_fpr: dict[str, float] = field(default_factory=lambda: dict(PRESET_EVERYDAY_HELD_OUT_FPR))

    def spec(self) -> FeatureSpec:
        return FeatureSpec(
            bits=self.bits, char_lo=self.char_lo, char_hi=self.char_hi, char_weight=self.char_weight,
            window=self.window, stride=self.stride, cat_bits=self.cat_bits,
        )  # fmt: skip


def _noop(_: str) -> None:
    return None
