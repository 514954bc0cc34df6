"""A partner's STIX 2.1 intelligence bundle about the simulated actor operations.

Written by hand (no stix2 dependency) with deterministic uuid5 ids. The partner names only part
of each operation's infrastructure, so some actor accounts are reachable only through links
(shared devices, payment, IPs) or behaviour. It also carries the usual noise of real feeds: a
commercial VPN exit flagged as anonymisation infrastructure and a stale IP that now belongs to
an ordinary household.
"""

from __future__ import annotations

import ipaddress
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stormwatch.simulate.population import Population

NS = uuid.UUID("6f1c1d1e-8a53-4f0e-9a57-3c1d0c2b7a10")
TLP_AMBER = "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"
TLP_GREEN = "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"
TLP_EXT = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"


def sid(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(NS, f'{kind}:{key}')}"


def stix_ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(slots=True)
class Intel:
    bundle: dict[str, Any]
    ips: set[str] = field(default_factory=set)  # every address an indicator matches (CIDRs expanded)
    emails: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)
    indicator_count: int = 0
    notes: list[dict[str, Any]] = field(default_factory=list)


def _tlp(name: str, mid: str) -> dict[str, Any]:
    return {
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": mid,
        "created": "2022-10-01T00:00:00.000Z",
        "name": f"TLP:{name.upper()}",
        "extensions": {TLP_EXT: {"extension_type": "property-extension", "tlp_2_0": name}},
    }


def build_intel(pop: Population, rng: random.Random, start: float, seed: int) -> Intel:
    created = stix_ts(start - 2 * 86400)
    ident = sid("identity", f"partner:{seed}")
    objs: list[dict[str, Any]] = [
        _tlp("amber", TLP_AMBER),
        _tlp("green", TLP_GREEN),
        {
            "type": "identity",
            "spec_version": "2.1",
            "id": ident,
            "created": created,
            "modified": created,
            "name": "Partner Threat Intelligence Center",
            "identity_class": "organization",
            "sectors": ["technology"],
            "object_marking_refs": [TLP_GREEN],
        },
    ]
    intel = Intel(bundle={})
    sets: dict[str, str] = {}
    for op in pop.operations:
        spec = op.actor
        if spec.name in sets:
            continue
        iset = sid("intrusion-set", spec.name)
        sets[spec.name] = iset
        o: dict[str, Any] = {
            "type": "intrusion-set",
            "spec_version": "2.1",
            "id": iset,
            "created": created,
            "modified": created,
            "created_by_ref": ident,
            "name": spec.name,
            "aliases": list(spec.aliases),
            "description": f"State-affiliated actor ({spec.country}) observed using LLM services.",
            "object_marking_refs": [TLP_GREEN],
        }
        if spec.attack_id:
            o["external_references"] = [
                {
                    "source_name": "mitre-attack",
                    "external_id": spec.attack_id,
                    "url": f"https://attack.mitre.org/groups/{spec.attack_id}/",
                }
            ]
        objs.append(o)

    def indicator(key: str, pattern: str, name: str, iset: str, types: list[str], conf: int) -> None:
        ind = sid("indicator", key)
        vf = stix_ts(start - rng.uniform(5, 90) * 86400)
        objs.append(
            {
                "type": "indicator",
                "spec_version": "2.1",
                "id": ind,
                "created": created,
                "modified": created,
                "created_by_ref": ident,
                "name": name,
                "description": f"{name}; shared by a partner under TLP:AMBER.",
                "indicator_types": types,
                "pattern": pattern,
                "pattern_type": "stix",
                "pattern_version": "2.1",
                "valid_from": vf,
                "confidence": conf,
                "object_marking_refs": [TLP_AMBER],
            }
        )
        objs.append(
            {
                "type": "relationship",
                "spec_version": "2.1",
                "id": sid("relationship", f"{key}->{iset}"),
                "created": created,
                "modified": created,
                "created_by_ref": ident,
                "relationship_type": "indicates",
                "source_ref": ind,
                "target_ref": iset,
                "object_marking_refs": [TLP_AMBER],
            }
        )
        intel.indicator_count += 1

    st = pop.settings
    # which operations the partner knows about: its own stream, so full coverage draws nothing
    crng = random.Random(f"{seed}:intel-coverage")
    for op in pop.operations:
        if st.intel_op_coverage < 1.0 and crng.random() >= st.intel_op_coverage:
            continue
        iset = sets[op.actor.name]
        share = rng.uniform(st.intel_named_min, st.intel_named_max)
        named = [ip for ip in op.exposed_ips if rng.random() < share] or [rng.choice(op.exposed_ips)]
        cidr, block = op.cidrs[0]
        if rng.random() < 0.5 and any(ip in block for ip in named):
            indicator(
                f"{op.op_id}:{cidr}",
                f"[ipv4-addr:value ISSUBSET '{cidr}']",
                f"{op.actor.name} VPS range",
                iset,
                ["malicious-activity"],
                70,
            )
            intel.ips.update(block)
            intel.ips.add(str(ipaddress.ip_network(cidr).network_address))
            named = [ip for ip in named if ip not in block]
        for ip in named:
            kind = "ipv6-addr" if ":" in ip else "ipv4-addr"
            indicator(
                f"{op.op_id}:{ip}",
                f"[{kind}:value = '{ip}']",
                f"{op.actor.name} infrastructure",
                iset,
                ["malicious-activity"],
                rng.choice([60, 75, 85]),
            )
            intel.ips.add(ip)
        if rng.random() < st.intel_domain_p:
            indicator(
                f"{op.op_id}:{op.rare_domain}",
                f"[domain-name:value = '{op.rare_domain}']",
                f"{op.actor.name} lure domain",
                iset,
                ["malicious-activity"],
                80,
            )
            intel.domains.add(op.rare_domain)
        exposed_emails = [pop.accounts[i].email for i in op.accounts if not pop.accounts[i].hidden]
        for email in exposed_emails[: rng.randint(0, 2)]:
            indicator(
                f"{op.op_id}:{email}",
                f"[email-addr:value = '{email}']",
                f"{op.actor.name} sender",
                iset,
                ["malicious-activity"],
                65,
            )
            intel.emails.add(email)
    # noise: a commercial VPN exit reported as used by one actor, and a stale address
    vpn_ops = [op for op in pop.operations if op.vpn_exits]
    if vpn_ops:
        op = vpn_ops[0]
        ip = op.vpn_exits[0]
        indicator(
            f"noise:vpn:{ip}",
            f"[ipv4-addr:value = '{ip}']",
            "Anonymisation exit used by actor",
            sets[op.actor.name],
            ["anonymization"],
            30,
        )
        intel.ips.add(ip)
        intel.notes.append({"indicator": ip, "note": "commercial VPN exit shared with benign users"})
    homes = [a for a in pop.accounts if a.actor is None and a.persona == "everyday"]
    if homes:
        stale = rng.choice(homes).signup_ip
        op = pop.operations[0]
        indicator(
            f"noise:stale:{stale}",
            f"[{'ipv6-addr' if ':' in stale else 'ipv4-addr'}:value = '{stale}']",
            f"{op.actor.name} infrastructure (historic)",
            sets[op.actor.name],
            ["malicious-activity"],
            40,
        )
        intel.ips.add(stale)
        intel.notes.append({"indicator": stale, "note": "stale: address now used by a benign household"})
    # fixed-order bundle: objects sorted by id keeps output stable whatever the build order
    objs = objs[:3] + sorted(objs[3:], key=lambda o: (o["type"], o["id"]))
    intel.bundle = {"type": "bundle", "id": sid("bundle", f"intel:{seed}"), "objects": objs}
    return intel
