"""Rows of ``disrupt_decisions`` and ``disrupt_actions``: insert, read, update. No commits here."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from stormwatch.disrupt.models import Action, Decision, NotFoundError
from stormwatch.store import Store

DECISION_COLS = (
    "decision_id, mode, policy_id, policy_version, rule_version, account_id, action, end_user_id, params, "
    "status, reasons, evidence, model_version, decided_by, decided_at, cluster_id"
)
ACTION_COLS = (
    "action_id, decision_id, kind, account_id, end_user_id, params, status, attempts, last_error, "
    "next_attempt_at, created_at, delivered_at, sink, reverses"
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def action_id_for(*parts: str | None) -> str:
    """The idempotency key of an action: a hash of what makes it unique (its decision, or reversal)."""
    return "act_" + hashlib.sha256(orjson.dumps(list(parts))).hexdigest()[:24]


def insert_decision(store: Store, d: Decision, run_id: str) -> bool:
    """Insert unless the decision id exists; True when this call inserted it."""
    n = store.executemany(
        f"INSERT INTO disrupt_decisions ({DECISION_COLS}, run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (decision_id) DO NOTHING",
        [
            (d.decision_id, d.mode, d.policy_id, d.policy_version, d.rule_version, d.account_id, d.action,
             d.end_user_id, _dumps(d.params), d.status, _dumps(list(d.reasons)), _dumps(d.evidence),
             d.model_version, d.decided_by, d.decided_at, d.cluster_id, run_id)
        ],
    )  # fmt: skip
    return n == 1


def insert_action(store: Store, a: Action) -> bool:
    n = store.executemany(
        f"INSERT INTO disrupt_actions ({ACTION_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (action_id) DO NOTHING",
        [
            (a.action_id, a.decision_id, a.kind, a.account_id, a.end_user_id, _dumps(a.params), a.status,
             a.attempts, a.last_error, a.next_attempt_at, a.created_at, a.delivered_at, a.sink, a.reverses)
        ],
    )  # fmt: skip
    return n == 1


def decision_from_row(r: tuple[Any, ...]) -> Decision:
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


def action_from_row(r: tuple[Any, ...]) -> Action:
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


def _where(filters: dict[str, Any]) -> tuple[str, list[Any]]:
    used = {k: v for k, v in filters.items() if v is not None}
    if not used:
        return "", []
    return " WHERE " + " AND ".join(f"{k} = ?" for k in used), list(used.values())


def list_decisions(
    store: Store,
    *,
    account_id: str | None = None,
    mode: str | None = None,
    policy_id: str | None = None,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Decision]:
    where, params = _where({"account_id": account_id, "mode": mode, "policy_id": policy_id, "status": status})
    rows = store.query(
        f"SELECT {DECISION_COLS} FROM disrupt_decisions{where} ORDER BY decided_at, decision_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [decision_from_row(r) for r in rows]


def get_decision(store: Store, decision_id: str) -> Decision:
    rows = store.query(f"SELECT {DECISION_COLS} FROM disrupt_decisions WHERE decision_id = ?", (decision_id,))
    if not rows:
        raise NotFoundError(f"no decision {decision_id!r}", hint="see `stormwatch enforce --json` output")
    return decision_from_row(rows[0])


def list_actions(
    store: Store, *, status: str | None = None, account_id: str | None = None, limit: int = 100, offset: int = 0
) -> list[Action]:
    where, params = _where({"status": status, "account_id": account_id})
    rows = store.query(
        f"SELECT {ACTION_COLS} FROM disrupt_actions{where} ORDER BY created_at, action_id LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [action_from_row(r) for r in rows]


def get_action(store: Store, action_id: str) -> Action:
    rows = store.query(f"SELECT {ACTION_COLS} FROM disrupt_actions WHERE action_id = ?", (action_id,))
    if not rows:
        raise NotFoundError(f"no action {action_id!r}", hint="list them with `stormwatch actions list`")
    return action_from_row(rows[0])


def count_actions(store: Store) -> dict[str, int]:
    return {str(s): int(n) for s, n in store.query("SELECT status, COUNT(*) FROM disrupt_actions GROUP BY status")}
