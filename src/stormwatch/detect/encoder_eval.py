"""Leave-source-out evaluation of the second tier (extra ``train-encoder``).

Retraining the encoder once per source (40+ sources, minutes each on a CPU) does not fit a working
session, so sources are held out in ``k`` folds (every source on its own, the everyday ones
too: holding all 16 everyday sources out at once would leave a fold model that has never seen
an ordinary request, which no deployed model is): each fold's model is fine-tuned by the same
recipe, for ``epochs`` passes, *without any row of the fold's sources*, and scores every row of
them. This is stricter than
leave-one-source-out (a quarter of the sources is missing, not one), never looser.

Per held-out source, as in :mod:`stormwatch.detect.evaluate`: its malicious rows are the positives
against the pooled benign rows (its own, plus the calibration-split benign rows of the sources the
fold model did see); AUPRC, recall at 1 % FPR, and recall / FPR at the fold model's own ``balanced``
threshold (2 % FPR on the hard negatives of its calibration split).

``trained_always`` sources (the benchmark's ``--public-folds``: the authored prompts) are never held
out: every fold model trains on them, the folds are cut over the other sources alone, and their
calibration rows are kept out of the pooled negatives. The means are then over the same held-out
sources, folds and negatives as a run without those sources in the data at all, so the pair
measures what they add to the ranking of the others.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from stormwatch.datasets import EVERYDAY_SOURCES
from stormwatch.detect.data import Row
from stormwatch.detect.encoder_average import WeightAverages
from stormwatch.detect.encoder_rows import TrainConfig, hard_negative_sources, is_hard_negative, training_rows
from stormwatch.detect.encoder_train import _first_window, build_model, fine_tune, predict_logits, prepare_base
from stormwatch.detect.metrics import auprc, recall_at_fpr

__all__ = [
    "EVERYDAY",
    "group_of",
    "is_everyday",
    "join_fold_runs",
    "leave_sources_out",
    "save_fold_scores",
    "source_folds",
]

EVERYDAY = "everyday"


def group_of(source: str) -> str:
    return source


def is_everyday(source: str) -> bool:
    return source in EVERYDAY_SOURCES


def source_folds(rows: Sequence[Row], k: int) -> dict[str, int]:
    """Groups -> fold, greedy by size (largest first, into the smallest fold); deterministic."""
    from stormwatch.detect.combiner_select import greedy_groups

    sizes: dict[str, int] = defaultdict(int)
    for r in rows:
        sizes[group_of(r.source)] += 1
    return greedy_groups(sizes, k)


def _fpr_threshold(neg: np.ndarray[Any, Any], fpr: float) -> float:
    if len(neg) == 0:
        return 0.0
    s = np.sort(neg)[::-1]
    k = int(np.floor(fpr * len(s)))
    return float(s[k] + 1e-9) if k < len(s) else float(s[-1])


def _source_metrics(
    src: str, fold: int, y: np.ndarray[Any, Any], s: np.ndarray[Any, Any], pooled_neg: np.ndarray[Any, Any], thr: float
) -> dict[str, Any]:
    pos = s[y == 1]
    neg = np.concatenate([s[y == 0], pooled_neg])
    entry: dict[str, Any] = {"held_out": src, "fold": fold, "n": len(y), "malicious": int(y.sum())}
    if len(pos):
        yy = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        ss = np.concatenate([pos, neg])
        entry["auprc"] = round(float(auprc(yy, ss)), 4)
        entry["recall_at_1pct_fpr"] = round(float(recall_at_fpr(yy, ss, 0.01)), 4)
        entry["recall_at_balanced"] = round(float(np.mean(pos >= thr)), 4)
    if (y == 0).any():
        entry["fpr_at_balanced"] = round(float(np.mean(s[y == 0] >= thr)), 4)
    return entry


def _summary(per_source: Sequence[dict[str, Any]]) -> dict[str, Any]:
    with_pos = [e for e in per_source if e["malicious"] > 0]
    mean: dict[str, Any] = {
        key: round(float(np.mean([e[key] for e in with_pos])), 4)
        for key in ("auprc", "recall_at_1pct_fpr", "recall_at_balanced")
    }
    hn = [e["fpr_at_balanced"] for e in per_source if e["held_out"] in hard_negative_sources()]
    mean["hard_negative_fpr_at_balanced"] = round(float(np.mean(hn)), 4) if hn else float("nan")
    ev = [e for e in per_source if is_everyday(e["held_out"])]
    if ev:
        n = sum(e["n"] for e in ev)
        mean["everyday_fpr_at_balanced"] = round(sum(e["fpr_at_balanced"] * e["n"] for e in ev) / n, 4)
    return mean


def join_fold_runs(runs: Sequence[dict[str, Any]], without: Sequence[str] = ()) -> dict[str, Any]:
    """Join :func:`leave_sources_out` reports of the same protocol run on different folds
    (``only_folds``) into one: per system its sources from every run and the means recomputed over
    all of them; with ``without``, also the means without those held-out sources (``mean_without``).
    One run alone gives its means again (with ``without``, the way to set a baseline beside a join).
    Refused (``ValueError``): no run, runs of different ``k`` or ``public_folds``, a
    fold or held-out source in two runs, a system missing from one, a ``without`` source held out
    by none."""
    if not runs:
        raise ValueError("nothing to join")
    for field in ("k", "public_folds"):
        if len({repr(r.get(field)) for r in runs}) > 1:
            raise ValueError(f"runs differ in {field!r}: {[r.get(field) for r in runs]}")
    systems = [s for s, v in runs[0].items() if isinstance(v, dict) and "sources" in v]
    out: dict[str, Any] = {"k": runs[0].get("k"), "public_folds": runs[0].get("public_folds")}
    for name in systems:
        if any(not isinstance(r.get(name), dict) or "sources" not in r[name] for r in runs):
            raise ValueError(f"system {name!r} is missing from a run")
        seen: dict[str, int] = {}
        for i, r in enumerate(runs):
            for e in r[name]["sources"]:
                if e["held_out"] in seen and seen[e["held_out"]] != i:
                    raise ValueError(f"{name}: {e['held_out']!r} (fold {e['fold']}) is held out in two runs")
                seen[e["held_out"]] = i
        per = sorted((e for r in runs for e in r[name]["sources"]), key=lambda e: (e["fold"], e["held_out"]))
        out[name] = {"mean": _summary(per), "sources": per}
        if without:
            missing = sorted(set(without) - {e["held_out"] for e in per})
            if missing:
                raise ValueError(f"--without {missing}: held out by none of the runs")
            out[name]["mean_without"] = _summary([e for e in per if e["held_out"] not in set(without)])
    if without:
        out["without"] = sorted(without)
    return out


def save_fold_scores(
    path: Path,
    calib: Sequence[Any],
    ft_cal: np.ndarray[Any, Any],
    cal_logits: np.ndarray[Any, Any],
    ho: Sequence[Any],
    ft_ho: np.ndarray[Any, Any],
    ho_logits: np.ndarray[Any, Any],
    first_sources: frozenset[str],
) -> None:
    """One fold's rows as arrays (``cal_*`` and ``ho_*``): source, label, hard negative, whether the
    fold's first tier fitted the row (``first_fitted``: a ``train`` row of a source it was trained
    on), whether the routing's script/lexicon reasons send it on (``reason``), non-Latin script,
    length in characters, the first tier's probability and the encoder's misuse logit. No text."""
    from stormwatch.detect.cascade import gate_reason, script_of

    def part(prefix: str, rs: Sequence[Any], first: Any, enc: Any) -> dict[str, Any]:
        return {
            f"{prefix}_source": np.array([r.source for r in rs], dtype=str),
            f"{prefix}_label": np.array([r.label for r in rs], dtype=np.int8),
            f"{prefix}_hard": np.array([is_hard_negative(r) for r in rs], dtype=bool),
            f"{prefix}_first_fitted": np.array([r.split == "train" and r.source in first_sources for r in rs]),
            f"{prefix}_reason": np.array([gate_reason(r.text) is not None for r in rs], dtype=bool),
            f"{prefix}_non_latin": np.array([script_of(r.text) != "latin" for r in rs], dtype=bool),
            f"{prefix}_chars": np.array([len(r.text) for r in rs], dtype=np.int32),
            f"{prefix}_first": np.asarray(first, dtype=np.float64),
            f"{prefix}_enc": np.asarray(enc, dtype=np.float64),
        }

    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **part("cal", calib, ft_cal, cal_logits), **part("ho", ho, ft_ho, ho_logits))


def _cascade(
    comb: Any, texts: Sequence[str], first: np.ndarray[Any, Any], enc: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """The cascade's score: the first tier's, or the combiner's where the ``clear`` line or the
    script/lexicon reasons send a text on."""
    from stormwatch.detect.cascade import gate_reason, script_of

    out = np.asarray(first, dtype=np.float64).copy()
    go = [i for i, t in enumerate(texts) if out[i] >= comb.clear or gate_reason(t) is not None]
    if go:
        out[go] = comb.combine(first[go], enc[go], [script_of(texts[i]) for i in go])
    return out


NEG_FOLDS = 5


def _crossed_cascade(
    ft: Any,
    rows: Sequence[Row],
    calib: Sequence[Any],
    ft_cal: np.ndarray[Any, Any],
    cal_logits: np.ndarray[Any, Any],
    enc_logits: Callable[[list[str]], np.ndarray[Any, Any]],
) -> np.ndarray[Any, Any]:
    """The cascade's score of each calibration row by the combiner fitted without it (the build's
    recipe on the other rows, ``NEG_FOLDS`` random parts): these rows are the pooled negatives every
    held-out source is ranked against, and a combiner scoring rows it was fitted on flatters itself
    (three weights hardly; trees a good deal, ``benchmarks/bench_loso_combiners.py``)."""
    from stormwatch.detect.encoder_artifact import fit_combiner_for

    part = np.random.default_rng(0).integers(0, NEG_FOLDS, len(calib))
    out = np.asarray(ft_cal, dtype=np.float64).copy()
    for k in range(NEG_FOLDS):
        idx = np.flatnonzero(part == k)
        fit = [r for r, p in zip(calib, part.tolist(), strict=True) if p != k]
        comb, _ = fit_combiner_for(ft, rows, fit, enc_logits, {}, lambda _m: None)
        out[idx] = _cascade(comb, [calib[int(i)].text for i in idx], ft_cal[idx], cal_logits[idx])
    return out


def _fold_scores(
    f: int,
    rows: Sequence[Row],
    held: tuple[str, ...],
    calib: Sequence[Any],
    ho: Sequence[Any],
    cal_logits: np.ndarray[Any, Any],
    ho_logits: np.ndarray[Any, Any],
    ft: Any,
    trained_always: frozenset[str],
    save_path: Path | None,
    progress: Callable[[str], None],
    extra: tuple[Sequence[str], np.ndarray[Any, Any]] = ((), np.zeros(0)),
) -> dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float, np.ndarray[Any, Any]]]:
    """One fold model's (held-out scores, pooled negatives' scores, ``balanced`` line, ``extra``
    texts' scores) per system: the encoder, and with a fold first tier ``ft`` the first tier and the
    cascade (see :func:`leave_sources_out`). ``extra``: texts scored besides, with their encoder logits."""
    from stormwatch.detect.encoder_artifact import fit_combiner_for

    cal_y = np.array([r.label for r in calib])
    hard = np.array([is_hard_negative(r) for r in calib])
    pooled = (cal_y == 0) & np.array([r.source not in trained_always for r in calib], dtype=bool)
    ex_texts, ex_logits = extra
    scores: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float, np.ndarray[Any, Any]]] = {
        "encoder": (ho_logits, cal_logits[pooled], _fpr_threshold(cal_logits[(cal_y == 0) & hard], 0.02), ex_logits)
    }
    if ft is None:
        return scores
    ft_cal = ft.score_texts([r.text for r in calib])
    ft_ho = ft.score_texts([r.text for r in ho])
    ft_ex = ft.score_texts(list(ex_texts)) if len(ex_texts) else np.zeros(0)
    scores["first_tier"] = (ft_ho, ft_cal[pooled], float(ft.thresholds["balanced"]), ft_ex)
    if save_path is not None:
        seen = frozenset(ft.artifact.get("training", {}).get("sources", {}))
        save_fold_scores(save_path, calib, ft_cal, cal_logits, ho, ft_ho, ho_logits, seen)
    rest = [r for r in rows if r.source not in held]
    by_text: dict[str, float] = dict(zip((r.text for r in calib), cal_logits.tolist(), strict=False))

    def enc_logits(texts: list[str]) -> np.ndarray[Any, Any]:
        return np.array([by_text[t] for t in texts])

    comb, _ = fit_combiner_for(ft, rest, calib, enc_logits, {}, progress)
    cas_ho = _cascade(comb, [r.text for r in ho], ft_ho, ho_logits)
    cas_cal = _crossed_cascade(ft, rest, calib, ft_cal, cal_logits, enc_logits)
    cas_ex = _cascade(comb, ex_texts, ft_ex, ex_logits) if len(ex_texts) else np.zeros(0)
    scores["cascade"] = (cas_ho, cas_cal[pooled], comb.thresholds["balanced"], cas_ex)
    progress(f"fold {f + 1}: cascade design {comb.design}, clear line {comb.clear}")
    return scores


def leave_sources_out(
    rows: Sequence[Row],
    cfg: TrainConfig,
    *,
    k: int = 4,
    first_tier_sources: frozenset[str] | None = None,
    save_scores: Path | None = None,
    trained_always: frozenset[str] = frozenset(),
    averages: Sequence[str] = (),
    only_folds: Sequence[int] = (),
    extra_texts: Sequence[str] = (),
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``k`` fold models and report per held-out source (see the module doc).

    ``save_scores`` (a folder): each fold's scores of its calibration and held-out rows by both fold
    tiers, with what the combiner and the routing need (:func:`save_fold_scores`), so combiner
    designs can be compared on the fold models later without fine-tuning them again.

    With ``first_tier_sources`` (the sources the shipped first tier is trained on), each fold also
    retrains the first tier on those sources minus the fold's, fits the fold's combiner as the build
    does (:func:`~stormwatch.detect.encoder_artifact.fit_combiner_for`: calibration rows neither tier
    fitted, its design as the build chooses it), and reports the first tier and the **cascade** on
    the same held-out rows; the cascade's pooled negatives are scored by combiners fitted without
    them (:func:`_crossed_cascade`). (Until session 2026-12-06 (b) a ``cascade_cross_fitted`` system
    reported the combiner fitted on cross-fitted first-tier scores beside it; it ranked 16 of 20
    sources lower and was dropped.) The cascade routes by the
    combiner's ``clear`` line and the script/lexicon reasons; the topic gate is not refitted per
    fold (it only sends more on).

    ``averages`` (``swa``, ``ema``: :mod:`.encoder_average`): each fold's fine-tune also keeps those
    averages of its late weights, and every system with an encoder is reported again for each
    (``encoder_swa``, ``cascade_swa``, ...; fold scores ``fold<N>-swa.npz``) beside the last weights:
    a paired comparison on the same fine-tune, folds and negatives.

    ``only_folds`` (1-based): fine-tune and report these folds only (the folds are cut as for all
    ``k``; the means are then over their sources alone). Folds are reproducible run to run, so a
    change that should matter to some held-out sources can be measured on their folds against a
    full run's rows for them.

    ``extra_texts`` (e.g. the challenge sets, which no fold trains on): every fold model scores them
    too; ``extra_scores`` of the report holds, per system, each fold's scores and ``balanced`` line
    (arrays, for the caller to summarise: k replicates of the recipe on texts from no training source).
    """
    from stormwatch.detect.model import FirstTierModel
    from stormwatch.detect.train import train_artifact

    if any(not 1 <= f <= k for f in only_folds):
        raise ValueError(f"only_folds {list(only_folds)}: folds are numbered 1 to {k}")
    rows = [r for r in rows if r.use and r.text.strip()]
    folds = source_folds([r for r in rows if r.source not in trained_always], k)
    systems: dict[str, list[dict[str, Any]]] = defaultdict(list)
    extra_scores: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for f in range(k):
        if only_folds and f + 1 not in only_folds:
            continue
        held = tuple(sorted(s for s in {r.source for r in rows} if s not in trained_always and folds[group_of(s)] == f))
        fcfg = replace(cfg, holdout_sources=held)
        fit, calib = training_rows(rows, fcfg)
        progress(f"fold {f + 1}/{k}: {len(held)} sources held out, {len(fit)} training rows")
        ho = [r for r in rows if r.source in held]
        base, prep = prepare_base(fcfg, [r.text for r in fit + calib + ho])
        model = build_model(base)
        tracker = WeightAverages(model, tuple(averages)) if averages else None
        fine_tune(model, prep, fit, fcfg, base.special["pad"], progress, on_step=tracker.update if tracker else None)
        pad = base.special["pad"]
        ft: Any = None
        if first_tier_sources is not None:
            progress(f"fold {f + 1}/{k}: retraining the first tier without the fold's sources")
            ft = FirstTierModel(
                train_artifact([r for r in rows if r.source in first_tier_sources and r.source not in held])
            )
        final = {n: t.clone() for n, t in model.state_dict().items()} if tracker is not None else None
        for variant in ("", *averages):
            if tracker is not None:
                model.load_state_dict(tracker.state(variant) if variant else final)
            cal_logits = predict_logits(model, _first_window(prep, [r.text for r in calib], fcfg.max_len), pad)[:, 0]
            ho_logits = predict_logits(model, _first_window(prep, [r.text for r in ho], fcfg.max_len), pad)[:, 0]
            ex_seqs = _first_window(prep, list(extra_texts), fcfg.max_len) if extra_texts else []
            ex_logits = predict_logits(model, ex_seqs, pad)[:, 0]
            scores = _fold_scores(
                f, rows, held, calib, ho, cal_logits, ho_logits, ft, trained_always,
                save_scores / f"fold{f + 1}{'-' + variant if variant else ''}.npz" if save_scores else None,
                progress, (extra_texts, ex_logits),
            )  # fmt: skip
            by_src: dict[str, list[int]] = defaultdict(list)
            for i, r in enumerate(ho):
                by_src[r.source].append(i)
            for name, (ho_s, pooled_neg, thr, ex_s) in scores.items():
                if len(extra_texts) and not (variant and name == "first_tier"):
                    key = name + ("_" + variant if variant else "")
                    extra_scores[key].append({"fold": f + 1, "scores": ex_s, "line": thr})
                for src, idx in sorted(by_src.items()):
                    y = np.array([ho[i].label for i in idx])
                    entry = _source_metrics(src, f + 1, y, ho_s[idx], pooled_neg, thr)
                    systems[name + ("_" + variant if variant and name != "first_tier" else "")].append(entry)
                    if not variant or name != "first_tier":
                        progress(f"  {name}{' ' + variant if variant else ''} {entry}")
    out: dict[str, Any] = {"k": k, "epochs": cfg.epochs}
    for name, per_source in systems.items():
        if per_source:
            out[name] = {"sources": per_source, "mean": _summary(per_source)}
    if extra_scores:
        out["extra_scores"] = dict(extra_scores)
    return out
