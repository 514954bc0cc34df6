"""``GET /clusters`` and ``GET /clusters/{id}``: linked groups of accounts and their attribution.

Read straight from the analysis tables (``clusters``, ``cluster_members``, ``link_edges``,
migration 0003).
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query

from stormwatch.analyze.attribution import public_attribution
from stormwatch.analyze.params import MIN_ATTRIBUTION
from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.errors import NotFound
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, page
from stormwatch.api.roles import READ
from stormwatch.store import Store

router = APIRouter(prefix="/clusters", tags=["clusters"])

COLUMNS = (
    "cluster_id",
    "size",
    "actor",
    "actor_ref",
    "confidence",
    "confidence_label",
    "flagged_accounts",
    "evidence",
    "updated_at",
)
#: a cluster's detail lists at most this many link edges (the strongest first)
MAX_EDGES = 1000


def cluster_dict(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(COLUMNS, row, strict=True))
    if isinstance(out["evidence"], str | bytes):
        out["evidence"] = orjson.loads(out["evidence"])
    if out["confidence"] is not None:
        out["confidence"] = float(out["confidence"])
    return public_attribution(out)


@router.get("", summary="Clusters of linked accounts, largest first")
def list_clusters(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    actor: Annotated[str | None, Query(max_length=200, description="Attributed actor name or ref.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where: list[str] = []
    params: list[Any] = []
    if actor is not None:
        where.append("(actor = ? OR actor_ref = ?) AND confidence >= ?")
        params += [actor, actor, MIN_ATTRIBUTION]
    key = decode_cursor(cursor, ("int", "str"))
    if key is not None:
        where.append("(size < ? OR (size = ? AND cluster_id > ?))")
        params += [key[0], key[0], key[1]]
    sql = f"SELECT {', '.join(COLUMNS)} FROM clusters"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY size DESC, cluster_id LIMIT ?"
    rows = store.query(sql, (*params, limit + 1))
    items, next_cursor = page([cluster_dict(r) for r in rows], limit, lambda c: (c["size"], c["cluster_id"]))
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{cluster_id}", summary="One cluster: attribution, members and the links between them")
def get_cluster(cluster_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> dict[str, Any]:
    rows = store.query(f"SELECT {', '.join(COLUMNS)} FROM clusters WHERE cluster_id = ?", (cluster_id,))
    if not rows:
        raise NotFound(f"no cluster {cluster_id!r}")
    members = store.query(
        "SELECT m.account_id, j.risk, j.flagged FROM cluster_members m "
        "LEFT JOIN account_judgements j ON j.account_id = m.account_id "
        "WHERE m.cluster_id = ? ORDER BY m.account_id",
        (cluster_id,),
    )
    edges = store.query(
        "SELECT account_a, account_b, kind, value, weight FROM link_edges WHERE cluster_id = ? "
        "ORDER BY weight DESC, account_a, account_b, kind, value LIMIT ?",
        (cluster_id, MAX_EDGES + 1),
    )
    return {
        **cluster_dict(rows[0]),
        "members": [
            {
                "account_id": a,
                "risk": None if risk is None else float(risk),
                "flagged": None if flagged is None else bool(flagged),
            }
            for a, risk, flagged in members
        ],
        "edges": [
            {"account_a": a, "account_b": b, "kind": k, "value": v, "weight": float(w)}
            for a, b, k, v, w in edges[:MAX_EDGES]
        ],
        "edges_truncated": len(edges) > MAX_EDGES,
    }


def install(app: FastAPI) -> None:
    app.include_router(router, prefix=API_PREFIX)
