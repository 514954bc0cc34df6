"""Decisions and actions as the service layer reads them: lookups that raise :class:`NotFoundError`.

The rows live in the store (``store.disrupt``, :mod:`stormwatch.store.repos.disrupt`); this module
adds the idempotency key of an action and the service's errors and hints.
"""

from __future__ import annotations

import hashlib

import orjson

from stormwatch.disrupt.models import Action, Decision, NotFoundError
from stormwatch.store import Store

__all__ = ["action_id_for", "get_action", "get_decision", "list_actions", "list_decisions"]


def action_id_for(*parts: str | None) -> str:
    """The idempotency key of an action: a hash of what makes it unique (its decision, or reversal)."""
    return "act_" + hashlib.sha256(orjson.dumps(list(parts))).hexdigest()[:24]


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
    return store.disrupt.list_decisions(
        account_id=account_id, mode=mode, policy_id=policy_id, status=status, limit=limit, offset=offset
    )


def get_decision(store: Store, decision_id: str) -> Decision:
    got = store.disrupt.get_decision(decision_id)
    if got is None:
        raise NotFoundError(f"no decision {decision_id!r}", hint="see `stormwatch enforce --json` output")
    return got


def list_actions(
    store: Store, *, status: str | None = None, account_id: str | None = None, limit: int = 100, offset: int = 0
) -> list[Action]:
    return store.disrupt.list_actions(status=status, account_id=account_id, limit=limit, offset=offset)


def get_action(store: Store, action_id: str) -> Action:
    got = store.disrupt.get_action(action_id)
    if got is None:
        raise NotFoundError(f"no action {action_id!r}", hint="list them with `stormwatch actions list`")
    return got
