"""Read judgements back: export lines, an account's timeline and evidence, clusters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from stormwatch.store import Store

__all__ = ["account_detail", "cluster_detail", "export_rows", "list_clusters"]

_J = (
    "account_id, risk, flagged, level, cluster_id, actor, actor_ref, confidence, confidence_label, ttps,"
    " evidence, explanation, analyzed_at, model_version"
)


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    return {
        "account_id": r[0],
        "risk": float(r[1]),
        "flagged": bool(r[2]),
        "level": r[3],
        "cluster_id": r[4],
        "actor": r[5],
        "actor_ref": r[6],
        "confidence": None if r[7] is None else float(r[7]),
        "confidence_label": r[8],
        "ttps": orjson.loads(r[9]),
        "evidence": orjson.loads(r[10]),
        "explanation": orjson.loads(r[11]),
        "analyzed_at": r[12],
        "model_version": r[13],
    }


def export_rows(store: Store, *, flagged_only: bool = False, level: str | None = None) -> Iterator[dict[str, Any]]:
    where, params = [], []
    if flagged_only:
        where.append("flagged = 1")
    if level:
        where.append("level = ?")
        params.append(level)
    sql = f"SELECT {_J} FROM account_judgements"
    if where:
        sql += " WHERE " + " AND ".join(where)
    for r in store.query(sql + " ORDER BY account_id", params):
        d = _row(r)
        yield {
            k: d[k]
            for k in (
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
            )
        }


def account_detail(store: Store, account_id: str, top: int = 10) -> dict[str, Any] | None:
    rows = store.query(f"SELECT {_J} FROM account_judgements WHERE account_id = ?", (account_id,))
    if not rows:
        return None
    out = _row(rows[0])
    acc = store.get_account(account_id)
    out["account"] = (
        None
        if acc is None
        else {k: getattr(acc, k) for k in ("created_at", "email_domain", "country", "org_id", "status", "signup_ip")}
    )
    f = store.query("SELECT features FROM account_features WHERE account_id = ?", (account_id,))
    out["features"] = orjson.loads(f[0][0]) if f else None
    days: dict[str, int] = {}
    for (ts,) in store.query("SELECT ts FROM events WHERE account_id = ?", (account_id,)):
        days[str(ts)[:10]] = days.get(str(ts)[:10], 0) + 1
    out["timeline"] = [{"day": d, "events": n} for d, n in sorted(days.items())]
    out["top_requests"] = [
        {"event_id": r[0], "ts": r[1], "score": float(r[2]), "top_ttp": r[3]}
        for r in store.query(
            # through the events' (account_id, ts) index and the detections' primary key
            "SELECT d.event_id, d.ts, d.score, d.top_ttp FROM events e JOIN detections d"
            " ON d.event_id = e.event_id AND d.model_version = ? WHERE e.account_id = ?"
            " ORDER BY d.score DESC, d.event_id LIMIT ?",
            (out["model_version"], account_id, top),
        )
    ]
    out["infrastructure"] = [
        {"kind": r[0], "value": r[1], "n": int(r[2]), "first_ts": r[3], "last_ts": r[4]}
        for r in store.query(
            "SELECT kind, value, n, first_ts, last_ts FROM account_attributes WHERE account_id = ?"
            " ORDER BY kind, n DESC",
            (account_id,),
        )
    ]
    return out


def list_clusters(store: Store, *, min_size: int = 2, limit: int = 100) -> list[dict[str, Any]]:
    return [
        {
            "cluster_id": r[0],
            "size": int(r[1]),
            "actor": r[2],
            "confidence": r[3],
            "confidence_label": r[4],
            "flagged_accounts": int(r[5]),
        }
        for r in store.query(
            "SELECT cluster_id, size, actor, confidence, confidence_label, flagged_accounts FROM clusters"
            " WHERE size >= ? ORDER BY flagged_accounts DESC, confidence DESC, size DESC, cluster_id LIMIT ?",
            (min_size, limit),
        )
    ]


def cluster_detail(store: Store, cluster_id: str) -> dict[str, Any] | None:
    rows = store.query(
        "SELECT cluster_id, size, actor, actor_ref, confidence, confidence_label, flagged_accounts, evidence,"
        " updated_at FROM clusters WHERE cluster_id = ?",
        (cluster_id,),
    )
    if not rows:
        return None
    r = rows[0]
    members = [
        {"account_id": m[0], "risk": float(m[1]), "level": m[2], "actor": m[3], "confidence": m[4]}
        for m in store.query(
            "SELECT j.account_id, j.risk, j.level, j.actor, j.confidence FROM cluster_members c"
            " JOIN account_judgements j ON j.account_id = c.account_id WHERE c.cluster_id = ? ORDER BY j.account_id",
            (cluster_id,),
        )
    ]
    edges = [
        {"account_a": e[0], "account_b": e[1], "kind": e[2], "value": e[3], "weight": float(e[4])}
        for e in store.query(
            "SELECT account_a, account_b, kind, value, weight FROM link_edges WHERE cluster_id = ?"
            " ORDER BY weight DESC, account_a, account_b",
            (cluster_id,),
        )
    ]
    return {
        "cluster_id": r[0],
        "size": int(r[1]),
        "actor": r[2],
        "actor_ref": r[3],
        "confidence": r[4],
        "confidence_label": r[5],
        "flagged_accounts": int(r[6]),
        "evidence": orjson.loads(r[7]),
        "updated_at": r[8],
        "members": members,
        "edges": edges,
    }
