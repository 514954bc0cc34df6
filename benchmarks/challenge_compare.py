"""Where two cascades disagree on the challenge sets, row by row (``bench_cascade.py challenge --against DIR``).

Both cascades score the same rows in the same run; the shift of a row is the difference of the two
scores' logits (``against`` minus the base). Reported per set, per set and LLMT category, and as the
rows that moved most the wrong way (malicious rows down, benign rows up) and the right way, so an
explanation of a change in the headline numbers (which topics, which styles) comes from a command.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

__all__ = ["bootstrap_headlines", "compare_rows", "markdown_compare"]

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
    idx = {
        "terse": [i for i, r in enumerate(rows) if r["set"] == "terse_operator" and r["y"] == 1],
        "defenders": [i for i, r in enumerate(rows) if r["set"] == "defender_questions" and r["y"] == 0],
        "non_english_malicious": [i for i, r in enumerate(rows) if r.get("lang") in non_english and r["y"] == 1],
    }
    if not idx["terse"] or not idx["defenders"]:
        return {}
    sets = {k: np.array(v, dtype=np.int64) for k, v in idx.items()}
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
