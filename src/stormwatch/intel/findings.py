"""What stormwatch found, in the shape the exporters read, and how it is loaded from the store.

The analysis stage decides (:mod:`stormwatch.result` records, read through ``store.analysis``: flagged
judgements, clusters, account observables, intel hits); this module only gathers. Confidences are 0..1,
as the analysis records them (a findings file with 0..100 values is refused). Secrets the exporters
must never leak unless the policy allows it (account ids, end-user ids, e-mail addresses, prompt
and response text) are loaded too, so the final leak check knows what to look for.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from stormwatch.errors import InputError
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
    confidence: float | None = None  # 0..1, as stormwatch.result records it
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
        """The 0..1 confidence on STIX's 0..100 scale."""
        if self.confidence is None:
            return None
        return max(0, min(100, round(float(self.confidence) * 100)))


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

    def without_secrets(self, salt: str, keep: Collection[str] = ()) -> Findings:
        """The same findings with every secret value replaced by a placeholder that cannot occur by chance.

        What the exporter writes for this twin is the bundle's vocabulary (actor names, taxonomy
        text, descriptions): a secret found there as often as in the real bundle did not leave
        (see :func:`stormwatch.intel.leaks.check_leaks`). The same value gets the same placeholder
        in every field, and an e-mail address keeps its domain, so the twin takes the same paths.
        Values in ``keep`` (those the policy lets this recipient have) stay as they are.
        """
        names: dict[str, str] = {}

        def sub(value: str) -> str:
            if value in keep:
                return value
            if value not in names:
                local, at, domain = value.rpartition("@")
                stem = f"redacted-{salt}-{len(names)}"
                names[value] = f"{stem}@{domain}" if at and local else stem
            return names[value]

        clusters = []
        for c in self.clusters:
            accounts = [
                replace(
                    a,
                    account_id=sub(a.account_id),
                    emails=[sub(v) for v in a.emails],
                    end_user_ids=[sub(v) for v in a.end_user_ids],
                    prompts=[sub(v) for v in a.prompts],
                    responses=[sub(v) for v in a.responses],
                )
                for a in c.accounts
            ]
            infra = [replace(i, value=sub(i.value)) if i.kind == "email" else i for i in c.infrastructure]
            clusters.append(replace(c, accounts=accounts, infrastructure=infra, notes=[sub(v) for v in c.notes]))
        return Findings(clusters)

    # -- JSON (a findings file, tests) -----------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Findings:
        clusters = []
        for c in data.get("clusters", []):
            accounts = [
                AccountFinding(
                    account_id=str(a["account_id"]),
                    risk=float(a.get("risk", 0.0)),
                    confidence=_confidence(a.get("confidence"), f"account {a.get('account_id')!r}"),
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
                    confidence=_confidence(c.get("confidence"), f"cluster {c.get('cluster_id')!r}"),
                    tlp=Tlp.parse(c["tlp"]) if c.get("tlp") else None,
                    accounts=accounts,
                    infrastructure=infra,
                    notes=[str(n) for n in c.get("notes", [])],
                    enforcement=c.get("enforcement"),
                )
            )
        return cls(clusters)


def _confidence(value: Any, where: str) -> float | None:
    """A confidence from a findings file: a number in 0..1 (as the analysis records it)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InputError(
            f"findings: {where}: confidence must be a number in 0..1, got {value!r}",
            hint="write 0.4, not 40: confidences are 0..1 everywhere",
        )
    return float(value)


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


def _chunks(items: list[str], n: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def load_findings(store: Store, *, prompts_per_account: int = 3) -> Findings:
    """Flagged accounts, grouped by cluster, with their infrastructure; empty before analysis ran."""
    from stormwatch.vocab import actor_info

    repo = store.analysis
    clusters: dict[str, ClusterFinding] = {}
    by_account: dict[str, tuple[ClusterFinding, AccountFinding]] = {}
    cinfo = {c.cluster_id: c for c in repo.clusters()}
    for j in repo.judgements(flagged=True):
        key = j.cluster_id if j.cluster_id else f"account:{j.account_id}"
        c = clusters.get(key)
        if c is None:
            crow = cinfo.get(key)
            name = (crow.actor if crow and crow.actor else None) or j.actor
            conf = crow.confidence if crow and crow.confidence is not None else j.confidence
            c = ClusterFinding(cluster_id=key, actor=name, confidence=conf)
            info = actor_info(name) if name else None
            if info is not None:
                c.actor = info.name
                c.aliases = list(info.aliases)
                c.attack_group_id = info.attack_id
                c.sponsor = info.sponsor
            clusters[key] = c
        a = AccountFinding(account_id=j.account_id, risk=j.risk, ttps=_ttp_counts(dict(j.ttps)))
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
        for f in repo.account_facts(chunk).values():
            if f.signup_ip:
                add(f.account_id, "signup_ip", str(f.signup_ip), 1, f.created_at, f.created_at, Tlp.CLEAR)
            if f.email_domain:
                add(f.account_id, "email_domain", str(f.email_domain), 1, f.created_at, f.created_at, Tlp.CLEAR)
        for at in repo.attributes(account_ids=chunk, ordered=False):
            add(at.account_id, at.kind, at.value, at.n or 1, at.first_ts, at.last_ts, Tlp.CLEAR)
        hits = repo.hits(chunk)
        marks_of = _indicator_tlps(store, {h.indicator_id for h in hits})
        for h in hits:
            add(h.account_id, h.kind, h.value, h.n or 1, h.first_ts, h.last_ts, marks_of.get(h.indicator_id, Tlp.RED))
        # activity window, end-user ids and prompt excerpts (secrets: loaded so the leak check knows them)
        for act in repo.activity(chunk).values():
            a = by_account[act.account_id][1]
            a.first_seen, a.last_seen, a.events = act.first_ts, act.last_ts, act.events
        for account_id, users in repo.end_users(chunk).items():
            by_account[account_id][1].end_user_ids.extend(users)
    if prompts_per_account > 0:
        for account_id, (_c, a) in by_account.items():
            for prompt, response in repo.flagged_texts(account_id, prompts_per_account):
                if prompt:
                    a.prompts.append(str(prompt))
                if response:
                    a.responses.append(str(response))
    return Findings(sorted(clusters.values(), key=lambda c: c.cluster_id))


def _indicator_tlps(store: Store, ids: set[str]) -> dict[str, Tlp]:
    """The TLP level of the partner indicators our hits came from (unknown: RED)."""
    out: dict[str, Tlp] = {}
    for oid, raw in store.intel.raw_objects(ids).items():
        try:
            out[oid] = object_tlp(orjson.loads(raw), default=Tlp.AMBER)
        except orjson.JSONDecodeError:
            out[oid] = Tlp.RED
    return out
