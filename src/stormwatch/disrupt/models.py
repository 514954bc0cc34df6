"""The records of the disrupt package: frozen dataclasses with ``to_dict()``, and its errors.

The stored records (:class:`Decision`, :class:`Action`, :class:`Case`, :class:`CaseNote`, :class:`Appeal`,
:class:`AuditEntry`, :class:`AuditAnchor`) are defined by the store's repositories
(:mod:`stormwatch.store.repos.disrupt`, :mod:`stormwatch.store.repos.audit`), which return them, and
re-exported here; the reports built from them are defined below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from stormwatch.errors import InputError
from stormwatch.result import Cluster, Judgement  # the analysis result, read by policies
from stormwatch.store.records import Record
from stormwatch.store.repos.audit import AuditAnchor, AuditEntry
from stormwatch.store.repos.disrupt import Action, Appeal, Case, CaseNote, Decision

__all__ = [
    "ACCOUNT_LADDER",
    "ACTION_KINDS",
    "CASE_LABELS",
    "INTERNAL_KINDS",
    "MODES",
    "REVERSAL",
    "AccountInfo",
    "Action",
    "Appeal",
    "AppealOutcome",
    "AuditAnchor",
    "AuditEntry",
    "AuditVerification",
    "Case",
    "CaseDetail",
    "CaseNote",
    "Cluster",
    "ConflictError",
    "Decision",
    "DeliveryReport",
    "EnforceReport",
    "Issue",
    "Judgement",
    "NotFoundError",
    "Record",
    "RunReport",
    "actor_name",
    "iso",
    "utcnow",
]

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
class AccountInfo(Record):
    account_id: str
    created_at: str | None = None
    email_domain: str | None = None
    org_id: str | None = None
    status: str | None = None


@dataclass(frozen=True)
class AuditVerification(Record):
    ok: bool
    entries: int
    head: AuditAnchor | None
    first_bad_seq: int | None = None
    problem: str | None = None  # changed | removed | reordered | truncated
    message: str = ""


@dataclass(frozen=True)
class CaseDetail(Record):
    case: Case
    notes: tuple[CaseNote, ...]
    decisions: tuple[Decision, ...]


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
