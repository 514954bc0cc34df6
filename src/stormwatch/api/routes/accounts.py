"""``GET /accounts`` and ``GET /accounts/{id}``: what analysis concluded about each account.

Read straight from the analysis tables (``account_judgements``, migration 0003) and the account
records, because the analysis package offers no paged read functions yet.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, FastAPI, Query

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.errors import NotFound
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, page
from stormwatch.api.roles import READ
from stormwatch.store import Store

router = APIRouter(prefix="/accounts", tags=["accounts"])

LIST_COLUMNS = (
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
    "analyzed_at",
    "model_version",
)
DETAIL_COLUMNS = (*LIST_COLUMNS, "evidence", "explanation")
_JSON = {"ttps", "evidence", "explanation"}


def judgement_dict(columns: tuple[str, ...], row: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(columns, row, strict=True):
        if name in _JSON and isinstance(value, str | bytes):
            value = orjson.loads(value)
        elif name == "flagged":
            value = bool(value)
        elif name in {"risk", "confidence"} and value is not None:
            value = float(value)
        out[name] = value
    return out


@router.get("", summary="Judged accounts, riskiest first")
def list_accounts(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    flagged: Annotated[bool | None, Query(description="Only flagged (true) or unflagged (false).")] = None,
    actor: Annotated[str | None, Query(max_length=200, description="Attributed actor name or ref.")] = None,
    cluster: Annotated[str | None, Query(max_length=200, description="Cluster id.")] = None,
    min_risk: Annotated[float | None, Query(ge=0.0, le=1.0, description="Lowest risk score.")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    where: list[str] = []
    params: list[Any] = []
    if flagged is not None:
        where.append("flagged = ?")
        params.append(int(flagged))
    if actor is not None:
        where.append("(actor = ? OR actor_ref = ?)")
        params += [actor, actor]
    if cluster is not None:
        where.append("cluster_id = ?")
        params.append(cluster)
    if min_risk is not None:
        where.append("risk >= ?")
        params.append(min_risk)
    key = decode_cursor(cursor, ("number", "str"))
    if key is not None:
        where.append("(risk < ? OR (risk = ? AND account_id > ?))")
        params += [key[0], key[0], key[1]]
    sql = f"SELECT {', '.join(LIST_COLUMNS)} FROM account_judgements"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY risk DESC, account_id LIMIT ?"
    rows = store.query(sql, (*params, limit + 1))
    items, next_cursor = page(
        [judgement_dict(LIST_COLUMNS, r) for r in rows], limit, lambda j: (j["risk"], j["account_id"])
    )
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{account_id}", summary="One account: its record and its judgement")
def get_account(account_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> dict[str, Any]:
    rows = store.query(
        f"SELECT {', '.join(DETAIL_COLUMNS)} FROM account_judgements WHERE account_id = ?", (account_id,)
    )
    judgement = judgement_dict(DETAIL_COLUMNS, rows[0]) if rows else None
    record = store.get_account(account_id)
    if judgement is None and record is None:
        raise NotFound(f"no account {account_id!r}")
    return {
        "account_id": account_id,
        "record": None if record is None else dataclasses.asdict(record),
        "judgement": judgement,
    }


def install(app: FastAPI) -> None:
    app.include_router(router, prefix=API_PREFIX)
