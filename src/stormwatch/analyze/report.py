"""Read judgements back (through ``store.analysis``): export lines, an account's timeline and evidence, clusters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from stormwatch.store import Store

__all__ = ["account_detail", "cluster_detail", "export_rows", "list_clusters"]

#: the fields of an ``accounts export`` line
EXPORT_FIELDS = (
    "account_id",
    "risk",
    "flagged",
    "level",
    "cluster_id",
    "actor",
    "actor_ref",
    "confidence",
    "confidence_label",
    "ttps",
    "evidence",
    "review_rank",
    "within_budget",
    "exempt",
    "exemption",
)


def export_rows(store: Store, *, flagged_only: bool = False, level: str | None = None) -> Iterator[dict[str, Any]]:
    for j in store.analysis.judgements(flagged=True if flagged_only else None, level=level or None):
        d = j.to_dict()
        # the account model's probability and top contributions (None when no model scored it)
        yield {**{k: d[k] for k in EXPORT_FIELDS}, "account_model": (d.get("explanation") or {}).get("account_model")}


def account_detail(store: Store, account_id: str, top: int = 10) -> dict[str, Any] | None:
    j = store.analysis.judgement(account_id)
    if j is None:
        return None
    out = j.to_dict()
    acc = store.get_account(account_id)
    out["account"] = (
        None
        if acc is None
        else {k: getattr(acc, k) for k in ("created_at", "email_domain", "country", "org_id", "status", "signup_ip")}
    )
    out["features"] = store.analysis.features(account_id)
    out["timeline"] = [{"day": d, "events": n} for d, n in store.analysis.event_days(account_id).items()]
    out["top_requests"] = [
        {"event_id": r.event_id, "ts": r.ts, "score": r.score, "top_ttp": r.top_ttp}
        for r in store.analysis.top_requests(account_id, j.model_version, top)
    ]
    out["infrastructure"] = [
        {"kind": a.kind, "value": a.value, "n": a.n, "first_ts": a.first_ts, "last_ts": a.last_ts}
        for a in store.analysis.attributes(account_ids=[account_id])
    ]
    return out


def list_clusters(store: Store, *, min_size: int = 2, limit: int = 100) -> list[dict[str, Any]]:
    return [
        {
            "cluster_id": c.cluster_id,
            "size": c.size,
            "actor": c.actor,
            "confidence": c.confidence,
            "confidence_label": c.confidence_label,
            "flagged_accounts": c.flagged_accounts,
        }
        for c in store.analysis.clusters(min_size=min_size, order="flagged", limit=limit)
    ]


def cluster_detail(store: Store, cluster_id: str) -> dict[str, Any] | None:
    c = store.analysis.cluster(cluster_id)
    if c is None:
        return None
    judged = {j.account_id: j for j in store.analysis.judgements(account_ids=c.members)}
    members = [
        {"account_id": a, "risk": j.risk, "level": j.level, "actor": j.actor, "confidence": j.confidence}
        for a in c.members
        if (j := judged.get(a)) is not None
    ]
    return {
        **c.to_dict(members=False),
        "members": members,
        "edges": [e.to_dict(with_cluster=False) for e in c.edges],
    }
