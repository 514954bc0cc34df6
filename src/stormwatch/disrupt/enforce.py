"""Recording decisions (the transactional outbox) and delivering actions to a sink.

:func:`run_policies` writes each decision, its pending action and their audit entries in one
transaction, so a decision never exists without its action or the other way round.
:func:`deliver_pending` then sends pending actions; an action becomes ``delivered`` only after the
sink confirmed it (HTTP 2xx, fsync). A process killed at any point leaves undelivered actions
``pending`` and the next run sends them again under the same idempotency key; the receiver's
dedupe (see the webhook contract) makes that a no-op. Failures retry with exponential backoff and
jitter; after ``max_attempts`` the action goes to the dead letters (status ``dead``) that
:func:`retry_dead_letters` requeues.

Concurrent runs (two ``enforce`` processes, a cron job and the API) never deliver one action twice:
a run *claims* a batch of due actions in one atomic statement (``claimed_by`` and a lease,
``lease_until``; PostgreSQL skips rows another run has locked with ``FOR UPDATE SKIP LOCKED``; the
statements are :meth:`stormwatch.store.repos.disrupt.DisruptRepo.claim_actions` and its neighbours),
sends only what it claimed, and records the outcome with an update conditional on still holding
the claim. Only the run whose update changed the row writes the audit entry. A claim whose lease
expired, or whose process no longer runs on this host (a killed run), is taken over by the next run.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from stormwatch.disrupt import records
from stormwatch.disrupt.audit import AuditEvent, track_event
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
    batch_size: int = 10  # actions claimed per atomic claim
    lease_s: float = 120.0  # a claim's lease (at least 3x the sink's timeout); renewed while working

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
    if not store.disrupt.insert_decision(d, run_id):
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
        if store.disrupt.insert_action(action):
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
    include_earlier: bool = False,
) -> RunReport:
    """Evaluate the policies over the stored judgements and record what they decide.

    ``dry-run`` records decisions and acts on nothing; ``shadow`` records only the shadow
    policies' decisions; ``enforce`` also queues actions for policies whose own mode is enforce.
    Re-running records nothing new (decision ids are deterministic). The report's ``decisions``
    are the ones this run recorded; ``include_earlier`` also returns (as ``earlier``) the stored
    decisions that earlier runs recorded and this run matched again.
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
    earlier: list[Decision] = []
    try:
        for p, eff in planned:
            d, is_new, q, c = _record(store, p, eff, run_id, ts)
            store.commit()
            if is_new:
                out.append(d)
            elif include_earlier:
                earlier.append(records.get_decision(store, d.decision_id))
            new += is_new
            existing += not is_new
            exempted += p.status == "exempted"
            queued += q
            cases += c
    except BaseException:
        store.rollback()
        raise
    return RunReport(
        run_id, mode, len(ctx.judgements), new, existing, exempted, queued, cases, tuple(out), tuple(earlier)
    )


def _mode_of(pset: PolicySet, p: Planned, run_mode: str) -> str:
    policy = next(q for q in pset.policies if q.id == p.policy_id)
    return effective_mode(policy, run_mode)


def _claimer() -> str:
    """This run's claim token: ``host:pid:random`` (the pid tells a later run whether it still runs)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. PermissionError: it exists, under another user
        return True
    return True


def _orphaned_claims(store: Store, now: str) -> list[str]:
    """Unexpired claims held by processes of this host that no longer run (a killed run)."""
    host, out = socket.gethostname(), []
    for claim in store.disrupt.live_claims(now):
        parts = claim.rsplit(":", 2)
        if len(parts) != 3 or parts[0] != host or not parts[1].isdigit():
            continue
        pid = int(parts[1])
        if pid != os.getpid() and not _alive(pid):
            out.append(claim)
    return out


def _claim(store: Store, me: str, now: datetime, lease_s: float, limit: int) -> list[Action]:
    """Claim up to ``limit`` due actions for this run in one atomic statement (committed)."""
    ts = iso(now)
    return store.disrupt.claim_actions(
        me,
        now=ts,
        lease_until=iso(now + timedelta(seconds=lease_s)),
        limit=limit,
        take_over=_orphaned_claims(store, ts),
    )


def _renew(store: Store, me: str, ids: Sequence[str], lease_s: float) -> set[str]:
    """Extend this run's lease on ``ids``; return those it still holds."""
    return store.disrupt.renew_claims(me, ids, lease_until=iso(utcnow() + timedelta(seconds=lease_s)))


_LOST = "claim lost to another run (lease expired); that run records the delivery"


def _deliver_one(
    store: Store, sink: Sink, a: Action, retry: RetryPolicy, report: dict[str, int], me: str
) -> str | None:
    report["attempted"] += 1
    attempts = a.attempts + 1
    try:
        sink.send(a)
    except DeliveryError as exc:
        dead = not exc.retryable or attempts >= retry.max_attempts
        nxt = None if dead else iso(utcnow() + timedelta(seconds=retry.delay(attempts)))
        changed = store.disrupt.record_failure(
            a.action_id, me, attempts=attempts, error=str(exc), next_attempt_at=nxt, dead=dead
        )
        if not changed:
            store.commit()
            return _LOST
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
    changed = store.disrupt.record_delivery(a.action_id, me, attempts=attempts, delivered_at=ts, sink=sink.name)
    if not changed:  # another run took the action over: it records (and audits) the delivery
        store.commit()
        return _LOST
    track_event(store, AuditEvent("system", "action.delivered", f"account:{a.account_id}",
                                  {"action_id": a.action_id, "kind": a.kind, "end_user_id": a.end_user_id,
                                   "attempts": attempts, "sink": sink.name, "reverses": a.reverses}), ts)  # fmt: skip
    store.commit()
    report["delivered"] += 1
    return None


def deliver_pending(store: Store, sink: Sink, *, retry: RetryPolicy | None = None) -> DeliveryReport:
    """Send every pending action this run can claim; wait for retries (unless ``retry.wait`` is False).

    Actions claimed by another live run are left to it (they count as ``pending`` in the report).
    """
    retry = retry or RetryPolicy()
    me = _claimer()
    lease_s = max(retry.lease_s, 3 * float(getattr(sink, "timeout", 0.0) or 0.0))
    report = {"attempted": 0, "delivered": 0, "retried": 0, "dead_lettered": 0}
    errors: list[str] = []
    while True:
        batch = _claim(store, me, utcnow(), lease_s, max(1, retry.batch_size))
        renewed_at = time.monotonic()
        held = {a.action_id for a in batch}
        for i, a in enumerate(batch):
            if time.monotonic() - renewed_at > lease_s / 2:  # keep the lease well ahead of the next send
                held = _renew(store, me, [b.action_id for b in batch[i:]], lease_s)
                renewed_at = time.monotonic()
            if a.action_id not in held:
                errors.append(f"{a.action_id}: {_LOST}")
                continue
            try:
                err = _deliver_one(store, sink, a, retry, report, me)
            except BaseException:
                store.rollback()
                raise
            if err:
                errors.append(f"{a.action_id}: {err}")
        if batch:
            continue
        waiting = store.disrupt.next_retry_at(iso(utcnow()))
        if waiting is None or not retry.wait:
            break
        gap = (datetime.fromisoformat(waiting.replace("Z", "+00:00")) - utcnow()).total_seconds()
        retry.sleep(min(max(gap, 0.0), retry.max_delay))
    pending = store.disrupt.count_actions().get("pending", 0)
    return DeliveryReport(sink.name, pending=pending, errors=tuple(errors[-20:]), **report)


def retry_dead_letters(
    store: Store, sink: Sink, *, retry: RetryPolicy | None = None, action_ids: Sequence[str] | None = None
) -> DeliveryReport:
    """Requeue dead-lettered actions (all, or the ids given) and deliver them."""
    dead = records.list_actions(store, status="dead", limit=1_000_000)
    if action_ids is not None:
        wanted = set(action_ids)
        dead = [a for a in dead if a.action_id in wanted]
    try:
        for a in dead:
            # a concurrent `actions retry` may have requeued it already: audit only what we did
            if store.disrupt.requeue_dead(a.action_id):
                evidence = {"action_id": a.action_id, "kind": a.kind, "last_error": a.last_error}
                track_event(store, AuditEvent("system", "action.requeued", f"account:{a.account_id}", evidence))
            store.commit()
    except BaseException:
        store.rollback()
        raise
    return deliver_pending(store, sink, retry=retry)


def enforce(
    store: Store,
    policy_set: PolicySet,
    sink: Sink | None,
    *,
    mode: str = "dry-run",
    retry: RetryPolicy | None = None,
    now: datetime | None = None,
    include_earlier: bool = False,
) -> EnforceReport:
    """Record decisions, then (``enforce`` mode only) deliver pending actions through ``sink``."""
    run = run_policies(store, policy_set, mode=mode, now=now, include_earlier=include_earlier)
    delivery = None
    if mode == "enforce":
        if sink is None:
            raise InputError("--mode enforce needs a sink", hint="pass --sink webhook or --sink outbox")
        delivery = deliver_pending(store, sink, retry=retry)
    return EnforceReport(run, delivery, store.audit.head())
