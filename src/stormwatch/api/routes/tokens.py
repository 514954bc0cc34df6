"""Token management over HTTP (admin only); ``stormwatch token`` does the same from the shell."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.errors import map_error
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.roles import TOKENS_MANAGE, Role
from stormwatch.api.tokens import TokenNotFoundError, create_token, list_tokens, revoke_token
from stormwatch.store import Store

router = APIRouter(prefix="/tokens", tags=["tokens"])


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="Who or what uses the token.")
    role: Role
    scopes: list[str] = Field(default_factory=list, description="Narrow the role (empty: all it allows).")
    expires_days: int | None = Field(default=None, gt=0, le=3650, description="Lifetime in days.")


@router.get("", summary="List tokens (never their secrets)")
def get_tokens(store: Store = Depends(get_store), _: Principal = requires(TOKENS_MANAGE)) -> dict[str, Any]:
    return {"items": [t.to_dict() for t in list_tokens(store)], "next_cursor": None}


@router.post("", status_code=201, summary="Create a token; the response is the only time it is shown")
def post_token(
    body: TokenCreate, store: Store = Depends(get_store), principal: Principal = requires(TOKENS_MANAGE)
) -> dict[str, Any]:
    token, info = create_token(
        store,
        name=body.name,
        role=body.role,
        scopes=body.scopes,
        expires_in=None if body.expires_days is None else timedelta(days=body.expires_days),
        created_by=principal.actor,
    )
    return {**info.to_dict(), "token": token}


@router.post("/{token_id}/revoke", summary="Revoke a token")
def post_revoke(
    request: Request,
    token_id: str,
    store: Store = Depends(get_store),
    principal: Principal = requires(TOKENS_MANAGE),
) -> dict[str, Any]:
    revoked = revoke_token(store, token_id, by=principal.actor).to_dict()
    cache = getattr(request.app.state, "token_cache", None)
    if cache is not None:  # this process trusts it no longer (stormwatch.api.guard.TokenCache)
        cache.forget(token_id)
    return revoked


def install(app: FastAPI) -> None:
    map_error(TokenNotFoundError, 404)
    app.include_router(router, prefix=API_PREFIX)
