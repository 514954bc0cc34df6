"""Decisions and enforcement actions: list, read, and retry dead-lettered actions (admin).

Retrying delivers through the action sink the server was started with (``stormwatch serve
--sink ...``); without one the route answers 503.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.errors import ApiError
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, offset_page
from stormwatch.api.roles import ACTIONS_RETRY, READ
from stormwatch.api.routes._service import map_disrupt_errors
from stormwatch.disrupt import service
from stormwatch.store import Store

router = APIRouter(tags=["enforcement"])
Id = Annotated[str | None, Query(max_length=200)]


class NoSink(ApiError):
    status = 503
    type = "no_action_sink"


class Retry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action_ids: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=10_000, description="Only these dead-lettered actions (default: all)."
    )


@router.get("/decisions", summary="Policy decisions, oldest first")
def list_decisions(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    account_id: Id = None,
    mode: Annotated[Literal["dry-run", "shadow", "enforce"] | None, Query()] = None,
    policy_id: Id = None,
    status: Id = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    return offset_page(
        lambda n, offset: service.list_decisions(
            store, account_id=account_id, mode=mode, policy_id=policy_id, status=status, limit=n, offset=offset
        ),
        limit,
        cursor,
    )


@router.get("/decisions/{decision_id}", summary="One decision")
def get_decision(decision_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> Any:
    return service.get_decision(store, decision_id).to_dict()


@router.get("/actions", summary="Enforcement actions, oldest first")
def list_actions(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    status: Annotated[Literal["pending", "delivered", "dead", "cancelled"] | None, Query()] = None,
    account_id: Id = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    return offset_page(
        lambda n, offset: service.list_actions(store, status=status, account_id=account_id, limit=n, offset=offset),
        limit,
        cursor,
    )


@router.get("/actions/{action_id}", summary="One action")
def get_action(action_id: str, store: Store = Depends(get_store), _: Principal = requires(READ)) -> Any:
    return service.get_action(store, action_id).to_dict()


@router.post("/actions/retry", summary="Requeue dead-lettered actions and deliver them (admin)")
def retry_actions(
    request: Request, body: Retry, store: Store = Depends(get_store), _: Principal = requires(ACTIONS_RETRY)
) -> Any:
    sink = getattr(request.app.state, "action_sink", None)
    if sink is None:
        raise NoSink("no action sink configured", hint="start the server with --sink webhook|outbox")
    return service.retry_dead_letters(store, sink, action_ids=body.action_ids).to_dict()


def install(app: FastAPI) -> None:
    map_disrupt_errors()
    app.include_router(router, prefix=API_PREFIX)
