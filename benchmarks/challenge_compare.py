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

__all__ = ["compare_rows", "markdown_compare"]

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
) -> dict[str, Any]:
    """Per-set and per-(set, category) logit shifts, the flagged counts at each cascade's own line,
    and the ``top`` rows moved most each way. ``rows`` carry ``set``, ``y`` and ``text``."""
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
        "by_set": {k: stats(v) for k, v in sorted(groups.items())},
        "by_set_category": {k: stats(v) for k, v in sorted(by_cat.items())},
        "wrong_way": [_row_view(rows[i], base[i], other[i]) for i in worst[:top] if harm[i] > 0],
        "right_way": [_row_view(rows[i], base[i], other[i]) for i in best[:top] if harm[i] < 0],
    }


def markdown_compare(cmp: dict[str, Any], base_version: str, other_version: str) -> str:
    """The comparison as markdown: the per-set table, then the rows moved most each way."""
    lines = [
        f"`{other_version}` against `{base_version}` (logit shift = against - base; "
        f"a move is |shift| >= {_MOVED:g}; flagged at each one's `balanced` line)",
        "",
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
