"""Where two cascades disagree on the challenge sets, row by row (``bench_cascade.py challenge --against DIR``).

Both cascades score the same rows in the same run; the shift of a row is the difference of the two
scores' logits (``against`` minus the base). Reported per set, per set and LLMT category, and as the
rows that moved most the wrong way (malicious rows down, benign rows up) and the right way, so an
explanation of a change in the headline numbers (which topics, which styles) comes from a command.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "bootstrap_headlines",
    "compare_fold_runs",
    "compare_rows",
    "load_fold_scores",
    "markdown_compare",
    "markdown_fold_compare",
    "save_fold_scores",
]

_EPS = 1e-6
_MOVED = 1.0  # |logit shift| counted as a move


def _logit(s: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    p = np.clip(np.asarray(s, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _row_view(r: dict[str, Any], before: float, after: float) -> dict[str, Any]:
    text = str(r["text"])
    return {
        "id": r.get("id"),
        "set": r["set"],
        "category": r.get("category") or "",
        "text": text if len(text) <= 140 else text[:137] + "...",
        "before": round(float(before), 4),
        "after": round(float(after), 4),
    }


def compare_rows(
    rows: list[dict[str, Any]],
    base: np.ndarray[Any, Any],
    other: np.ndarray[Any, Any],
    base_line: float,
    other_line: float,
    top: int = 10,
    draws: int = 1000,
) -> dict[str, Any]:
    """Per-set and per-(set, category) logit shifts, the flagged counts at each cascade's own line,
    the ``top`` rows moved most each way, and the headlines' differences with their intervals
    (:func:`bootstrap_headlines`). ``rows`` carry ``set``, ``y``, ``text`` (and ``lang``)."""
    if not (len(rows) == len(base) == len(other)):
        raise ValueError(f"{len(rows)} rows but {len(base)} and {len(other)} scores")
    shift = _logit(other) - _logit(base)
    y = np.array([r["y"] for r in rows], dtype=np.int64)
    harm = np.where(y == 1, -shift, shift)  # > 0: the wrong way for the row's label
    groups: dict[str, list[int]] = defaultdict(list)
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        groups[r["set"]].append(i)
        if r.get("category"):
            by_cat[f"{r['set']} {r['category']}"].append(i)

    def stats(idx: list[int]) -> dict[str, Any]:
        ix = np.array(idx)
        return {
            "n": len(idx),
            "mean_logit_shift": round(float(shift[ix].mean()), 4),
            "moved_wrong_way": int((harm[ix] >= _MOVED).sum()),
            "moved_right_way": int((harm[ix] <= -_MOVED).sum()),
            "flagged_before": int((base[ix] >= base_line).sum()),
            "flagged_after": int((other[ix] >= other_line).sum()),
        }

    worst, best = np.argsort(-harm, kind="stable"), np.argsort(harm, kind="stable")  # ties: row order
    return {
        "lines": {"base": float(base_line), "against": float(other_line)},
        "bootstrap": bootstrap_headlines(rows, base, other, draws=draws),
        "by_set": {k: stats(v) for k, v in sorted(groups.items())},
        "by_set_category": {k: stats(v) for k, v in sorted(by_cat.items())},
        "wrong_way": [_row_view(rows[i], base[i], other[i]) for i in worst[:top] if harm[i] > 0],
        "right_way": [_row_view(rows[i], base[i], other[i]) for i in best[:top] if harm[i] < 0],
    }


def _headlines(sets: dict[str, np.ndarray[Any, Any]], s: np.ndarray[Any, Any]) -> dict[str, float]:
    """The headline numbers from one cascade's scores ``s``; ``sets`` names the row indices of the
    terse asks, the defenders' questions and the non-English malicious prompts."""
    from stormwatch.detect.metrics import auprc

    terse, dfd, non_eng = s[sets["terse"]], s[sets["defenders"]], s[sets["non_english_malicious"]]
    line = float(np.quantile(dfd, 0.98, method="higher")) + 1e-9  # flags 2 % of the defenders' questions
    y = np.r_[np.ones(len(terse)), np.zeros(len(dfd))]
    return {
        "terse_vs_defenders_auprc": float(auprc(y, np.r_[terse, dfd])),
        "terse_at_defenders_2pct": 100 * float((terse >= line).mean()),
        "non_english_malicious_at_defenders_2pct": 100 * float((non_eng >= line).mean()) if len(non_eng) else 0.0,
    }


def bootstrap_headlines(
    rows: list[dict[str, Any]],
    base: np.ndarray[Any, Any],
    other: np.ndarray[Any, Any],
    draws: int = 1000,
    seed: int = 0,
    non_english: tuple[str, ...] = ("zh", "ru", "ko", "fa"),
) -> dict[str, Any]:
    """Each headline for both cascades, their difference, and its 95 % interval over ``draws``
    paired resamples of the rows (each group resampled apart, the same rows for both): how much of a
    difference the sets' size alone would produce. ``{}`` without terse asks or defenders' questions."""
    sets = _sets(rows, non_english)
    if not len(sets["terse"]) or not len(sets["defenders"]):
        return {}
    b, o = _headlines(sets, base), _headlines(sets, other)
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[float]] = {k: [] for k in b}
    for _ in range(draws):
        pick = {k: (rng.choice(v, len(v)) if len(v) else v) for k, v in sets.items()}
        hb, ho = _headlines(pick, base), _headlines(pick, other)
        for k in deltas:
            deltas[k].append(ho[k] - hb[k])
    out: dict[str, Any] = {"draws": draws}
    for k in b:
        lo, hi = np.quantile(deltas[k], [0.025, 0.975])
        out[k] = {
            "base": round(b[k], 4),
            "against": round(o[k], 4),
            "delta": round(o[k] - b[k], 4),
            "interval_95": [round(float(lo), 4), round(float(hi), 4)],
        }
    return out


def markdown_compare(cmp: dict[str, Any], base_version: str, other_version: str) -> str:
    """The comparison as markdown: the per-set table, then the rows moved most each way."""
    lines = [
        f"`{other_version}` against `{base_version}` (logit shift = against - base; "
        f"a move is |shift| >= {_MOVED:g}; flagged at each one's `balanced` line)",
        "",
    ]
    boot = cmp.get("bootstrap") or {}
    if boot:
        lines += [
            f"| headline | base | against | difference (95 % interval, {boot['draws']} paired resamples of the rows) |",
            "|---|---|---|---|",
        ]
        for k, v in boot.items():
            if k != "draws":
                lo, hi = v["interval_95"]
                lines.append(
                    f"| {k} | {v['base']:.3f} | {v['against']:.3f} | {v['delta']:+.3f} ({lo:+.3f} to {hi:+.3f}) |"
                )
        lines.append("")
    lines += [
        "| set | n | mean shift | wrong way | right way | flagged before -> after |",
        "|---|---|---|---|---|---|",
    ]
    for k, st in cmp["by_set"].items():
        lines.append(
            f"| {k} | {st['n']} | {st['mean_logit_shift']:+.2f} | {st['moved_wrong_way']} | "
            f"{st['moved_right_way']} | {st['flagged_before']} -> {st['flagged_after']} |"
        )
    for title, key in (("Moved most the wrong way", "wrong_way"), ("Moved most the right way", "right_way")):
        lines += ["", f"{title}:", "", "| set | category | before -> after | text |", "|---|---|---|---|"]
        for r in cmp[key]:
            text = " ".join(r["text"].split()).replace("|", "\\|")  # one table row, code blocks included
            lines.append(f"| {r['set']} | {r['category']} | {r['before']:.2f} -> {r['after']:.2f} | {text} |")
    return "\n".join(lines)


# -- leave-source-out fold replicates (``bench_cascade.py loso --save-scores DIR`` / ``loso-compare``) --
def save_fold_scores(folder: Path, ids: list[str], extra: dict[str, list[dict[str, Any]]]) -> list[Path]:
    """Every fold model's score of every challenge row, by system: one ``challenge-fold<N>.json`` per fold
    (``ids`` in the order of the scores), so two leave-source-out runs can be compared row by row later."""
    folder.mkdir(parents=True, exist_ok=True)
    by_fold: dict[int, dict[str, Any]] = defaultdict(dict)
    for system, folds in extra.items():
        for f in folds:
            scores = [round(float(x), 6) for x in np.asarray(f["scores"], dtype=np.float64)]
            if len(scores) != len(ids):
                raise ValueError(f"fold {f['fold']} {system}: {len(scores)} scores for {len(ids)} rows")
            by_fold[int(f["fold"])][system] = {"line": float(f["line"]), "scores": scores}
    written = []
    for fold, systems in sorted(by_fold.items()):
        path = folder / f"challenge-fold{fold}.json"
        path.write_text(json.dumps({"fold": fold, "ids": ids, "systems": systems}) + "\n", encoding="utf-8")
        written.append(path)
    return written


def load_fold_scores(folder: Path) -> dict[int, dict[str, Any]]:
    """The files :func:`save_fold_scores` wrote, by fold (a folder without any is an error)."""
    out: dict[int, dict[str, Any]] = {}
    for path in sorted(folder.glob("challenge-fold*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        out[int(data["fold"])] = data
    if not out:
        raise FileNotFoundError(f"{folder}: no challenge-fold<N>.json (run loso with --save-scores {folder})")
    return out


def compare_fold_runs(
    rows: list[dict[str, Any]],
    base: dict[int, dict[str, Any]],
    other: dict[int, dict[str, Any]],
    system: str = "cascade",
    draws: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Two leave-source-out runs on the challenge sets, fold by fold: the same fold of both runs holds
    out the same sources, so each fold is a paired replicate. Per fold each headline's difference
    (``bootstrap_headlines``: with its interval over paired resamples of the rows); then the mean
    difference over the folds, with the interval of that mean over resamples of the rows (the same
    rows for every fold in a draw) and the folds' spread (the training runs' own variance)."""
    folds = sorted(set(base) & set(other))
    if not folds:
        raise ValueError(f"no fold in both runs (base {sorted(base)}, other {sorted(other)})")
    by_id = {str(r["id"]): r for r in rows}
    per: list[dict[str, Any]] = []
    pairs: list[tuple[list[dict[str, Any]], np.ndarray[Any, Any], np.ndarray[Any, Any]]] = []
    for f in folds:
        fb, fo = base[f], other[f]
        if system not in fb["systems"] or system not in fo["systems"]:
            raise ValueError(f"fold {f}: no {system!r} scores in both runs")
        sb = dict(zip(fb["ids"], fb["systems"][system]["scores"], strict=True))
        so = dict(zip(fo["ids"], fo["systems"][system]["scores"], strict=True))
        ids = [i for i in fb["ids"] if i in so and i in by_id]  # rows both runs scored and still in the sets
        fr = [by_id[i] for i in ids]
        bs = np.array([sb[i] for i in ids], dtype=np.float64)
        os_ = np.array([so[i] for i in ids], dtype=np.float64)
        boot = bootstrap_headlines(fr, bs, os_, draws=draws, seed=seed)
        per.append({"fold": f, "rows": len(ids), **{k: v for k, v in boot.items() if k != "draws"}})
        pairs.append((fr, bs, os_))
    if any([r["id"] for r in fr] != [r["id"] for r in pairs[0][0]] for fr, _, _ in pairs):
        raise ValueError("the folds scored different challenge rows: compare runs made on the same sets")
    keys = [k for k in per[0] if k not in ("fold", "rows")]
    mean: dict[str, Any] = {}
    if keys:
        rng = np.random.default_rng(seed)
        draws_mean: dict[str, list[float]] = {k: [] for k in keys}
        sets0 = _sets(pairs[0][0])
        for _ in range(draws):
            pick = {k: (rng.choice(v, len(v)) if len(v) else v) for k, v in sets0.items()}
            deltas = []
            for _, base_s, other_s in pairs:  # the same rows in every fold (checked above)
                hb, ho = _headlines(pick, base_s), _headlines(pick, other_s)
                deltas.append({k: ho[k] - hb[k] for k in keys})
            for k in keys:
                draws_mean[k].append(float(np.mean([d[k] for d in deltas])))
        for k in keys:
            lo, hi = np.quantile(draws_mean[k], [0.025, 0.975])
            fold_deltas = [p[k]["delta"] for p in per]
            mean[k] = {
                "base": round(float(np.mean([p[k]["base"] for p in per])), 4),
                "against": round(float(np.mean([p[k]["against"] for p in per])), 4),
                "delta": round(float(np.mean(fold_deltas)), 4),
                "interval_95": [round(float(lo), 4), round(float(hi), 4)],
                "fold_deltas": fold_deltas,
            }
    return {"system": system, "folds": per, "mean": mean, "draws": draws}


def _sets(rows: list[dict[str, Any]], non_english: tuple[str, ...] = ("zh", "ru", "ko", "fa")) -> dict[str, Any]:
    idx = {
        "terse": [i for i, r in enumerate(rows) if r["set"] == "terse_operator" and r["y"] == 1],
        "defenders": [i for i, r in enumerate(rows) if r["set"] == "defender_questions" and r["y"] == 0],
        "non_english_malicious": [i for i, r in enumerate(rows) if r.get("lang") in non_english and r["y"] == 1],
    }
    return {k: np.array(v, dtype=np.int64) for k, v in idx.items()}


def markdown_fold_compare(cmp: dict[str, Any], base_name: str, other_name: str) -> str:
    """:func:`compare_fold_runs` as markdown: the mean over the folds, then each fold."""
    lines = [
        f"`{other_name}` against `{base_name}`, {cmp['system']}, leave-source-out fold replicates "
        f"(difference = other - base; 95 % interval over {cmp['draws']} paired resamples of the rows)",
        "",
        "| headline | base (mean) | other (mean) | mean difference (95 % interval) | per fold |",
        "|---|---|---|---|---|",
    ]
    for k, v in cmp["mean"].items():
        lo, hi = v["interval_95"]
        folds = ", ".join(f"{d:+.3f}" for d in v["fold_deltas"])
        lines.append(
            f"| {k} | {v['base']:.3f} | {v['against']:.3f} | {v['delta']:+.3f} ({lo:+.3f} to {hi:+.3f}) | {folds} |"
        )
    return "\n".join(lines)
