"""Incremental analysis: judge again only the link components whose inputs changed.

Every account's judgement is a function of its link component (after the split of oversized
components), of the cohort it belongs to (``analyze.cohorts``: link components joined through
cohorts form one unit, ``cohorts.judgement_labels``) and of a few global inputs. So after linking
the whole graph (vectorised, cheap), each
component gets a fingerprint of everything its judgements are computed from:

* per member: its features (the ``account_features`` row), its indicator hits (with the hit's
  degree and strength, which carry the observable's global rarity) and indicator names, the
  exemption holding it today;
* the component's strong links: star values (kind, value, edge weight, the value's rarity weight -
  which moves with the value's degree, so an account that joins or leaves an IP changes the
  fingerprint of every component linked through it), strong pairs with their contributing values;
* per member: its sign-up time (cohorts read it);
* the member list (so a component that gains, loses or splits members changes, and so does one
  that joins a cohort or leaves it).

A component whose fingerprint equals the stored one (``analysis_inputs``) keeps its stored
judgements and cluster; the others are attributed and judged again (``analyze_graph(keep=...)``,
over the whole graph, so propagation and the account model see exactly what a full run sees) and
upserted. The accounts at ``review`` or ``enforce`` are always judged again: the review queue is
global (its size follows the active accounts, the account model's probability follows the end of
the data), and it is ranked over all of them. The candidates the account model scores at ``none``
are not: their trees leave out the features that follow the end of the data
(``account_model.DATA_END_FEATURES``), so their probability follows their component alone.

Global inputs (the model version, the account models, every parameter, the intrusion-sets and actor
profiles, which intrusion-sets have any hit, the code's algorithm version) have one fingerprint
(``analysis_state``); when it changes the run is full. ``analyze --full`` always is.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import orjson

from stormwatch.analyze import params as P
from stormwatch.analyze.exemptions import Exemption, match_exemption
from stormwatch.analyze.judge import Graph, _intrusion_sets
from stormwatch.analyze.linking import LinkResult
from stormwatch.analyze.profiles import load_profiles
from stormwatch.result import AccountGraph

__all__ = ["ALGORITHM", "GLOBAL_KEY", "account_fingerprints", "global_fingerprint", "hit_refs", "plan_keep"]

Arr = np.ndarray[Any, Any]
#: bump when linking, attribution, risk or evidence change in a way the fingerprints cannot see
# 2: organisation ids take part in the judgement; 3: cohorts; 4: account models; 5: the enforce paths
# tried first, quiet members of a coordinated cluster at review (analyze.risk); 6: accounts still active
# at the end of the data extend an established cohort (analyze.cohorts rule 5)
ALGORITHM = "incremental/6"
GLOBAL_KEY = "global_fingerprint"
_OPT = orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _canon(x: Any) -> Any:
    """A JSON-able form of ``x`` that does not depend on set order (string hashing is salted)."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _canon(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): _canon(v) for k, v in x.items()}
    if isinstance(x, set | frozenset):
        return sorted((_canon(v) for v in x), key=repr)
    if isinstance(x, list | tuple):
        return [_canon(v) for v in x]
    if isinstance(x, str | int | float | bool) or x is None:
        return x
    return repr(x)


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hit_refs(inp: AccountGraph, accounts: Mapping[str, int]) -> list[str]:
    """Intrusion-sets with a positive hit on some account: they are attribution candidates everywhere."""
    sets = _intrusion_sets(inp.intrusion_sets)
    hit = (h for h in inp.hits if float(h.strength) > 0 and h.account_id in accounts)
    return sorted({r for h in hit for r in h.intrusion_sets if r in sets})


def global_fingerprint(inp: AccountGraph, g: Graph, version: str, account_models: Sequence[str] = ()) -> str:
    """The inputs every judgement depends on; a change means a full run. ``account_models``: the
    active account model's version (or "off") and the shadow ones: the active one's candidate trees
    decide which accounts at none reach review, in every component."""
    from stormwatch import __version__

    params = {k: _canon(v) for k, v in vars(P).items() if k.isupper()}
    sets = {r: _canon(s) for r, s in _intrusion_sets(inp.intrusion_sets).items()}
    doc = {
        "algorithm": ALGORITHM,
        "code": __version__,
        "model_version": version,
        "params": params,
        "profiles": [_canon(p) for p in load_profiles()],
        "sets": sets,
        "hit_refs": hit_refs(inp, g.index),
        "account_models": list(account_models),
    }
    return _digest(orjson.dumps(doc, option=_OPT, default=repr))


def account_fingerprints(
    inp: AccountGraph,
    g: Graph,
    link: LinkResult,
    exemptions: Sequence[Exemption],
    today: date,
    labels: Arr | None = None,
) -> list[str]:
    """One fingerprint per account (in ``g.accounts`` order): its unit's, shared by all members
    (``labels``: the judgement units, ``cohorts.judgement_labels``; default the link components)."""
    n = len(g.accounts)
    parts: list[list[bytes]] = [[] for _ in range(n)]
    for st in inp.states:
        i = g.index.get(st.account_id)
        if i is not None:
            row = (st.n_events, st.content_score, st.ttp_breadth, st.rephrases, st.features)
            parts[i].append(b"f" + orjson.dumps(row, option=_OPT, default=repr))
    names = inp.indicator_names
    for h in inp.hits:
        i = g.index.get(h.account_id)
        if i is not None:
            row2 = (h.indicator_id, h.kind, h.value, h.n, h.first_ts, h.last_ts, h.degree, h.strength,
                    list(h.intrusion_sets), names.get(h.indicator_id))  # fmt: skip
            parts[i].append(b"h" + orjson.dumps(row2, option=_OPT, default=repr))
    facts = {a.account_id: a for a in inp.accounts}
    for i, a in enumerate(g.accounts):
        org = getattr(facts.get(a), "org_id", None)
        if org:
            parts[i].append(b"o" + str(org).encode())
        created = getattr(facts.get(a), "created_at", None)
        if created:
            parts[i].append(b"c" + str(created).encode())
    if exemptions:
        for i, a in enumerate(g.accounts):
            ex = match_exemption(exemptions, a, facts.get(a), today)
            if ex is not None:
                parts[i].append(b"x" + orjson.dumps(_canon(ex.to_dict()), option=_OPT, default=repr))
    values, accounts, vw = g.values, g.accounts, link.value_weight
    for a, v, w in zip(link.star_acc.tolist(), link.star_val.tolist(), link.star_w.tolist(), strict=True):
        kind, value = values[v]
        parts[a].append(f"s|{kind}|{value}|{w!r}|{float(vw[v])!r}".encode())
    pa, pb = link.pair_a.tolist(), link.pair_b.tolist()
    for a, b, w in zip(pa, pb, link.pair_w.tolist(), strict=True):
        parts[a].append(f"p|{accounts[b]}|{w!r}".encode())
        parts[b].append(f"p|{accounts[a]}|{w!r}".encode())
    for p, v, fam, w in link.pair_parts:
        kind, value = values[v]
        a, b = pa[p], pb[p]
        parts[a].append(f"q|{accounts[b]}|{kind}|{value}|{fam}|{w!r}".encode())
        parts[b].append(f"q|{accounts[a]}|{kind}|{value}|{fam}|{w!r}".encode())
    own = [accounts[i].encode() + b"\x00" + b"\x01".join(sorted(parts[i])) for i in range(n)]
    labels = link.labels if labels is None else labels
    order = np.argsort(labels, kind="stable")  # members in account order within each component
    out = [""] * n
    if n == 0:
        return out
    bounds = np.flatnonzero(np.r_[True, labels[order][1:] != labels[order][:-1], True])
    ordl = order.tolist()
    for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        members = ordl[s:e]
        fp = _digest(b"\x02".join(own[m] for m in members))
        for m in members:
            out[m] = fp
    return out


def plan_keep(
    accounts: Sequence[str],
    labels: Arr,
    fingerprints: Sequence[str],
    stored: Mapping[str, str],
    always: Sequence[str] = (),
) -> Arr:
    """The accounts to judge again: every component with a member whose fingerprint differs from the
    stored one, and the components of ``always`` (accounts at review / enforce)."""
    n = len(accounts)
    dirty = np.fromiter((stored.get(a) != f for a, f in zip(accounts, fingerprints, strict=True)), bool, n)
    index = {a: i for i, a in enumerate(accounts)}
    for a in always:
        i = index.get(a)
        if i is not None:
            dirty[i] = True
    if n == 0:
        return dirty
    bad = np.zeros(int(labels.max()) + 1, dtype=bool)
    bad[labels[dirty]] = True
    keep: Arr = bad[labels]
    return keep
