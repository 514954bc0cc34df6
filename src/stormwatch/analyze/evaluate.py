"""Score ``analyze`` against a simulator's ground truth (``truth.json``).

Reported: account precision and recall of ``flagged`` (enforce), recall split into actor
accounts the partner intel names directly and those reachable only by links or behaviour, the
review-level recall, the review-budget recall (actor accounts enforced or ranked within the review
budget), false positives among security professionals and among accounts that used a
crowded IP (VPN exits, NATs: shared by >= 50 accounts), attribution accuracy (flagged actor
accounts named with the right actor; and over all actor accounts), and cluster purity (share of a
cluster's members that belong to its majority operation, benign counted as one group), for
clusters holding an actor account or a flagged account.
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


def evaluate(store: Store, truth_path: Path) -> dict[str, Any]:
    truth = orjson.loads(truth_path.read_bytes())
    accounts: dict[str, dict[str, Any]] = truth["accounts"]
    j: dict[str, dict[str, Any]] = {
        x.account_id: {
            "flagged": x.flagged,
            "level": x.level,
            "actor": x.actor,
            "cluster": x.cluster_id,
            "within_budget": bool(x.within_budget),
        }
        for x in store.analysis.judgements()
    }
    actors = {a for a, t in accounts.items() if t.get("is_actor")}
    named = {a for a in actors if accounts[a].get("named_in_intel")}
    unnamed = actors - named
    flagged = {a for a, x in j.items() if x["flagged"]}
    review = {a for a, x in j.items() if x["level"] in ("review", "enforce")}
    in_budget = {a for a, x in j.items() if x["within_budget"]}
    tp = flagged & actors
    sec = {a for a, t in accounts.items() if t.get("persona") == "security_pro"}
    crowd_ips = store.analysis.crowded_values("ip", CROWD_DEGREE)
    crowd: set[str] = set()
    if crowd_ips:
        for attr in store.analysis.attributes(kinds=["ip"], ordered=False):
            if attr.value in crowd_ips and attr.account_id not in actors:
                crowd.add(attr.account_id)
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
