"""Match compiled indicators against what accounts were seen with.

Observables per account: request IPs, user agents, URLs / domains / e-mail addresses named in its
requests (``account_attributes``, with first and last use), and from the account record the
sign-up IP (observed at ``created_at``), the e-mail domain and, when the record carries it, the
e-mail address (``attributes.email``) or its SHA-256 (``email_hash``, of the lower-cased address).

An observation only matches while the indicator is valid (``valid_from`` .. ``valid_until``
overlap the first..last use) and never once the indicator is revoked. IPv4 CIDR matching is a
vectorised range search (sorted addresses + ``searchsorted``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stormwatch.analyze.stix_patterns import Atom, CompiledPattern
from stormwatch.store import Store

__all__ = ["Hit", "Indicator", "Observations", "load_indicators", "load_observations", "match_indicators"]


@dataclass(frozen=True, slots=True)
class Indicator:
    id: str
    name: str | None
    pattern: CompiledPattern
    valid_from: str | None
    valid_until: str | None
    confidence: int | None
    types: tuple[str, ...]
    intrusion_sets: tuple[str, ...]


@dataclass(slots=True)
class Obs:
    n: int
    first: str | None
    last: str | None


@dataclass(slots=True)
class Observations:
    """kind -> value -> account -> Obs"""

    by_kind: dict[str, dict[str, dict[str, Obs]]] = field(default_factory=lambda: defaultdict(dict))
    email_hashes: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, value: str, account: str, n: int, first: str | None, last: str | None) -> None:
        per = self.by_kind[kind].setdefault(value, {})
        cur = per.get(account)
        if cur is None:
            per[account] = Obs(n, first, last)
        else:
            cur.n += n
            cur.first = min(x for x in (cur.first, first) if x) if (cur.first or first) else None
            cur.last = max(x for x in (cur.last, last) if x) if (cur.last or last) else None

    def degree(self, kind: str, value: str) -> int:
        return len(self.by_kind.get(kind, {}).get(value, {}))


@dataclass(frozen=True, slots=True)
class Hit:
    account_id: str
    indicator_id: str
    kind: str
    value: str
    n: int
    first_ts: str | None
    last_ts: str | None
    degree: int


def load_indicators(store: Store) -> list[Indicator]:
    """The supported, unrevoked partner indicators (``store.intel``), patterns ready to match."""
    return [
        Indicator(
            id=r.id,
            name=r.name,
            pattern=CompiledPattern.from_json(r.compiled),
            valid_from=r.valid_from,
            valid_until=r.valid_until,
            confidence=r.confidence,
            types=r.types,
            intrusion_sets=r.intrusion_sets,
        )
        for r in store.intel.active_indicators()
    ]


def load_observations(store: Store) -> Observations:
    """What every account was seen with: its attributes and its account record (``store.intel``)."""
    obs = Observations()
    ips: dict[str, str] = {}  # raw -> normalised address (many accounts share one)
    by_kind = obs.by_kind
    for o in store.intel.attribute_observations():
        value = o.value
        if o.kind == "ip":
            value = ips.get(value) or ips.setdefault(value, _norm_ip(value))
        per = by_kind[o.kind].setdefault(value, {})
        if o.account_id in per:  # two raw spellings of one address: merge
            obs.add(o.kind, value, o.account_id, o.n, o.first_ts, o.last_ts)
        else:
            per[o.account_id] = Obs(o.n, o.first_ts, o.last_ts)
    for a in store.intel.account_observations():
        if a.signup_ip:
            ip = ips.get(a.signup_ip) or ips.setdefault(a.signup_ip, _norm_ip(a.signup_ip))
            obs.add("ip", ip, a.account_id, 1, a.created_at, a.created_at)
        if a.email_domain:
            obs.add("domain", a.email_domain.lower(), a.account_id, 1, None, None)
        if a.email:
            obs.add("email", a.email.lower(), a.account_id, 1, None, None)
        elif a.email_hash:
            obs.email_hashes.setdefault(str(a.email_hash).lower(), []).append(a.account_id)
    return obs


def _norm_ip(value: str) -> str:
    if _PLAIN_V4.fullmatch(value):  # already canonical (no leading zeros): skip the parse
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


_PLAIN_V4 = re.compile(r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)")


def _atom_values(atom: Atom, obs: Observations, cache: dict[str, Any]) -> Iterable[str]:
    pool = obs.by_kind.get(atom.kind, {})
    if atom.op == "eq":
        return [v for v in atom.values if v in pool]
    if atom.op == "regex":
        rx = re.compile(atom.values[0])
        return [v for v in pool if rx.search(v)]
    if atom.op == "cidr":
        if "v4" not in cache:
            v4 = [v for v in pool if ":" not in v and v.count(".") == 3]
            ints = np.array([int(ipaddress.IPv4Address(v)) for v in v4], dtype=np.int64)
            order = np.argsort(ints)
            cache["v4"] = (ints[order], [v4[i] for i in order])
            cache["v6"] = [(int(ipaddress.IPv6Address(v)), v) for v in pool if ":" in v]
        out: list[str] = []
        for value in atom.values:
            net = ipaddress.ip_network(value, strict=False)
            lo, hi = int(net.network_address), int(net.broadcast_address)
            if net.version == 4:
                ints, names = cache["v4"]
                a, b = np.searchsorted(ints, lo, "left"), np.searchsorted(ints, hi, "right")
                out.extend(names[a:b])
            else:
                out.extend(v for i, v in cache["v6"] if lo <= i <= hi)
        return out
    return []


def _valid(ind: Indicator, o: Obs) -> bool:
    if ind.valid_until and o.first and o.first > ind.valid_until:
        return False
    return not (ind.valid_from and o.last and o.last < ind.valid_from)


def match_indicators(indicators: list[Indicator], obs: Observations) -> list[Hit]:
    cache: dict[str, Any] = {}
    hits: list[Hit] = []
    for ind in indicators:
        for clause in ind.pattern.clauses:
            per_atom: list[dict[str, list[tuple[str, str, Obs]]]] = []
            for atom in clause:
                found: dict[str, list[tuple[str, str, Obs]]] = defaultdict(list)
                for value in _atom_values(atom, obs, cache):
                    for acc, o in obs.by_kind[atom.kind][value].items():
                        if _valid(ind, o):
                            found[acc].append((atom.kind, value, o))
                if atom.kind == "email" and atom.op == "eq":
                    for value in atom.values:
                        digest = hashlib.sha256(value.encode()).hexdigest()
                        for acc in obs.email_hashes.get(digest, []):
                            found[acc].append(("email", value, Obs(1, None, None)))
                per_atom.append(found)
            if not per_atom:
                continue
            accounts = set(per_atom[0])
            for f in per_atom[1:]:
                accounts &= set(f)
            for acc in sorted(accounts):
                for f in per_atom:
                    for kind, value, o in f[acc]:
                        deg = obs.degree(kind, value) or len(obs.email_hashes.get(value, [])) or 1
                        hits.append(Hit(acc, ind.id, kind, value, o.n, o.first, o.last, deg))
    uniq = {(h.account_id, h.indicator_id, h.kind, h.value): h for h in hits}
    return list(uniq.values())
