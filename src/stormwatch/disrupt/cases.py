"""Cases: the analysts' review queue. One open case per account; every change is audited.

A policy's ``open_case`` action opens one (high-risk accounts without a high-confidence
attribution, in the shipped policies); analysts assign, annotate, attach evidence, label (true or
false positive, and the actor) and close. Labels feed ``stormwatch labels export``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from stormwatch.disrupt import records
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

CASE_COLS = (
    "case_id, account_id, status, reason, opened_by, opened_at, assignee, label, label_actor, label_category, "
    "decision_id, closed_by, closed_at, resolution, updated_at"
)


def _case(r: tuple[Any, ...]) -> Case:
    return Case(*r)


def _find(store: Store, case_id: str) -> Case:
    rows = store.query(f"SELECT {CASE_COLS} FROM disrupt_cases WHERE case_id = ?", (case_id,))
    if not rows:
        raise NotFoundError(f"no case {case_id!r}", hint="list cases with `stormwatch cases list`")
    return _case(rows[0])


def _open_for(store: Store, account_id: str) -> Case | None:
    rows = store.query(
        f"SELECT {CASE_COLS} FROM disrupt_cases WHERE account_id = ? AND status = 'open' ORDER BY opened_at",
        (account_id,),
    )
    return _case(rows[0]) if rows else None


def _audit(store: Store, by: str, action: str, case: Case, evidence: dict[str, Any], ts: str) -> None:
    track_event(store, AuditEvent(by, action, f"case:{case.case_id}", {"account_id": case.account_id, **evidence}), ts)


def _note_tx(store: Store, case_id: str, kind: str, author: str, body: Any, ts: str) -> CaseNote:
    text = orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()
    store.execute(
        "INSERT INTO disrupt_case_notes (case_id, kind, author, body, created_at) VALUES (?, ?, ?, ?, ?)",
        (case_id, kind, author, text, ts),
    )
    got = store.query("SELECT MAX(note_id) FROM disrupt_case_notes WHERE case_id = ?", (case_id,))
    return CaseNote(int(got[0][0]), case_id, kind, author, body, ts)


def open_case_tx(
    store: Store, account_id: str, *, by: str, reason: str, decision_id: str | None, ts: str
) -> tuple[Case, bool]:
    """Open a case in the caller's transaction, or reuse the account's open one: (case, opened now)."""
    current = _open_for(store, account_id)
    if current is not None:
        if decision_id and decision_id != current.decision_id:
            _note_tx(store, current.case_id, "note", by, f"also decided: {decision_id} ({reason})", ts)
        return current, False
    n = int(store.query("SELECT COUNT(*) FROM disrupt_cases WHERE account_id = ?", (account_id,))[0][0])
    case_id = "case_" + hashlib.sha256(f"{account_id}\x00{n}".encode()).hexdigest()[:12]
    store.execute(
        f"INSERT INTO disrupt_cases ({CASE_COLS}) VALUES (?, ?, 'open', ?, ?, ?, NULL, NULL, NULL, NULL, ?, "
        "NULL, NULL, NULL, ?)",
        (case_id, account_id, reason, by, ts, decision_id, ts),
    )
    case = _find(store, case_id)
    _audit(store, by, "case.opened", case, {"reason": reason, "decision_id": decision_id}, ts)
    return case, True


def _change(store: Store, case_id: str, by: str, action: str, sets: dict[str, Any], evidence: dict[str, Any]) -> Case:
    by = actor_name(by)
    try:
        case = _find(store, case_id)
        if case.status == "closed":
            raise ConflictError(f"case {case_id} is closed", hint="closed cases cannot change")
        ts = iso(utcnow())
        cols = ", ".join(f"{k} = ?" for k in sets)
        store.execute(
            f"UPDATE disrupt_cases SET {cols}, updated_at = ? WHERE case_id = ?", [*sets.values(), ts, case_id]
        )
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
    used = {k: v for k, v in {"status": status, "assignee": assignee, "account_id": account_id}.items() if v}
    where = (" WHERE " + " AND ".join(f"{k} = ?" for k in used)) if used else ""
    rows = store.query(
        f"SELECT {CASE_COLS} FROM disrupt_cases{where} ORDER BY opened_at, case_id LIMIT ? OFFSET ?",
        [*used.values(), limit, offset],
    )
    return [_case(r) for r in rows]


def get_case(store: Store, case_id: str) -> CaseDetail:
    case = _find(store, case_id)
    notes = store.query(
        "SELECT note_id, case_id, kind, author, body, created_at FROM disrupt_case_notes WHERE case_id = ? "
        "ORDER BY note_id",
        (case_id,),
    )
    return CaseDetail(
        case,
        tuple(CaseNote(int(n[0]), n[1], n[2], n[3], orjson.loads(n[4]), n[5]) for n in notes),
        tuple(records.list_decisions(store, account_id=case.account_id, limit=1000)),
    )


def assign_case(store: Store, case_id: str, assignee: str, *, by: str) -> Case:
    return _change(store, case_id, by, "case.assigned", {"assignee": assignee}, {"assignee": assignee})


def _add_note(store: Store, case_id: str, kind: str, body: Any, by: str) -> CaseNote:
    by = actor_name(by)
    try:
        case = _find(store, case_id)
        if case.status == "closed":
            raise ConflictError(f"case {case_id} is closed", hint="closed cases cannot change")
        ts = iso(utcnow())
        note = _note_tx(store, case_id, kind, by, body, ts)
        store.execute("UPDATE disrupt_cases SET updated_at = ? WHERE case_id = ?", (ts, case_id))
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
