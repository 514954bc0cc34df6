"""k-suppression: the one place every aggregate cell of a report passes through.

A table is cells (rows x columns) with, optionally, row totals, column totals and a grand total.
Every cell and total is a count; ``contributors`` says how many distinct accounts stand behind it
(by default the count itself: a table of accounts).

* **Primary suppression**: a count with 1..k-1 contributors is shown as ``"<k"`` (``"<10"``).
  Zero is shown: it names nobody.
* **Complementary suppression**: a published total must not give a suppressed cell back. Every
  total is an equation (``total = sum of its cells``); a suppressed value must not be the only unknown
  of an equation, nor be pinned by the equations together. The second is checked with two linear
  programmes per suppressed value (its least and greatest value given everything shown: cells >= 0,
  a ``"<k"`` account count between 1 and k-1); while one is pinned, another cell is withheld,
  shown as ``"-"`` (and when everything is withheld already, a ``"<k"`` becomes ``"-"``: the
  bounds it tells are what pins it).

Nothing else in :mod:`stormwatch.report` prints a count that did not come out of :func:`suppress`
(or :func:`count`, a table of one cell).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["WITHHELD", "Cell", "SuppressedTable", "count", "is_shown", "suppress"]

#: what a complementary-suppressed cell shows
WITHHELD = "-"
#: a cell as published: a count, ``"<k"`` (fewer than k accounts) or ``"-"`` (withheld)
Cell = int | str


def below(k: int) -> str:
    return f"<{k}"


def is_shown(cell: Cell) -> bool:
    return isinstance(cell, int)


@dataclass(frozen=True, slots=True)
class SuppressedTable:
    """A table after suppression (``None`` where the table has no such total)."""

    cells: tuple[tuple[Cell, ...], ...]
    row_totals: tuple[Cell, ...] | None
    col_totals: tuple[Cell, ...] | None
    total: Cell | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cells": [list(r) for r in self.cells],
            "row_totals": None if self.row_totals is None else list(self.row_totals),
            "col_totals": None if self.col_totals is None else list(self.col_totals),
            "total": self.total,
        }


def count(n: int, k: int, *, contributors: int | None = None) -> Cell:
    """One count on its own (no total beside it): ``n``, or ``"<k"`` when 1..k-1 accounts stand behind it."""
    return suppress([[n]], k, contributors=None if contributors is None else [[contributors]]).cells[0][0]


def _check(values: Sequence[Sequence[int]], width: int | None = None) -> tuple[int, int]:
    rows = len(values)
    cols = len(values[0]) if rows else (width or 0)
    for r in values:
        if len(r) != cols:
            raise ValueError("a table's rows must have the same length")
        for v in r:
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"a count must be a whole number >= 0, got {v!r}")
    return rows, cols


def suppress(
    values: Sequence[Sequence[int]],
    k: int,
    *,
    row_totals: bool = False,
    col_totals: bool = False,
    grand_total: bool = False,
    contributors: Sequence[Sequence[int]] | None = None,
    total_contributors: tuple[Sequence[int] | None, Sequence[int] | None, int | None] | None = None,
    width: int | None = None,
) -> SuppressedTable:
    """Suppress ``values`` (rows of counts) for threshold ``k``; the totals asked for are computed here.

    ``contributors`` (same shape): distinct accounts per cell, when a cell counts something else
    (requests); ``total_contributors``: (per row total, per column total, grand total) likewise,
    since accounts of a row are not the sum of its cells' accounts. Without them a count is its own
    number of contributors (and a ``"<k"`` cell is known to lie in 1..k-1). ``width``: the number of
    columns when there is no row.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n_rows, n_cols = _check(values, width)
    counts_accounts = contributors is None
    if contributors is not None and _check(contributors, width) != (n_rows, n_cols):
        raise ValueError("contributors must have the shape of values")
    tc = total_contributors or (None, None, None)

    # variables: cells (row-major), then row totals, column totals, the grand total
    val: list[int] = [v for r in values for v in r]
    con: list[int] = [c for r in (contributors or values) for c in r]
    cell_var = [[i * n_cols + j for j in range(n_cols)] for i in range(n_rows)]
    equations: list[list[tuple[int, int]]] = []  # (variable, coefficient) with sum == 0
    row_var: list[int] = []
    col_var: list[int] = []
    grand_var: int | None = None
    if row_totals:
        for i in range(n_rows):
            row_var.append(len(val))
            s = sum(values[i])
            val.append(s)
            con.append(s if tc[0] is None else int(tc[0][i]))
            equations.append([(row_var[-1], 1), *((v, -1) for v in cell_var[i])])
    if col_totals:
        for j in range(n_cols):
            col_var.append(len(val))
            s = sum(values[i][j] for i in range(n_rows))
            val.append(s)
            con.append(s if tc[1] is None else int(tc[1][j]))
            equations.append([(col_var[-1], 1), *((cell_var[i][j], -1) for i in range(n_rows))])
    if grand_total:
        grand_var = len(val)
        s = sum(val[: n_rows * n_cols])
        val.append(s)
        con.append(s if tc[2] is None else int(tc[2]))
        equations.append([(grand_var, 1), *((v, -1) for row in cell_var for v in row)])
        if row_var:
            equations.append([(grand_var, 1), *((v, -1) for v in row_var)])
        if col_var:
            equations.append([(grand_var, 1), *((v, -1) for v in col_var)])

    primary = {v for v in range(len(val)) if 0 < con[v] < k}
    hidden = set(primary)
    marked = set(primary)  # shown as "<k", so known to be >= 1 (and <= k-1 for accounts)
    n_cells = n_rows * n_cols

    def partner(eq: list[tuple[int, int]], exclude: set[int]) -> int | None:
        """The visible variable of ``eq`` cheapest to withhold: a cell before a total, positive before zero."""
        options = [v for v, _ in eq if v not in exclude]
        if not options:
            return None
        return min(options, key=lambda v: (v >= n_cells, val[v] == 0, val[v], v))

    while True:
        changed = True
        while changed:  # no equation with exactly one unknown
            changed = False
            for eq in equations:
                unknown = [v for v, _ in eq if v in hidden]
                if len(unknown) == 1:
                    p = partner(eq, hidden)
                    if p is not None:
                        hidden.add(p)
                        changed = True
        pinned = _pinned(val, hidden, marked, equations, k, counts_accounts)
        if pinned is None:
            break
        touching = [eq for eq in equations if any(v == pinned for v, _ in eq)]
        extra = next((p for eq in touching if (p := partner(eq, hidden)) is not None), None)
        if extra is None:  # every variable of its equations is withheld already: withhold the rest
            rest = [v for v in range(len(val)) if v not in hidden]
            if rest:
                extra = min(rest, key=lambda v: (val[v] == 0, val[v], v))
            elif marked:  # all withheld, and the "<k" bounds still pin it: show "-" instead (no bounds)
                marked.discard(pinned if pinned in marked else min(marked))
                continue
            else:
                break
        hidden.add(extra)

    def show(v: int) -> Cell:
        if v not in hidden:
            return val[v]
        return below(k) if v in marked else WITHHELD

    return SuppressedTable(
        cells=tuple(tuple(show(v) for v in row) for row in cell_var),
        row_totals=tuple(show(v) for v in row_var) if row_totals else None,
        col_totals=tuple(show(v) for v in col_var) if col_totals else None,
        total=show(grand_var) if grand_var is not None else None,
    )


def _pinned(
    val: list[int],
    hidden: set[int],
    marked: set[int],
    equations: list[list[tuple[int, int]]],
    k: int,
    counts_accounts: bool,
) -> int | None:
    """A withheld variable whose value the shown ones determine (to within less than 1), or None."""
    if not hidden:
        return None
    order = sorted(hidden)
    index = {v: i for i, v in enumerate(order)}
    a_eq: list[list[float]] = []
    b_eq: list[float] = []
    for eq in equations:
        if not any(v in hidden for v, _ in eq):
            continue
        row = [0.0] * len(order)
        rhs = 0.0
        for v, c in eq:
            if v in hidden:
                row[index[v]] += c
            else:
                rhs -= c * val[v]
        a_eq.append(row)
        b_eq.append(rhs)
    if not a_eq:
        return None
    bounds = [(1.0, float(k - 1) if counts_accounts else None) if v in marked else (0.0, None) for v in order]
    from scipy.optimize import linprog

    for v in order:
        i = index[v]
        if not any(r[i] for r in a_eq):
            continue
        obj = [0.0] * len(order)
        obj[i] = 1.0
        lo = linprog(obj, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        obj[i] = -1.0
        hi = linprog(obj, A_eq=a_eq, b_eq=b_eq, bounds=bounds, method="highs")
        if lo.status != 0 or hi.status != 0:
            continue  # unbounded above (or infeasible by construction: not pinned)
        if -hi.fun - lo.fun < 1.0 - 1e-6:
            return v
    return None
