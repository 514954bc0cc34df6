"""Reading the text of usage events (what an analyst must judge), every read audited.

The API (``GET /api/v1/events/{id}``, ``GET /api/v1/accounts/{id}/events``; permission
``events:text``, analyst and admin) and the CLI (``stormwatch accounts show ACCOUNT --text``) both
go through :func:`read_events`: it appends one ``event.text.read`` entry per event to the audit
chain (actor: who read it; target ``event:<id>``) and commits **before** the text is returned, so
no text leaves the store without its audit record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stormwatch.events import Event
from stormwatch.store import Store

__all__ = ["AUDIT_ACTION", "read_events", "top_event_ids"]

AUDIT_ACTION = "event.text.read"


def top_event_ids(store: Store, account_id: str, *, limit: int, offset: int = 0) -> list[str]:
    """The account's events, highest score first under the model that judged the account.

    Events without a detection of that model (or an account never judged) follow, newest first.
    """
    rows = store.query("SELECT model_version FROM account_judgements WHERE account_id = ?", (account_id,))
    model = str(rows[0][0]) if rows and rows[0][0] is not None else ""
    got = store.query(
        "SELECT e.event_id FROM events e LEFT JOIN detections d"
        " ON d.event_id = e.event_id AND d.model_version = ? WHERE e.account_id = ?"
        " ORDER BY CASE WHEN d.score IS NULL THEN 1 ELSE 0 END, d.score DESC, e.ts DESC, e.event_id"
        " LIMIT ? OFFSET ?",
        (model, account_id, limit, offset),
    )
    return [str(r[0]) for r in got]


def _detections(store: Store, event_id: str) -> list[dict[str, Any]]:
    return [
        {"model_version": m, "score": float(s), "flagged": bool(f), "top_ttp": t}
        for m, s, f, t in store.query(
            "SELECT model_version, score, flagged, top_ttp FROM detections WHERE event_id = ? ORDER BY model_version",
            (event_id,),
        )
    ]


def _record(store: Store, ev: Event) -> dict[str, Any]:
    return {
        "event_id": ev.event_id,
        "ts": ev.ts,
        "account_id": ev.account_id,
        "model": ev.model,
        "conversation_id": ev.conversation_id,
        "refused": ev.refused,
        "text": ev.text(),
        "detections": _detections(store, ev.event_id),
    }


def read_events(store: Store, event_ids: Sequence[str], *, actor: str, via: str) -> list[dict[str, Any] | None]:
    """Each event's record with its ``text`` (``None`` for an unknown id), each read audited.

    Writes the audit entries and commits before returning; ``via`` (``api``, ``cli``) is kept in
    the entries' evidence.
    """
    from stormwatch.disrupt.audit import AuditEvent, track_event

    found = [store.get_event(event_id) for event_id in event_ids]
    for ev in found:
        if ev is not None:
            track_event(
                store,
                AuditEvent(
                    actor=actor,
                    action=AUDIT_ACTION,
                    target=f"event:{ev.event_id}",
                    evidence={"account_id": ev.account_id, "via": via},
                ),
            )
    store.commit()
    return [None if ev is None else _record(store, ev) for ev in found]
