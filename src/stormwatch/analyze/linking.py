"""Account linking over the bipartite account-attribute graph, weighted by rarity (numpy + scipy).

Rule (constants in :mod:`stormwatch.analyze.params`):

1. Every attribute value ``v`` (an IP, device id, payment fingerprint, phone hash, API key, e-mail
   domain, org) shared by ``d`` accounts gets ``w_v = base(kind) * rarity(d)``, where rarity is 1
   up to ``RARE_DEGREE`` accounts, falls as ``(RARE_DEGREE / d) ** RARITY_POWER`` above it and is 0
   above ``DEGREE_CAP`` (a VPN exit, a mobile carrier's CGNAT, a campus NAT links nobody). Webmail
   domains never link.
2. Time: an account's use of a network value that overlaps nobody else's (by more than a day) is
   worth ``NO_OVERLAP_FACTOR`` of it (the same residential IP months apart is reassignment, not a
   shared operator).
3. A value with ``w >= LINK_THRESHOLD`` links all of its accounts on its own (a star through the
   value node, so a value shared by ``d`` accounts costs ``d`` edges, not ``d^2``).
4. Weaker values (``PAIR_MIN_WEIGHT <= w < LINK_THRESHOLD`` and ``d <= PAIR_DEGREE_CAP``) are combined
   per account pair: maximum inside a family (correlated values), noisy-OR across families;
   pairs reaching ``LINK_THRESHOLD`` are linked.
5. Clusters are the connected components (scipy) of accounts + strong value nodes + strong pairs.
6. A component above ``MAX_CLUSTER`` accounts is a chain of strangers, not an operation: inside it
   only links of at least the next ``SPLIT_THRESHOLDS`` weight are kept, and components recomputed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from stormwatch.analyze import params as P

__all__ = ["Components", "LinkInput", "LinkResult", "cluster_links", "link_accounts", "rarity"]

Arr = np.ndarray[Any, Any]


def rarity(degree: Arr) -> Arr:
    d = np.asarray(degree, dtype=np.float64)
    r = np.where(d <= P.RARE_DEGREE, 1.0, (P.RARE_DEGREE / np.maximum(d, 1.0)) ** P.RARITY_POWER)
    return np.where((d < 2) | (d > P.DEGREE_CAP), 0.0, r)


@dataclass(slots=True)
class LinkInput:
    """Unique (account, value) edges. ``value_base`` is the base weight of each value (0 = never
    links); ``value_family`` a small int; ``timed`` marks values whose time overlap matters."""

    n_accounts: int
    acc: Arr  # int64 [E]
    val: Arr  # int64 [E]
    value_base: Arr  # float64 [V]
    value_family: Arr  # int64 [V]
    timed: Arr  # bool [V]
    first: Arr | None = None  # float64 [E] epoch seconds (NaN = unknown)
    last: Arr | None = None


@dataclass(slots=True)
class LinkResult:
    labels: Arr  # component label per account
    cluster_size: Arr  # accounts per label
    degree: Arr  # accounts per value
    value_weight: Arr  # w_v per value
    star_acc: Arr  # strong value edges: account, value, edge weight
    star_val: Arr
    star_w: Arr
    pair_a: Arr  # strong pairs from weak values: a, b, combined weight
    pair_b: Arr
    pair_w: Arr
    pair_parts: list[tuple[int, int, int, float]]  # (pair index, value, family, weight) evidence


def _other_extreme(group: Arr, x: Arr, use_max: bool) -> Arr:
    """For each element, the max (or min) of ``x`` over the other elements of its group."""
    sign = 1.0 if use_max else -1.0
    y = sign * np.nan_to_num(x, nan=-np.inf if use_max else np.inf)
    order = np.lexsort((y, group))
    g, ys = group[order], y[order]
    end = np.r_[np.flatnonzero(g[1:] != g[:-1]), len(g) - 1]
    top1 = np.empty(len(g))
    top2 = np.full(len(g), -np.inf)
    gid = np.cumsum(np.r_[True, g[1:] != g[:-1]]) - 1
    top1 = ys[end][gid]
    has2 = (end - np.r_[0, end[:-1] + 1]) >= 1
    second = np.where(has2, ys[np.maximum(end - 1, 0)], -np.inf)
    top2 = second[gid]
    is_top = np.r_[end][gid] == np.arange(len(g))
    out_sorted = np.where(is_top, top2, top1)
    out = np.empty(len(g))
    out[order] = out_sorted
    return sign * out


def _edge_weights(inp: LinkInput, degree: Arr, w_val: Arr) -> Arr:
    w = w_val[inp.val]
    if inp.first is None or inp.last is None:
        return w
    timed = inp.timed[inp.val] & ~np.isnan(inp.first) & (w > 0)
    if not timed.any():
        return w
    idx = np.flatnonzero(timed)
    grp = inp.val[idx]
    f, la = inp.first[idx], inp.last[idx]
    other_last = _other_extreme(grp, la, use_max=True)
    other_first = _other_extreme(grp, f, use_max=False)
    overlap = (f <= other_last + P.OVERLAP_SLACK_S) & (la >= other_first - P.OVERLAP_SLACK_S)
    w = w.copy()
    w[idx] = np.where(overlap, w[idx], w[idx] * P.NO_OVERLAP_FACTOR)
    return w


def _weak_pairs(inp: LinkInput, w_e: Arr, degree: Arr) -> tuple[Arr, Arr, Arr, list[tuple[int, int, int, float]]]:
    d_e = degree[inp.val]
    weak = np.flatnonzero((w_e >= P.PAIR_MIN_WEIGHT) & (w_e < P.LINK_THRESHOLD) & (d_e <= P.PAIR_DEGREE_CAP))
    empty = np.zeros(0, dtype=np.int64)
    if len(weak) < 2:
        return empty, empty, np.zeros(0), []
    order = weak[np.argsort(inp.val[weak], kind="stable")]
    v = inp.val[order]
    end = np.r_[np.flatnonzero(v[1:] != v[:-1]) + 1, len(v)]
    gid = np.cumsum(np.r_[True, v[1:] != v[:-1]]) - 1
    gend = end[gid]
    pa, pb, pw, pv = [], [], [], []
    for k in range(1, P.PAIR_DEGREE_CAP):
        i = np.flatnonzero(np.arange(len(v)) + k < gend)
        if len(i) == 0:
            break
        ea, eb = order[i], order[i + k]
        a, b = inp.acc[ea], inp.acc[eb]
        pa.append(np.minimum(a, b))
        pb.append(np.maximum(a, b))
        pw.append(np.minimum(w_e[ea], w_e[eb]))
        pv.append(v[i])
    a, b, w, val = (np.concatenate(x) for x in (pa, pb, pw, pv))
    keep = a != b
    a, b, w, val = a[keep], b[keep], w[keep], val[keep]
    fam = inp.value_family[val]
    # max per (pair, family), then noisy-OR over families
    key_order = np.lexsort((-w, fam, b, a))
    a, b, w, val, fam = a[key_order], b[key_order], w[key_order], val[key_order], fam[key_order]
    first = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1]) | (fam[1:] != fam[:-1])]
    a, b, w, val, fam = a[first], b[first], w[first], val[first], fam[first]
    pair_start = np.r_[True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])]
    pid = np.cumsum(pair_start) - 1
    keep_log = np.bincount(pid, weights=np.log1p(-np.minimum(w, 0.999)))
    combined = 1.0 - np.exp(keep_log)
    strong = np.flatnonzero(combined >= P.LINK_THRESHOLD)
    starts = np.flatnonzero(pair_start)
    remap = -np.ones(len(starts), dtype=np.int64)
    remap[strong] = np.arange(len(strong))
    parts = [
        (int(remap[p]), int(vv), int(ff), float(ww))
        for p, vv, ff, ww in zip(pid.tolist(), val.tolist(), fam.tolist(), w.tolist(), strict=True)
        if remap[p] >= 0
    ]
    return a[starts[strong]], b[starts[strong]], combined[strong], parts


def _components(n_nodes: int, a1: Arr, b1: Arr, a2: Arr, b2: Arr) -> Arr:
    rows = np.concatenate([a1, a2])
    cols = np.concatenate([b1, b2])
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n_nodes, n_nodes))
    _, labels = connected_components(graph, directed=False)
    out: Arr = np.asarray(labels, dtype=np.int64)
    return out


def _reindex_parts(parts: list[tuple[int, int, int, float]], keep: Arr) -> list[tuple[int, int, int, float]]:
    new = np.cumsum(keep) - 1
    return [(int(new[p]), v, f, w) for p, v, f, w in parts if keep[p]]


#: ``components(star_acc, star_val, pair_a, pair_b, big)``: the component label of each of the
#: ``n_accounts + n_values`` nodes (accounts, then value nodes) linked by the given strong edges
#: and pairs. ``big`` is None on the first call; after it, the mask of the nodes whose component was
#: oversized (the only labels that can change).
Components = Callable[[Arr, Arr, Arr, Arr, Arr | None], Arr]


def cluster_links(
    n_accounts: int,
    degree: Arr,
    value_weight: Arr,
    star: tuple[Arr, Arr, Arr],
    pairs: tuple[Arr, Arr, Arr],
    parts: list[tuple[int, int, int, float]],
    components: Components,
) -> LinkResult:
    """Steps 5 and 6 of the rule, shared by :func:`link_accounts` and the Spark engine: cluster the
    strong links (``star``: account, value, weight; ``pairs``: a, b, combined weight; ``parts``
    their evidence) with ``components``, split the oversized clusters by ``SPLIT_THRESHOLDS``."""
    n = n_accounts
    s_acc, s_val, s_w = star
    pa, pb, pw = pairs
    labels_all = components(s_acc, s_val, pa, pb, None)
    for tighter in P.SPLIT_THRESHOLDS:
        # chains of weak-ish links can glue thousands of strangers together: inside oversized
        # components keep only the stronger links and recompute
        size_all = np.bincount(labels_all[:n], minlength=int(labels_all.max()) + 1 if labels_all.size else 0)
        big = size_all[labels_all] > P.MAX_CLUSTER
        if not big.any():
            break
        keep_s = ~big[s_acc] | (s_w >= tighter)
        keep_p = ~big[pa] | (pw >= tighter)
        s_acc, s_val, s_w = s_acc[keep_s], s_val[keep_s], s_w[keep_s]
        pa, pb, pw = pa[keep_p], pb[keep_p], pw[keep_p]
        parts = _reindex_parts(parts, keep_p)
        labels_all = components(s_acc, s_val, pa, pb, big)
    labels = labels_all[:n]
    size = np.bincount(labels, minlength=int(labels_all.max()) + 1 if labels_all.size else 0)
    return LinkResult(
        labels=labels,
        cluster_size=size,
        degree=degree,
        value_weight=value_weight,
        star_acc=s_acc,
        star_val=s_val,
        star_w=s_w,
        pair_a=pa,
        pair_b=pb,
        pair_w=pw,
        pair_parts=parts,
    )


def link_accounts(inp: LinkInput) -> LinkResult:
    n, n_val = inp.n_accounts, len(inp.value_base)
    degree = np.bincount(inp.val, minlength=n_val)
    w_val = inp.value_base * rarity(degree)
    w_e = _edge_weights(inp, degree, w_val)
    strong = np.flatnonzero(w_e >= P.LINK_THRESHOLD)
    pa, pb, pw, parts = _weak_pairs(inp, w_e, degree)

    def components(s_acc: Arr, s_val: Arr, pa: Arr, pb: Arr, big: Arr | None) -> Arr:
        return _components(n + n_val, s_acc, n + s_val, pa, pb)

    star = (inp.acc[strong], inp.val[strong], w_e[strong])
    return cluster_links(n, degree, w_val, star, (pa, pb, pw), parts, components)
