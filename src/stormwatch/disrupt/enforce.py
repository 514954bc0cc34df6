"""Recording decisions (the transactional outbox) and delivering actions to a sink.

:func:`run_policies` writes each decision, its pending action and their audit entries in one
transaction, so a decision never exists without its action or the other way round.
:func:`deliver_pending` then sends pending actions; an action becomes ``delivered`` only after the
sink confirmed it (HTTP 2xx, fsync). A process killed at any point leaves undelivered actions
``pending`` and the next run sends them again under the same idempotency key; the receiver's
dedupe (see the webhook contract) makes that a no-op. Failures retry with exponential backoff and
jitter; after ``max_attempts`` the action goes to the dead letters (status ``dead``) that
:func:`retry_dead_letters` requeues.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from stormwatch.disrupt import records
from stormwatch.disrupt.audit import AuditEvent, head, track_event
from stormwatch.disrupt.cases import open_case_tx
from stormwatch.disrupt.evaluate import Planned, evaluate
from stormwatch.disrupt.judgements import load_context
from stormwatch.disrupt.models import (
    INTERNAL_KINDS,
    MODES,
    Action,
    Decision,
    DeliveryReport,
    EnforceReport,
    RunReport,
    iso,
    utcnow,
)
from stormwatch.disrupt.policy import Policy, PolicySet
from stormwatch.disrupt.sinks import DeliveryError, Sink
from stormwatch.errors import InputError
from stormwatch.store import Store


@dataclass(frozen=True)
class RetryPolicy:
    """Delivery retries: attempt ``n`` waits ``base_delay * 2**(n-1)`` (+ up to ``jitter`` of it), capped."""

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.25
    wait: bool = True  # wait in-process for retries; False leaves them for the next run
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def delay(self, attempt: int) -> float:
        base = min(self.max_delay, self.base_delay * 2 ** max(0, attempt - 1))
        return float(base * (1 + random.uniform(0, self.jitter)))  # jitter, not security


def effective_mode(policy: Policy, run_mode: str) -> str:
    """Shadow policies record as shadow; a policy acts only if both it and the run say enforce."""
    if policy.mode == "shadow":
        return "shadow"
    return "enforce" if run_mode == "enforce" and policy.mode == "enforce" else "dry-run"


def _decision(p: Planned, mode: str, ts: str) -> Decision:
    return Decision(
        p.decision_id(mode), mode, p.policy_id, p.policy_version, p.rule_version, p.account_id, p.action,
        p.end_user_id, p.params, p.status, p.reasons, p.evidence, p.model_version, p.decided_by, ts, p.cluster_id,
    )  # fmt: skip


def _record(store: Store, p: Planned, mode: str, run_id: str, ts: str) -> tuple[Decision, bool, bool, bool]:
    """One decision (+ action, + case) in the current transaction: (decision, new, queued, case)."""
    d = _decision(p, mode, ts)
    if not records.insert_decision(store, d, run_id):
        return d, False, False, False
    versions = {"policy_id": p.policy_id, "policy_version": p.policy_version, "rule_version": p.rule_version}
    track_event(
        store,
        AuditEvent(p.decided_by, f"decision.{p.status}", f"account:{p.account_id}", {
            "decision_id": d.decision_id, "mode": mode, "action": p.action, "end_user_id": p.end_user_id,
            "params": p.params, "reasons": list(p.reasons), "evidence": p.evidence, "run_id": run_id,
        }, model_version=p.model_version, **versions),
        ts,
    )  # fmt: skip
    queued = case = False
    if p.status == "planned" and p.action in INTERNAL_KINDS and mode != "shadow":
        reason = str(p.params.get("reason") or "; ".join(p.reasons))
        case = open_case_tx(store, p.account_id, by=p.decided_by, reason=reason, decision_id=d.decision_id, ts=ts)[1]
    elif p.status == "planned" and mode == "enforce":
        action = Action(records.action_id_for(d.decision_id), d.decision_id, p.action, p.account_id, p.end_user_id,
                        p.params, "pending", 0, None, None, ts, None, None)  # fmt: skip
        if records.insert_action(store, action):
            queued = True
            track_event(
                store,
                AuditEvent(p.decided_by, "action.queued", f"account:{p.account_id}",
                           {"action_id": action.action_id, "kind": p.action, "decision_id": d.decision_id,
                            "end_user_id": p.end_user_id, "params": p.params}, **versions),
                ts,
            )  # fmt: skip
    return d, True, queued, case


def run_policies(
    store: Store,
    policy_set: PolicySet,
    *,
    mode: str = "dry-run",
    now: datetime | None = None,
    run_by: str = "system",
    account_ids: Sequence[str] | None = None,
) -> RunReport:
    """Evaluate the policies over the stored judgements and record what they decide.

    ``dry-run`` records decisions and acts on nothing; ``shadow`` records only the shadow
    policies' decisions; ``enforce`` also queues actions for policies whose own mode is enforce.
    Re-running records nothing new (decision ids are deterministic).
    """
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}", hint=f"one of {', '.join(MODES)}")
    now = now or utcnow()
    ts = iso(now)
    run_id = "run_" + now.strftime("%Y%m%dT%H%M%S") + "_" + uuid.uuid4().hex[:6]
    ctx = load_context(store, account_ids)
    planned: list[tuple[Planned, str]] = []
    if mode != "shadow":
        planned += [(p, _mode_of(policy_set, p, mode)) for p in evaluate(policy_set.active(), policy_set, ctx, now)]
    planned += [(p, "shadow") for p in evaluate(policy_set.shadow(), policy_set, ctx, now)]
    new = existing = exempted = queued = cases = 0
    out: list[Decision] = []
    try:
        for p, eff in planned:
            d, is_new, q, c = _record(store, p, eff, run_id, ts)
            store.commit()
            out.append(d)
            new += is_new
            existing += not is_new
            exempted += p.status == "exempted"
            queued += q
            cases += c
    except BaseException:
        store.rollback()
        raise
    return RunReport(run_id, mode, len(ctx.judgements), new, existing, exempted, queued, cases, tuple(out))


def _mode_of(pset: PolicySet, p: Planned, run_mode: str) -> str:
    policy = next(q for q in pset.policies if q.id == p.policy_id)
    return effective_mode(policy, run_mode)


def _due(store: Store, now: str) -> list[Action]:
    rows = store.query(
        f"SELECT {records.ACTION_COLS} FROM disrupt_actions WHERE status = 'pending' "
        "AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY created_at, action_id",
        (now,),
    )
    return [records.action_from_row(r) for r in rows]


def _deliver_one(store: Store, sink: Sink, a: Action, retry: RetryPolicy, report: dict[str, int]) -> str | None:
    report["attempted"] += 1
    attempts = a.attempts + 1
    try:
        sink.send(a)
    except DeliveryError as exc:
        dead = not exc.retryable or attempts >= retry.max_attempts
        nxt = None if dead else iso(utcnow() + timedelta(seconds=retry.delay(attempts)))
        store.execute(
            "UPDATE disrupt_actions SET attempts = ?, last_error = ?, next_attempt_at = ?, status = ? "
            "WHERE action_id = ? AND status = 'pending'",
            (attempts, str(exc), nxt, "dead" if dead else "pending", a.action_id),
        )
        if dead:
            report["dead_lettered"] += 1
            track_event(store, AuditEvent("system", "action.dead_lettered", f"account:{a.account_id}",
                                          {"action_id": a.action_id, "kind": a.kind, "attempts": attempts,
                                           "error": str(exc), "sink": sink.name}))  # fmt: skip
        else:
            report["retried"] += 1
        store.commit()
        return str(exc)
    ts = iso(utcnow())
    store.execute(
        "UPDATE disrupt_actions SET status = 'delivered', attempts = ?, delivered_at = ?, sink = ?, "
        "last_error = NULL, next_attempt_at = NULL WHERE action_id = ? AND status = 'pending'",
        (attempts, ts, sink.name, a.action_id),
    )
    track_event(store, AuditEvent("system", "action.delivered", f"account:{a.account_id}",
                                  {"action_id": a.action_id, "kind": a.kind, "end_user_id": a.end_user_id,
                                   "attempts": attempts, "sink": sink.name, "reverses": a.reverses}), ts)  # fmt: skip
    store.commit()
    report["delivered"] += 1
    return None


def deliver_pending(store: Store, sink: Sink, *, retry: RetryPolicy | None = None) -> DeliveryReport:
    """Send every pending action; wait for retries (unless ``retry.wait`` is False)."""
    retry = retry or RetryPolicy()
    report = {"attempted": 0, "delivered": 0, "retried": 0, "dead_lettered": 0}
    errors: list[str] = []
    while True:
        due = _due(store, iso(utcnow()))
        for a in due:
            err = _deliver_one(store, sink, a, retry, report)
            if err:
                errors.append(f"{a.action_id}: {err}")
        if due:
            continue
        waiting = store.query("SELECT MIN(next_attempt_at) FROM disrupt_actions WHERE status = 'pending'")[0][0]
        if waiting is None or not retry.wait:
            break
        gap = (datetime.fromisoformat(str(waiting).replace("Z", "+00:00")) - utcnow()).total_seconds()
        retry.sleep(min(max(gap, 0.0), retry.max_delay))
    pending = int(store.query("SELECT COUNT(*) FROM disrupt_actions WHERE status = 'pending'")[0][0])
    return DeliveryReport(sink.name, pending=pending, errors=tuple(errors[-20:]), **report)


def retry_dead_letters(
    store: Store, sink: Sink, *, retry: RetryPolicy | None = None, action_ids: Sequence[str] | None = None
) -> DeliveryReport:
    """Requeue dead-lettered actions (all, or the ids given) and deliver them."""
    dead = records.list_actions(store, status="dead", limit=1_000_000)
    if action_ids is not None:
        wanted = set(action_ids)
        dead = [a for a in dead if a.action_id in wanted]
    for a in dead:
        store.execute(
            "UPDATE disrupt_actions SET status = 'pending', attempts = 0, next_attempt_at = NULL "
            "WHERE action_id = ? AND status = 'dead'",
            (a.action_id,),
        )
        evidence = {"action_id": a.action_id, "kind": a.kind, "last_error": a.last_error}
        track_event(store, AuditEvent("system", "action.requeued", f"account:{a.account_id}", evidence))
    store.commit()
    return deliver_pending(store, sink, retry=retry)


def enforce(
    store: Store,
    policy_set: PolicySet,
    sink: Sink | None,
    *,
    mode: str = "dry-run",
    retry: RetryPolicy | None = None,
    now: datetime | None = None,
) -> EnforceReport:
    """Record decisions, then (``enforce`` mode only) deliver pending actions through ``sink``."""
    run = run_policies(store, policy_set, mode=mode, now=now)
    delivery = None
    if mode == "enforce":
        if sink is None:
            raise InputError("--mode enforce needs a sink", hint="pass --sink webhook or --sink outbox")
        delivery = deliver_pending(store, sink, retry=retry)
    return EnforceReport(run, delivery, head(store))
