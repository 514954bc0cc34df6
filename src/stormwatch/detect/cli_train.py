"""``stormwatch train`` for the second tier: the encoder, its combiner and its topic gate.

The command and its options live in :mod:`stormwatch.detect.cli`; these build each part (the
encoder's recipe needs the ``train-encoder`` extra; the combiner and the gate need ``train`` and
``encoder``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from stormwatch.detect.data import default_data_paths, model_dir, read_rows

__all__ = ["parse_weight_for", "train_combiner", "train_encoder_artifact", "train_gate"]


def parse_weight_for(spec: str) -> tuple[str, int]:
    """``PREFIX=N`` (``--authored-weight-for``) -> (prefix, repeats); a clear error otherwise."""
    prefix, sep, n = spec.rpartition("=")
    if not sep or not prefix or not n.strip().isdigit() or not 1 <= int(n) <= 20:
        raise click.BadParameter(f"{spec!r}: expected PREFIX=N with N a whole number from 1 to 20")
    return prefix, int(n)


def second_tier_paths(data: tuple[str, ...], add: tuple[str, ...]) -> list[Path]:
    """The encoder's and the gate's training files: ``--data`` or every vendored and authored file, plus ``--add``."""
    from stormwatch.detect.data import authored_data_paths, more_data_paths

    base = [Path(d) for d in data] or [*default_data_paths(), *more_data_paths(), *authored_data_paths()]
    return base + [Path(a) for a in add]


def train_encoder_artifact(
    data: tuple[str, ...],
    add: tuple[str, ...],
    output: str | None,
    out: str | None,
    epochs: float | None,
    max_rows: int | None,
    progress: Any,
    *,
    layers: int,
    lr: float | None = None,
    authored_weight: int,
    authored_weights: tuple[tuple[str, int], ...] = (),
    seed: int = 13,
    teacher: str | None,
    save_teacher_logits: str | None,
    distill_weight: float,
    weight_average: str = "",
) -> None:
    from stormwatch.detect.encoder_artifact import build_encoder_artifact
    from stormwatch.detect.encoder_rows import TrainConfig

    if output is not None:
        raise click.UsageError("the encoder is a folder: give --out DIR (default: replace the packaged one)")
    if save_teacher_logits is not None and (teacher is None or not Path(teacher).is_dir()):
        raise click.UsageError("--save-teacher-logits needs --teacher DIR (an encoder folder)")
    rows = read_rows(second_tier_paths(data, add))
    parent = Path(out) if out is not None else model_dir()
    parent.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in parent.glob("encoder-*") if p.is_dir()) if out is None else []
    cfg = TrainConfig(
        layers=layers,
        lr=TrainConfig.lr if lr is None else lr,
        epochs=TrainConfig.epochs if epochs is None else epochs,
        max_rows=max_rows,
        authored_weight=authored_weight,
        authored_weights=authored_weights,
        seed=seed,
        teacher=teacher,
        save_teacher_logits=save_teacher_logits,
        distill_weight=distill_weight,
        weight_average=weight_average,
    )
    final = build_encoder_artifact(rows, parent, cfg, progress=progress)
    for p in old:
        if p != final:
            import shutil

            shutil.rmtree(p)
    click.echo(f"{final.name} -> {final}")


def train_gate(data: tuple[str, ...], add: tuple[str, ...], output: str | None, out: str | None, progress: Any) -> None:
    from stormwatch.detect.encoder_artifact import fit_cascade_gate
    from stormwatch.detect.gate import GATE_FILE

    folder = _encoder_folder(output, out, "gate")
    info = fit_cascade_gate(folder, read_rows(second_tier_paths(data, add)), progress=progress)
    click.echo(
        f"{info['version']} -> {folder / GATE_FILE} (line {info['line']:.4f}; "
        f"{info['calibration_missed']:.2%} of {info['calibration_malicious']} held-out malicious rows not sent on)"
    )


def _encoder_folder(output: str | None, out: str | None, what: str) -> Path:
    from stormwatch.detect.encoder import default_encoder_path

    if output is not None:
        raise click.UsageError(
            f"the {what} is written into an encoder folder: give --out ENCODER_DIR (default: the packaged one)"
        )
    folder = Path(out) if out is not None else default_encoder_path()
    if not (folder / "meta.json").is_file() or not (folder / "combiner.json").is_file():
        raise click.UsageError(f"{folder}: not an encoder folder with a combiner (meta.json, combiner.json)")
    return folder


def train_combiner(
    data: tuple[str, ...], add: tuple[str, ...], output: str | None, out: str | None, design: str, progress: Any
) -> None:
    """Refit ``combiner.json`` in an encoder folder with ``design`` (``chosen``: by leave-source-out
    inside its rows), as the encoder's build fits it. The topic gate stays (it does not read the
    combiner)."""
    from stormwatch.detect.combiner import parse_design
    from stormwatch.detect.encoder_artifact import fit_cascade_combiner, meta_config

    if design != "chosen":
        try:
            parse_design(design)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--combiner-design") from exc
    folder = _encoder_folder(output, out, "combiner")
    info = fit_cascade_combiner(
        folder, read_rows(second_tier_paths(data, add)), meta_config(folder), progress=progress, design=design
    )
    click.echo(
        f"{info['version']} -> {folder / 'combiner.json'} (design {info['design']}, {info['rows']['total']} rows; "
        f"balanced {info['thresholds']['balanced']:.4f})"
    )
