"""The STIX 2.1 objects of one export (:class:`BundleBuilder`), each through the sharing policy.

:func:`stormwatch.intel.stix_export.build_bundle` drives it: the producer identity first, then one
call of :meth:`BundleBuilder.group` per actor or unattributed cluster, which adds the
intrusion-set or grouping, threat-actor, attack-patterns, indicators, sightings, observed-data,
relationships and notes the policy lets out at the group's TLP level. Only whitelisted, structured
values are ever copied; every value allowed out is remembered (``allowed_values``) for the leak check
(:mod:`stormwatch.intel.leaks`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from stormwatch.intel.findings import ClusterFinding, Infra
from stormwatch.intel.ids import IdRegistry, parse_time, sco_id, stamp, stix_time
from stormwatch.intel.sharing_policy import Effective, Recipient, Rule, SharingPolicy
from stormwatch.intel.tlp import Tlp
from stormwatch.vocab import atlas_url, attack_url, ttps

EXTENSION_ID = "extension-definition--3c5d1f0e-7b2a-4c8e-9f4d-6a1b2c3d4e5f"
EXTENSION_CREATED = "2026-11-25T00:00:00.000Z"
EXTENSION_SCHEMA = "https://github.com/stormwatch-project/stormwatch/blob/main/docs/sharing.md#extension"
_MAX_COUNT = 999_999_999


def pattern_literal(value: str) -> str:
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


class BundleBuilder:
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
            "pattern": f"[{sco_type}:{prop} = '{pattern_literal(inf.value)}']",
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
