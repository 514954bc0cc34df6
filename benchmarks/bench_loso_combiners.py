"""Benchmark: combiner designs compared on the leave-source-out fold models, paired.

``bench_cascade.py loso --save-scores DIR`` keeps each fold's scores (both fold tiers on the fold's
calibration and held-out rows; :func:`stormwatch.detect.encoder_eval.save_fold_scores`). This
fits every combiner design below on each fold's rows as the build would (the calibration rows the
fold's first tier never fitted) and scores the held-out sources as ``leave_sources_out`` does, so
designs differ by the design alone. The design of the build (``build`` while it is ``linear``), under
``cross_fitted_negatives``, must reproduce the LOSO run's own ``cascade`` row: the check that this
path is the benchmark's.

    python benchmarks/bench_loso_combiners.py --scores DIR [--results benchmarks/results/loso_combiners.json]
                                              [--designs DESIGN ...]

Designs:

* ``build``: the shipped recipe (``fit_combiner_for``: logistic fit with C = ``COMBINER_C``, ``clear``
  line from the ladder). ``leave_sources_out``'s own ``cascade`` row is the same fit.
* ``source_balanced``: the same fit, each (source, label) group of rows weighing the same in total
  (the authored rows are most of the calibration split).
* ``c0.1``, ``c1``, ``c10``, ``c10000``: other strengths of the fit's L2 penalty (``c1``: the build's
  until session 2026-12-06, scikit-learn's default).
* ``route_all``: the build's combiner on every row (no ``clear`` line: what routing costs).
* ``max_tiers``: the larger of the first tier's probability and the build's combined score.
* ``trees_4x100``, ``trees_8x200``, ``trees_16x400``: the combiner's ``trees-LxR`` design
  (gradient-boosted trees over the same three features, increasing in both tiers' logits; leaves x
  rounds; presets on cross-fitted hard negatives).
* ``latin_trees_8x200``: trees for Latin-script rows, the build's linear fit for the others.
* ``trees_chosen``: the design ``choose_design`` picks among ``linear`` and those three by
  leave-source-out inside each fit's own rows (``fit_combiner_for(design="chosen")``); the picks are
  counted under ``choices``.

Every design is reported twice: with the pooled negatives scored by the design fitted on them
(harmless for three weights, flattering for trees; ``leave_sources_out`` scored them so until
session 2026-12-06 (b)), and under ``cross_fitted_negatives``, each calibration row scored by the
design fitted without it (5 folds of rows, each with its own ``clear`` line), as
``leave_sources_out`` scores them now. ~20 s without ``trees_chosen``, a few minutes with it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stormwatch.detect.combiner import Combiner, fit_combiner
from stormwatch.detect.combiner_select import choose_design
from stormwatch.detect.encoder_artifact import COMBINER_C, clear_line
from stormwatch.detect.encoder_eval import _source_metrics, _summary
from stormwatch.detect.train_params import PRESET_HARD_NEG_FPR

RESULTS = Path(__file__).parent / "results" / "loso_combiners.json"
Fold = dict[str, np.ndarray[Any, Any]]


def _scripts(non_latin: np.ndarray[Any, Any]) -> list[str]:
    return ["other" if x else "latin" for x in non_latin]


def _clear(fold: Fold, use: np.ndarray[Any, Any]) -> float:
    """The build's ``clear`` line on the rows in ``use``."""
    return clear_line(fold["cal_first"][use], fold["cal_label"][use] == 1, fold["cal_reason"][use])


def _fit(
    fold: Fold, mask: np.ndarray[Any, Any], *, c: float = COMBINER_C, balanced: bool = False, design: str = "linear"
) -> Combiner:
    """The build's combiner fit on the calibration rows in ``mask``."""
    weight = None
    if balanced:
        groups = [f"{s}\0{y}" for s, y in zip(fold["cal_source"][mask], fold["cal_label"][mask], strict=True)]
        count: dict[str, int] = defaultdict(int)
        for g in groups:
            count[g] += 1
        weight = np.array([len(groups) / (len(count) * count[g]) for g in groups])
    return fit_combiner(
        fold["cal_first"][mask],
        fold["cal_enc"][mask],
        _scripts(fold["cal_non_latin"][mask]),
        fold["cal_label"][mask],
        fold["cal_hard"][mask],
        fitted_for={},
        target_fpr=dict(PRESET_HARD_NEG_FPR),
        c=c,
        clear=_clear(fold, mask),
        sample_weight=weight,
        design=design,
    )


class _Fitted:
    """A fitted design: its combined score on every row of ``cal`` or ``ho``, its ``clear`` line and
    its ``balanced`` threshold (2 % FPR on the hard negatives it was fitted on)."""

    def __init__(self, score: Callable[[str], np.ndarray[Any, Any]], clear: float, balanced: float) -> None:
        self.score, self.clear, self.balanced = score, clear, balanced


def _linear(**kw: Any) -> Callable[[Fold, np.ndarray[Any, Any]], _Fitted]:
    def fit(fold: Fold, mask: np.ndarray[Any, Any]) -> _Fitted:
        comb = _fit(fold, mask, **kw)

        def score(prefix: str) -> np.ndarray[Any, Any]:
            return comb.combine(fold[f"{prefix}_first"], fold[f"{prefix}_enc"], _scripts(fold[f"{prefix}_non_latin"]))

        return _Fitted(score, comb.clear, comb.thresholds["balanced"])

    return fit


def _line_at(scores: np.ndarray[Any, Any], fpr: float) -> float:
    neg = np.sort(scores)[::-1]
    k = int(np.floor(fpr * len(neg)))
    return float(min(0.99, neg[k] + 1e-6)) if k < len(neg) else 0.5


def _chosen(fold: Fold, mask: np.ndarray[Any, Any]) -> str:
    """The design ``choose_design`` picks on the calibration rows in ``mask`` (as the build does)."""
    clear = _clear(fold, mask)
    routed = (fold["cal_first"][mask] >= clear) | fold["cal_reason"][mask]
    design, _ = choose_design(
        fold["cal_first"][mask], fold["cal_enc"][mask], _scripts(fold["cal_non_latin"][mask]),
        fold["cal_label"][mask], fold["cal_hard"][mask], fold["cal_source"][mask].tolist(), routed, c=COMBINER_C,
    )  # fmt: skip
    CHOICES.append(design)
    return design


CHOICES: list[str] = []


def _trees(design: str) -> Callable[[Fold, np.ndarray[Any, Any]], _Fitted]:
    """The build's combiner with another ``design`` (``trees-LxR``), or ``chosen`` per fit."""

    def fit(fold: Fold, mask: np.ndarray[Any, Any]) -> _Fitted:
        return _linear(design=_chosen(fold, mask) if design == "chosen" else design)(fold, mask)

    return fit


def _route(
    fold: Fold, prefix: str, combined: np.ndarray[Any, Any], clear: float, route_all: bool
) -> np.ndarray[Any, Any]:
    out = np.asarray(fold[f"{prefix}_first"], dtype=np.float64).copy()
    go = np.ones(len(out), dtype=bool) if route_all else (out >= clear) | fold[f"{prefix}_reason"]
    out[go] = combined[go]
    return out


def _design(
    fit: Callable[[Fold, np.ndarray[Any, Any]], _Fitted], route_all: bool = False, take_max: bool = False
) -> Any:
    def run(fold: Fold, cross_fit_negatives: bool = False) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        use = ~fold["cal_first_fitted"]
        model = fit(fold, use)
        cal = _route(fold, "cal", model.score("cal"), model.clear, route_all)
        if cross_fit_negatives:
            # each calibration row scored by the design fitted without it (5 folds of rows, its own
            # clear line), as leave_sources_out scores them: the pooled negatives are mostly the
            # design's own fitting rows, which a flexible design learns
            part = np.random.default_rng(0).integers(0, NEG_FOLDS, len(cal))
            for k in range(NEG_FOLDS):
                other = fit(fold, use & (part != k))
                cal[part == k] = _route(fold, "cal", other.score("cal"), other.clear, route_all)[part == k]
        ho = _route(fold, "ho", model.score("ho"), model.clear, route_all)
        thr = model.balanced
        if take_max:
            cal, ho = np.maximum(cal, fold["cal_first"]), np.maximum(ho, fold["ho_first"])
            thr = _line_at(cal[(fold["cal_label"] == 0) & fold["cal_hard"] & use], PRESET_HARD_NEG_FPR["balanced"])
        return ho, cal[fold["cal_label"] == 0], thr

    return run


NEG_FOLDS = 5
DESIGNS: dict[str, Any] = {
    "build": _design(_linear()),
    "source_balanced": _design(_linear(balanced=True)),
    "c0.1": _design(_linear(c=0.1)),
    "c1": _design(_linear(c=1.0)),
    "c10": _design(_linear(c=10.0)),
    "c10000": _design(_linear(c=10_000.0)),
    "route_all": _design(_linear(), route_all=True),
    "max_tiers": _design(_linear(), take_max=True),
    "trees_4x100": _design(_trees("trees-4x100")),
    "trees_8x200": _design(_trees("trees-8x200")),
    "trees_16x400": _design(_trees("trees-16x400")),
    "latin_trees_8x200": _design(_trees("latin-trees-8x200")),
    "trees_chosen": _design(_trees("chosen")),
}


def _paired(per: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    base = {e["held_out"]: e for e in per["build"] if e["malicious"]}
    paired: dict[str, Any] = {}
    for key in ("auprc", "recall_at_1pct_fpr"):
        diff = np.array([e[key] - base[e["held_out"]][key] for e in per[name] if e["malicious"]])
        rng = np.random.default_rng(0)
        boot = np.array([rng.choice(diff, len(diff)).mean() for _ in range(2000)])
        paired[key] = {
            "mean_difference": round(float(diff.mean()), 4),
            "better": int((diff > 0).sum()),
            "worse": int((diff < 0).sum()),
            "interval_95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
        }
    return paired


def evaluate(folds: list[Fold], cross_fit_negatives: bool = False, designs: list[str] | None = None) -> dict[str, Any]:
    names = ["build", *(d for d in designs if d != "build")] if designs else list(DESIGNS)
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for n, fold in enumerate(folds, start=1):
        by_src: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(fold["ho_source"]):
            by_src[str(s)].append(i)
        for name in names:
            ho, pooled_neg, thr = DESIGNS[name](fold, cross_fit_negatives)
            for src, idx in sorted(by_src.items()):
                per[name].append(_source_metrics(src, n, fold["ho_label"][idx], ho[idx], pooled_neg, thr))
    out: dict[str, Any] = {name: {"mean": _summary(rows), "sources": rows} for name, rows in per.items()}
    for name in per:
        if name != "build":
            out[name]["against_build"] = _paired(per, name)
    return out


def _table(res: dict[str, Any]) -> list[str]:
    lines = ["| design | mean AUPRC | recall at 1 % FPR | recall at balanced | AUPRC vs build (better/worse) |"]
    lines.append("|---|---|---|---|---|")
    for name in [d for d in DESIGNS if d in res]:
        m, vs = res[name]["mean"], res[name].get("against_build", {}).get("auprc")
        cmp = f"{vs['mean_difference']:+.4f} ({vs['better']}/{vs['worse']})" if vs else "-"
        lines.append(
            f"| {name} | {m['auprc']:.4f} | {m['recall_at_1pct_fpr']:.4f} | {m['recall_at_balanced']:.4f} | {cmp} |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", type=Path, required=True, help="the folder of bench_cascade.py loso --save-scores")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--designs", nargs="+", choices=list(DESIGNS), default=None, metavar="DESIGN",
                    help=f"only these (and build); default all: {', '.join(DESIGNS)}")  # fmt: skip
    ap.add_argument("--average", choices=["swa", "ema"], default=None,
                    help="the fold models' averaged weights (loso --averages): fold<N>-<AVERAGE>.npz")  # fmt: skip
    ns = ap.parse_args(argv)
    name = re.compile(rf"fold\d+{'-' + ns.average if ns.average else ''}\.npz")
    files = sorted(f for f in ns.scores.glob("fold*.npz") if name.fullmatch(f.name))
    if not files:
        raise SystemExit(f"{ns.scores}: no {name.pattern} (run bench_cascade.py loso --save-scores {ns.scores})")
    folds = [dict(np.load(f)) for f in files]
    res = evaluate(folds, designs=ns.designs)
    res["cross_fitted_negatives"] = evaluate(folds, cross_fit_negatives=True, designs=ns.designs)
    res["choices"] = {d: CHOICES.count(d) for d in sorted(set(CHOICES))}
    res["command"] = "python benchmarks/bench_loso_combiners.py " + " ".join(argv)
    ns.results.parent.mkdir(parents=True, exist_ok=True)
    ns.results.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    print("Pooled negatives scored by the design fitted on them (flatters flexible designs):")
    print("\n".join(_table(res)))
    print("\nPooled negatives cross-fitted (each scored by the design fitted without it, as leave_sources_out does):")
    print("\n".join(_table(res["cross_fitted_negatives"])))
    print(f"\ntrees_chosen picked: {res['choices']}")


if __name__ == "__main__":
    main()
