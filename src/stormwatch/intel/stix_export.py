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

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stormwatch.intel.findings import ClusterFinding, Findings
from stormwatch.intel.ids import IdRegistry, MemoryRegistry, content_hash, stix_time
from stormwatch.intel.leaks import RedactionError, check_leaks, content_strings
from stormwatch.intel.sharing_policy import SharingPolicy
from stormwatch.intel.stix_objects import EXTENSION_ID, BundleBuilder
from stormwatch.intel.tlp import Tlp, marking_object
from stormwatch.vocab import actor_info

__all__ = ["EXTENSION_ID", "ExportResult", "RedactionError", "build_bundle", "check_leaks", "content_strings"]


@dataclass(slots=True)
class ExportResult:
    bundle: dict[str, Any]
    max_tlp: Tlp | None
    clusters: int
    skipped_clusters: int
    by_type: dict[str, int] = field(default_factory=dict)
    levels: dict[str, Tlp] = field(default_factory=dict)  # object id -> level


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
    check: bool = True,
) -> ExportResult:
    """The bundle for ``recipient`` (None: an unnamed audience — no TLP:RED at all).

    ``check=False`` skips the leak check; only the check itself builds such a bundle (of the
    findings with their secrets replaced), never to be written.
    """
    now = now or datetime.now(UTC)
    rcpt = policy.recipient(recipient)
    b = BundleBuilder(policy, rcpt, registry or MemoryRegistry(), now)
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
    if check:
        salt = secrets.token_hex(8)
        check_leaks(
            bundle,
            findings,
            policy,
            rcpt,
            b.allowed_values,
            vocabulary=lambda: (
                build_bundle(
                    findings.without_secrets(salt, keep=b.allowed_values),
                    policy,
                    recipient=recipient,
                    now=now,
                    report_name=report_name,
                    check=False,
                ).bundle
            ),
        )
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
