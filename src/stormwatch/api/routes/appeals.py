"""Appeals: list, read, file (analyst, admin) and decide (admin only: separation of duties)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query
from pydantic import BaseModel, ConfigDict, Field

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, offset_page
from stormwatch.api.roles import APPEALS_DECIDE, APPEALS_FILE, READ
from stormwatch.api.routes._service import map_disrupt_errors
from stormwatch.disrupt import service
from stormwatch.store import Store

router = APIRouter(prefix="/appeals", tags=["appeals"])


class AppealFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(min_length=1, max_length=20_000)]


class AppealDecide(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reinstate: bool = Field(description="true: reverse the account's actions; false: uphold them.")
    note: str = Field(default="", max_length=20_000)


@router.get("", summary="Appeals, oldest first")
def list_appeals(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    status: Annotated[Literal["open", "upheld", "reinstated"] | None, Query()] = None,
    account_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    return offset_page(
        lambda n, offset: service.list_appeals(store, status=status, account_id=account_id, limit=n, offset=offset),
        limit,
        cursor,
    )


@router.post("", status_code=201, summary="File an appeal: the account's decisions go back under review")
def file_appeal(body: AppealFile, store: Store = Depends(get_store), who: Principal = requires(APPEALS_FILE)) -> Any:
    return service.file_appeal(store, body.account_id, body.reason, by=who.actor).to_dict()


@router.get("/{appeal_id}", summary="One appeal")
def get_appeal(appeal_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> Any:
    return service.get_appeal(store, appeal_id).to_dict()


@router.post("/{appeal_id}/decide", summary="Uphold an appeal's actions or reinstate the account (admin)")
def decide_appeal(
    appeal_id: str, body: AppealDecide, store: Store = Depends(get_store), who: Principal = requires(APPEALS_DECIDE)
) -> Any:
    return service.decide_appeal(store, appeal_id, reinstate=body.reinstate, by=who.actor, note=body.note).to_dict()


def install(app: FastAPI) -> None:
    map_disrupt_errors()
    app.include_router(router, prefix=API_PREFIX)
