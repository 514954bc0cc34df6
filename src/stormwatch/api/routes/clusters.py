"""``GET /clusters`` and ``GET /clusters/{id}``: linked groups of accounts and their attribution.

Read through ``store.analysis`` (:class:`stormwatch.result.Cluster` records, keyset-paged largest first).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from stormwatch.analyze.attribution import public_attribution
from stormwatch.analyze.params import MIN_ATTRIBUTION
from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.errors import NotFound
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, page
from stormwatch.api.roles import READ
from stormwatch.result import Cluster
from stormwatch.store import Store

router = APIRouter(prefix="/clusters", tags=["clusters"])

#: a cluster's detail lists at most this many link edges (the strongest first)
MAX_EDGES = 1000


def cluster_dict(c: Cluster) -> dict[str, Any]:
    """A cluster as shown to people (below the low band no actor is named)."""
    return public_attribution(c.to_dict(members=False))


@router.get("", summary="Clusters of linked accounts, largest first")
def list_clusters(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    actor: Annotated[str | None, Query(max_length=200, description="Attributed actor name or ref.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    key = decode_cursor(cursor, ("int", "str"))
    rows = store.analysis.clusters(
        actor=actor,
        min_confidence=MIN_ATTRIBUTION if actor is not None else None,
        after=None if key is None else (int(key[0]), str(key[1])),
        limit=limit + 1,
    )
    items, next_cursor = page([cluster_dict(c) for c in rows], limit, lambda c: (c["size"], c["cluster_id"]))
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{cluster_id}", summary="One cluster: attribution, members and the links between them")
def get_cluster(cluster_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> dict[str, Any]:
    c = store.analysis.cluster(cluster_id, max_edges=MAX_EDGES + 1)
    if c is None:
        raise NotFound(f"no cluster {cluster_id!r}")
    judged = {j.account_id: j for j in store.analysis.judgements(account_ids=c.members)}
    return {
        **cluster_dict(c),
        "members": [
            {
                "account_id": a,
                "risk": None if (j := judged.get(a)) is None else j.risk,
                "flagged": None if j is None else j.flagged,
            }
            for a in c.members
        ],
        "edges": [e.to_dict(with_cluster=False) for e in c.edges[:MAX_EDGES]],
        "edges_truncated": len(c.edges) > MAX_EDGES,
    }


def install(app: FastAPI) -> None:
    app.include_router(router, prefix=API_PREFIX)
