"""Appeals: an account owner contests what was decided; an analyst upholds or reinstates.

Filing reopens the account's decisions (status ``under_appeal``) and opens a review case. A
reinstatement reverses every delivered action on the account through the same sinks
(``suspend`` -> ``unsuspend``, ``terminate`` -> ``reinstate``, ...: ``models.REVERSAL``), cancels
actions not yet delivered, and exempts the account from later policy runs. All of it is audited.
"""

from __future__ import annotations

import hashlib

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


def get_appeal(store: Store, appeal_id: str) -> Appeal:
    appeal = store.disrupt.get_appeal(appeal_id)
    if appeal is None:
        raise NotFoundError(f"no appeal {appeal_id!r}", hint="list appeals with `stormwatch appeals list`")
    return appeal


def list_appeals(
    store: Store, *, status: str | None = None, account_id: str | None = None, limit: int = 100, offset: int = 0
) -> list[Appeal]:
    return store.disrupt.list_appeals(status=status, account_id=account_id, limit=limit, offset=offset)


def file_appeal(store: Store, account_id: str, reason: str, *, by: str) -> Appeal:
    """Record an appeal; the account's decisions go back under review and a case opens."""
    by = actor_name(by) if ":" in by else f"user:{by.strip() or account_id}"
    if not reason.strip():
        raise InputError("an appeal needs a reason", hint="pass --reason TEXT")
    try:
        if list_appeals(store, status="open", account_id=account_id):
            raise ConflictError(f"account {account_id} already has an open appeal")
        ts = iso(utcnow())
        n = store.disrupt.count_appeals(account_id)
        appeal_id = "apl_" + hashlib.sha256(f"{account_id}\x00{n}".encode()).hexdigest()[:12]
        store.disrupt.insert_appeal(appeal_id, account_id, reason=reason, filed_by=by, ts=ts)
        reopened = store.disrupt.set_decision_status(account_id, ("planned", "upheld"), "under_appeal")
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
    for a in store.disrupt.list_actions(account_id=appeal.account_id, limit=1_000_000):
        if a.reverses is not None or a.kind not in REVERSAL:
            continue
        if a.status in ("pending", "dead"):
            if not store.disrupt.cancel_action(a.action_id):  # delivered or cancelled meanwhile
                continue
            cancelled.append(a.action_id)
            evidence = {"action_id": a.action_id, "kind": a.kind, "appeal_id": appeal.appeal_id}
            track_event(store, AuditEvent(by, "action.cancelled", f"account:{a.account_id}", evidence), ts)
        elif a.status == "delivered":
            rev = Action(records.action_id_for("reverse", a.action_id), a.decision_id, REVERSAL[a.kind],
                         a.account_id, a.end_user_id, {"reverses_kind": a.kind, "appeal_id": appeal.appeal_id},
                         "pending", 0, None, None, ts, None, None, reverses=a.action_id)  # fmt: skip
            if store.disrupt.insert_action(rev):
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
        if not store.disrupt.decide_appeal(appeal_id, status=status, decided_by=by, ts=ts, note=note):
            raise ConflictError(f"appeal {appeal_id} was already decided")
        decisions = store.disrupt.set_decision_status(
            appeal.account_id, ("under_appeal",), "reversed" if reinstate else "upheld"
        )
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
