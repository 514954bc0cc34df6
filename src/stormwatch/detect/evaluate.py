"""``stormwatch eval``: per-source and leave-one-source-out (LOSO) metrics.

Per source: the source's ``test`` rows (or all rows of a source given with ``--data``) are scored;
AUPRC / ROC AUC / recall at 1 % and 0.1 % FPR use the source's malicious rows as positives against
*all* benign test rows (pooled), so sources with one label still get a ranking metric. FPR columns
are the share of the source's benign rows flagged at the balanced preset.

LOSO: for each non-everyday source (and the everyday sources as one group) a model is trained
without that source, with the same recipe, and scored on all of its rows against the other
sources' benign test rows. Rows that are out of scope for fitting (``taxonomy.training_use``) are
reported per source but left out of the pooled in-scope figures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson

from stormwatch.datasets import EVERYDAY_SOURCES
from stormwatch.detect.data import Row
from stormwatch.detect.metrics import auprc, fpr_at, recall_at_fpr, roc_auc
from stormwatch.detect.model import FirstTierModel
from stormwatch.detect.scorer_protocol import Scorer
from stormwatch.detect.taxonomy import HARD_NEGATIVE_SOURCES
from stormwatch.vocab import LLMT_IDS

__all__ = ["evaluate", "finalize_artifact", "format_report"]

EVERYDAY = "everyday"


def _is_everyday(source: str) -> bool:
    return source in EVERYDAY_SOURCES


def _metrics(y: np.ndarray[Any, Any], s: np.ndarray[Any, Any], threshold: float) -> dict[str, float]:
    pos = s[y == 1]
    neg = s[y == 0]
    return {
        "auprc": auprc(y, s),
        "roc_auc": roc_auc(y, s),
        "recall_at_1pct_fpr": recall_at_fpr(y, s, 0.01),
        "recall_at_0.1pct_fpr": recall_at_fpr(y, s, 0.001),
        "recall_at_balanced": float(np.mean(pos >= threshold)) if len(pos) else float("nan"),
        "fpr_at_balanced": fpr_at(neg, threshold),
    }


def _source_table(
    model: Scorer, rows: Sequence[Row], pooled_neg: Sequence[Row]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    thr = model.thresholds
    all_rows = list(rows)
    scores = model.score_texts([r.text for r in all_rows])
    by_id = {id(r): float(sc) for r, sc in zip(all_rows, scores, strict=True)}
    neg_scores = np.array([by_id[id(r)] for r in pooled_neg])
    table: list[dict[str, Any]] = []
    for source in sorted({r.source for r in all_rows}):
        src = [r for r in all_rows if r.source == source]
        s_src = np.array([by_id[id(r)] for r in src])
        y_src = np.array([r.label for r in src])
        inscope = np.array([r.use for r in src])
        pos = s_src[(y_src == 1) & inscope]
        y = np.r_[np.ones(len(pos)), np.zeros(len(neg_scores))]
        m = _metrics(y.astype(np.int64), np.r_[pos, neg_scores], thr["balanced"])
        m["fpr_at_balanced"] = fpr_at(s_src[y_src == 0], thr["balanced"])
        table.append(
            {
                "source": source,
                "n": len(src),
                "malicious": int(y_src.sum()),
                "out_of_scope": int((~inscope).sum()),
                **m,
            }
        )
    ys = np.array([r.label for r in all_rows if r.use])
    ss = np.array([by_id[id(r)] for r in all_rows if r.use])
    hard = np.array([by_id[id(r)] for r in all_rows if r.label == 0 and r.source in HARD_NEGATIVE_SOURCES])
    every = np.array([by_id[id(r)] for r in all_rows if r.label == 0 and _is_everyday(r.source)])
    overall = {
        "n": len(ss),
        **_metrics(ys, ss, thr["balanced"]),
        "hard_negative_fpr": {k: fpr_at(hard, v) for k, v in sorted(thr.items())},
        "everyday_fpr": {k: fpr_at(every, v) for k, v in sorted(thr.items())},
        "thresholds": dict(sorted(thr.items())),
    }
    return table, overall


def evaluate(
    model: Scorer,
    rows: Sequence[Row],
    *,
    split: str | None = "test",
    loso: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The evaluation report as a dict (see module doc)."""
    eval_rows = [r for r in rows if split is None or r.split == split]
    pooled = [r for r in eval_rows if r.label == 0]
    table, overall = _source_table(model, eval_rows, pooled)
    report: dict[str, Any] = {
        "model_version": model.version,
        "split": split,
        "sources": table,
        "overall": overall,
    }
    if loso:
        from stormwatch.detect.train import train_artifact

        groups = sorted({EVERYDAY if _is_everyday(r.source) else r.source for r in rows})
        loso_rows: list[dict[str, Any]] = []
        for g in groups:
            if progress:
                progress(f"LOSO: holding out {g}")

            def held(r: Row, g: str = g) -> bool:
                return (EVERYDAY if _is_everyday(r.source) else r.source) == g

            m = FirstTierModel(train_artifact([r for r in rows if not held(r)]))
            ho = [r for r in rows if held(r) and r.use]
            negs = [r for r in rows if not held(r) and r.split == "test" and r.label == 0]
            ev = ho + negs
            s = m.score_texts([r.text for r in ev])
            y = np.array([r.label for r in ev], dtype=np.int64)
            met = _metrics(y, s, m.thresholds["balanced"])
            s_ho, y_ho = s[: len(ho)], y[: len(ho)]
            met["fpr_at_balanced"] = fpr_at(s_ho[y_ho == 0], m.thresholds["balanced"])
            met["recall_at_balanced"] = (
                float(np.mean(s_ho[y_ho == 1] >= m.thresholds["balanced"])) if y_ho.any() else float("nan")
            )
            loso_rows.append({"held_out": g, "n": len(ho), "malicious": int(y_ho.sum()), **met})
        report["loso"] = loso_rows
        with_pos = [r for r in loso_rows if r["malicious"] > 0]
        report["loso_mean"] = {
            k: float(np.nanmean([r[k] for r in with_pos]))
            for k in ("auprc", "roc_auc", "recall_at_1pct_fpr", "recall_at_0.1pct_fpr", "recall_at_balanced")
        }
        hn = [r["fpr_at_balanced"] for r in loso_rows if r["held_out"] in HARD_NEGATIVE_SOURCES]
        report["loso_mean"]["hard_negative_fpr_at_balanced"] = float(np.mean(hn)) if hn else float("nan")
    return report


def _f(v: Any) -> str:
    if isinstance(v, float):
        return "   -  " if np.isnan(v) else f"{v:6.3f}"
    return str(v)


def format_report(report: dict[str, Any]) -> str:
    cols = (
        "auprc",
        "roc_auc",
        "recall_at_1pct_fpr",
        "recall_at_0.1pct_fpr",
        "recall_at_balanced",
        "fpr_at_balanced",
    )
    head = f"{'source':<38} {'n':>6} {'mal':>5}  AUPRC  ROCAUC R@1%FPR R@.1%FPR R@bal  FPR@bal"
    lines = [
        f"model {report['model_version']}  (split: {report['split'] or 'all'})",
        "",
        head,
        "-" * len(head),
    ]
    for r in report["sources"]:
        name = r["source"] + (" *" if r["out_of_scope"] else "")
        lines.append(f"{name:<38} {r['n']:>6} {r['malicious']:>5} " + " ".join(_f(r[c]) for c in cols))
    o = report["overall"]
    lines.append(f"{'ALL (in scope)':<38} {o['n']:>6} {'':>5} " + " ".join(_f(o[c]) for c in cols))
    lines.append("")
    lines.append(
        "hard-negative FPR (benign security questions): "
        + ", ".join(f"{k} {v:.4f}" for k, v in o["hard_negative_fpr"].items())
    )
    lines.append(
        "everyday FPR:                                  "
        + ", ".join(f"{k} {v:.4f}" for k, v in o["everyday_fpr"].items())
    )
    lines.append("thresholds: " + ", ".join(f"{k} {v:.4f}" for k, v in o["thresholds"].items()))
    lines.append("* rows of this source are partly out of scope (not requests for misuse); left out of ALL")
    if "loso" in report:
        lines += [
            "",
            "leave-one-source-out (model retrained without the source)",
            head.replace("source", "held out", 1),
            "-" * len(head),
        ]
        for r in report["loso"]:
            lines.append(f"{r['held_out']:<38} {r['n']:>6} {r['malicious']:>5} " + " ".join(_f(r[c]) for c in cols))
        lm = report["loso_mean"]
        lines.append("LOSO mean over sources with malicious rows: " + ", ".join(f"{k} {v:.3f}" for k, v in lm.items()))
    return "\n".join(lines)


def finalize_artifact(art: dict[str, Any], rows: Sequence[Row]) -> dict[str, Any]:
    """Add the held-out test metrics (incl. each preset's FPR) and provenance to the artifact."""
    model = FirstTierModel(art)
    h = hashlib.sha256()
    for r in rows:
        h.update(orjson.dumps([r.id, r.source, r.text, r.label, r.split]))
    art["training"]["rows_sha256"] = h.hexdigest()
    art["taxonomy"] = {"ids": list(LLMT_IDS)}
    if any(r.split == "test" for r in rows):
        report = evaluate(model, rows, split="test", loso=False)
        o = report["overall"]
        art["metrics"] = {
            "split": "test",
            "auprc": round(o["auprc"], 4),
            "roc_auc": round(o["roc_auc"], 4),
            "recall_at_1pct_fpr": round(o["recall_at_1pct_fpr"], 4),
            "preset_fpr_benign_security": {k: round(v, 4) for k, v in o["hard_negative_fpr"].items()},
            "preset_fpr_everyday": {k: round(v, 4) for k, v in o["everyday_fpr"].items()},
        }
    return art
