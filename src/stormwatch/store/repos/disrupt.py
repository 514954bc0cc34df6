"""Enforcement: decisions, actions and their delivery claims, cases and notes, appeals, labels.

Nothing here commits, except :meth:`DisruptRepo.claim_actions` and :meth:`DisruptRepo.renew_claims`:
a claim must be visible to every other run at once, so each is its own committed transaction.
Everything else runs in the caller's transaction (a decision, its action and their audit entries
commit together: the transactional outbox of :mod:`stormwatch.disrupt.enforce`).

Exactly-once delivery rests on three statements here:

* :meth:`claim_actions` claims up to ``limit`` due actions in one ``UPDATE ... WHERE action_id IN
  (SELECT ...) AND <still due> RETURNING``; on PostgreSQL the inner select takes ``FOR UPDATE SKIP
  LOCKED``, so concurrent claimers skip each other's rows instead of queueing on them (SQLite has one
  writer at a time, so the statement is atomic there as it is).
* :meth:`record_delivery` / :meth:`record_failure` change the row only while this claimer still holds
  it (``status = 'pending' AND claimed_by = ?``) and return whether they did: only that run audits.
* :meth:`requeue_dead` and :meth:`decide_appeal` are conditional on the old status, so two analysts
  acting at once change the row once.

Records are frozen dataclasses (:class:`Decision`, :class:`Action`, :class:`Case`, :class:`CaseNote`,
:class:`Appeal`); JSON columns are parsed. Missing ids give ``None``: the service layer turns that
into its ``NotFoundError``.

Why this module is long: it is the storage of one concern, the five ``disrupt_*`` tables that the
enforcement workflow changes together in one transaction (a decision, its action, the case it opens,
the appeal that reverses it), with one record type and one row mapping per table. Split by table, the
claim/appeal invariants above would be spread over modules that must still share the transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stormwatch.errors import StoreError
from stormwatch.store.database import Repository, marks
from stormwatch.store.records import Record
from stormwatch.store.repos._claims import claim_due

__all__ = ["Action", "Appeal", "Case", "CaseNote", "Decision", "DisruptRepo", "LabelEvent"]

_DECISION_COLS = (
    "decision_id, mode, policy_id, policy_version, rule_version, account_id, action, end_user_id, params, "
    "status, reasons, evidence, model_version, decided_by, decided_at, cluster_id"
)
_ACTION_COLS = (
    "action_id, decision_id, kind, account_id, end_user_id, params, status, attempts, last_error, "
    "next_attempt_at, created_at, delivered_at, sink, reverses"
)
_CASE_COLS = (
    "case_id, account_id, status, reason, opened_by, opened_at, assignee, label, label_actor, label_category, "
    "decision_id, closed_by, closed_at, resolution, updated_at"
)
_NOTE_COLS = "note_id, case_id, kind, author, body, created_at"
_APPEAL_COLS = "appeal_id, account_id, reason, status, filed_by, filed_at, decided_by, decided_at, note"
#: the case columns :meth:`DisruptRepo.update_case` may set
_CASE_SETTABLE = frozenset(
    {"status", "assignee", "label", "label_actor", "label_category", "closed_by", "closed_at", "resolution"}
)


@dataclass(frozen=True)
class Decision(Record):
    """A policy's decision to take one action on one target (stored in ``disrupt_decisions``)."""

    decision_id: str
    mode: str
    policy_id: str
    policy_version: str
    rule_version: str
    account_id: str
    action: str
    end_user_id: str | None
    params: dict[str, Any]
    status: str  # planned | exempted | superseded | under_appeal | upheld | reversed
    reasons: tuple[str, ...]
    evidence: dict[str, Any]
    model_version: str | None
    decided_by: str
    decided_at: str
    cluster_id: str | None = None


@dataclass(frozen=True)
class Action(Record):
    """One thing to carry out through a sink; ``action_id`` is the idempotency key."""

    action_id: str
    decision_id: str | None
    kind: str
    account_id: str
    end_user_id: str | None
    params: dict[str, Any]
    status: str  # pending | delivered | dead | cancelled
    attempts: int
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    sink: str | None
    reverses: str | None = None


@dataclass(frozen=True)
class Case(Record):
    case_id: str
    account_id: str
    status: str  # open | closed
    reason: str
    opened_by: str
    opened_at: str
    assignee: str | None
    label: str | None
    label_actor: str | None
    label_category: str | None
    decision_id: str | None
    closed_by: str | None
    closed_at: str | None
    resolution: str | None
    updated_at: str


@dataclass(frozen=True)
class CaseNote(Record):
    note_id: int
    case_id: str
    kind: str  # note | evidence
    author: str
    body: Any
    created_at: str


@dataclass(frozen=True)
class Appeal(Record):
    appeal_id: str
    account_id: str
    reason: str
    status: str  # open | upheld | reinstated
    filed_by: str
    filed_at: str
    decided_by: str | None
    decided_at: str | None
    note: str | None


@dataclass(frozen=True)
class LabelEvent:
    """An event of a labelled account, as training data needs it (text not yet extracted)."""

    event_id: str
    prompt: str | None
    messages: Any


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _decision(r: Sequence[Any]) -> Decision:
    return Decision(
        decision_id=r[0],
        mode=r[1],
        policy_id=r[2],
        policy_version=r[3],
        rule_version=r[4],
        account_id=r[5],
        action=r[6],
        end_user_id=r[7],
        params=orjson.loads(r[8]),
        status=r[9],
        reasons=tuple(orjson.loads(r[10])),
        evidence=orjson.loads(r[11]),
        model_version=r[12],
        decided_by=r[13],
        decided_at=r[14],
        cluster_id=r[15],
    )


def _action(r: Sequence[Any]) -> Action:
    return Action(
        action_id=r[0],
        decision_id=r[1],
        kind=r[2],
        account_id=r[3],
        end_user_id=r[4],
        params=orjson.loads(r[5]),
        status=r[6],
        attempts=int(r[7]),
        last_error=r[8],
        next_attempt_at=r[9],
        created_at=r[10],
        delivered_at=r[11],
        sink=r[12],
        reverses=r[13],
    )


def _case(r: Sequence[Any]) -> Case:
    return Case(
        case_id=r[0],
        account_id=r[1],
        status=r[2],
        reason=r[3],
        opened_by=r[4],
        opened_at=r[5],
        assignee=r[6],
        label=r[7],
        label_actor=r[8],
        label_category=r[9],
        decision_id=r[10],
        closed_by=r[11],
        closed_at=r[12],
        resolution=r[13],
        updated_at=r[14],
    )


def _note(r: Sequence[Any]) -> CaseNote:
    return CaseNote(note_id=int(r[0]), case_id=r[1], kind=r[2], author=r[3], body=orjson.loads(r[4]), created_at=r[5])


def _appeal(r: Sequence[Any]) -> Appeal:
    return Appeal(
        appeal_id=r[0],
        account_id=r[1],
        reason=r[2],
        status=r[3],
        filed_by=r[4],
        filed_at=r[5],
        decided_by=r[6],
        decided_at=r[7],
        note=r[8],
    )


def _where(filters: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """`` WHERE a = ? AND b = ?`` for the filters that are set (column names are ours, never input)."""
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), list(used.values())


class DisruptRepo(Repository):
    # -- decisions ---------------------------------------------------------------------------------
    def insert_decision(self, d: Decision, run_id: str) -> bool:
        """Insert unless the decision id exists; True when this call inserted it."""
        n = self._x(
            f"INSERT INTO disrupt_decisions ({_DECISION_COLS}, run_id) "
            f"VALUES ({marks(17)}) ON CONFLICT (decision_id) DO NOTHING",
            (d.decision_id, d.mode, d.policy_id, d.policy_version, d.rule_version, d.account_id, d.action,
             d.end_user_id, _dumps(d.params), d.status, _dumps(list(d.reasons)), _dumps(d.evidence),
             d.model_version, d.decided_by, d.decided_at, d.cluster_id, run_id),
        )  # fmt: skip
        return n == 1

    def get_decision(self, decision_id: str) -> Decision | None:
        rows = self._q(f"SELECT {_DECISION_COLS} FROM disrupt_decisions WHERE decision_id = ?", (decision_id,))
        return _decision(rows[0]) if rows else None

    def list_decisions(
        self,
        *,
        account_id: str | None = None,
        mode: str | None = None,
        policy_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Decision]:
        where, params = _where({"account_id": account_id, "mode": mode, "policy_id": policy_id, "status": status})
        rows = self._q(
            f"SELECT {_DECISION_COLS} FROM disrupt_decisions{where} ORDER BY decided_at, decision_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_decision(r) for r in rows]

    def set_decision_status(self, account_id: str, old: Sequence[str], new: str) -> list[str]:
        """Move the account's non-shadow decisions in status ``old`` to ``new``; return their ids (sorted)."""
        if not old:
            return []
        in_old = marks(len(old))
        ids = [
            str(r[0])
            for r in self._q(
                f"SELECT decision_id FROM disrupt_decisions WHERE account_id = ? AND mode != 'shadow' "
                f"AND status IN ({in_old}) ORDER BY decision_id",
                (account_id, *old),
            )
        ]
        self._x(
            f"UPDATE disrupt_decisions SET status = ? WHERE account_id = ? AND mode != 'shadow' "
            f"AND status IN ({in_old})",
            (new, account_id, *old),
        )
        return ids

    # -- actions -----------------------------------------------------------------------------------
    def insert_action(self, a: Action) -> bool:
        """Insert unless the action id (the idempotency key) exists; True when this call inserted it."""
        n = self._x(
            f"INSERT INTO disrupt_actions ({_ACTION_COLS}) VALUES ({marks(14)}) ON CONFLICT (action_id) DO NOTHING",
            (a.action_id, a.decision_id, a.kind, a.account_id, a.end_user_id, _dumps(a.params), a.status,
             a.attempts, a.last_error, a.next_attempt_at, a.created_at, a.delivered_at, a.sink, a.reverses),
        )  # fmt: skip
        return n == 1

    def get_action(self, action_id: str) -> Action | None:
        rows = self._q(f"SELECT {_ACTION_COLS} FROM disrupt_actions WHERE action_id = ?", (action_id,))
        return _action(rows[0]) if rows else None

    def list_actions(
        self, *, status: str | None = None, account_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Action]:
        where, params = _where({"status": status, "account_id": account_id})
        rows = self._q(
            f"SELECT {_ACTION_COLS} FROM disrupt_actions{where} ORDER BY created_at, action_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_action(r) for r in rows]

    def count_actions(self) -> dict[str, int]:
        """Actions per status."""
        return {str(s): int(n) for s, n in self._q("SELECT status, COUNT(*) FROM disrupt_actions GROUP BY status")}

    def cancel_action(self, action_id: str) -> bool:
        """Cancel an action not delivered yet (``pending`` or ``dead``); True when this call did."""
        return (
            self._x(
                "UPDATE disrupt_actions SET status = 'cancelled', next_attempt_at = NULL, claimed_by = NULL, "
                "lease_until = NULL WHERE action_id = ? AND status IN ('pending', 'dead')",
                (action_id,),
            )
            == 1
        )

    def requeue_dead(self, action_id: str) -> bool:
        """Put a dead-lettered action back in the queue (attempts reset); True when this call did."""
        return bool(
            self._q(
                "UPDATE disrupt_actions SET status = 'pending', attempts = 0, next_attempt_at = NULL, "
                "claimed_by = NULL, lease_until = NULL WHERE action_id = ? AND status = 'dead' RETURNING action_id",
                (action_id,),
            )
        )

    # -- delivery claims ---------------------------------------------------------------------------
    def live_claims(self, now: str) -> list[str]:
        """The distinct claim tokens on pending actions whose lease has not expired at ``now``."""
        rows = self._q(
            "SELECT DISTINCT claimed_by FROM disrupt_actions WHERE status = 'pending' AND claimed_by IS NOT NULL "
            "AND lease_until > ?",
            (now,),
        )
        return [str(r[0]) for r in rows]

    def claim_actions(
        self, claimer: str, *, now: str, lease_until: str, limit: int, take_over: Sequence[str] = ()
    ) -> list[Action]:
        """Claim up to ``limit`` due actions for ``claimer`` in one atomic statement, and commit.

        Due: pending, ``next_attempt_at`` reached, and unclaimed, or its lease expired at ``now``, or
        claimed by one of ``take_over`` (claims of runs known to be dead). Returns the claimed actions
        oldest first. On an error the transaction is rolled back.
        """
        rows = claim_due(
            self,
            table="disrupt_actions",
            key=("action_id",),
            order="created_at, action_id",
            columns=_ACTION_COLS,
            claimer=claimer,
            now=now,
            lease_until=lease_until,
            limit=limit,
            take_over=take_over,
        )
        return sorted((_action(r) for r in rows), key=lambda a: (a.created_at, a.action_id))

    def renew_claims(self, claimer: str, action_ids: Sequence[str], *, lease_until: str) -> set[str]:
        """Extend ``claimer``'s lease on ``action_ids`` and commit; return the ids it still holds."""
        if not action_ids:
            return set()
        try:
            rows = self._q(
                f"UPDATE disrupt_actions SET lease_until = ? WHERE claimed_by = ? AND status = 'pending' "
                f"AND action_id IN ({marks(len(action_ids))}) RETURNING action_id",
                [lease_until, claimer, *action_ids],
            )
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise
        return {str(r[0]) for r in rows}

    def record_delivery(self, action_id: str, claimer: str, *, attempts: int, delivered_at: str, sink: str) -> bool:
        """Mark a claimed action delivered and release the claim; False if ``claimer`` lost the claim."""
        return bool(
            self._q(
                "UPDATE disrupt_actions SET status = 'delivered', attempts = ?, delivered_at = ?, sink = ?, "
                "last_error = NULL, next_attempt_at = NULL, claimed_by = NULL, lease_until = NULL "
                "WHERE action_id = ? AND status = 'pending' AND claimed_by = ? RETURNING action_id",
                (attempts, delivered_at, sink, action_id, claimer),
            )
        )

    def record_failure(
        self, action_id: str, claimer: str, *, attempts: int, error: str, next_attempt_at: str | None, dead: bool
    ) -> bool:
        """Record a failed send (retry at ``next_attempt_at``, or ``dead``) and release the claim.

        False if ``claimer`` no longer held the claim (another run took the action over).
        """
        return bool(
            self._q(
                "UPDATE disrupt_actions SET attempts = ?, last_error = ?, next_attempt_at = ?, status = ?, "
                "claimed_by = NULL, lease_until = NULL WHERE action_id = ? AND status = 'pending' "
                "AND claimed_by = ? RETURNING action_id",
                (attempts, error, None if dead else next_attempt_at, "dead" if dead else "pending", action_id, claimer),
            )
        )

    def next_retry_at(self, now: str) -> str | None:
        """The earliest ``next_attempt_at`` of pending actions nobody holds a live claim on."""
        got = self._q(
            "SELECT MIN(next_attempt_at) FROM disrupt_actions WHERE status = 'pending' "
            "AND (claimed_by IS NULL OR lease_until IS NULL OR lease_until <= ?)",
            (now,),
        )[0][0]
        return None if got is None else str(got)

    # -- cases -------------------------------------------------------------------------------------
    def get_case(self, case_id: str) -> Case | None:
        rows = self._q(f"SELECT {_CASE_COLS} FROM disrupt_cases WHERE case_id = ?", (case_id,))
        return _case(rows[0]) if rows else None

    def open_case_for(self, account_id: str) -> Case | None:
        """The account's open case (the oldest, should there be more than one)."""
        rows = self._q(
            f"SELECT {_CASE_COLS} FROM disrupt_cases WHERE account_id = ? AND status = 'open' "
            "ORDER BY opened_at, case_id LIMIT 1",
            (account_id,),
        )
        return _case(rows[0]) if rows else None

    def count_cases(self, account_id: str) -> int:
        return int(self._q("SELECT COUNT(*) FROM disrupt_cases WHERE account_id = ?", (account_id,))[0][0])

    def insert_case(
        self, case_id: str, account_id: str, *, reason: str, opened_by: str, ts: str, decision_id: str | None
    ) -> Case:
        """Insert an open case; return it."""
        self._x(
            f"INSERT INTO disrupt_cases ({_CASE_COLS}) VALUES (?, ?, 'open', ?, ?, ?, NULL, NULL, NULL, NULL, ?, "
            "NULL, NULL, NULL, ?)",
            (case_id, account_id, reason, opened_by, ts, decision_id, ts),
        )
        got = self.get_case(case_id)
        assert got is not None
        return got

    def update_case(self, case_id: str, sets: Mapping[str, Any], *, ts: str) -> bool:
        """Set the given columns (and ``updated_at``) of an open case; False if it is closed or unknown."""
        bad = set(sets) - _CASE_SETTABLE
        if bad:
            raise StoreError(f"cannot set case column(s) {', '.join(sorted(bad))}")
        cols = "".join(f"{k} = ?, " for k in sets)
        return (
            self._x(
                f"UPDATE disrupt_cases SET {cols}updated_at = ? WHERE case_id = ? AND status = 'open'",
                [*sets.values(), ts, case_id],
            )
            == 1
        )

    def list_cases(
        self,
        *,
        status: str | None = None,
        assignee: str | None = None,
        account_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Case]:
        where, params = _where(
            {"status": status or None, "assignee": assignee or None, "account_id": account_id or None}
        )
        rows = self._q(
            f"SELECT {_CASE_COLS} FROM disrupt_cases{where} ORDER BY opened_at, case_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_case(r) for r in rows]

    def labelled_cases(self) -> list[Case]:
        """Cases an analyst labelled (true or false positive), by case id."""
        rows = self._q(f"SELECT {_CASE_COLS} FROM disrupt_cases WHERE label IS NOT NULL ORDER BY case_id")
        return [_case(r) for r in rows]

    def add_note(self, case_id: str, *, kind: str, author: str, body: Any, ts: str) -> CaseNote:
        """Append a note (``kind`` note or evidence; ``body`` any JSON value) to a case."""
        rows = self._q(
            "INSERT INTO disrupt_case_notes (case_id, kind, author, body, created_at) VALUES (?, ?, ?, ?, ?) "
            "RETURNING note_id",
            (case_id, kind, author, _dumps(body), ts),
        )
        return CaseNote(int(rows[0][0]), case_id, kind, author, body, ts)

    def list_notes(self, case_id: str) -> list[CaseNote]:
        rows = self._q(f"SELECT {_NOTE_COLS} FROM disrupt_case_notes WHERE case_id = ? ORDER BY note_id", (case_id,))
        return [_note(r) for r in rows]

    # -- appeals -----------------------------------------------------------------------------------
    def get_appeal(self, appeal_id: str) -> Appeal | None:
        rows = self._q(f"SELECT {_APPEAL_COLS} FROM disrupt_appeals WHERE appeal_id = ?", (appeal_id,))
        return _appeal(rows[0]) if rows else None

    def list_appeals(
        self, *, status: str | None = None, account_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[Appeal]:
        where, params = _where({"status": status or None, "account_id": account_id or None})
        rows = self._q(
            f"SELECT {_APPEAL_COLS} FROM disrupt_appeals{where} ORDER BY filed_at, appeal_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return [_appeal(r) for r in rows]

    def count_appeals(self, account_id: str) -> int:
        return int(self._q("SELECT COUNT(*) FROM disrupt_appeals WHERE account_id = ?", (account_id,))[0][0])

    def insert_appeal(self, appeal_id: str, account_id: str, *, reason: str, filed_by: str, ts: str) -> Appeal:
        """Insert an open appeal; return it."""
        self._x(
            f"INSERT INTO disrupt_appeals ({_APPEAL_COLS}) VALUES (?, ?, ?, 'open', ?, ?, NULL, NULL, NULL)",
            (appeal_id, account_id, reason, filed_by, ts),
        )
        got = self.get_appeal(appeal_id)
        assert got is not None
        return got

    def decide_appeal(self, appeal_id: str, *, status: str, decided_by: str, ts: str, note: str) -> bool:
        """Close an open appeal as ``status``; False if it was not open (decided meanwhile, or unknown)."""
        return (
            self._x(
                "UPDATE disrupt_appeals SET status = ?, decided_by = ?, decided_at = ?, note = ? "
                "WHERE appeal_id = ? AND status = 'open'",
                (status, decided_by, ts, note, appeal_id),
            )
            == 1
        )

    def reinstated_accounts(self) -> set[str]:
        """Accounts with a granted appeal: later policy runs exempt them."""
        return {str(r[0]) for r in self._q("SELECT account_id FROM disrupt_appeals WHERE status = 'reinstated'")}

    # -- labels (training data) --------------------------------------------------------------------
    def label_events(self, account_id: str, *, flagged_only: bool) -> list[LabelEvent]:
        """The account's events in time order; ``flagged_only``: those some model flagged (all of them
        when none was flagged)."""
        if flagged_only:
            rows = self._q(
                "SELECT e.event_id, e.prompt, e.messages FROM events e WHERE e.account_id = ? AND EXISTS "
                "(SELECT 1 FROM detections d WHERE d.event_id = e.event_id AND d.flagged = 1) "
                "ORDER BY e.ts, e.event_id",
                (account_id,),
            )
            if rows:
                return [LabelEvent(str(r[0]), r[1], r[2]) for r in rows]
        rows = self._q(
            "SELECT event_id, prompt, messages FROM events WHERE account_id = ? ORDER BY ts, event_id", (account_id,)
        )
        return [LabelEvent(str(r[0]), r[1], r[2]) for r in rows]
