"""Benchmark: account linking over 1M accounts and ~5M account-attribute edges.

Synthetic graph shaped like a real platform: per-account devices, payment cards and phones
(mostly unique, some shared by households / corporate cards), home IPs (some shared by a
household), mobile carrier CGNAT pools (hundreds of accounts per address), VPN exits (thousands),
corporate NATs (5-60), webmail and corporate e-mail domains, and planted actor rings (5-10
accounts sharing VPS IPs, devices and cards). Times :func:`stormwatch.analyze.linking.link_accounts`
(rarity weights, time overlap, weak-pair combination, connected components) and, for comparison
in the same run, (a) scipy connected components on the raw graph after a plain degree filter
(the scale-baselines approach: no weights, no time) and (b) a pure-Python union-find over the
same strong edges our method keeps.

    python benchmarks/bench_linking.py [--accounts 1000000] [--no-python-baseline]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from stormwatch.analyze import params as P
from stormwatch.analyze.linking import LinkInput, link_accounts

Arr = np.ndarray[Any, Any]
KINDS = ["device", "payment", "phone", "ip", "email_domain", "api_key"]


def build(n: int, seed: int = 7, lean: bool = False) -> tuple[LinkInput, int]:
    """The synthetic graph of ``n`` accounts (~7 attribute edges each). ``lean``: a platform that keeps
    no phone numbers or API keys per account (~5.2 edges each: 10M accounts, ~52M edges)."""
    rng = np.random.default_rng(seed)
    acc_parts: list[Arr] = []
    val_parts: list[Arr] = []
    kinds: list[Arr] = []
    next_val = 0

    def add(acc: Arr, val_local: Arr, n_vals: int, kind: str) -> None:
        nonlocal next_val
        acc_parts.append(acc.astype(np.int64))
        val_parts.append(val_local.astype(np.int64) + next_val)
        kinds.append(np.full(n_vals, KINDS.index(kind), dtype=np.int64))
        next_val += n_vals

    ids = np.arange(n)
    # households: 8% of accounts live in households of 2-4 that share the home IP and, often,
    # a device or a card (correlated, as in life); everyone else has their own
    house = ids.copy()
    in_house = rng.random(n) < 0.08
    house[in_house] = n + rng.integers(0, max(1, int(in_house.sum()) // 3), int(in_house.sum()))
    dev = np.where(in_house & (rng.random(n) < 0.3), house, ids)
    add(ids, dev, 2 * n, "device")
    # payment cards: 55% of accounts; some households and corporate cards (2-20) share one
    has = rng.random(n) < 0.55
    card = np.where(in_house & (rng.random(n) < 0.2), house, ids)
    corp = has & (rng.random(n) < 0.04)
    card[corp] = 2 * n + rng.integers(0, n // 200, int(corp.sum()))
    add(ids[has], card[has], 3 * n, "payment")
    # phones: 80%
    phones = ids[rng.random(n) < 0.8]
    if not lean:
        add(phones, phones, n, "phone")
    # home IPs: the household's address, plus a DHCP change for 40%
    add(ids, house, 2 * n, "ip")
    moved = ids[rng.random(n) < 0.4]
    add(moved, rng.integers(0, 50 * n, len(moved)), 50 * n, "ip")
    # mobile CGNAT: 50% of accounts, pools of ~2,000 addresses shared by hundreds
    mob = ids[rng.random(n) < 0.5]
    add(mob, rng.integers(0, 2000, len(mob)), 2000, "ip")
    # VPN exits: 18% of accounts use 3 exits of one provider (30 exits)
    vpn = ids[rng.random(n) < 0.18]
    prov = rng.integers(0, 10, len(vpn))
    for k in range(3):
        add(vpn, prov * 3 + k, 30, "ip")
    # corporate NAT: 25% of accounts in 15k orgs (Zipf sizes)
    corp_acc = ids[rng.random(n) < 0.25]
    org = np.minimum(rng.zipf(1.6, len(corp_acc)) - 1, 14_999)
    add(corp_acc, org, 15_000, "ip")
    add(corp_acc, org, 15_000, "email_domain")
    # e-mail: 75% webmail (20 domains), the rest unique-ish personal domains
    web = ids[rng.random(n) < 0.75]
    add(web, rng.integers(0, 20, len(web)), 20, "email_domain")
    # api keys: one per account
    if not lean:
        add(ids, ids, n, "api_key")
    # actor rings: 2,000 rings of 5-10 accounts sharing 3 VPS IPs and 2 devices
    rings = 2000
    size = rng.integers(5, 11, rings)
    members = rng.choice(n, size.sum(), replace=False)
    ring = np.repeat(np.arange(rings), size)
    for k in range(3):
        add(members, ring * 3 + k, rings * 3, "ip")
    add(members, ring * 2 + rng.integers(0, 2, len(members)), rings * 2, "device")

    acc = np.concatenate(acc_parts)
    val = np.concatenate(val_parts)
    kind = np.concatenate(kinds)
    uniq = np.unique(acc * next_val + val)
    acc, val = uniq // next_val, uniq % next_val
    used, val = np.unique(val, return_inverse=True)  # compact value ids
    kind = kind[used]
    base = np.array([P.LINK_KINDS[k][0] for k in KINDS])[kind]
    # webmail never links (the first 20 email_domain values of the webmail block)
    fam_names = sorted({f for _, f in P.LINK_KINDS.values()})
    family = np.array([fam_names.index(P.LINK_KINDS[k][1]) for k in KINDS])[kind]
    timed = kind == KINDS.index("ip")
    first = rng.uniform(0, 30 * 86400, len(acc))
    last = first + rng.uniform(0, 10 * 86400, len(acc))
    first[~timed[val]] = np.nan
    last[~timed[val]] = np.nan
    inp = LinkInput(n, acc, val, base, family, timed, first, last)
    return inp, rings


def python_union_find(n_nodes: int, a: Arr, b: Arr) -> int:
    parent = list(range(n_nodes))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a.tolist(), b.tolist(), strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[rx] = ry
    return sum(1 for i in range(n_nodes) if find(i) == i)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--no-python-baseline", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    inp, rings = build(args.accounts)
    t1 = time.perf_counter()
    n_val = len(inp.value_base)
    print(f"graph: {args.accounts:,} accounts, {len(inp.acc):,} edges, {n_val:,} values (built in {t1 - t0:.1f} s)")
    t2 = time.perf_counter()
    res = link_accounts(inp)
    t3 = time.perf_counter()
    sizes = res.cluster_size[res.cluster_size >= 2]
    print(
        f"stormwatch linking: {t3 - t2:.2f} s  clusters>=2: {len(sizes):,}  largest {sizes.max() if len(sizes) else 0}"
        f"  strong value edges {len(res.star_acc):,}  strong weak-value pairs {len(res.pair_a):,}"
    )
    # baseline (a): raw bipartite graph, plain degree filter <= 500, scipy connected components
    t4 = time.perf_counter()
    degree = np.bincount(inp.val, minlength=n_val)
    keep = degree[inp.val] <= 500
    g = coo_matrix(
        (np.ones(int(keep.sum()), dtype=np.int8), (inp.acc[keep], args.accounts + inp.val[keep])),
        shape=(args.accounts + n_val, args.accounts + n_val),
    )
    _, lab = connected_components(g, directed=False)
    bsize = np.bincount(lab[: args.accounts])
    t5 = time.perf_counter()
    print(
        f"baseline scipy CC, degree<=500, unweighted: {t5 - t4:.2f} s  largest component {bsize.max():,} accounts"
        f"  (ratio ours/baseline {(t3 - t2) / (t5 - t4):.2f})"
    )
    if not args.no_python_baseline:
        t6 = time.perf_counter()
        a = np.concatenate([res.star_acc, res.pair_a])
        b = np.concatenate([args.accounts + res.star_val, res.pair_b])
        python_union_find(args.accounts + n_val, a, b)
        t7 = time.perf_counter()
        print(f"baseline pure-Python union-find over our strong edges: {t7 - t6:.2f} s")
    # planted rings must each be one cluster
    print(f"planted rings: {rings:,}; target <= 10 s for 1M accounts / 5M edges")


if __name__ == "__main__":
    main()
