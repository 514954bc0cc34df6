"""Benchmark: combiner designs compared on the leave-source-out fold models, paired.

``bench_cascade.py loso --save-scores DIR`` keeps each fold's scores (both fold tiers on the fold's
calibration and held-out rows; :func:`stormwatch.detect.encoder_eval.save_fold_scores`). This
fits every combiner design below on each fold's rows as the build would (the calibration rows the
fold's first tier never fitted) and scores the held-out sources as ``leave_sources_out`` does, so
designs differ by the design alone. ``build`` must reproduce the LOSO run's own ``cascade`` row:
the check that this path is the benchmark's.

    python benchmarks/bench_loso_combiners.py --scores DIR [--results benchmarks/results/loso_combiners.json]

Designs:

* ``build``: the shipped recipe (``fit_combiner_for``: logistic fit with C = ``COMBINER_C``, ``clear``
  line from the ladder). ``leave_sources_out``'s own ``cascade`` row is the same fit.
* ``source_balanced``: the same fit, each (source, label) group of rows weighing the same in total
  (the authored rows are most of the calibration split).
* ``c0.1``, ``c1``, ``c10``, ``c10000``: other strengths of the fit's L2 penalty (``c1``: the build's
  until session 2026-12-06, scikit-learn's default).
* ``route_all``: the build's combiner on every row (no ``clear`` line: what routing costs).
* ``max_tiers``: the larger of the first tier's probability and the build's combined score.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from stormwatch.detect.cascade import CLEAR, CLEAR_LADDER
from stormwatch.detect.combiner import Combiner, fit_combiner
from stormwatch.detect.encoder_artifact import COMBINER_C
from stormwatch.detect.encoder_eval import _source_metrics, _summary
from stormwatch.detect.train_params import PRESET_HARD_NEG_FPR

RESULTS = Path(__file__).parent / "results" / "loso_combiners.json"
Fold = dict[str, np.ndarray[Any, Any]]


def _scripts(non_latin: np.ndarray[Any, Any]) -> list[str]:
    return ["other" if x else "latin" for x in non_latin]


def _clear(fold: Fold, use: np.ndarray[Any, Any], max_missed: float = 0.01) -> float:
    mal = use & (fold["cal_label"] == 1)
    if not mal.any():
        return CLEAR
    best = CLEAR
    for line in CLEAR_LADDER:
        if float(np.mean((fold["cal_first"][mal] < line) & ~fold["cal_reason"][mal])) <= max_missed:
            best = line
    return best


def _fit(fold: Fold, *, c: float = COMBINER_C, balanced: bool = False) -> Combiner:
    use = ~fold["cal_first_fitted"]
    weight = None
    if balanced:
        groups = [f"{s}\0{y}" for s, y in zip(fold["cal_source"][use], fold["cal_label"][use], strict=True)]
        count: dict[str, int] = defaultdict(int)
        for g in groups:
            count[g] += 1
        weight = np.array([len(groups) / (len(count) * count[g]) for g in groups])
    return fit_combiner(
        fold["cal_first"][use],
        fold["cal_enc"][use],
        _scripts(fold["cal_non_latin"][use]),
        fold["cal_label"][use],
        fold["cal_hard"][use],
        fitted_for={},
        target_fpr=dict(PRESET_HARD_NEG_FPR),
        c=c,
        clear=_clear(fold, use),
        sample_weight=weight,
    )


def _cascade(comb: Combiner, fold: Fold, prefix: str, route_all: bool = False) -> np.ndarray[Any, Any]:
    first = fold[f"{prefix}_first"]
    out = np.asarray(first, dtype=np.float64).copy()
    go = np.ones(len(out), dtype=bool) if route_all else (out >= comb.clear) | fold[f"{prefix}_reason"]
    if go.any():
        out[go] = comb.combine(first[go], fold[f"{prefix}_enc"][go], _scripts(fold[f"{prefix}_non_latin"][go]))
    return out


def _design(fit: Callable[[Fold], Combiner], route_all: bool = False, take_max: bool = False) -> Any:
    def run(fold: Fold) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], float]:
        comb = fit(fold)
        cal = _cascade(comb, fold, "cal", route_all)
        ho = _cascade(comb, fold, "ho", route_all)
        thr = comb.thresholds["balanced"]
        if take_max:
            cal, ho = np.maximum(cal, fold["cal_first"]), np.maximum(ho, fold["ho_first"])
            neg = np.sort(cal[(fold["cal_label"] == 0) & fold["cal_hard"] & ~fold["cal_first_fitted"]])[::-1]
            k = int(np.floor(PRESET_HARD_NEG_FPR["balanced"] * len(neg)))
            thr = float(min(0.99, neg[k] + 1e-6)) if k < len(neg) else 0.5
        return ho, cal[fold["cal_label"] == 0], thr

    return run


DESIGNS: dict[str, Any] = {
    "build": _design(_fit),
    "source_balanced": _design(lambda f: _fit(f, balanced=True)),
    "c0.1": _design(lambda f: _fit(f, c=0.1)),
    "c1": _design(lambda f: _fit(f, c=1.0)),
    "c10": _design(lambda f: _fit(f, c=10.0)),
    "c10000": _design(lambda f: _fit(f, c=10_000.0)),
    "route_all": _design(_fit, route_all=True),
    "max_tiers": _design(_fit, take_max=True),
}


def evaluate(folds: list[Fold]) -> dict[str, Any]:
    per: dict[str, list[dict[str, Any]]] = {name: [] for name in DESIGNS}
    for n, fold in enumerate(folds, start=1):
        by_src: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(fold["ho_source"]):
            by_src[str(s)].append(i)
        for name, run in DESIGNS.items():
            ho, pooled_neg, thr = run(fold)
            for src, idx in sorted(by_src.items()):
                per[name].append(_source_metrics(src, n, fold["ho_label"][idx], ho[idx], pooled_neg, thr))
    out: dict[str, Any] = {name: {"mean": _summary(rows), "sources": rows} for name, rows in per.items()}
    base = {e["held_out"]: e for e in per["build"] if e["malicious"]}
    for name, rows in per.items():
        if name == "build":
            continue
        paired: dict[str, Any] = {}
        for key in ("auprc", "recall_at_1pct_fpr"):
            diff = np.array([e[key] - base[e["held_out"]][key] for e in rows if e["malicious"]])
            rng = np.random.default_rng(0)
            boot = np.array([rng.choice(diff, len(diff)).mean() for _ in range(2000)])
            paired[key] = {
                "mean_difference": round(float(diff.mean()), 4),
                "better": int((diff > 0).sum()),
                "worse": int((diff < 0).sum()),
                "interval_95": [round(float(np.percentile(boot, 2.5)), 4), round(float(np.percentile(boot, 97.5)), 4)],
            }
        out[name]["against_build"] = paired
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scores", type=Path, required=True, help="the folder of bench_cascade.py loso --save-scores")
    ap.add_argument("--results", type=Path, default=RESULTS)
    ns = ap.parse_args(argv)
    files = sorted(ns.scores.glob("fold*.npz"))
    if not files:
        raise SystemExit(f"{ns.scores}: no fold*.npz (run bench_cascade.py loso --save-scores {ns.scores})")
    folds = [dict(np.load(f)) for f in files]
    res = evaluate(folds)
    res["command"] = "python benchmarks/bench_loso_combiners.py " + " ".join(argv)
    ns.results.parent.mkdir(parents=True, exist_ok=True)
    ns.results.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    print("| design | mean AUPRC | recall at 1 % FPR | recall at balanced | AUPRC vs build (better/worse) |")
    print("|---|---|---|---|---|")
    for name in DESIGNS:
        m, vs = res[name]["mean"], res[name].get("against_build", {}).get("auprc")
        cmp = f"{vs['mean_difference']:+.4f} ({vs['better']}/{vs['worse']})" if vs else "-"
        print(f"| {name} | {m['auprc']:.4f} | {m['recall_at_1pct_fpr']:.4f} | {m['recall_at_balanced']:.4f} | {cmp} |")


if __name__ == "__main__":
    main()
