"""Cases: the analysts' review queue. One open case per account; every change is audited.

A policy's ``open_case`` action opens one (high-risk accounts without a high-confidence
attribution, in the shipped policies); analysts assign, annotate, attach evidence, label (true or
false positive, and the actor) and close. Labels feed ``stormwatch labels export``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from stormwatch.disrupt.audit import AuditEvent, track_event
from stormwatch.disrupt.models import (
    CASE_LABELS,
    Case,
    CaseDetail,
    CaseNote,
    ConflictError,
    NotFoundError,
    actor_name,
    iso,
    utcnow,
)
from stormwatch.errors import InputError
from stormwatch.store import Store


def _find(store: Store, case_id: str) -> Case:
    case = store.disrupt.get_case(case_id)
    if case is None:
        raise NotFoundError(f"no case {case_id!r}", hint="list cases with `stormwatch cases list`")
    return case


def _closed(case_id: str) -> ConflictError:
    return ConflictError(f"case {case_id} is closed", hint="closed cases cannot change")


def _audit(store: Store, by: str, action: str, case: Case, evidence: dict[str, Any], ts: str) -> None:
    track_event(store, AuditEvent(by, action, f"case:{case.case_id}", {"account_id": case.account_id, **evidence}), ts)


def open_case_tx(
    store: Store, account_id: str, *, by: str, reason: str, decision_id: str | None, ts: str
) -> tuple[Case, bool]:
    """Open a case in the caller's transaction, or reuse the account's open one: (case, opened now)."""
    current = store.disrupt.open_case_for(account_id)
    if current is not None:
        if decision_id and decision_id != current.decision_id:
            store.disrupt.add_note(
                current.case_id, kind="note", author=by, body=f"also decided: {decision_id} ({reason})", ts=ts
            )
        return current, False
    n = store.disrupt.count_cases(account_id)
    case_id = "case_" + hashlib.sha256(f"{account_id}\x00{n}".encode()).hexdigest()[:12]
    case = store.disrupt.insert_case(case_id, account_id, reason=reason, opened_by=by, ts=ts, decision_id=decision_id)
    _audit(store, by, "case.opened", case, {"reason": reason, "decision_id": decision_id}, ts)
    return case, True


def _change(store: Store, case_id: str, by: str, action: str, sets: dict[str, Any], evidence: dict[str, Any]) -> Case:
    by = actor_name(by)
    try:
        case = _find(store, case_id)
        if case.status == "closed":
            raise _closed(case_id)
        ts = iso(utcnow())
        if not store.disrupt.update_case(case_id, sets, ts=ts):  # closed meanwhile by someone else
            raise _closed(case_id)
        _audit(store, by, action, case, evidence, ts)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return _find(store, case_id)


def open_case(store: Store, account_id: str, *, by: str, reason: str, decision_id: str | None = None) -> Case:
    try:
        case, _ = open_case_tx(
            store, account_id, by=actor_name(by), reason=reason, decision_id=decision_id, ts=iso(utcnow())
        )
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return case


def list_cases(
    store: Store,
    *,
    status: str | None = None,
    assignee: str | None = None,
    account_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Case]:
    return store.disrupt.list_cases(status=status, assignee=assignee, account_id=account_id, limit=limit, offset=offset)


def get_case(store: Store, case_id: str) -> CaseDetail:
    case = _find(store, case_id)
    return CaseDetail(
        case,
        tuple(store.disrupt.list_notes(case_id)),
        tuple(store.disrupt.list_decisions(account_id=case.account_id, limit=1000)),
    )


def assign_case(store: Store, case_id: str, assignee: str, *, by: str) -> Case:
    return _change(store, case_id, by, "case.assigned", {"assignee": assignee}, {"assignee": assignee})


def _add_note(store: Store, case_id: str, kind: str, body: Any, by: str) -> CaseNote:
    by = actor_name(by)
    try:
        case = _find(store, case_id)
        if case.status == "closed":
            raise _closed(case_id)
        ts = iso(utcnow())
        if not store.disrupt.update_case(case_id, {}, ts=ts):  # closed meanwhile by someone else
            raise _closed(case_id)
        note = store.disrupt.add_note(case_id, kind=kind, author=by, body=body, ts=ts)
        _audit(store, by, f"case.{'annotated' if kind == 'note' else 'evidence_attached'}", case,
               {"note_id": note.note_id, "body": body}, ts)  # fmt: skip
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return note


def annotate_case(store: Store, case_id: str, text: str, *, by: str) -> CaseNote:
    if not text.strip():
        raise InputError("the note is empty")
    return _add_note(store, case_id, "note", text, by)


def attach_evidence(store: Store, case_id: str, evidence: dict[str, Any] | str, *, by: str) -> CaseNote:
    return _add_note(store, case_id, "evidence", evidence, by)


def label_case(
    store: Store, case_id: str, label: str, *, by: str, actor: str | None = None, category: str | None = None
) -> Case:
    if label not in CASE_LABELS:
        raise InputError(f"unknown label {label!r}", hint=f"one of {', '.join(CASE_LABELS)}")
    sets = {"label": label, "label_actor": actor, "label_category": category}
    return _change(store, case_id, by, "case.labelled", sets, sets)


def close_case(store: Store, case_id: str, *, by: str, resolution: str = "") -> Case:
    name = actor_name(by)
    sets = {"status": "closed", "closed_by": name, "closed_at": iso(utcnow()), "resolution": resolution}
    return _change(store, case_id, name, "case.closed", sets, {"resolution": resolution})
