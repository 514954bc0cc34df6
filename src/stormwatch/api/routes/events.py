"""The text of usage events, for the roles allowed to read user content (``events:text``).

``GET /events/{event_id}`` and ``GET /accounts/{account_id}/events`` (the account's top-scored
events) return each event's user-authored ``text`` with its detections; every event returned is
recorded in the audit chain (``event.text.read``, target ``event:<id>``, actor the token) before
the answer is sent. Read-only tokens get 403.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query

from stormwatch.api.auth import Principal, requires
from stormwatch.api.deps import get_store
from stormwatch.api.errors import NotFound
from stormwatch.api.event_text import read_events, top_event_ids
from stormwatch.api.extensions import API_PREFIX
from stormwatch.api.pagination import Cursor, decode_offset, encode_cursor
from stormwatch.api.roles import EVENTS_TEXT
from stormwatch.store import Store

router = APIRouter(tags=["events"])

#: events per page of an account's events (each one is an audit entry)
MAX_EVENTS = 100
EventLimit = Annotated[int, Query(ge=1, le=MAX_EVENTS, description="Events per page.")]


@router.get("/events/{event_id}", summary="One event with its text (audited; analyst, admin)")
def get_event(
    event_id: str, store: Store = Depends(get_store), who: Principal = requires(EVENTS_TEXT)
) -> dict[str, Any]:
    (record,) = read_events(store, [event_id], actor=who.actor, via="api")
    if record is None:
        raise NotFound(f"no event {event_id!r}")
    return record


@router.get(
    "/accounts/{account_id}/events",
    summary="An account's events, highest score first, with their text (audited; analyst, admin)",
)
def list_account_events(
    account_id: str,
    store: Store = Depends(get_store),
    who: Principal = requires(EVENTS_TEXT),
    limit: EventLimit = 10,
    cursor: Cursor = None,
) -> dict[str, Any]:
    offset = decode_offset(cursor)
    if offset == 0 and store.get_account(account_id) is None and not store.audit.account_has_events(account_id):
        raise NotFound(f"no account {account_id!r}")
    ids = top_event_ids(store, account_id, limit=limit + 1, offset=offset)
    records = read_events(store, ids[:limit], actor=who.actor, via="api")
    return {
        "items": [r for r in records if r is not None],
        "next_cursor": encode_cursor([offset + limit]) if len(ids) > limit else None,
    }


def install(app: FastAPI) -> None:
    app.include_router(router, prefix=API_PREFIX)
