"""The disrupt service layer: the one surface the CLI and the HTTP API call.

Every function takes an open :class:`~stormwatch.store.Store` first, does its own transaction
(committing on success, rolling back on error) and returns frozen dataclasses with ``to_dict()``
(JSON-ready: only str/int/float/bool/None/list/dict). Errors are from :mod:`stormwatch.errors`:
:class:`NotFoundError` (an unknown case/appeal/action id; API: 404) and :class:`ConflictError`
(e.g. deciding an appeal twice, changing a closed case; API: 409) are ``InputError`` subclasses
(exit code 4); validation problems in arguments raise ``InputError`` (API: 400); the database
raises ``StoreError``. ``by`` is always the human or system that acts (``"analyst:alice"`` or a
plain name, which is recorded as ``analyst:<name>``); it goes to the audit log.

Signatures (keyword-only after the first arguments; stable, add only optional parameters)::

    # policies (files in policies/; see docs/disrupt.md)
    check_policies(paths) -> list[Issue]
    load_policy_set(paths) -> PolicySet                      # raises InputError if any error Issue
    test_policies(store, policy_set, *, now=None, account_ids=None) -> Evaluation   # writes nothing
    compare_policies(store, active, candidate, *, now=None) -> Comparison          # writes nothing

    # decisions and enforcement
    run_policies(store, policy_set, *, mode="dry-run", now=None, run_by="system",
                 include_earlier=False) -> RunReport   # .decisions: recorded by this run only
    enforce(store, policy_set, sink, *, mode="dry-run", retry=RetryPolicy(), now=None,
            include_earlier=False) -> EnforceReport
    deliver_pending(store, sink, *, retry=RetryPolicy()) -> DeliveryReport   # claims, then delivers
    retry_dead_letters(store, sink, *, retry=RetryPolicy(), action_ids=None) -> DeliveryReport
    list_decisions(store, *, account_id=None, mode=None, policy_id=None, status=None,
                   limit=100, offset=0) -> list[Decision]
    get_decision(store, decision_id) -> Decision
    list_actions(store, *, status=None, account_id=None, limit=100, offset=0) -> list[Action]
    get_action(store, action_id) -> Action

    # audit log (append-only, hash-chained)
    list_audit(store, *, target=None, limit=100, offset=0) -> list[AuditEntry]
    verify_audit(store, *, anchor=None) -> AuditVerification    # anchor: AuditAnchor | None
    audit_head(store) -> AuditAnchor

    # cases
    list_cases(store, *, status=None, assignee=None, account_id=None, limit=100, offset=0) -> list[Case]
    get_case(store, case_id) -> CaseDetail                   # the case + its notes and evidence
    open_case(store, account_id, *, by, reason, decision_id=None) -> Case   # one open case per account
    assign_case(store, case_id, assignee, *, by) -> Case
    annotate_case(store, case_id, text, *, by) -> CaseNote
    attach_evidence(store, case_id, evidence, *, by) -> CaseNote   # evidence: dict or str (URL/ref)
    label_case(store, case_id, label, *, by, actor=None, category=None) -> Case
                                                             # label: "true_positive"|"false_positive"
    close_case(store, case_id, *, by, resolution="") -> Case

    # appeals
    file_appeal(store, account_id, reason, *, by) -> Appeal  # reopens the account's decisions
    list_appeals(store, *, status=None, account_id=None, limit=100, offset=0) -> list[Appeal]
    get_appeal(store, appeal_id) -> Appeal
    decide_appeal(store, appeal_id, *, reinstate, by, note="") -> AppealOutcome
                                                             # reinstate=True queues reversing actions
    # labels (training data for `stormwatch train --data`)
    export_labels(store, out) -> int                         # out: a text stream; returns lines written

Sinks (``sink`` above) implement :class:`~stormwatch.disrupt.sinks.Sink`: ``WebhookSink(url,
secret, ...)``, ``OutboxSink(path)`` and ``MemorySink()`` (the in-process reference
implementation). Build one from CLI-style options with :func:`make_sink`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from stormwatch.disrupt import audit as _audit
from stormwatch.disrupt.appeals import decide_appeal, file_appeal, get_appeal, list_appeals
from stormwatch.disrupt.cases import (
    annotate_case,
    assign_case,
    attach_evidence,
    close_case,
    get_case,
    label_case,
    list_cases,
    open_case,
)
from stormwatch.disrupt.compare import Comparison, Difference, Evaluation, compare_policies, test_policies
from stormwatch.disrupt.enforce import RetryPolicy, deliver_pending, enforce, retry_dead_letters, run_policies
from stormwatch.disrupt.labels import export_labels
from stormwatch.disrupt.models import (
    Action,
    Appeal,
    AppealOutcome,
    AuditAnchor,
    AuditEntry,
    AuditVerification,
    Case,
    CaseDetail,
    CaseNote,
    ConflictError,
    Decision,
    DeliveryReport,
    EnforceReport,
    Issue,
    NotFoundError,
    RunReport,
)
from stormwatch.disrupt.policy import PolicySet, check_paths, load_policy_set
from stormwatch.disrupt.records import get_action, get_decision, list_actions, list_decisions
from stormwatch.disrupt.sinks import MemorySink, OutboxSink, Sink, WebhookSink, make_sink
from stormwatch.store import Store

__all__ = [
    "Action",
    "Appeal",
    "AppealOutcome",
    "AuditAnchor",
    "AuditEntry",
    "AuditVerification",
    "Case",
    "CaseDetail",
    "CaseNote",
    "Comparison",
    "ConflictError",
    "Decision",
    "DeliveryReport",
    "Difference",
    "EnforceReport",
    "Evaluation",
    "Issue",
    "MemorySink",
    "NotFoundError",
    "OutboxSink",
    "PolicySet",
    "RetryPolicy",
    "RunReport",
    "Sink",
    "WebhookSink",
    "annotate_case",
    "assign_case",
    "attach_evidence",
    "audit_head",
    "check_policies",
    "close_case",
    "compare_policies",
    "decide_appeal",
    "deliver_pending",
    "enforce",
    "export_labels",
    "file_appeal",
    "get_action",
    "get_appeal",
    "get_case",
    "get_decision",
    "label_case",
    "list_actions",
    "list_appeals",
    "list_audit",
    "list_cases",
    "list_decisions",
    "load_policy_set",
    "make_sink",
    "open_case",
    "retry_dead_letters",
    "run_policies",
    "test_policies",
    "verify_audit",
]


def check_policies(paths: Iterable[str | Path], *, now: datetime | None = None) -> list[Issue]:
    """Every problem in the policy and exemption files under ``paths`` (empty: all good)."""
    return check_paths(paths, now)[1]


def list_audit(store: Store, *, target: str | None = None, limit: int = 100, offset: int = 0) -> list[AuditEntry]:
    return _audit.list_entries(store, target=target, limit=limit, offset=offset)


def verify_audit(store: Store, *, anchor: AuditAnchor | None = None) -> AuditVerification:
    return _audit.verify(store, anchor)


def audit_head(store: Store) -> AuditAnchor:
    """The last entry's (seq, hash): keep it outside the database to detect a rewritten chain."""
    return _audit.head(store) or AuditAnchor(0, _audit.GENESIS)
