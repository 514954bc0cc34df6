"""What the second tier trains on: the recipe's configuration and its rows (step 2 of
:mod:`.encoder_train`'s recipe), without torch.

:func:`training_rows` samples the fitting and calibration rows from the vendored, multilingual and
authored sources: at most ``cap_per_source`` rows per (source, label), hard negatives and authored
rows whole, authored rows repeated (:func:`repeats`), ``holdout_sources`` left out, a hashed share of
the groups kept for calibration. :func:`recipe_record` is how a build records its configuration
(``meta.json`` ``config``, part of the version digest); :func:`config_from_record` reads it back.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stormwatch.detect.data import Row

__all__ = [
    "TrainConfig",
    "TrainRow",
    "calibration_split",
    "config_from_record",
    "hard_negative_sources",
    "is_hard_negative",
    "recipe_record",
    "repeats",
    "training_rows",
]


def hard_negative_sources() -> frozenset[str]:
    """Benign security questions: the first tier's hard negatives plus the multilingual false-refusal
    set and the Stack Exchange secrets questions (kept whole in training; the presets' FPR base)."""
    from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES

    return HARD_NEGATIVE_SOURCES | {"cyberseceval_frr_multilingual", "stackexchange_secrets"}


@dataclass(frozen=True)
class TrainConfig:
    layers: int = 6
    vocab_size: int = 80_000
    epochs: float = 1.0  # encoder-recipe-5 (recipe 4: 3 epochs)
    batch_size: int = 32
    lr: float = 1.2e-4  # encoder-recipe-5 (recipe 4: 6e-5; the cascade's model card says why)
    head_lr: float = 1e-3
    warmup: float = 0.06
    max_len: int = 128
    cap_per_source: int = 500
    authored_weight: int = 3
    authored_weights: tuple[tuple[str, int], ...] = ()  # (id prefix, repeats): overrides authored_weight
    calib_share: float = 0.12
    seed: int = 13
    threads: int = 2
    holdout_sources: tuple[str, ...] = ()
    max_rows: int | None = None  # smoke runs
    teacher: str | None = None  # a bigger encoder build (folder) or its saved logits (file) to distil from
    save_teacher_logits: str | None = None  # write the teacher's logits here (see save_teacher_logits)
    distill_weight: float = 0.5  # share of the misuse loss that follows the teacher's probability
    label_smoothing: float = 0.0  # misuse targets 0/1 -> eps/2, 1 - eps/2: bounds the logits
    weight_average: str = ""  # "swa" or "ema": ship the averaged weights (encoder_average)


@dataclass(frozen=True)
class TrainRow:
    text: str
    label: int
    source: str
    group: str
    cats: tuple[str, ...]
    split: str = "train"
    category: str = ""


def is_hard_negative(row: TrainRow) -> bool:
    """A benign security question: from a hard-negative source, or an authored defender's question."""
    if row.label:
        return False
    return row.source in hard_negative_sources() or (row.source == "authored" and row.category != "everyday")


def repeats(row: Row, cfg: TrainConfig) -> int:
    """How many times a fitting row is used: ``authored_weight`` for authored rows (or the first
    ``authored_weights`` entry whose prefix the row's id starts with), once for the rest."""
    if row.source != "authored":
        return 1
    return next((n for prefix, n in cfg.authored_weights if row.id.startswith(prefix)), cfg.authored_weight)


def config_from_record(conf: dict[str, Any]) -> TrainConfig:
    """The :class:`TrainConfig` a ``meta.json`` ``config`` record names (lists back to tuples)."""
    conf = dict(conf, holdout_sources=tuple(conf.get("holdout_sources", ())))
    conf["authored_weights"] = tuple((str(p), int(n)) for p, n in conf.get("authored_weights", ()))
    return TrainConfig(**conf)


def _bucket(key: str, seed: int) -> float:
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def calibration_split(group: str, share: float, seed: int) -> bool:
    return _bucket(group, seed) < share


def training_rows(rows: Sequence[Row], cfg: TrainConfig) -> tuple[list[TrainRow], list[TrainRow]]:
    """(fit rows, calibration rows), sampled as the module doc says; deterministic in ``cfg.seed``."""
    hard_negatives = hard_negative_sources()
    fit: list[TrainRow] = []
    calib: list[TrainRow] = []
    by_key: dict[tuple[str, int], list[Row]] = defaultdict(list)
    for r in rows:
        if not r.use or r.source in cfg.holdout_sources or not r.text.strip():
            continue
        by_key[(r.source, r.label)].append(r)
    for (source, _label), items in sorted(by_key.items()):
        items = sorted(items, key=lambda r: _bucket(r.id + r.text, cfg.seed))
        whole = source == "authored" or source in hard_negatives
        if not whole:
            items = items[: cfg.cap_per_source]
        for r in items:
            tr = TrainRow(r.text, r.label, r.source, r.group, r.cats, r.split, r.category)
            if calibration_split(r.group, cfg.calib_share, cfg.seed):
                calib.append(tr)
            else:
                fit.extend([tr] * repeats(r, cfg))
    rnd = random.Random(cfg.seed)
    rnd.shuffle(fit)
    rnd.shuffle(calib)
    if cfg.max_rows is not None:
        fit = fit[: cfg.max_rows]
        calib = calib[: max(cfg.max_rows // 4, 8)]
    return fit, calib


def recipe_record(cfg: TrainConfig) -> dict[str, Any]:
    """The recipe as a build records it (``meta.json`` ``config``, part of the version digest): the
    distillation settings only when there is a teacher (then the teacher's version replaces the
    path), never where a copy of the teacher's logits went."""
    skip = {"save_teacher_logits"} | ({"teacher", "distill_weight"} if cfg.teacher is None else set())
    skip |= {"label_smoothing"} if not cfg.label_smoothing else set()  # older builds' records unchanged
    skip |= {"weight_average"} if not cfg.weight_average else set()
    skip |= {"authored_weights"} if not cfg.authored_weights else set()
    return {
        k: (json.loads(json.dumps(v)) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items() if k not in skip
    }
