"""Cohorts: bursts of new, short-lived accounts on one network that ask malicious questions.

An operation that uses one account per task leaves little on each account (one or two requests, a
fresh address, no device, card or key in common with the others) and nothing for the linker
(:mod:`stormwatch.analyze.linking`) to join. What it cannot hide is the pattern across accounts:
accounts signed up shortly before their first request, used for a few days and dropped, arriving
one after another from the same provider's network while asking offensive questions. A security
professional's account is old and long-lived; an everyday user's new account rarely asks anything
malicious; the pattern needs both, several times over, close together.

Rule (constants in :mod:`stormwatch.analyze.params`, ``COHORT_*``):

1. A *candidate* is an account whose first request came within ``COHORT_FRESH_DAYS`` of its sign-up
   (its record's ``created_at``; no sign-up time, no candidate), whose requests span at most
   ``COHORT_SPAN_DAYS`` and then stopped (its last request at least ``COHORT_IDLE_DAYS`` before the
   end of the data: an account opened last week is short-lived only because the data ends), and
   whose top request scores at least ``COHORT_MEMBER_SCORE``.
2. Its network: the IPv4 /``COHORT_V4_PREFIX`` or IPv6 /``COHORT_V6_PREFIX`` prefix of its sign-up
   address, else of the address of its first request (a provider's range, not an address: the
   operation's accounts get a fresh address each). One network per account, so a VPN user's many
   exits never chain strangers together.
3. Per network, candidates in order of first request are chained while consecutive first requests
   are at most ``COHORT_GAP_DAYS`` apart.
4. A chain is a *cohort* when it has at least ``COHORT_MIN_SIZE`` accounts, at least
   ``COHORT_MIN_STRONG`` of them with a request scoring ``COHORT_STRONG_SCORE`` or more, at least
   half of them with one scoring ``COHORT_ENFORCE_SCORE`` or more (a busy provider range where
   new accounts come and go all the time dilutes below that), and fewer
   than half of its accounts in one organisation of the platform (a customer's own accounts asking
   offensive questions together is a security firm's or a class's signature: held at review, as
   linked organisation clusters are).
5. An account that meets rule 1 except that it is still active (its last request within
   ``COHORT_IDLE_DAYS`` of the end of the data) never counts towards rules 3-4, but extends the
   network's last cohort when its first request comes inside the cohort's window or at most
   ``COHORT_GAP_DAYS`` after its last member's: the burst goes on as the data ends (without it the account would wait
   for a later run, after it went quiet). Such accounts on a network without a cohort form nothing.

A cohort is corroboration in the risk rules (``analyze.risk``): its members whose own top request
scores ``COHORT_ENFORCE_SCORE`` or more are enforced, the others reach review. The evidence names the
networks, the window, the members and their scores, so an analyst can check the burst.

Pure and vectorised over the graph: the same graph gives the same cohorts, in any process.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stormwatch.analyze import params as P
from stormwatch.result import AccountGraph

__all__ = ["Cohorts", "epoch_seconds", "find_cohorts", "judgement_labels", "network_key", "top_scores"]

Arr = np.ndarray[Any, Any]
DAY = 86400.0


@dataclass(slots=True)
class Cohort:
    members: list[int]  # account indices, in order of first request
    networks: list[str]
    start: float  # first request of the first member (epoch seconds)
    end: float  # last request of the last member
    held: bool = False  # mostly one organisation's accounts: not corroboration
    still_active: int = 0  # members still active at the end of the data (rule 5): the last ones

    def describe(self, accounts: Sequence[str], top: Arr, orgs: Sequence[str | None]) -> dict[str, Any]:
        from datetime import UTC, datetime

        def iso(t: float) -> str:
            return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

        return {
            "size": len(self.members),
            "networks": self.networks,
            "window": [iso(self.start), iso(self.end)],
            "members": [
                {"account_id": accounts[m], "top_score": round(float(top[m]), 4)}
                | ({"org_id": orgs[m]} if orgs[m] else {})
                for m in self.members[: P.COHORT_EVIDENCE_MEMBERS]
            ],
            "strong_members": int(sum(float(top[m]) >= P.COHORT_STRONG_SCORE for m in self.members)),
            "held_by_organisation": self.held,
            "still_active_members": self.still_active,
            "rule": (
                f"accounts whose first request came within {P.COHORT_FRESH_DAYS:g} days of sign-up, active for at"
                f" most {P.COHORT_SPAN_DAYS:g} days, top request >= {P.COHORT_MEMBER_SCORE:g}, arriving on one"
                f" network at most {P.COHORT_GAP_DAYS:g} days apart; >= {P.COHORT_MIN_SIZE} of them,"
                f" >= {P.COHORT_MIN_STRONG} with a request >= {P.COHORT_STRONG_SCORE:g}, at least half with one"
                f" >= {P.COHORT_ENFORCE_SCORE:g}"
            ),
        }


@dataclass(slots=True)
class Cohorts:
    """The cohorts of one graph. ``of[i]``: the cohort index of account ``i`` (-1: none)."""

    of: Arr
    cohorts: list[Cohort] = field(default_factory=list)

    def member(self, i: int) -> Cohort | None:
        k = int(self.of[i])
        return self.cohorts[k] if k >= 0 else None


def network_key(ip: str) -> str | None:
    """The provider-sized prefix of an address (``10.1.0.0/16``, ``2001:db8::/32``); None if not an address."""
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    prefix = P.COHORT_V4_PREFIX if addr.version == 4 else P.COHORT_V6_PREFIX
    return str(ipaddress.ip_network(f"{addr}/{prefix}", strict=False))


def top_scores(states: Sequence[Any], index: Mapping[str, int], n: int) -> Arr:
    """Each account's top request score (its features' ``content.top_events``), 0 without features."""
    top = np.zeros(n)
    for st in states:
        i = index.get(st.account_id)
        if i is None:
            continue
        events = (st.features.get("content", {}) or {}).get("top_events") or []
        if events:
            top[i] = max(float(e.get("score", 0.0)) for e in events)
    return top


def epoch_seconds(values: list[str | None]) -> Arr:
    """ISO-8601 UTC timestamps as epoch seconds (NaN for missing ones), vectorised."""
    arr = np.array([v[:-1] if v and v.endswith("Z") else (v or "NaT") for v in values], dtype="datetime64[us]")
    out = arr.astype(np.int64).astype(np.float64) / 1e6
    out[np.isnat(arr)] = np.nan
    return out


def find_cohorts(inp: AccountGraph, index: Mapping[str, int], top: Arr) -> Cohorts:
    """The cohorts among the accounts of ``inp`` (numbered by ``index``; ``top``: top request scores)."""
    n = len(index)
    of = np.full(n, -1, dtype=np.int64)
    created_s: list[str | None] = [None] * n
    orgs: list[str | None] = [None] * n
    signup: list[tuple[int, str]] = []
    for rec in inp.accounts:
        i = index.get(rec.account_id)
        if i is None:
            continue
        created_s[i], orgs[i] = rec.created_at, rec.org_id or None
        if rec.signup_ip:
            signup.append((i, rec.signup_ip))
    created = epoch_seconds(created_s)
    obs = [o for o in inp.observations if o.kind in ("ip", "api_key") and o.account_id in index]
    if not obs or not np.isfinite(created).any():
        return Cohorts(of)
    acc = np.fromiter((index[o.account_id] for o in obs), np.int64, len(obs))
    f, la = epoch_seconds([o.first_ts for o in obs]), epoch_seconds([o.last_ts for o in obs])
    first, last = np.full(n, np.inf), np.full(n, -np.inf)
    np.fmin.at(first, acc, np.where(np.isnan(f), np.inf, f))
    np.fmax.at(last, acc, np.where(np.isnan(la), -np.inf, la))
    data_end = float(np.max(last[np.isfinite(last)])) if np.isfinite(last).any() else math.nan
    with np.errstate(invalid="ignore"):
        lead = (first - created) / DAY
        cand = (
            np.isfinite(first)
            & np.isfinite(created)
            & (lead >= -1.0 / 24)  # an hour of clock skew between the record and the requests
            & (lead <= P.COHORT_FRESH_DAYS)
            & ((last - first) / DAY <= P.COHORT_SPAN_DAYS)
            & (top >= P.COHORT_MEMBER_SCORE)
        )
        recent = cand & ((data_end - last) / DAY < P.COHORT_IDLE_DAYS)  # may only extend a cohort (rule 5)
    cand &= ~recent
    if int(cand.sum()) < P.COHORT_MIN_SIZE:
        return Cohorts(of)
    # one network per candidate: its sign-up address's, else its first request's
    home: dict[int, str] = {}
    either = cand | recent
    for i, ip in signup:
        if either[i]:
            k = network_key(ip)
            if k is not None:
                home[i] = k
    firsts: dict[int, tuple[float, str]] = {}
    for a, o, t in zip(acc.tolist(), obs, f.tolist(), strict=True):
        if o.kind == "ip" and either[a] and a not in home:
            t = t if t == t else math.inf
            if a not in firsts or (t, o.value) < firsts[a]:
                firsts[a] = (t, o.value)
    for a, (_t, ip) in firsts.items():
        k = network_key(ip)
        if k is not None:
            home[a] = k
    by_net: dict[str, list[int]] = {}
    late: dict[str, list[int]] = {}
    for i, k in home.items():
        (late if recent[i] else by_net).setdefault(k, []).append(i)
    out = Cohorts(of)
    gap = P.COHORT_GAP_DAYS * DAY
    for net in sorted(by_net):
        chain = sorted(by_net[net], key=lambda m: (first[m], m))
        tail = sorted(late.get(net, ()), key=lambda m: (first[m], m))
        runs: list[list[int]] = [[chain[0]]]
        for a, b in itertools.pairwise(chain):
            if first[b] - first[a] <= gap:
                runs[-1].append(b)
            else:
                runs.append([b])
        for members in runs:
            if len(members) < P.COHORT_MIN_SIZE:
                continue
            if sum(float(top[m]) >= P.COHORT_STRONG_SCORE for m in members) < P.COHORT_MIN_STRONG:
                continue
            if sum(float(top[m]) >= P.COHORT_ENFORCE_SCORE for m in members) < 0.5 * len(members):
                continue
            formed = len(members)
            if members[-1] == chain[-1]:  # the network's last run: accounts still active may extend it
                reach = first[members[-1]]  # ... arriving inside the burst or within the gap after it
                for m in tail:
                    if first[members[0]] <= first[m] <= reach + gap:
                        members.append(m)
                        reach = max(reach, first[m])
                members.sort(key=lambda m: (first[m], m))
            top_org = Counter(orgs[m] for m in members if orgs[m]).most_common(1)
            cohort = Cohort(
                members=members,
                networks=[net],
                start=float(first[members[0]]),
                end=float(max(last[m] for m in members)),
                held=bool(top_org and top_org[0][1] >= 0.5 * len(members)),
                still_active=len(members) - formed,
            )
            for m in members:
                of[m] = len(out.cohorts)
            out.cohorts.append(cohort)
    return out


def judgement_labels(labels: Arr, cohorts: Cohorts) -> Arr:
    """Link components joined through cohorts: the unit whose members' judgements depend on each other
    (incremental analysis fingerprints and re-judges whole units)."""
    if not cohorts.cohorts:
        return labels
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_lab = int(labels.max()) + 1 if len(labels) else 0
    rows = [int(labels[c.members[0]]) for c in cohorts.cohorts for _ in c.members[1:]]
    cols = [int(labels[m]) for c in cohorts.cohorts for m in c.members[1:]]
    adj = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_lab, n_lab))
    _n, comp = connected_components(adj, directed=False)
    out: Arr = comp[labels].astype(np.int64)
    return out
