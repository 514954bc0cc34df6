"""Case studies: one per attributed operation, written from the evidence without a count below k.

The fields follow the vendors' case studies (``docs/report.md``): name, aliases, ATT&CK group,
origin, attribution confidence, how it was detected, what the actor used the service for (plain
language from the LLM-TTP definitions), a TTP table (LLM-TTP -> ATT&CK / ATLAS), actions, impact.
The number of accounts is shown only from k on; the narrative carries no other count.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stormwatch.report.suppress import count, is_shown
from stormwatch.result import Judgement
from stormwatch.store.repos.disrupt import Decision
from stormwatch.vocab import actor, ttp

__all__ = ["case_studies", "lower_first"]

LINK_KINDS = {
    "device": "a device",
    "payment": "a payment instrument",
    "payment_fingerprint": "a payment instrument",
    "phone": "a phone number",
    "phone_hash": "a phone number",
    "api_key": "an API key",
    "ip": "a network address",
    "signup_ip": "a sign-up address",
    "email_domain": "an e-mail domain",
    "org": "an organisation",
    "org_id": "an organisation",
}
COUNTRIES = {"CN": "China", "RU": "Russia", "IR": "Iran", "KP": "North Korea"}


def _confidence(labels: Sequence[str | None]) -> str:
    order = ["low", "medium", "high"]
    known = [x for x in labels if x in order]
    return max(known, key=order.index) if known else "low"


_CONFIDENCE_WORDS = {
    "high": "We assess with high confidence that this activity is consistent with",
    "medium": "We assess with medium confidence that this activity is consistent with",
    "low": "With low confidence, this activity resembles",
}


def lower_first(text: str) -> str:
    """``Using the model`` -> ``using the model``; ``LLM-aided`` stays."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def case_studies(
    judgements: Iterable[Judgement], decisions: Mapping[str, list[Decision]], k: int, *, exported: bool
) -> list[dict[str, Any]]:
    """One case study per operation (accounts flagged for enforcement and attributed to one actor)."""
    ops: dict[str, list[Judgement]] = defaultdict(list)
    for j in judgements:
        if j.level == "enforce" and j.actor:
            info = actor(j.actor)
            ops[info.name if info else j.actor].append(j)
    out: list[dict[str, Any]] = []
    for name, members in sorted(ops.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        info = actor(name)
        mass: dict[str, float] = defaultdict(float)
        for m in members:
            for t, share in m.ttps.items():
                mass[t] += float(share)
        total = sum(mass.values()) or 1.0
        main = [t for t in sorted(mass, key=lambda t: (-mass[t], t)) if mass[t] / total >= 0.05 and ttp(t)]
        kinds = Counter(e.kind for m in members for e in m.evidence)
        links = sorted({LINK_KINDS.get(str(e.get("link_kind")), "shared infrastructure")
                        for m in members for e in m.evidence if e.kind == "link"})  # fmt: skip
        signals = sorted({str(e.get("signal")) for m in members for e in m.evidence if e.kind == "behaviour"})
        fits = [e.get("fit") for m in members for e in m.evidence if e.kind == "behaviour" and e.get("fit")]
        office = statistics.mean(float(f.get("office_share", 0.0)) for f in fits) if fits else None
        conf = _confidence([m.confidence_label for m in members])
        actions = sorted({d.action for m in members for d in decisions.get(m.account_id, [])})
        dry = all(d.mode == "dry-run" for m in members for d in decisions.get(m.account_id, []))
        n = count(len(members), k)

        origin = (info.sponsor or COUNTRIES.get(info.country or "", info.country or "")) if info else ""
        aliases = list(info.aliases) if info else []
        detected = []
        if kinds.get("indicator_hit"):
            detected.append("indicators from a partner's threat intelligence matched infrastructure the accounts used")
        if links:
            detected.append("the accounts were linked to each other through " + " and ".join(links[:3]))
        if kinds.get("content"):
            detected.append("our content classifier flagged their requests")
        if "actor_profile" in signals:
            detected.append("their working hours and mix of techniques matched the actor's known profile")
        if "rephrase_after_refusal" in signals:
            detected.append("they rephrased requests after the model refused them")

        labels = [ttp(t) for t in main[:4]]
        uses = [f"{lower_first(x.label)} ({x.id}): {lower_first(x.definition.rstrip('.'))}" for x in labels if x]
        narrative = []
        who = (
            f"{_CONFIDENCE_WORDS[conf]} {name}"
            + (f" ({', '.join(aliases[:3])})" if aliases else "")
            + (f", a threat actor linked to the {origin}" if origin else "")
            + "."
        )
        narrative.append(who)
        size = (f"The operation used {n} accounts on our service." if is_shown(n)
                else f"The operation used a small number of accounts (fewer than {k}) on our service.")  # fmt: skip
        narrative.append(size)
        if uses:
            narrative.append(
                "The actor used the service mainly for " + uses[0] + "."
                + ("" if len(uses) < 2 else " It also turned to the model for " + "; ".join(uses[1:]) + ".")
            )  # fmt: skip
        if office is not None and office >= 0.7:
            narrative.append("Most of its activity fell within the working hours typical of the actor.")
        if info and info.profile.targets:
            narrative.append("Public reporting describes its targets as " + ", ".join(info.profile.targets[:4]) + ".")
        ttp_rows = [
            {
                "llmt": x.id,
                "activity": x.label,
                "tactic": x.tactic,
                "attack": list(x.attack),
                "atlas": [a for a, _ in x.atlas],
            }
            for t in main
            if (x := ttp(t)) is not None
        ]
        out.append(
            {
                "name": name,
                "aliases": aliases,
                "attack_group": info.attack_id if info else None,
                "origin": origin or None,
                "confidence": conf,
                "accounts": n,
                "detected": detected,
                "narrative": narrative,
                "ttps": ttp_rows,
                "actions": [a.replace("_", " ") for a in actions],
                "actions_dry_run": dry and bool(actions),
                "indicators_shared": exported,
                "impact": (
                    "The requests map to known techniques (table above); we found no capability in them that "
                    "goes beyond public tools and documentation. Off-platform impact is not visible to us."
                ),
            }
        )
    return out
