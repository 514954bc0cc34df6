"""Inline SVG drawn on the server: bar charts and the cluster graph (a deterministic force layout).

No script and no inline style: colours come from classes in ``console.css`` (the page's CSP allows
only its own stylesheet). Every label goes through :func:`markupsafe.escape`; each figure has a
``<title>`` and an ``aria-label`` and the page shows the same numbers as a table next to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["GraphEdge", "GraphNode", "bar_chart", "graph_svg", "layout", "stacked_bars"]

#: distinct series colours (classes s0..s7 in console.css)
SERIES = 8
#: above this many edges (nodes) the graph's edges (nodes) are labelled on hover only; the page's
#: table lists them all
EDGE_LABELS = 24
NODE_LABELS = 30


def _svg(width: int, height: int, title: str, body: list[str]) -> Markup:
    t = escape(title)
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{t}" class="chart"><title>{t}</title>'
    )
    return Markup(head + "".join(body) + "</svg>")


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return float(m * exp)
    return float(10 * exp)


def stacked_bars(
    title: str, columns: Sequence[str], series: Mapping[str, Sequence[float]], *, width: int = 720, height: int = 240
) -> Markup:
    """Vertical bars, one per column (a day), stacked by series (a TTP), with a legend."""
    left, right, top, bottom = 40, 150, 10, 40
    w, h = width - left - right, height - top - bottom
    names = list(series)
    totals = [sum(series[n][i] for n in names) for i in range(len(columns))]
    ymax = _nice_max(max(totals, default=0.0))
    body: list[str] = []
    for k in range(5):
        y = top + h - h * k / 4
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" class="grid"/>')
        body.append(f'<text x="{left - 4}" y="{y + 4:.1f}" class="axis" text-anchor="end">{ymax * k / 4:g}</text>')
    n = max(len(columns), 1)
    bw = w / n
    for i, col in enumerate(columns):
        y = top + h
        for s, name in enumerate(names):
            v = series[name][i]
            if v <= 0:
                continue
            bh = h * v / ymax
            y -= bh
            body.append(
                f'<rect x="{left + i * bw + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{bh:.1f}" '
                f'class="s{s % SERIES}"><title>{escape(col)} {escape(name)}: {v:g}</title></rect>'
            )
        if n <= 16 or i % math.ceil(n / 12) == 0:
            label = escape(col[5:] if len(col) == 10 else col)
            body.append(
                f'<text x="{left + i * bw + bw / 2:.1f}" y="{top + h + 14}" class="axis" text-anchor="middle">'
                f"{label}</text>"
            )
    for s, name in enumerate(names):
        y = top + 12 + s * 16
        body.append(f'<rect x="{left + w + 12}" y="{y - 9}" width="10" height="10" class="s{s % SERIES}"/>')
        body.append(f'<text x="{left + w + 26}" y="{y}" class="legend">{escape(name)}</text>')
    return _svg(width, height, title, body)


def bar_chart(
    title: str, items: Sequence[tuple[str, float]], *, width: int = 480, unit: str = "", classes: Sequence[str] = ()
) -> Markup:
    """Horizontal bars, one per (label, value); ``classes`` names each bar's class (default: s0, s1, ...)."""
    left, right, row = 130, 60, 22
    height = 10 + row * max(len(items), 1)
    w = width - left - right
    vmax = max((v for _, v in items), default=0.0) or 1.0
    body: list[str] = []
    for i, (label, v) in enumerate(items):
        y = 6 + i * row
        bw = w * v / vmax
        body.append(f'<text x="{left - 6}" y="{y + 13}" class="axis" text-anchor="end">{escape(label)}</text>')
        body.append(
            f'<rect x="{left}" y="{y}" width="{max(bw, 0.5):.1f}" height="{row - 6}" '
            f'class="{escape(classes[i]) if i < len(classes) else f"s{i % SERIES}"}">'
            f"<title>{escape(label)}: {v:g}{escape(unit)}</title></rect>"
        )
        body.append(f'<text x="{left + bw + 4:.1f}" y="{y + 13}" class="axis">{v:g}{escape(unit)}</text>')
    return _svg(width, height, title, body)


@dataclass(frozen=True, slots=True)
class GraphNode:
    id: str
    label: str
    kind: str  # css class: enforce | review | none | unjudged


@dataclass(frozen=True, slots=True)
class GraphEdge:
    a: str
    b: str
    label: str
    weight: float
    crowd: bool  # the shared value is a crowd's (VPN exit, NAT): it links nobody by itself


def layout(
    nodes: Sequence[str], edges: Sequence[tuple[str, str, float]], *, iterations: int = 200
) -> dict[str, tuple[float, float]]:
    """Fruchterman-Reingold in the unit square, from a fixed start (a circle): same input, same picture."""
    n = len(nodes)
    if n == 0:
        return {}
    if n == 1:
        return {nodes[0]: (0.5, 0.5)}
    order = sorted(nodes)
    idx = {v: i for i, v in enumerate(order)}
    pos = [[0.5 + 0.4 * math.cos(2 * math.pi * i / n), 0.5 + 0.4 * math.sin(2 * math.pi * i / n)] for i in range(n)]
    k = math.sqrt(1.0 / n)
    temp = 0.1
    pairs = [(idx[a], idx[b], max(w, 0.05)) for a, b, w in edges if a in idx and b in idx and a != b]
    for _ in range(iterations):
        disp = [[0.0, 0.0] for _ in range(n)]
        for i in range(n):
            for j in range(i + 1, n):
                dx, dy = pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]
                d = math.hypot(dx, dy) or 1e-6
                f = k * k / d
                disp[i][0] += dx / d * f
                disp[i][1] += dy / d * f
                disp[j][0] -= dx / d * f
                disp[j][1] -= dy / d * f
        for i, j, w in pairs:
            dx, dy = pos[i][0] - pos[j][0], pos[i][1] - pos[j][1]
            d = math.hypot(dx, dy) or 1e-6
            f = d * d / k * w
            disp[i][0] -= dx / d * f
            disp[i][1] -= dy / d * f
            disp[j][0] += dx / d * f
            disp[j][1] += dy / d * f
        for i in range(n):
            # a weak pull to the centre keeps unlinked parts in the picture
            disp[i][0] += (0.5 - pos[i][0]) * k
            disp[i][1] += (0.5 - pos[i][1]) * k
            d = math.hypot(*disp[i]) or 1e-6
            step = min(d, temp)
            pos[i][0] += disp[i][0] / d * step
            pos[i][1] += disp[i][1] / d * step
        temp = max(temp * 0.97, 0.002)
    # scale the drawing to fill the unit square (margins 0.05)
    xs, ys = [p[0] for p in pos], [p[1] for p in pos]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    return {
        v: (
            round(0.05 + 0.9 * (pos[idx[v]][0] - min(xs)) / sx, 4),
            round(0.05 + 0.9 * (pos[idx[v]][1] - min(ys)) / sy, 4),
        )
        for v in order
    }


def graph_svg(
    title: str, nodes: Sequence[GraphNode], edges: Sequence[GraphEdge], *, width: int = 760, height: int = 480
) -> Markup:
    """The cluster drawn: accounts as circles (class by level), shared attributes on the edges."""
    pos = layout([n.id for n in nodes], [(e.a, e.b, e.weight) for e in edges])
    pad = 40

    def xy(node: str) -> tuple[float, float]:
        x, y = pos[node]
        return pad + x * (width - 2 * pad), pad + y * (height - 2 * pad)

    body: list[str] = []
    for e in edges:
        if e.a not in pos or e.b not in pos:
            continue
        (x1, y1), (x2, y2) = xy(e.a), xy(e.b)
        cls = "edge crowd" if e.crowd else "edge"
        body.append(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" class="{cls}" '
            f'stroke-width="{1 + 3 * min(max(e.weight, 0.0), 1.0):.1f}"><title>{escape(e.label)}</title></line>'
        )
        if len(edges) <= EDGE_LABELS:
            body.append(
                f'<text x="{(x1 + x2) / 2:.1f}" y="{(y1 + y2) / 2 - 3:.1f}" class="edge-label" text-anchor="middle">'
                f"{escape(e.label[:28])}</text>"
            )
    for node in nodes:
        x, y = xy(node.id)
        body.append(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" class="node {escape(node.kind)}"><title>{escape(node.label)}'
            f"</title></circle>"
        )
        if len(nodes) <= NODE_LABELS:
            body.append(
                f'<text x="{x:.1f}" y="{y + 22:.1f}" class="node-label" text-anchor="middle">{escape(node.id)}</text>'
            )
    return _svg(width, height, title, body)
