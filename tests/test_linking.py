"""Linking: rarity weighting, crowds, time overlap, weak-pair combination, oversized components."""

from __future__ import annotations

from typing import Any

import numpy as np

from stormwatch.analyze import params as P
from stormwatch.analyze.linking import LinkInput, link_accounts, rarity

FAM = {f: i for i, f in enumerate(sorted({f for _, f in P.LINK_KINDS.values()}))}


def _input(n: int, edges: list[tuple[int, str, str, float | None, float | None]]) -> tuple[LinkInput, list[Any]]:
    """edges: (account, kind, value, first, last)."""
    vid: dict[tuple[str, str], int] = {}
    acc, val, first, last = [], [], [], []
    for a, kind, value, f, la in edges:
        acc.append(a)
        val.append(vid.setdefault((kind, value), len(vid)))
        first.append(np.nan if f is None else f)
        last.append(np.nan if la is None else la)
    values = list(vid)
    base = np.array([0.0 if (k == "email_domain" and v in P.WEBMAIL) else P.LINK_KINDS[k][0] for k, v in values])
    fam = np.array([FAM[P.LINK_KINDS[k][1]] for k, _ in values])
    timed = np.array([k == "ip" for k, _ in values])
    inp = LinkInput(n, np.array(acc), np.array(val), base, fam, timed, np.array(first), np.array(last))
    return inp, values


def test_rarity_curve() -> None:
    r = rarity(np.array([1, 2, 5, 8, 16, 64, 65, 300]))
    assert r[0] == 0 and r[1] == r[2] == r[3] == 1.0
    assert 0 < r[4] < 0.5 and r[5] > 0 and r[6] == 0 and r[7] == 0


def test_vpn_crowd_and_webmail_do_not_merge_strangers() -> None:
    edges: list[tuple[int, str, str, float | None, float | None]] = []
    for a in range(300):
        edges += [(a, "ip", "203.0.113.5", 0.0, 86400.0 * 30), (a, "ip", "203.0.113.6", 0.0, 86400.0 * 30)]
        edges += [(a, "email_domain", "gmail.com", None, None), (a, "ip", f"10.{a // 250}.{a % 250}.1", 0.0, 1e6)]
    res = link_accounts(_input(300, edges)[0])
    assert res.cluster_size[res.labels].max() == 1
    assert len(res.star_acc) == 0 and len(res.pair_a) == 0


def test_actor_vps_ip_shared_by_five_links_them_and_records_edges() -> None:
    edges: list[tuple[int, str, str, float | None, float | None]] = []
    for a in range(5):
        edges.append((a, "ip", "198.51.100.10", 86400.0 * a, 86400.0 * (a + 10)))
        edges.append((a, "email_domain", "gmail.com", None, None))
    for a in range(5, 50):  # bystanders
        edges.append((a, "ip", f"192.0.2.{a}", 0.0, 1e6))
    res = link_accounts(_input(50, edges)[0])
    assert len(set(res.labels[:5].tolist())) == 1
    assert res.cluster_size[res.labels[0]] == 5
    assert all(res.cluster_size[res.labels[a]] == 1 for a in range(5, 50))
    assert sorted(res.star_acc.tolist()) == [0, 1, 2, 3, 4]
    assert np.all(res.star_w >= P.LINK_THRESHOLD)


def test_same_ip_months_apart_is_not_a_link() -> None:
    day = 86400.0
    edges: list[tuple[int, str, str, float | None, float | None]] = [
        (0, "ip", "192.0.2.1", 0.0, 5 * day),
        (1, "ip", "192.0.2.1", 90 * day, 95 * day),
    ]
    res = link_accounts(_input(2, edges)[0])
    assert res.labels[0] != res.labels[1]
    edges[1] = (1, "ip", "192.0.2.1", 4 * day, 20 * day)
    res = link_accounts(_input(2, edges)[0])
    assert res.labels[0] == res.labels[1]


def test_weak_values_combine_across_families_but_not_within() -> None:
    # an IP shared by 12 accounts is weak alone; with a rare corporate e-mail domain it links
    edges: list[tuple[int, str, str, float | None, float | None]] = []
    for a in range(12):
        edges.append((a, "ip", "198.51.100.7", 0.0, 1e6))
        edges.append((a, "ip", "198.51.100.8", 0.0, 1e6))  # same family: no accumulation
    res = link_accounts(_input(22, edges)[0])
    assert res.cluster_size[res.labels[0]] == 1
    edges += [(0, "email_domain", "tiny-firm.example", None, None)]
    edges += [(a, "email_domain", "tiny-firm.example", None, None) for a in range(1, 12)]
    res = link_accounts(_input(22, edges)[0])
    # 12 accounts: IP 0.6 * (8/12)^1.5 = 0.33, domain 0.55 * 0.54 = 0.30; noisy-OR 0.53 >= 0.5
    assert res.cluster_size[res.labels[0]] == 12
    assert len(res.pair_a) > 0 and res.pair_parts


def test_oversized_chain_is_split() -> None:
    # a chain of 400 accounts, each sharing a home IP (0.6) with the next: one component at 0.5,
    # split at the tighter thresholds; a device ring of 4 inside it survives
    edges: list[tuple[int, str, str, float | None, float | None]] = []
    for a in range(399):
        edges += [(a, "ip", f"ip{a}", 0.0, 1e6), (a + 1, "ip", f"ip{a}", 0.0, 1e6)]
    edges += [(a, "device", "dev-ring", None, None) for a in (10, 50, 90, 130)]
    res = link_accounts(_input(400, edges)[0])
    assert res.cluster_size[res.labels].max() <= P.MAX_CLUSTER
    assert len({int(res.labels[a]) for a in (10, 50, 90, 130)}) == 1


def test_an_empty_platform_links_and_attributes_nothing() -> None:
    """No accounts at all (a fresh database): analysis returns an empty result instead of failing."""
    from stormwatch.analyze.judge import analyze_graph
    from stormwatch.result import AccountGraph

    result = analyze_graph(AccountGraph.from_dict({"schema": "stormwatch.account-graph/1"}), "m-1")
    assert result.judgements == () and result.clusters == ()
