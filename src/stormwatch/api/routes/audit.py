"""The audit log: read it, see its head, verify its hash chain (optionally against a kept anchor)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import DEFAULT_LIMIT, Cursor, Limit, offset_page
from stormwatch.api.roles import READ
from stormwatch.api.routes._service import map_disrupt_errors
from stormwatch.disrupt import service
from stormwatch.errors import InputError
from stormwatch.store import Store

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", summary="Audit entries in chain order")
def list_audit(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    target: Annotated[str | None, Query(max_length=300, description="e.g. account:acct_1, token:AbCd1234")] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> dict[str, Any]:
    return offset_page(
        lambda n, offset: service.list_audit(store, target=target, limit=n, offset=offset), limit, cursor
    )


@router.get("/head", summary="The last entry's sequence number and hash (keep it as an anchor)")
def audit_head(store: Store = Depends(get_store), _: Principal = requires(READ)) -> Any:
    return service.audit_head(store).to_dict()


@router.get("/verify", summary="Recompute the hash chain; name the first bad entry")
def verify_audit(
    store: Store = Depends(get_store),
    _: Principal = requires(READ),
    anchor_seq: Annotated[int | None, Query(ge=1, description="Sequence number of a kept anchor.")] = None,
    anchor_hash: Annotated[str | None, Query(pattern="^[0-9a-f]{64}$", description="Its entry hash.")] = None,
) -> Any:
    if (anchor_seq is None) != (anchor_hash is None):
        raise InputError("give both anchor_seq and anchor_hash, or neither")
    anchor = None if anchor_seq is None or anchor_hash is None else service.AuditAnchor(anchor_seq, anchor_hash)
    return service.verify_audit(store, anchor=anchor).to_dict()


def install(app: FastAPI) -> None:
    map_disrupt_errors()
    app.include_router(router, prefix=API_PREFIX)
