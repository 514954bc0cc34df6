"""Account risk in [0, 1], the enforcement level, and the explanation.

``risk = 1 - (1 - 0.6 c) (1 - 0.4 r) (1 - i) (1 - l)``, raised to the attribution confidence when
an actor is named, where

* ``c`` content: noisy-OR of the account's top-3 event scores, shrunk while it has fewer than 3
  high-scoring events;
* ``r`` behaviour: rephrasing after refusals ``1 - exp(-n/2)`` (weight 0.6), conversations that
  escalate ``1 - exp(-n/2)`` (0.4), plus 0.2 for three or more TTPs; working in a foreign time
  zone is *not* a risk signal;
* ``i`` intel: the strongest direct indicator hit (rarity- and type-weighted);
* ``l`` links: intel evidence reaching the account over strong links.

Levels: ``enforce`` when an actor is named with confidence >= 0.5 (medium or high) *and* the
account's own activity corroborates it (content >= 0.8, its own behaviour fits the actor's profile
with score >= 0.25 together with content >= 0.5, it shares a device, card, phone or API key with
the cluster, or it has its own indicator hit on a domain / e-mail / URL or hits from two different
indicators; an IP overlap alone gives ``review``: cloud and proxy addresses get reused), or, without
intel, for a *coordinated* account: its own content >= 0.5 and it sits in a cluster of at least
3 linked accounts of which at least 3 and at least half have content >= 0.8, and the cluster's
behaviour fits an actor profile with score >= 0.5, unless at least half of those members belong to
one organisation of the platform (a security firm's signature as much as an operation's: held at
``review``, see ``judge._coordinated``), or, without intel or links, for a member of a *cohort*
(``analyze.cohorts``: a burst of new, short-lived accounts on one network asking malicious
questions, the trace of an operation that uses one account per task) whose own top request scores
>= 0.5. The paths are tried in that order and the first that enforces wins: an attribution the
account's own activity does not corroborate holds it at ``review`` only when no coordinated cluster
or cohort enforces it (more evidence never lowers a level). ``review`` when risk >= 0.5, any direct
intel hit, a low-confidence attribution, content >= 0.8, membership of a cohort (also one an
organisation holds) or of a coordinated cluster (a quiet member of an operation whose other members
are enforced); otherwise ``none``. Content and evasive retries alone never enforce: security
researchers produce both. ``flagged`` = 1 only for ``enforce``.

Precision first, whatever the score: ``enforce`` always needs *corroboration* beyond the account's
own content and behaviour - an intel hit of its own, intel reaching it over strong links, or
membership of a coordinated cluster or of a cohort. An account without any of them is capped at ``review``
(``explanation["corroboration"]`` lists what it has), so a better score (the calibrated
probability that replaces ``risk`` later) can reorder the review queue but never enforce alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stormwatch.analyze import params as P

__all__ = ["NO_CORROBORATION", "RiskInputs", "RiskResult", "corroboration", "judge"]

NO_CORROBORATION = (
    "no corroboration (no intel hit, no intel over strong links, no coordinated cluster or cohort): at most review"
)


@dataclass(frozen=True, slots=True)
class RiskInputs:
    content: float
    rephrases: int
    escalations: int
    breadth: int
    direct_intel: float
    link_intel: float
    confidence: float  # attribution confidence (0 when no actor)
    behaviour_only: bool
    coordinated: bool = False  # member of a cluster of malicious accounts on an actor's profile
    corroborated: bool = True  # own content, own behaviour fit or an identity link backs the attribution
    cohort: bool = False  # member of a cohort of new, short-lived accounts (analyze.cohorts) ...
    cohort_held: bool = False  # ... that one organisation's accounts make up (never corroboration)
    top_score: float = 0.0  # the account's top request score


@dataclass(frozen=True, slots=True)
class RiskResult:
    risk: float
    level: str
    behaviour: float
    explanation: dict[str, Any]


def corroboration(x: RiskInputs) -> list[str]:
    """What, beyond the account's own content and behaviour, supports enforcing it (empty: nothing)."""
    return [
        name
        for name, on in (
            ("intel hit", x.direct_intel > 0),
            ("intel over strong links", x.link_intel > 0),
            ("coordinated cluster", x.coordinated),
            ("cohort of new accounts", x.cohort and not x.cohort_held),
        )
        if on
    ]


def judge(x: RiskInputs) -> RiskResult:
    r = 0.6 * (1 - math.exp(-x.rephrases / 2)) + 0.4 * (1 - math.exp(-x.escalations / 2))
    r = min(1.0, r + (0.2 if x.breadth >= 3 else 0.0))
    keep = (1 - P.RISK_CONTENT_W * x.content) * (1 - P.RISK_BEHAVIOUR_W * r)
    keep *= (1 - x.direct_intel) * (1 - x.link_intel)
    risk = 1 - keep
    if x.confidence > 0:
        risk = max(risk, x.confidence)
    reasons: list[str] = []
    # the enforce paths first: an attribution that its own activity does not corroborate holds the
    # account at review only when nothing else enforces it (more evidence never lowers the level)
    if x.confidence >= P.ENFORCE_CONFIDENCE and not x.behaviour_only and x.corroborated:
        level = "enforce"
        reasons.append(f"attributed to an actor with confidence {x.confidence:.2f}")
    elif x.coordinated and x.content >= P.COORDINATED_MIN_CONTENT:
        level = "enforce"
        reasons.append(
            "member of a linked cluster of malicious accounts whose behaviour fits an actor profile"
            + ("" if x.confidence >= P.ENFORCE_CONFIDENCE else " (no intel needed)")
        )
    elif x.cohort and not x.cohort_held and x.top_score >= P.COHORT_ENFORCE_SCORE:
        level = "enforce"
        reasons.append(
            "one of a burst of new, short-lived accounts on one network asking malicious questions (a cohort;"
            " no intel or links needed)"
        )
    elif x.confidence >= P.ENFORCE_CONFIDENCE and not x.behaviour_only:
        level = "review"
        reasons.append(
            "attributed only through shared network infrastructure; the account's own activity does not"
            " corroborate it (no malicious content, no fit to the actor's profile, no identity link)"
        )
    elif (
        risk >= P.REVIEW_RISK or x.direct_intel > 0 or x.confidence > 0 or x.content >= 0.8 or x.cohort or x.coordinated
    ):
        level = "review"
        reasons.append(
            "needs an analyst: "
            + ", ".join(
                s
                for s, on in (
                    ("risk above 0.5", risk >= P.REVIEW_RISK),
                    ("an indicator hit", x.direct_intel > 0),
                    ("a low-confidence attribution", 0 < x.confidence < P.ENFORCE_CONFIDENCE),
                    ("high-scoring content", x.content >= 0.8),
                    ("a cohort of new accounts", x.cohort),
                    ("a quiet member of a coordinated cluster", x.coordinated),
                )
                if on
            )
        )
    else:
        level = "none"
    backing = corroboration(x)
    if level == "enforce" and not backing:
        level = "review"
        reasons = [NO_CORROBORATION]
    explanation = {
        "formula": "1 - (1 - 0.6 content)(1 - 0.4 behaviour)(1 - intel)(1 - links), >= attribution confidence",
        "components": {
            "content": round(x.content, 4),
            "behaviour": round(r, 4),
            "intel": round(x.direct_intel, 4),
            "links": round(x.link_intel, 4),
            "attribution_confidence": round(x.confidence, 4),
        },
        "behaviour_detail": {
            "rephrases_after_refusal": x.rephrases,
            "escalations": x.escalations,
            "ttp_breadth": x.breadth,
        },
        "level": level,
        "corroboration": backing,
        "reasons": reasons,
    }
    return RiskResult(round(risk, 4), level, r, explanation)
