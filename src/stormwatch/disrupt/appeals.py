"""Appeals: an account owner contests what was decided; an analyst upholds or reinstates.

Filing reopens the account's decisions (status ``under_appeal``) and opens a review case. A
reinstatement reverses every delivered action on the account through the same sinks
(``suspend`` -> ``unsuspend``, ``terminate`` -> ``reinstate``, ...: ``models.REVERSAL``), cancels
actions not yet delivered, and exempts the account from later policy runs. All of it is audited.
"""

from __future__ import annotations

import hashlib
from typing import Any

from stormwatch.disrupt import records
from stormwatch.disrupt.audit import AuditEvent, track_event
from stormwatch.disrupt.cases import open_case_tx
from stormwatch.disrupt.models import (
    REVERSAL,
    Action,
    Appeal,
    AppealOutcome,
    ConflictError,
    NotFoundError,
    actor_name,
    iso,
    utcnow,
)
from stormwatch.errors import InputError
from stormwatch.store import Store

APPEAL_COLS = "appeal_id, account_id, reason, status, filed_by, filed_at, decided_by, decided_at, note"


def _appeal(r: tuple[Any, ...]) -> Appeal:
    return Appeal(*r)


def get_appeal(store: Store, appeal_id: str) -> Appeal:
    rows = store.query(f"SELECT {APPEAL_COLS} FROM disrupt_appeals WHERE appeal_id = ?", (appeal_id,))
    if not rows:
        raise NotFoundError(f"no appeal {appeal_id!r}", hint="list appeals with `stormwatch appeals list`")
    return _appeal(rows[0])


def list_appeals(
    store: Store, *, status: str | None = None, account_id: str | None = None, limit: int = 100, offset: int = 0
) -> list[Appeal]:
    used = {k: v for k, v in {"status": status, "account_id": account_id}.items() if v}
    where = (" WHERE " + " AND ".join(f"{k} = ?" for k in used)) if used else ""
    rows = store.query(
        f"SELECT {APPEAL_COLS} FROM disrupt_appeals{where} ORDER BY filed_at, appeal_id LIMIT ? OFFSET ?",
        [*used.values(), limit, offset],
    )
    return [_appeal(r) for r in rows]


def _set_decisions(store: Store, account_id: str, old: tuple[str, ...], new: str) -> list[str]:
    marks = ", ".join("?" * len(old))
    ids = [
        str(r[0])
        for r in store.query(
            f"SELECT decision_id FROM disrupt_decisions WHERE account_id = ? AND mode != 'shadow' "
            f"AND status IN ({marks}) ORDER BY decision_id",
            (account_id, *old),
        )
    ]
    store.execute(
        f"UPDATE disrupt_decisions SET status = ? WHERE account_id = ? AND mode != 'shadow' AND status IN ({marks})",
        (new, account_id, *old),
    )
    return ids


def file_appeal(store: Store, account_id: str, reason: str, *, by: str) -> Appeal:
    """Record an appeal; the account's decisions go back under review and a case opens."""
    by = actor_name(by) if ":" in by else f"user:{by.strip() or account_id}"
    if not reason.strip():
        raise InputError("an appeal needs a reason", hint="pass --reason TEXT")
    try:
        if list_appeals(store, status="open", account_id=account_id):
            raise ConflictError(f"account {account_id} already has an open appeal")
        ts = iso(utcnow())
        n = int(store.query("SELECT COUNT(*) FROM disrupt_appeals WHERE account_id = ?", (account_id,))[0][0])
        appeal_id = "apl_" + hashlib.sha256(f"{account_id}\x00{n}".encode()).hexdigest()[:12]
        store.execute(
            f"INSERT INTO disrupt_appeals ({APPEAL_COLS}) VALUES (?, ?, ?, 'open', ?, ?, NULL, NULL, NULL)",
            (appeal_id, account_id, reason, by, ts),
        )
        reopened = _set_decisions(store, account_id, ("planned", "upheld"), "under_appeal")
        evidence = {"appeal_id": appeal_id, "reason": reason, "decisions": reopened}
        track_event(store, AuditEvent(by, "appeal.filed", f"account:{account_id}", evidence), ts)
        open_case_tx(store, account_id, by=by, reason=f"appeal {appeal_id}: {reason}", decision_id=None, ts=ts)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return get_appeal(store, appeal_id)


def _reverse(store: Store, appeal: Appeal, by: str, ts: str) -> tuple[list[Action], list[str]]:
    reversing: list[Action] = []
    cancelled: list[str] = []
    for a in records.list_actions(store, account_id=appeal.account_id, limit=1_000_000):
        if a.reverses is not None or a.kind not in REVERSAL:
            continue
        if a.status in ("pending", "dead"):
            store.execute(
                "UPDATE disrupt_actions SET status = 'cancelled', next_attempt_at = NULL WHERE action_id = ?",
                (a.action_id,),
            )
            cancelled.append(a.action_id)
            evidence = {"action_id": a.action_id, "kind": a.kind, "appeal_id": appeal.appeal_id}
            track_event(store, AuditEvent(by, "action.cancelled", f"account:{a.account_id}", evidence), ts)
        elif a.status == "delivered":
            rev = Action(records.action_id_for("reverse", a.action_id), a.decision_id, REVERSAL[a.kind],
                         a.account_id, a.end_user_id, {"reverses_kind": a.kind, "appeal_id": appeal.appeal_id},
                         "pending", 0, None, None, ts, None, None, reverses=a.action_id)  # fmt: skip
            if records.insert_action(store, rev):
                reversing.append(rev)
                track_event(store, AuditEvent(by, "action.queued", f"account:{a.account_id}",
                                              {"action_id": rev.action_id, "kind": rev.kind, "reverses": a.action_id,
                                               "appeal_id": appeal.appeal_id}), ts)  # fmt: skip
    return reversing, cancelled


def decide_appeal(store: Store, appeal_id: str, *, reinstate: bool, by: str, note: str = "") -> AppealOutcome:
    """Uphold, or reinstate: queue reversing actions (deliver them with ``actions deliver``)."""
    by = actor_name(by)
    try:
        appeal = get_appeal(store, appeal_id)
        if appeal.status != "open":
            raise ConflictError(f"appeal {appeal_id} was already decided ({appeal.status})")
        ts = iso(utcnow())
        status = "reinstated" if reinstate else "upheld"
        store.execute(
            "UPDATE disrupt_appeals SET status = ?, decided_by = ?, decided_at = ?, note = ? WHERE appeal_id = ?",
            (status, by, ts, note, appeal_id),
        )
        decisions = _set_decisions(store, appeal.account_id, ("under_appeal",), "reversed" if reinstate else "upheld")
        reversing, cancelled = _reverse(store, appeal, by, ts) if reinstate else ([], [])
        track_event(store, AuditEvent(by, f"appeal.{status}", f"account:{appeal.account_id}", {
            "appeal_id": appeal_id, "note": note, "decisions": decisions,
            "reversing_actions": [a.action_id for a in reversing], "cancelled_actions": cancelled,
        }), ts)  # fmt: skip
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return AppealOutcome(get_appeal(store, appeal_id), tuple(reversing), tuple(cancelled))
