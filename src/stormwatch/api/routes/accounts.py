"""``GET /accounts`` and ``GET /accounts/{id}``: what analysis concluded about each account.

Read through ``store.analysis`` (:class:`stormwatch.result.Judgement` records, keyset-paged riskiest
first) and the account records.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.errors import NotFound
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, decode_cursor, page
from stormwatch.api.roles import READ
from stormwatch.result import Judgement
from stormwatch.store import Store

router = APIRouter(prefix="/accounts", tags=["accounts"])

#: fields of a judgement in the list (the detail adds ``evidence`` and ``explanation``)
DETAIL_ONLY = ("evidence", "explanation")


def judgement_dict(j: Judgement, *, detail: bool = False) -> dict[str, Any]:
    d = j.to_dict()
    return d if detail else {k: v for k, v in d.items() if k not in DETAIL_ONLY}


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
    key = decode_cursor(cursor, ("number", "str"))
    rows = store.analysis.judgements(
        flagged=flagged,
        actor=actor,
        cluster_id=cluster,
        min_risk=min_risk,
        order="risk",
        after=None if key is None else (float(key[0]), str(key[1])),
        limit=limit + 1,
    )
    items, next_cursor = page([judgement_dict(j) for j in rows], limit, lambda j: (j["risk"], j["account_id"]))
    return {"items": items, "next_cursor": next_cursor}


@router.get("/{account_id}", summary="One account: its record and its judgement")
def get_account(account_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> dict[str, Any]:
    found = store.analysis.judgement(account_id)
    judgement = judgement_dict(found, detail=True) if found is not None else None
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
