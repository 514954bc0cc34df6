"""Score ``analyze`` against a simulator's ground truth (``truth.json``).

Reported: account precision and recall of ``flagged`` (enforce), recall split into actor
accounts the partner intel names directly and those reachable only by links or behaviour, the
review-level recall, the review-budget recall (actor accounts enforced or ranked within the review
budget; ``review_budget_recall_with_requests`` counts only actor accounts that sent at least one
request: a simulator opens some that never do, and nothing request-based can see those), false
positives among security professionals and among accounts that used a crowded IP (VPN exits,
NATs: shared by >= 50 accounts), attribution accuracy (flagged actor accounts named with the right
actor; and over all actor accounts), and cluster purity (share of a cluster's members that belong
to its majority operation, benign counted as one group), for clusters holding an actor account or
a flagged account.

Ranking: ``ranking_ap`` is the average precision of actor accounts over every account ordered by
level (enforce, review, none), then by the account model's calibrated probability
(``explanation.account_model.probability``; risk where an account has none), ties by account id;
``ranking_ap_risk`` orders by risk instead, and ``ranking_ap_shadow`` gives each shadow model's AP
(``explanation.account_model.shadow``). ``false_positives_by_persona`` counts benign accounts
enforced or within the review budget, per persona (the hard ones: security professionals,
penetration-testing firms, red-teamers, CTF students); ``exempt_enforced`` must stay 0.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson

from stormwatch.store import Store

__all__ = ["evaluate"]

CROWD_DEGREE = 50


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


HARD_PERSONAS = ("security_pro", "pentest_firm", "red_teamer", "ctf_student")
_LEVEL = {"enforce": 2, "review": 1}


def average_precision(ranked: list[bool]) -> float | None:
    """AP of a ranked list of labels (True = relevant); None without any relevant item."""
    hits, total = 0, 0.0
    for rank, rel in enumerate(ranked, start=1):
        if rel:
            hits += 1
            total += hits / rank
    return round(total / hits, 4) if hits else None


def _ranking_ap(j: dict[str, dict[str, Any]], actors: set[str], score: str, shadow: str | None = None) -> float | None:
    def key(a: str) -> tuple[int, int, float, str]:
        x = j[a]
        if score == "risk":
            return (-_LEVEL.get(x["level"], 0), 0, -float(x["risk"]), a)
        p = x["shadow"].get(shadow) if shadow else x["probability"]
        # within a level, the accounts the model scored (at none: its candidates) by their probability
        # first, then the others by risk: the two are not on one scale
        return (-_LEVEL.get(x["level"], 0), int(p is None), -float(x["risk"] if p is None else p), a)

    ranked = sorted(j, key=key)
    missing = len(actors - set(j))  # actor accounts analysis never judged rank last
    return average_precision([a in actors for a in ranked] + [True] * missing)


def evaluate(store: Store, truth_path: Path) -> dict[str, Any]:
    truth = orjson.loads(truth_path.read_bytes())
    accounts: dict[str, dict[str, Any]] = truth["accounts"]
    j: dict[str, dict[str, Any]] = {}
    models: Counter[str] = Counter()
    for jm in store.analysis.judgements():
        am = (jm.explanation or {}).get("account_model") or {}
        prob = am.get("probability")
        if am.get("version"):
            models[str(am["version"])] += 1
        j[jm.account_id] = {
            "flagged": jm.flagged,
            "level": jm.level,
            "actor": jm.actor,
            "cluster": jm.cluster_id,
            "within_budget": bool(jm.within_budget),
            "risk": float(jm.risk),
            "probability": float(prob) if isinstance(prob, (int, float)) else None,
            "shadow": {str(k): float(v) for k, v in (am.get("shadow") or {}).items()},
            "exempt": jm.exemption is not None,
        }
    shadows = sorted({v for x in j.values() for v in x["shadow"]})
    actors = {a for a, t in accounts.items() if t.get("is_actor")}
    named = {a for a in actors if accounts[a].get("named_in_intel")}
    unnamed = actors - named
    flagged = {a for a, x in j.items() if x["flagged"]}
    review = {a for a, x in j.items() if x["level"] in ("review", "enforce")}
    in_budget = {a for a, x in j.items() if x["within_budget"]}
    tp = flagged & actors
    # actor accounts that sent at least one request: what request-based judgement can see at all
    speaking = actors & set(store.analysis.accounts_with_events_after(0))
    sec = {a for a, t in accounts.items() if t.get("persona") == "security_pro"}
    crowd_ips = store.analysis.crowded_values("ip", CROWD_DEGREE)
    crowd: set[str] = set()
    if crowd_ips:
        for attr in store.analysis.attributes(kinds=["ip"], ordered=False):
            if attr.value in crowd_ips and attr.account_id not in actors:
                crowd.add(attr.account_id)
    benign_caught = (flagged | in_budget) - actors
    by_persona = Counter(str(accounts.get(a, {}).get("persona") or "unknown") for a in benign_caught)
    exempt_enforced = sum(1 for a in flagged if j[a]["exempt"])
    right = {a for a in tp if j[a]["actor"] == accounts[a].get("actor")}
    right_all = {a for a in actors if a in j and j[a]["actor"] == accounts[a].get("actor")}
    wrong_actor = {a for a in flagged if j[a]["actor"] and j[a]["actor"] != accounts.get(a, {}).get("actor")}
    members: dict[str, list[str]] = defaultdict(list)
    for a, x in j.items():
        if x["cluster"]:
            members[x["cluster"]].append(a)
    purities, sizes = [], []
    for ms in members.values():
        if not any(m in actors or m in flagged for m in ms):
            continue
        groups = Counter(accounts.get(m, {}).get("operation") or "benign" for m in ms)
        purities.append(groups.most_common(1)[0][1] / len(ms))
        sizes.append(len(ms))
    weighted = sum(p * s for p, s in zip(purities, sizes, strict=True)) / sum(sizes) if sizes else None
    return {
        "truth": str(truth_path),
        "seed": truth.get("seed"),
        "accounts": len(accounts),
        "actor_accounts": len(actors),
        "flagged": len(flagged),
        "precision": _ratio(len(tp), len(flagged)),
        "recall": _ratio(len(tp), len(actors)),
        "recall_named_in_intel": _ratio(len(flagged & named), len(named)),
        "recall_links_or_behaviour_only": _ratio(len(flagged & unnamed), len(unnamed)),
        "recall_review_or_enforce": _ratio(len(review & actors), len(actors)),
        "review_within_budget": len(in_budget),
        "recall_enforce_or_within_budget": _ratio(len((flagged | in_budget) & actors), len(actors)),
        "enforce_precision": _ratio(len(tp), len(flagged)),
        "enforce_recall": _ratio(len(tp), len(actors)),
        "review_budget_recall": _ratio(len((flagged | in_budget) & actors), len(actors)),
        "actor_accounts_with_requests": len(speaking),
        "review_budget_recall_with_requests": _ratio(len((flagged | in_budget) & speaking), len(speaking)),
        "ranked_by": ", ".join(f"account model {v}" for v in sorted(models)) or "risk",
        "ranking_ap": _ranking_ap(j, actors, "model"),
        "ranking_ap_risk": _ranking_ap(j, actors, "risk"),
        "ranking_ap_shadow": {v: _ranking_ap(j, actors, "shadow", v) for v in shadows},
        "actor_accounts_at_none": len(actors - review),
        "false_positives_by_persona": {p: by_persona.get(p, 0) for p in HARD_PERSONAS}
        | {p: n for p, n in sorted(by_persona.items()) if p not in HARD_PERSONAS},
        "exempt_enforced": exempt_enforced,
        "false_positives": sorted(flagged - actors),
        "security_pros": len(sec),
        "security_pros_flagged": len(flagged & sec),
        "security_pros_review": len((review - flagged) & sec),
        "crowd_ip_accounts": len(crowd),
        "crowd_ip_accounts_flagged": len(flagged & crowd),
        "attribution_accuracy_flagged": _ratio(len(right), len(tp)),
        "attribution_accuracy_all_actor_accounts": _ratio(len(right_all), len(actors)),
        "flagged_with_wrong_actor": len(wrong_actor),
        "missed_actor_accounts": sorted(actors - flagged),
        "clusters_evaluated": len(purities),
        "cluster_purity_mean": round(sum(purities) / len(purities), 4) if purities else None,
        "cluster_purity_weighted": round(weighted, 4) if weighted is not None else None,
    }
