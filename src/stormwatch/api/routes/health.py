"""``GET /health`` and ``GET /whoami``: is the API up, and who does it think I am."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI

from stormwatch import __version__
from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.roles import READ
from stormwatch.store import Store

router = APIRouter(tags=["meta"])


@router.get("/health", summary="Service and database status")
def health(store: Store = Depends(get_store), _: Principal = requires(READ)) -> dict[str, Any]:
    return {"ok": True, "version": __version__, "schema_version": store.schema_version()}


@router.get("/whoami", summary="The caller's token id, name, role and scopes")
def whoami(principal: Principal = requires(READ)) -> dict[str, Any]:
    return principal.to_dict()


def install(app: FastAPI) -> None:
    app.include_router(router, prefix=API_PREFIX)
