"""The report's charts as inline SVG, drawn from the suppressed tables (no plotting library).

A suppressed cell is never drawn as a value: in the daily chart the part of a day's shown total that
its shown cells do not account for is one grey hatched segment (several suppressed cells together, as
the table's complementary suppression guarantees); a bar whose count is suppressed is drawn as an
empty outline labelled ``<k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

__all__ = ["accounts_chart", "daily_chart", "time_to_action_chart"]

#: colour-blind-safe palette (Okabe-Ito), one per column of the daily chart
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#999999", "#F0E442")
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'
_HATCH = (
    '<defs><pattern id="{id}" width="4" height="4" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
    '<rect width="4" height="4" fill="#ddd"/><line x1="0" y1="0" x2="0" y2="4" stroke="#888" stroke-width="1.5"/>'
    "</pattern></defs>"
)


def _num(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _text(x: float, y: float, s: str, *, anchor: str = "start", size: int = 11, extra: str = "") -> str:
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" font-size="{size}" {FONT}{extra}>{escape(s)}</text>'
    )


def _rect(x: float, y: float, w: float, h: float, fill: str, *, title: str = "", stroke: str = "") -> str:
    st = f' stroke="{stroke}" stroke-dasharray="3,2"' if stroke else ""
    inner = f"<title>{escape(title)}</title>" if title else ""
    return f'<rect x="{_num(x)}" y="{_num(y)}" width="{_num(w)}" height="{_num(h)}" fill="{fill}"{st}>{inner}</rect>'


def _svg(width: int, height: int, label: str, body: Sequence[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}">' + "".join(body) + "</svg>"
    )


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000):
        if v <= step * 5:
            return float(step * 5 if v > step * 4 else step * (int(v / step) + 1))
    return float(v * 1.1)


def daily_chart(table: dict[str, Any], k: int, *, width: int = 720, height: int = 300) -> str:
    """Stacked bars: flagged requests per day, one colour per LLM-TTP column, hatched = suppressed part."""
    rows, cols = table["rows"], table["cols"]
    totals = table["row_totals"] or [None] * len(rows)
    left, right, top, bottom = 44, 10, 12, 86
    plot_w, plot_h = width - left - right, height - top - bottom
    ymax = _nice_max(max([t for t in totals if isinstance(t, int)] or [0]))
    n = max(1, len(rows))
    bw = plot_w / n
    body = [_HATCH.format(id="hatch-daily")]
    for i in range(5):  # grid and y axis labels
        v = ymax * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" y1="{_num(y)}" x2="{width - right}" y2="{_num(y)}" stroke="#e5e5e5"/>')
        body.append(_text(left - 4, y + 4, _num(v), anchor="end", size=10))
    for i, row in enumerate(rows):
        x = left + i * bw + bw * 0.12
        w = bw * 0.76
        y = top + plot_h
        shown = 0
        for j, cell in enumerate(table["cells"][i]):
            if isinstance(cell, int) and cell > 0:
                h = plot_h * cell / ymax
                y -= h
                body.append(
                    _rect(x, y, w, h, PALETTE[j % len(PALETTE)], title=f"{row['label']} {cols[j]['label']}: {cell}")
                )
                shown += cell
        total = totals[i]
        if isinstance(total, int) and total > shown:
            h = plot_h * (total - shown) / ymax
            y -= h
            body.append(
                _rect(x, y, w, h, "url(#hatch-daily)", title=f"{row['label']}: {total - shown} in suppressed cells")
            )
        elif total is not None and not isinstance(total, int):
            body.append(_rect(x, top + plot_h - 6, w, 6, "none", stroke="#888", title=f"{row['label']}: {total}"))
        if n <= 40 and (i % max(1, n // 10) == 0):
            body.append(_text(x + w / 2, top + plot_h + 12, str(row["label"])[5:], anchor="middle", size=9))
    body.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{width - right}" y2="{top + plot_h}" stroke="#333"/>')
    # legend
    ly = top + plot_h + 28
    lx = left
    items = [(PALETTE[j % len(PALETTE)], c["key"] if c["key"] != "other" else "other") for j, c in enumerate(cols)]
    items.append(("url(#hatch-daily)", f"suppressed cells (<{k} accounts or withheld)"))
    for colour, name in items:
        wtxt = 7 * len(name) + 24
        if lx + wtxt > width - right:
            lx, ly = left, ly + 16
        body.append(_rect(lx, ly - 9, 10, 10, colour))
        body.append(_text(lx + 14, ly, name, size=10))
        lx += wtxt
    return _svg(width, height, str(table["title"]), body)


def _hbars(groups: Sequence[tuple[str, Sequence[tuple[str, Any]]]], k: int, label: str, *, width: int = 720) -> str:
    """Horizontal bars in labelled groups; a suppressed value is an empty outlined bar labelled as published."""
    values = [v for _, items in groups for _, v in items if isinstance(v, int)]
    vmax = max(values or [1]) or 1
    left, right, bar, gap = 250, 70, 16, 6
    rows = sum(len(items) + 1 for _, items in groups)
    10 + rows * (bar + gap)
    body: list[str] = []
    y = 10.0
    for title, items in groups:
        body.append(_text(4, y + bar - 4, title, size=11, extra=' font-weight="bold"'))
        y += bar + gap
        for name, v in items:
            body.append(_text(left - 8, y + bar - 4, name, anchor="end", size=10))
            if isinstance(v, int):
                w = (width - left - right) * v / vmax
                body.append(_rect(left, y, max(w, 1 if v else 0), bar, PALETTE[0], title=f"{name}: {v}"))
                body.append(_text(left + w + 4, y + bar - 4, f"{v:,}", size=10))
            else:
                w = (width - left - right) * min(1.0, (k - 1) / vmax)
                body.append(_rect(left, y, w, bar, "none", stroke="#888", title=f"{name}: {v}"))
                body.append(_text(left + w + 4, y + bar - 4, str(v), size=10))
            y += bar + gap
    return _svg(width, int(y + 4), label, body)


def accounts_chart(metrics: dict[str, Any], k: int) -> str:
    """Accounts by analysis outcome, and accounts actioned by severest action."""
    lv = metrics["accounts_by_level"]
    act = metrics["actioned_by_category"]
    groups = [
        (
            "Accounts active in the period, by outcome",
            [(r["label"], lv["cells"][i][0]) for i, r in enumerate(lv["rows"])],
        ),
        (
            "Accounts actioned, by severest action" + (" (planned, dry run)" if metrics.get("dry_run") else ""),
            [(c["label"], (act["col_totals"] or [])[j]) for j, c in enumerate(act["cols"])],
        ),
    ]
    return _hbars(groups, k, "Accounts by outcome and action")


def time_to_action_chart(metrics: dict[str, Any], k: int) -> str:
    t = metrics["time_to_action"]["table"]
    groups = [("Accounts, by time from first flagged request to first decision",
               [(r["label"], t["cells"][i][0]) for i, r in enumerate(t["rows"])])]  # fmt: skip
    return _hbars(groups, k, "Time to action")
