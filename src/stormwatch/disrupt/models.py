"""The records of the disrupt package: frozen dataclasses with ``to_dict()``, and its errors."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stormwatch.errors import InputError

MODES = ("dry-run", "shadow", "enforce")
#: Actions a policy may take, in order of severity (later ones subsume earlier account actions).
ACTION_KINDS = (
    "open_case",
    "warn",
    "require_verification",
    "rate_limit",
    "block_end_user",
    "suspend",
    "terminate",
)
#: Account-level actions that a more severe one makes redundant for the same account.
ACCOUNT_LADDER = ("warn", "require_verification", "rate_limit", "suspend", "terminate")
#: What reverses a delivered action when an appeal is granted.
REVERSAL = {
    "warn": "retract_warning",
    "require_verification": "clear_verification",
    "rate_limit": "remove_rate_limit",
    "block_end_user": "unblock_end_user",
    "suspend": "unsuspend",
    "terminate": "reinstate",
}
#: Actions carried out here rather than sent to a sink.
INTERNAL_KINDS = frozenset({"open_case"})
CASE_LABELS = ("true_positive", "false_positive")


class NotFoundError(InputError):
    """An id (case, appeal, action, decision) that does not exist. API: 404."""


class ConflictError(InputError):
    """The request contradicts the current state (a closed case, a decided appeal). API: 409."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def actor_name(by: str) -> str:
    """``alice`` -> ``analyst:alice``; names with a ``kind:`` prefix are kept."""
    by = by.strip()
    if not by:
        raise InputError("an actor name is required", hint="pass --by NAME")
    return by if ":" in by else f"analyst:{by}"


class Record:
    def to_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Issue(Record):
    """One problem found in a policy file. ``severity`` is ``error`` or ``warning``."""

    severity: str
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{where}: {self.severity}: {self.field}: {self.message}"


@dataclass(frozen=True)
class Judgement(Record):
    """What analysis concluded about one account (table ``account_judgements``)."""

    account_id: str
    risk: float
    flagged: bool
    cluster_id: str | None = None
    actor: str | None = None
    actor_ref: str | None = None
    confidence: float | None = None
    confidence_label: str | None = None
    ttps: tuple[str, ...] = ()
    evidence: Any = None
    model_version: str | None = None
    analyzed_at: str | None = None


@dataclass(frozen=True)
class Cluster(Record):
    cluster_id: str
    actor: str | None
    confidence: float | None
    confidence_label: str | None
    members: tuple[str, ...]


@dataclass(frozen=True)
class AccountInfo(Record):
    account_id: str
    created_at: str | None = None
    email_domain: str | None = None
    org_id: str | None = None
    status: str | None = None


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
class AuditEntry(Record):
    seq: int
    ts: str
    actor: str
    action: str
    target: str
    policy_id: str | None
    policy_version: str | None
    rule_version: str | None
    model_version: str | None
    evidence: Any
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class AuditAnchor(Record):
    seq: int
    entry_hash: str


@dataclass(frozen=True)
class AuditVerification(Record):
    ok: bool
    entries: int
    head: AuditAnchor | None
    first_bad_seq: int | None = None
    problem: str | None = None  # changed | removed | reordered | truncated
    message: str = ""


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
class CaseDetail(Record):
    case: Case
    notes: tuple[CaseNote, ...]
    decisions: tuple[Decision, ...]


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
class AppealOutcome(Record):
    appeal: Appeal
    reversing_actions: tuple[Action, ...]
    cancelled_actions: tuple[str, ...]


@dataclass(frozen=True)
class DeliveryReport(Record):
    sink: str
    attempted: int = 0
    delivered: int = 0
    retried: int = 0
    dead_lettered: int = 0
    pending: int = 0
    errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunReport(Record):
    run_id: str
    mode: str
    judgements: int
    decisions_new: int
    decisions_existing: int
    exempted: int
    actions_queued: int
    cases_opened: int
    decisions: tuple[Decision, ...] = field(default=())  # recorded by this run (new)
    earlier: tuple[Decision, ...] = field(default=())  # matched again, recorded by an earlier run (if asked)


@dataclass(frozen=True)
class EnforceReport(Record):
    run: RunReport
    delivery: DeliveryReport | None
    audit_head: AuditAnchor | None
