"""What stormwatch found, in the shape the exporters read, and how it is loaded from the store.

The analysis stage (migration 0003: ``account_judgements``, ``clusters``, ``link_edges``,
``account_attributes``, ``intel_hits``) decides; this module only gathers. Secrets the exporters
must never leak unless the policy allows it (account ids, end-user ids, e-mail addresses, prompt
and response text) are loaded too, so the final leak check knows what to look for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from stormwatch.intel.tlp import Tlp, object_tlp
from stormwatch.store import Store

#: free-mail and big-provider domains are never indicators of an actor
FREE_MAIL: frozenset[str] = frozenset(
    {
        "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "yahoo.com",
        "icloud.com", "proton.me", "protonmail.com", "mail.ru", "yandex.ru", "yandex.com", "naver.com",
        "daum.net", "qq.com", "163.com", "126.com", "sina.com", "chmail.ir", "gmx.de", "gmx.net",
        "aol.com", "zoho.com", "tutanota.com", "mail.com", "foxmail.com", "rambler.ru", "bk.ru",
        "inbox.ru", "list.ru",
    }
)  # fmt: skip

INFRA_KINDS = ("ipv4", "ipv6", "domain", "url", "email")


@dataclass(slots=True)
class Infra:
    kind: str  # ipv4 | ipv6 | domain | url | email
    value: str
    first_seen: str | None = None
    last_seen: str | None = None
    count: int = 1
    min_tlp: Tlp = Tlp.CLEAR  # a partner's marking on where we learnt it travels with it


@dataclass(slots=True)
class AccountFinding:
    account_id: str
    risk: float = 0.0
    confidence: float | None = None
    ttps: dict[str, int] = field(default_factory=dict)
    emails: list[str] = field(default_factory=list)
    end_user_ids: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    first_seen: str | None = None
    last_seen: str | None = None
    events: int = 0


@dataclass(slots=True)
class ClusterFinding:
    cluster_id: str
    actor: str | None = None
    aliases: list[str] = field(default_factory=list)
    attack_group_id: str | None = None
    sponsor: str | None = None
    confidence: float | None = None  # 0..1 or 0..100
    tlp: Tlp | None = None
    accounts: list[AccountFinding] = field(default_factory=list)
    infrastructure: list[Infra] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # analyst free text
    enforcement: str | None = None

    @property
    def ttps(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for a in self.accounts:
            for t, n in a.ttps.items():
                out[t] = out.get(t, 0) + n
        return out

    @property
    def first_seen(self) -> str | None:
        vals = [a.first_seen for a in self.accounts if a.first_seen] + [
            i.first_seen for i in self.infrastructure if i.first_seen
        ]
        return min(vals) if vals else None

    @property
    def last_seen(self) -> str | None:
        vals = [a.last_seen for a in self.accounts if a.last_seen] + [
            i.last_seen for i in self.infrastructure if i.last_seen
        ]
        return max(vals) if vals else None

    @property
    def events(self) -> int:
        return sum(a.events for a in self.accounts)

    def confidence_0_100(self) -> int | None:
        if self.confidence is None:
            return None
        c = float(self.confidence)
        c = c * 100 if c <= 1.0 else c
        return max(0, min(100, round(c)))


@dataclass(slots=True)
class Findings:
    clusters: list[ClusterFinding] = field(default_factory=list)

    def secrets(self) -> dict[str, set[str]]:
        """Values that must not leave unless the policy allows their field, by field."""
        out: dict[str, set[str]] = {
            f: set() for f in ("account_id", "end_user_id", "email", "prompt_text", "response_text", "analyst_notes")
        }
        for c in self.clusters:
            out["analyst_notes"].update(c.notes)
            for a in c.accounts:
                out["account_id"].add(a.account_id)
                out["end_user_id"].update(a.end_user_ids)
                out["email"].update(a.emails)
                out["prompt_text"].update(a.prompts)
                out["response_text"].update(a.responses)
            out["email"].update(i.value for i in c.infrastructure if i.kind == "email")
        return out

    # -- JSON (a findings file, tests) -----------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Findings:
        clusters = []
        for c in data.get("clusters", []):
            accounts = [
                AccountFinding(
                    account_id=str(a["account_id"]),
                    risk=float(a.get("risk", 0.0)),
                    confidence=a.get("confidence"),
                    ttps={str(k): int(v) for k, v in _ttp_counts(a.get("ttps")).items()},
                    emails=[str(e) for e in a.get("emails", [])],
                    end_user_ids=[str(e) for e in a.get("end_user_ids", [])],
                    prompts=[str(p) for p in a.get("prompts", [])],
                    responses=[str(p) for p in a.get("responses", [])],
                    first_seen=a.get("first_seen"),
                    last_seen=a.get("last_seen"),
                    events=int(a.get("events", 0)),
                )
                for a in c.get("accounts", [])
            ]
            infra = [
                Infra(
                    kind=str(i["kind"]),
                    value=str(i["value"]),
                    first_seen=i.get("first_seen"),
                    last_seen=i.get("last_seen"),
                    count=int(i.get("count", 1)),
                    min_tlp=Tlp.parse(i.get("min_tlp", "clear")),
                )
                for i in c.get("infrastructure", [])
            ]
            clusters.append(
                ClusterFinding(
                    cluster_id=str(c["cluster_id"]),
                    actor=c.get("actor"),
                    aliases=[str(x) for x in c.get("aliases", [])],
                    attack_group_id=c.get("attack_group_id"),
                    sponsor=c.get("sponsor"),
                    confidence=c.get("confidence"),
                    tlp=Tlp.parse(c["tlp"]) if c.get("tlp") else None,
                    accounts=accounts,
                    infrastructure=infra,
                    notes=[str(n) for n in c.get("notes", [])],
                    enforcement=c.get("enforcement"),
                )
            )
        return cls(clusters)


def _ttp_counts(value: Any) -> dict[str, int]:
    """TTPs as the analysis stores them: ``{id: n|score}``, ``[id, ...]`` or ``[{"id": ..}, ...]``."""
    if isinstance(value, str | bytes):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            return {}
    out: dict[str, int] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out[str(k)] = int(v) if isinstance(v, int) and v > 0 else 1
    elif isinstance(value, list):
        for v in value:
            ident = (v.get("id") or v.get("ttp")) if isinstance(v, dict) else v
            if ident:
                n = v.get("count", 1) if isinstance(v, dict) else 1
                out[str(ident)] = out.get(str(ident), 0) + (int(n) if isinstance(n, int) else 1)
    return out


def classify_value(kind: str, value: str) -> str | None:
    """Map an attribute/link/hit kind + value onto an infrastructure kind, or None (not shareable)."""
    k = kind.lower()
    v = value.strip()
    if not v:
        return None
    if "ip" in k.split("_") or k in ("ip", "ipv4", "ipv6", "signup_ip", "ip_address", "ipv4-addr", "ipv6-addr"):
        try:
            return "ipv6" if ipaddress.ip_address(v).version == 6 else "ipv4"
        except ValueError:
            return None
    if k in ("domain", "domain-name", "email_domain", "domain_name"):
        return None if v.lower() in FREE_MAIL or "." not in v else "domain"
    if k in ("url",):
        return "url"
    if k in ("email", "email-addr", "email_address"):
        return "email" if "@" in v else None
    return None  # devices, payment fingerprints, phone hashes, org ids: never shared


def _table_exists(store: Store, name: str) -> bool:
    if store.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?"
    return bool(store.query(sql, (name,)))


def _chunks(items: list[str], n: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def load_findings(store: Store, *, prompts_per_account: int = 3) -> Findings:
    """Flagged accounts, grouped by cluster, with their infrastructure; empty before analysis ran."""
    from stormwatch.intel.taxonomy import actor_info

    if not _table_exists(store, "account_judgements"):
        return Findings()
    rows = store.query(
        "SELECT account_id, risk, cluster_id, actor, actor_ref, confidence, ttps FROM account_judgements "
        "WHERE flagged = 1 ORDER BY account_id"
    )
    clusters: dict[str, ClusterFinding] = {}
    by_account: dict[str, tuple[ClusterFinding, AccountFinding]] = {}
    cinfo: dict[str, tuple[Any, ...]] = {}
    if _table_exists(store, "clusters"):
        cinfo = {str(r[0]): r for r in store.query("SELECT cluster_id, actor, confidence FROM clusters")}
    for account_id, risk, cluster_id, actor, _actor_ref, confidence, ttps in rows:
        key = str(cluster_id) if cluster_id else f"account:{account_id}"
        c = clusters.get(key)
        if c is None:
            crow = cinfo.get(key)
            name = (crow[1] if crow and crow[1] else None) or actor
            conf = crow[2] if crow and crow[2] is not None else confidence
            c = ClusterFinding(cluster_id=key, actor=name, confidence=conf)
            info = actor_info(name) if name else None
            if info is not None:
                c.actor = info.name
                c.aliases = list(info.aliases)
                c.attack_group_id = info.attack_id
                c.sponsor = info.sponsor
            clusters[key] = c
        a = AccountFinding(account_id=str(account_id), risk=float(risk or 0.0), ttps=_ttp_counts(ttps))
        c.accounts.append(a)
        by_account[a.account_id] = (c, a)
    ids = list(by_account)
    infra: dict[tuple[str, str, str], Infra] = {}

    def add(account_id: str, kind: str, value: str, n: int, first: Any, last: Any, tlp: Tlp) -> None:
        ik = classify_value(kind, value)
        if ik is None or account_id not in by_account:
            return
        c = by_account[account_id][0]
        k = (c.cluster_id, ik, value.strip())
        cur = infra.get(k)
        if cur is None:
            cur = infra[k] = Infra(ik, value.strip(), first, last, 0, tlp)
            c.infrastructure.append(cur)
        cur.count += max(1, int(n or 1))
        cur.min_tlp = max(cur.min_tlp, tlp)
        if first and (cur.first_seen is None or str(first) < cur.first_seen):
            cur.first_seen = str(first)
        if last and (cur.last_seen is None or str(last) > cur.last_seen):
            cur.last_seen = str(last)

    # account facts: sign-up IP and e-mail domain (the hash of the address is the platform's own)
    for chunk in _chunks(ids):
        marks = ", ".join("?" for _ in chunk)
        for r in store.query(
            f"SELECT account_id, signup_ip, email_domain, created_at FROM accounts WHERE account_id IN ({marks})",
            chunk,
        ):
            if r[1]:
                add(str(r[0]), "signup_ip", str(r[1]), 1, r[3], r[3], Tlp.CLEAR)
            if r[2]:
                add(str(r[0]), "email_domain", str(r[2]), 1, r[3], r[3], Tlp.CLEAR)
        if _table_exists(store, "account_attributes"):
            for r in store.query(
                f"SELECT account_id, kind, value, n, first_ts, last_ts FROM account_attributes "
                f"WHERE account_id IN ({marks})",
                chunk,
            ):
                add(str(r[0]), str(r[1]), str(r[2]), int(r[3] or 1), r[4], r[5], Tlp.CLEAR)
        if _table_exists(store, "intel_hits"):
            hit_rows = store.query(
                f"SELECT account_id, indicator_id, kind, value, n, first_ts, last_ts FROM intel_hits "
                f"WHERE account_id IN ({marks})",
                chunk,
            )
            marks_of = _indicator_tlps(store, {str(r[1]) for r in hit_rows})
            for r in hit_rows:
                add(str(r[0]), str(r[2]), str(r[3]), int(r[4] or 1), r[5], r[6], marks_of.get(str(r[1]), Tlp.RED))
        # activity window, end-user ids and prompt excerpts (secrets: loaded so the leak check knows them)
        for r in store.query(
            f"SELECT account_id, MIN(ts), MAX(ts), COUNT(*) FROM events WHERE account_id IN ({marks}) "
            "GROUP BY account_id",
            chunk,
        ):
            a = by_account[str(r[0])][1]
            a.first_seen, a.last_seen, a.events = r[1], r[2], int(r[3])
        for r in store.query(
            f"SELECT DISTINCT account_id, end_user_id FROM events WHERE account_id IN ({marks}) "
            "AND end_user_id IS NOT NULL",
            chunk,
        ):
            by_account[str(r[0])][1].end_user_ids.append(str(r[1]))
    if prompts_per_account > 0 and _table_exists(store, "detections"):
        for account_id, (_c, a) in by_account.items():
            for r in store.query(
                "SELECT e.prompt, e.response FROM detections d JOIN events e ON e.event_id = d.event_id "
                "WHERE d.account_id = ? AND d.flagged = 1 ORDER BY d.score DESC LIMIT ?",
                (account_id, prompts_per_account),
            ):
                if r[0]:
                    a.prompts.append(str(r[0]))
                if r[1]:
                    a.responses.append(str(r[1]))
    return Findings(sorted(clusters.values(), key=lambda c: c.cluster_id))


def _indicator_tlps(store: Store, ids: set[str]) -> dict[str, Tlp]:
    """The TLP level of the partner indicators our hits came from (unknown: RED)."""
    out: dict[str, Tlp] = {}
    if not ids or not _table_exists(store, "intel_objects"):
        return out
    lst = sorted(ids)
    for chunk in _chunks(lst):
        marks = ", ".join("?" for _ in chunk)
        for oid, raw in store.query(f"SELECT id, raw FROM intel_objects WHERE id IN ({marks})", chunk):
            try:
                out[str(oid)] = object_tlp(orjson.loads(raw), default=Tlp.AMBER)
            except orjson.JSONDecodeError:
                out[str(oid)] = Tlp.RED
    return out
