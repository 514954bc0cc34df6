"""Choosing the combiner's design by leave-source-out inside its own fitting rows.

The combiner is fitted on a few thousand calibration rows from some 40 sources; a flexible design
(boosted trees) can learn those sources rather than the two tiers' relation, and the rows it is
fitted on cannot tell. :func:`choose_design` splits the rows' sources into ``k`` groups (greedy by
size, deterministic), fits each candidate without each group and scores that group's rows, then
ranks the candidates the way leave-source-out ranks the cascade: per malicious source, its positives
against every negative (each scored by a fit that did not see its source), mean AUPRC; rows the
first tier clears keep the first tier's score, as in the cascade. The best candidate wins; a tie
goes to the earlier (simpler) one. The build calls it (``fit_combiner_for``), and so does each fold
of leave-source-out, which therefore measures the whole recipe, choice included, on sources the
choice never saw.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from stormwatch.detect.combiner import fit_combiner
from stormwatch.detect.metrics import auprc, recall_at_fpr

__all__ = ["CANDIDATES", "choose_design", "greedy_groups", "source_groups"]

CANDIDATES = ("linear", "trees-4x100", "trees-8x200", "trees-16x400")


def greedy_groups(sizes: dict[str, int], k: int) -> dict[str, int]:
    """Names -> group of ``k``, by size: largest first, each into the smallest group; deterministic."""
    load = [0] * k
    group: dict[str, int] = {}
    for name, n in sorted(sizes.items(), key=lambda kv: (-kv[1], kv[0])):
        g = min(range(k), key=lambda i: (load[i], i))
        group[name] = g
        load[g] += n
    return group


def source_groups(sources: Sequence[str], k: int) -> npt.NDArray[np.int64]:
    """Each row's group: its source's, from :func:`greedy_groups` over the rows per source."""
    size: dict[str, int] = defaultdict(int)
    for s in sources:
        size[s] += 1
    group = greedy_groups(size, k)
    return np.array([group[s] for s in sources], dtype=np.int64)


def _rank(
    scores: npt.NDArray[np.float64], labels: npt.NDArray[np.int64], sources: npt.NDArray[Any]
) -> dict[str, float]:
    neg = scores[labels == 0]
    aps, recalls = [], []
    for src in sorted(set(sources[labels == 1].tolist())):
        pos = scores[(labels == 1) & (sources == src)]
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        s = np.concatenate([pos, neg])
        aps.append(float(auprc(y, s)))
        recalls.append(float(recall_at_fpr(y, s, 0.01)))
    return {"auprc": round(float(np.mean(aps)), 4), "recall_at_1pct_fpr": round(float(np.mean(recalls)), 4)}


def choose_design(
    first: npt.ArrayLike,
    enc_logit: npt.ArrayLike,
    scripts: Sequence[str],
    labels: npt.ArrayLike,
    hard_negative: npt.ArrayLike,
    sources: Sequence[str],
    routed: npt.ArrayLike,
    *,
    c: float,
    candidates: Sequence[str] = CANDIDATES,
    k: int = 4,
    progress: Callable[[str], None] = lambda _m: None,
) -> tuple[str, dict[str, dict[str, float]]]:
    """The best of ``candidates`` on these rows by leave-source-out among them (module doc), and
    every candidate's mean AUPRC / recall at 1 % FPR. ``routed``: rows the cascade would send on."""
    f = np.asarray(first, dtype=np.float64)
    e = np.asarray(enc_logit, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    hard = np.asarray(hard_negative, dtype=bool)
    src = np.asarray(sources, dtype=str)
    go = np.asarray(routed, dtype=bool)
    sc = list(scripts)
    group = source_groups(list(sources), k)
    table: dict[str, dict[str, float]] = {}
    for design in candidates:
        held = f.copy()
        for g in range(k):
            out, fit = group == g, group != g
            if not out.any() or len(set(y[fit].tolist())) < 2:
                continue
            comb = fit_combiner(
                f[fit], e[fit], [sc[i] for i in np.flatnonzero(fit)], y[fit], hard[fit],
                fitted_for={}, target_fpr={}, c=c, design=design,
            )  # fmt: skip
            idx = np.flatnonzero(out & go)
            held[idx] = comb.combine(f[idx], e[idx], [sc[i] for i in idx])
        table[design] = _rank(held, y, src)
        progress(f"combiner: candidate {design}: mean AUPRC {table[design]['auprc']} on {k} groups of sources held out")
    best = max(candidates, key=lambda d: (table[d]["auprc"], -list(candidates).index(d)))
    return best, table
