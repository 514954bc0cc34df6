"""Reading the text of usage events (what an analyst must judge), every read audited.

The API (``GET /api/v1/events/{id}``, ``GET /api/v1/accounts/{id}/events``; permission
``events:text``, analyst and admin) and the CLI (``stormwatch accounts show ACCOUNT --text``) both
go through the store's :meth:`~stormwatch.store.repos.audit.AuditRepo.read_events` (``store.audit``):
it appends one ``event.text.read`` entry per event to the audit chain (actor: who read it; target
``event:<id>``) and commits **before** the text is returned, so no text leaves the store without its
audit record. This module keeps the API's names and its JSON shape (one dict per event).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stormwatch.store import Store
from stormwatch.store.repos.audit import EVENT_TEXT_READ

__all__ = ["AUDIT_ACTION", "read_events", "top_event_ids"]

AUDIT_ACTION = EVENT_TEXT_READ


def top_event_ids(store: Store, account_id: str, *, limit: int, offset: int = 0) -> list[str]:
    """The account's events, highest score first under the model that judged the account.

    Events without a detection of that model (or an account never judged) follow, newest first.
    """
    return store.audit.top_event_ids(account_id, limit=limit, offset=offset)


def read_events(store: Store, event_ids: Sequence[str], *, actor: str, via: str) -> list[dict[str, Any] | None]:
    """Each event's record with its ``text`` (``None`` for an unknown id), each read audited.

    Writes the audit entries and commits before returning; ``via`` (``api``, ``cli``) is kept in
    the entries' evidence.
    """
    return [None if e is None else e.to_dict() for e in store.audit.read_events(event_ids, actor=actor, via=via)]
