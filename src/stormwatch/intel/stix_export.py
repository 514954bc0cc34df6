"""Build the STIX 2.1 bundle of what stormwatch found, through the sharing policy.

Object mapping (see ``docs/sharing.md``): the producer is an ``identity``; attributed clusters
become ``intrusion-set`` (with aliases and the ATT&CK group id) ``attributed-to`` a ``threat-actor``
(the sponsor); unattributed clusters a ``grouping``; LLM TTPs ``attack-pattern`` objects carrying
external references to ATT&CK and ATLAS; actor infrastructure ``indicator`` objects (IPs, domains,
URLs, e-mail addresses when allowed) with ``valid_from``/``valid_until``; what we saw ``sighting``
(+ ``observed-data`` over pseudonymous ``user-account`` observables when the policy hashes account
ids); ``uses`` / ``indicates`` / ``attributed-to`` / ``related-to`` relationships; a ``report``;
TLP 2.0 marking-definitions on everything. Our own properties live in one property-extension
declared by an ``extension-definition``.

Redaction is by construction (only whitelisted, structured values are ever copied) and then
checked: :func:`check_leaks` walks every string of the bundle for the account ids, end-user ids,
e-mail addresses, prompt/response text and analyst notes the policy did not allow, and refuses
the export if one is found.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from stormwatch.errors import StormwatchError
from stormwatch.intel.findings import ClusterFinding, Findings, Infra
from stormwatch.intel.ids import IdRegistry, MemoryRegistry, content_hash, parse_time, sco_id, stamp, stix_time
from stormwatch.intel.sharing_policy import Effective, Recipient, Rule, SharingPolicy
from stormwatch.intel.taxonomy import actor_info, atlas_url, attack_url, ttps
from stormwatch.intel.tlp import Tlp, marking_object

EXTENSION_ID = "extension-definition--3c5d1f0e-7b2a-4c8e-9f4d-6a1b2c3d4e5f"
EXTENSION_CREATED = "2026-11-25T00:00:00.000Z"
EXTENSION_SCHEMA = "https://github.com/stormwatch-project/stormwatch/blob/main/docs/sharing.md#extension"
_MAX_COUNT = 999_999_999


class RedactionError(StormwatchError):
    """The export would have carried something the sharing policy does not allow."""


@dataclass(slots=True)
class ExportResult:
    bundle: dict[str, Any]
    max_tlp: Tlp | None
    clusters: int
    skipped_clusters: int
    by_type: dict[str, int] = field(default_factory=dict)
    levels: dict[str, Tlp] = field(default_factory=dict)  # object id -> level


def _pattern_str(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


_PATTERN_PATH = {
    "ipv4": ("ipv4-addr", "value"),
    "ipv6": ("ipv6-addr", "value"),
    "domain": ("domain-name", "value"),
    "url": ("url", "value"),
    "email": ("email-addr", "value"),
}
_INFRA_FIELD = {"ipv4": "ip", "ipv6": "ip", "domain": "domain", "url": "url", "email": "email"}
_INFRA_LABEL = {
    "ipv4": "IPv4 address",
    "ipv6": "IPv6 address",
    "domain": "domain",
    "url": "URL",
    "email": "e-mail address",
}


def _merge(clusters: list[ClusterFinding], default: Tlp) -> list[ClusterFinding]:
    """One group per attributed actor (its clusters merged); unattributed clusters stay apart."""
    out: dict[str, ClusterFinding] = {}
    for c in clusters:
        if not c.accounts and not c.infrastructure:
            continue
        key = f"actor:{c.actor.strip().lower()}" if c.actor else f"cluster:{c.cluster_id}"
        g = out.get(key)
        if g is None:
            g = out[key] = ClusterFinding(
                cluster_id=key,
                actor=c.actor,
                aliases=list(c.aliases),
                attack_group_id=c.attack_group_id,
                sponsor=c.sponsor,
                confidence=c.confidence,
                tlp=default if c.tlp is None else c.tlp,
                enforcement=c.enforcement,
            )
        else:
            g.tlp = max(default if g.tlp is None else g.tlp, default if c.tlp is None else c.tlp)
            for a in c.aliases:
                if a not in g.aliases:
                    g.aliases.append(a)
            g.attack_group_id = g.attack_group_id or c.attack_group_id
            g.sponsor = g.sponsor or c.sponsor
            if c.confidence is not None and (g.confidence is None or c.confidence > g.confidence):
                g.confidence = c.confidence
        g.accounts.extend(c.accounts)
        g.infrastructure.extend(c.infrastructure)
        g.notes.extend(c.notes)
        if c.actor:
            info = actor_info(c.actor)
            if info is not None:
                for a in info.aliases:
                    if a not in g.aliases:
                        g.aliases.append(a)
                g.attack_group_id = g.attack_group_id or info.attack_id
                g.sponsor = g.sponsor or info.sponsor
    return list(out.values())


class _Builder:
    def __init__(
        self,
        policy: SharingPolicy,
        recipient: Recipient | None,
        registry: IdRegistry,
        now: datetime,
    ) -> None:
        self.policy = policy
        self.recipient = recipient
        self.registry = registry
        self.now = now
        self.objects: dict[str, dict[str, Any]] = {}
        self.levels: dict[str, Tlp] = {}
        self.allowed_values: set[str] = set()
        self.producer_id = ""

    # -- helpers ------------------------------------------------------------------------------
    def add(self, key: str, obj: dict[str, Any], level: Tlp, eff: Effective | None) -> str | None:
        """Stamp, mark and keep ``obj`` unless the level's rules exclude its type."""
        if eff is not None and obj["type"] not in eff.types:
            return None
        obj = dict(obj)
        if obj["type"] not in ("marking-definition", "extension-definition", "identity"):
            obj.setdefault("created_by_ref", self.producer_id)
        obj["object_marking_refs"] = [level.marking_id]
        out = stamp(self.registry, key, obj, self.now)
        prev = self.levels.get(out["id"])
        if prev is not None and prev > level:  # same object reached at a higher level: keep the higher
            return str(out["id"])
        self.objects[out["id"]] = out
        self.levels[out["id"]] = level
        return str(out["id"])

    def add_sco(self, obj_type: str, props: dict[str, Any], level: Tlp, eff: Effective) -> str | None:
        if obj_type not in eff.types:
            return None
        oid = sco_id(obj_type, props)
        prev = self.levels.get(oid)
        if prev is None or level > prev:
            self.objects[oid] = {
                "type": obj_type,
                "spec_version": "2.1",
                "id": oid,
                **props,
                "object_marking_refs": [level.marking_id],
            }
            self.levels[oid] = level
        return oid

    def rel(self, rtype: str, src: str | None, dst: str | None, level: Tlp, eff: Effective,
            **extra: Any) -> str | None:  # fmt: skip
        if src is None or dst is None:
            return None
        return self.add(
            f"relationship:{rtype}:{src}:{dst}",
            {"type": "relationship", "relationship_type": rtype, "source_ref": src, "target_ref": dst, **extra},
            level,
            eff,
        )

    def since(self, key: str) -> datetime:
        """``now`` for a new object; its first export time for a known one (keeps re-exports stable)."""
        entry = self.registry.get(key)
        return parse_time(entry.created) if entry is not None else self.now

    def ext(self, **props: Any) -> dict[str, Any]:
        return {EXTENSION_ID: {"extension_type": "property-extension", **props}}

    # -- fixed objects -------------------------------------------------------------------------
    def producer(self) -> None:
        ident: dict[str, Any] = {
            "type": "identity",
            "name": self.policy.producer_name,
            "identity_class": "organization",
            "sectors": ["technology"],
        }
        if self.policy.producer_contact:
            ident["contact_information"] = self.policy.producer_contact
        oid = self.add(f"identity:producer:{self.policy.producer_name}", ident, Tlp.CLEAR, None)
        assert oid is not None
        self.producer_id = oid
        self.objects[EXTENSION_ID] = {
            "type": "extension-definition",
            "spec_version": "2.1",
            "id": EXTENSION_ID,
            "created": EXTENSION_CREATED,
            "modified": EXTENSION_CREATED,
            "created_by_ref": oid,
            "name": "stormwatch AI-service abuse context",
            "description": "Properties an AI service provider attaches to intelligence about misuse of its "
            "models: LLM-TTP ids, counts of platform accounts and events, keyed hashes of identifiers.",
            "schema": EXTENSION_SCHEMA,
            "version": "1.0.0",
            "extension_types": ["property-extension"],
            "object_marking_refs": [Tlp.CLEAR.marking_id],
        }
        self.levels[EXTENSION_ID] = Tlp.CLEAR

    def attack_pattern(self, ttp_id: str, eff: Effective) -> str | None:
        t = ttps().get(ttp_id)
        if t is None:
            return None
        refs: list[dict[str, Any]] = [{"source_name": "stormwatch-llm-ttp", "external_id": t.id}]
        refs += [{"source_name": "mitre-attack", "external_id": a, "url": attack_url(a)} for a in t.attack]
        refs += [
            {"source_name": "mitre-atlas", "external_id": a, "url": atlas_url(a), "description": name}
            for a, name in t.atlas
        ]
        return self.add(
            f"attack-pattern:{t.id}",
            {
                "type": "attack-pattern",
                "name": t.label,
                "description": t.definition,
                "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": t.tactic}],
                "external_references": refs,
            },
            Tlp.CLEAR,
            eff,
        )

    # -- one actor / cluster -------------------------------------------------------------------
    def group(self, g: ClusterFinding) -> bool:
        level = self.policy.default_tlp if g.tlp is None else g.tlp
        if not self.policy.may_receive(level, self.recipient):
            return False
        eff = self.policy.effective(level, self.recipient)
        conf = g.confidence_0_100()
        first, last = g.first_seen, g.last_seen
        ttp_counts = g.ttps
        props_ext = self.ext(
            llm_ttps=sorted(ttp_counts), platform_accounts=len(g.accounts), events=min(g.events, _MAX_COUNT)
        )
        if g.actor:
            iset: dict[str, Any] = {
                "type": "intrusion-set",
                "name": g.actor,
                "description": f"State-affiliated actor whose operators used an AI service "
                f"({len(g.accounts)} platform accounts observed).",
                "extensions": props_ext,
            }
            aliases = [a for a in g.aliases if a != g.actor]
            if aliases:
                iset["aliases"] = aliases
            if g.attack_group_id:
                iset["external_references"] = [
                    {
                        "source_name": "mitre-attack",
                        "external_id": g.attack_group_id,
                        "url": f"https://attack.mitre.org/groups/{g.attack_group_id}/",
                    }
                ]
            if first:
                iset["first_seen"] = stix_time(parse_time(first))
            if last:
                iset["last_seen"] = stix_time(parse_time(max(last, first or last)))
            if conf is not None:
                iset["confidence"] = conf
            anchor = self.add(f"intrusion-set:{g.actor.strip().lower()}", iset, level, eff)
            if anchor is None:
                return False
            if g.sponsor:
                ta = self.add(
                    f"threat-actor:{g.sponsor.strip().lower()}",
                    {
                        "type": "threat-actor",
                        "name": g.sponsor,
                        "threat_actor_types": ["nation-state"],
                        "resource_level": "government",
                        "primary_motivation": "organizational-gain",
                    },
                    level,
                    eff,
                )
                extra = {"confidence": conf} if conf is not None else {}
                self.rel("attributed-to", anchor, ta, level, eff, **extra)
        else:
            anchor = None
        ap_ids = [self.attack_pattern(t, eff) for t in sorted(ttp_counts)]
        ap_ids_ok = [a for a in ap_ids if a]
        if anchor:
            for ap in ap_ids_ok:
                self.rel("uses", anchor, ap, level, eff)
        members: list[str] = list(ap_ids_ok)

        # indicators for shareable infrastructure
        seen: set[tuple[str, str]] = set()
        for inf in g.infrastructure:
            if (inf.kind, inf.value) in seen:
                continue
            seen.add((inf.kind, inf.value))
            ind = self.indicator(g, inf, level, anchor)
            if ind:
                members.append(ind)

        # pseudonymous accounts and hashed identifiers
        hashed: list[str] = []
        sco_obs: list[str] = []
        accounts: list[str] = []
        for a in g.accounts:
            arule = eff.rule("account_id")
            if arule in (Rule.HASH, Rule.ALLOW):
                user_id = a.account_id if arule == Rule.ALLOW else eff.hmac("account", a.account_id)
                if arule == Rule.ALLOW:
                    self.allowed_values.add(a.account_id)
                ua = self.add_sco("user-account", {"user_id": user_id}, level, eff)
                if ua:
                    obs = self.observed(ua, a.first_seen or first, a.last_seen or last, max(1, a.events), level, eff)
                    if obs:
                        sco_obs.append(obs)
                    accounts.append(ua)
            erule = eff.rule("email")
            for e in a.emails:
                if erule == Rule.HASH:
                    hashed.append(eff.hmac("email", e))
            if eff.rule("end_user_id") == Rule.HASH:
                hashed.extend(eff.hmac("end-user", u) for u in a.end_user_ids)
            if eff.rule("prompt_text") == Rule.HASH:
                hashed.extend(eff.hmac("prompt", p) for p in a.prompts)
        if not anchor:
            if not members and not sco_obs:
                return False
            grouping = self.add(
                f"grouping:{g.cluster_id}",
                {
                    "type": "grouping",
                    "name": "Unattributed cluster of AI-service misuse",
                    "context": "suspicious-activity",
                    "object_refs": members + sco_obs or [self.producer_id],
                    "extensions": props_ext,
                },
                level,
                eff,
            )
            if grouping is None:
                return False
            anchor = grouping
        for ua in accounts:
            self.rel("related-to", ua, anchor, level, eff)
        # the sighting of the actor / cluster on our platform
        sighting: dict[str, Any] = {
            "type": "sighting",
            "sighting_of_ref": anchor,
            "where_sighted_refs": [self.producer_id],
            "count": max(1, min(g.events, _MAX_COUNT)),
            "description": f"Use of an AI service by {len(g.accounts)} platform accounts.",
            "extensions": self.ext(
                llm_ttps=sorted(ttp_counts),
                platform_accounts=len(g.accounts),
                **({"hashed_identifiers": sorted(set(hashed)), "trust_group": eff.trust_group} if hashed else {}),
            ),
        }
        if first:
            sighting["first_seen"] = stix_time(parse_time(first))
        if last:
            sighting["last_seen"] = stix_time(parse_time(max(last, first or last)))
        if sco_obs:
            sighting["observed_data_refs"] = sco_obs
        if conf is not None:
            sighting["confidence"] = conf
        self.add(f"sighting:{g.cluster_id}:{eff.fingerprint()}", sighting, level, eff)
        if anchor and g.accounts:
            self.text_notes(g, anchor, level, eff)
        return True

    def indicator(self, g: ClusterFinding, inf: Infra, level: Tlp, anchor: str | None) -> str | None:
        ilevel = max(level, inf.min_tlp)
        if not self.policy.may_receive(ilevel, self.recipient):
            return None
        eff = self.policy.effective(ilevel, self.recipient)
        if inf.kind not in _PATTERN_PATH or eff.rule(_INFRA_FIELD[inf.kind]) != Rule.ALLOW:
            return None
        self.allowed_values.add(inf.value)
        sco_type, prop = _PATTERN_PATH[inf.kind]
        key = f"indicator:{inf.kind}:{inf.value}"
        seen_first = inf.first_seen or g.first_seen
        valid_from = parse_time(seen_first) if seen_first else self.since(key)
        until_base = max(parse_time(inf.last_seen), valid_from) if inf.last_seen else valid_from
        valid_until = until_base + timedelta(days=self.policy.indicator_validity_days)
        who = g.actor or "an unattributed cluster"
        obj: dict[str, Any] = {
            "type": "indicator",
            "name": f"{who}: {_INFRA_LABEL[inf.kind]} used with AI-service accounts",
            "description": f"{_INFRA_LABEL[inf.kind].capitalize()} seen on AI-service accounts of {who} "
            f"({inf.count} observations).",
            "indicator_types": ["malicious-activity", "attribution"] if g.actor else ["malicious-activity"],
            "pattern": f"[{sco_type}:{prop} = '{_pattern_str(inf.value)}']",
            "pattern_type": "stix",
            "pattern_version": "2.1",
            "valid_from": stix_time(valid_from),
            "valid_until": stix_time(valid_until),
        }
        conf = g.confidence_0_100()
        if conf is not None:
            obj["confidence"] = conf
        ind = self.add(key, obj, ilevel, eff)
        if ind and anchor:
            self.rel("indicates", ind, anchor, ilevel, eff)
        if ind:
            s: dict[str, Any] = {
                "type": "sighting",
                "sighting_of_ref": ind,
                "where_sighted_refs": [self.producer_id],
                "count": max(1, min(inf.count, _MAX_COUNT)),
            }
            if inf.first_seen:
                s["first_seen"] = stix_time(parse_time(inf.first_seen))
            if inf.last_seen:
                s["last_seen"] = stix_time(parse_time(max(inf.last_seen, inf.first_seen or inf.last_seen)))
            self.add(f"sighting:indicator:{inf.kind}:{inf.value}", s, ilevel, eff)
        return ind

    def observed(self, ref: str, first: str | None, last: str | None, n: int, level: Tlp,
                 eff: Effective) -> str | None:  # fmt: skip
        key = f"observed-data:{ref}:{eff.fingerprint()}"
        f = parse_time(first) if first else self.since(key)
        lst = max(parse_time(last), f) if last else f
        return self.add(
            key,
            {
                "type": "observed-data",
                "first_observed": stix_time(f),
                "last_observed": stix_time(lst),
                "number_observed": max(1, min(n, _MAX_COUNT)),
                "object_refs": [ref],
            },
            level,
            eff,
        )

    def text_notes(self, g: ClusterFinding, anchor: str, level: Tlp, eff: Effective) -> None:
        for field_name, texts, abstract in (
            ("analyst_notes", g.notes, "Analyst note"),
            ("prompt_text", [p for a in g.accounts for p in a.prompts], "Prompt excerpt"),
            ("response_text", [r for a in g.accounts for r in a.responses], "Model response excerpt"),
        ):
            if eff.rule(field_name) != Rule.ALLOW:
                continue
            for text in texts:
                self.allowed_values.add(text)
                digest = hashlib.sha256(text.encode()).hexdigest()[:16]
                self.add(
                    f"note:{field_name}:{anchor}:{digest}",
                    {"type": "note", "abstract": abstract, "content": text, "object_refs": [anchor]},
                    level,
                    eff,
                )


def _prune(objects: dict[str, dict[str, Any]]) -> None:
    """Drop relationships / sightings / containers whose references were not exported."""
    changed = True
    while changed:
        changed = False
        for oid in list(objects):
            o = objects[oid]
            t = o["type"]
            dangling = (t == "relationship" and not (o["source_ref"] in objects and o["target_ref"] in objects)) or (
                t == "sighting" and o["sighting_of_ref"] not in objects
            )
            if dangling:
                del objects[oid]
                changed = True
            elif t in ("observed-data", "grouping", "note", "report"):
                refs = [r for r in o["object_refs"] if r in objects]
                if not refs:
                    del objects[oid]
                    changed = True
                elif len(refs) != len(o["object_refs"]):
                    o["object_refs"] = refs
                    changed = True
            if t == "sighting" and oid in objects and "observed_data_refs" in o:
                refs = [r for r in o["observed_data_refs"] if r in objects]
                if len(refs) != len(o["observed_data_refs"]):
                    if refs:
                        o["observed_data_refs"] = refs
                    else:
                        del o["observed_data_refs"]


def build_bundle(
    findings: Findings,
    policy: SharingPolicy,
    *,
    recipient: str | None = None,
    registry: IdRegistry | None = None,
    now: datetime | None = None,
    report_name: str | None = None,
) -> ExportResult:
    """The bundle for ``recipient`` (None: an unnamed audience — no TLP:RED at all)."""
    now = now or datetime.now(UTC)
    rcpt = policy.recipient(recipient)
    b = _Builder(policy, rcpt, registry or MemoryRegistry(), now)
    b.producer()
    groups = _merge(findings.clusters, policy.default_tlp)
    exported = skipped = 0
    for g in groups:
        if b.group(g):
            exported += 1
        else:
            skipped += 1
    _prune(b.objects)
    levels_used = {b.levels[oid] for oid in b.objects}
    content = [oid for oid, o in b.objects.items() if o["type"] not in ("marking-definition",)]
    report_level = max(levels_used) if levels_used else Tlp.CLEAR
    rules = policy.effective(report_level, rcpt)
    report: dict[str, Any] = {
        "type": "report",
        "name": report_name or f"{policy.producer_name}: state-affiliated misuse of an AI service",
        "description": f"{exported} actor clusters shared under the sharing policy "
        f"({'recipient ' + rcpt.name if rcpt else 'no named recipient'}).",
        "report_types": ["threat-actor", "attack-pattern", "indicator"],
        "published": stix_time(now),
        "object_refs": sorted(content),
    }
    report_key = f"report:{rcpt.name if rcpt else '-'}:{rules.fingerprint()}"
    prev = b.registry.get(report_key)
    if prev is not None:  # unchanged content: keep the earlier publication (and version)
        again = dict(report, published=prev.modified, object_marking_refs=[report_level.marking_id])
        again["created_by_ref"] = b.producer_id
        if content_hash(again) == prev.content_hash:
            report["published"] = prev.modified
    b.add(report_key, report, report_level, None)
    levels_used = {b.levels[oid] for oid in b.objects}
    markings = [marking_object(level) for level in sorted(levels_used)]
    objects = markings + sorted(b.objects.values(), key=_order)
    bundle = {"type": "bundle", "id": f"bundle--{_uuid4()}", "objects": objects}
    check_leaks(bundle, findings, policy, rcpt, b.allowed_values)
    by_type: dict[str, int] = {}
    for o in objects:
        by_type[o["type"]] = by_type.get(o["type"], 0) + 1
    levels = {oid: b.levels[oid] for oid in b.objects}
    return ExportResult(bundle, max(levels_used) if levels_used else None, exported, skipped, by_type, levels)


_TYPE_ORDER = {
    t: i
    for i, t in enumerate(
        ["identity", "extension-definition", "threat-actor", "intrusion-set", "grouping", "attack-pattern",
         "indicator", "user-account", "observed-data", "sighting", "relationship", "note", "report"]
    )
}  # fmt: skip


def _order(o: dict[str, Any]) -> tuple[int, str]:
    return (_TYPE_ORDER.get(o["type"], 50), str(o["id"]))


def _uuid4() -> str:
    import uuid

    return str(uuid.uuid4())


_STRUCTURAL_KEYS = frozenset(
    {
        "type", "spec_version", "id", "created", "modified", "published", "valid_from", "valid_until",
        "first_seen", "last_seen", "first_observed", "last_observed", "kill_chain_phases", "external_references",
        "extension_type", "object_marking_refs", "created_by_ref", "sighting_of_ref", "where_sighted_refs",
        "observed_data_refs", "object_refs", "source_ref", "target_ref", "relationship_type", "indicator_types",
        "pattern_type", "pattern_version", "report_types", "identity_class", "sectors", "context",
        "threat_actor_types", "resource_level", "primary_motivation", "llm_ttps", "trust_group", "count",
        "number_observed", "confidence", "platform_accounts", "events",
    }
)  # fmt: skip
_STATIC_TYPES = frozenset({"marking-definition", "extension-definition", "attack-pattern", "identity"})


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in _STRUCTURAL_KEYS:
                yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def content_strings(bundle: dict[str, Any]) -> list[str]:
    """The strings of a bundle that can carry data (not ids, timestamps, vocabularies, taxonomy text)."""
    out: list[str] = []
    for o in bundle.get("objects", []):
        if o.get("type") not in _STATIC_TYPES:
            out.extend(_strings(o))
    return out


def check_leaks(
    bundle: dict[str, Any],
    findings: Findings,
    policy: SharingPolicy,
    recipient: Recipient | None,
    allowed_values: set[str],
) -> None:
    """Refuse a bundle that carries a secret the policy did not let out (defence in depth).

    Every data-carrying string is searched: a secret of 12 characters or more anywhere in one, a
    shorter one as a whole value or quoted inside a pattern.
    """
    secrets = findings.secrets()
    forbidden: dict[str, str] = {}
    for field_name, values in secrets.items():
        for v in values:
            if v and v not in allowed_values:
                forbidden[v] = field_name
    if not forbidden:
        return
    strings = content_strings(bundle)
    exact = set(strings)
    haystack = "\x00".join(strings)
    for secret, field_name in forbidden.items():
        if len(secret) >= 12:
            hit = secret in haystack
        else:
            hit = secret in exact or f"'{_pattern_str(secret)}'" in haystack
        if hit:
            raise RedactionError(
                f"export refused: a {field_name.replace('_', ' ')} value would have left "
                f"({'recipient ' + recipient.name if recipient else 'no named recipient'})",
                hint="this is a bug in the exporter or a finding that repeats a secret in a shared "
                "field; nothing was written",
            )
