"""One claim statement for the work queues (``disrupt_actions``, ``watch_notifications``).

A queue row is *due* when it is pending, its next attempt is reached, it meets the queue's own
``where`` (a channel, for notifications), and it is free: unclaimed, its lease expired at ``now``,
or claimed by one of ``take_over`` (claimers known to be dead). :func:`claim_due` claims up to
``limit`` due rows for one claimer in one statement and commits: on PostgreSQL a materialised pick
with ``FOR UPDATE SKIP LOCKED`` (as a plain ``IN (subquery)`` PostgreSQL may rescan the subquery
while it updates, each rescan skipping the rows just claimed, so one statement would claim every due
row instead of ``limit``; SKIP LOCKED lets concurrent claimers pass each other's rows instead of
waiting on them); on SQLite, one writer at a time, the uncorrelated subquery is evaluated once.
``RETURNING`` repeats the due condition, so a row another claimer took in between is not returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stormwatch.errors import StoreError
from stormwatch.store.database import Repository, marks

__all__ = ["claim_due"]


def claim_due(
    repo: Repository,
    *,
    table: str,
    key: Sequence[str],
    order: str,
    columns: str,
    claimer: str,
    now: str,
    lease_until: str,
    limit: int,
    take_over: Sequence[str] = (),
    where: str = "",
    params: Sequence[Any] = (),
) -> list[tuple[Any, ...]]:
    """Claim up to ``limit`` due rows of ``table`` (identified by the ``key`` columns; ``where`` with
    ``params`` narrows the queue), in ``order``; commit; return their ``columns``. On an error the
    transaction is rolled back."""
    if limit < 1:
        raise StoreError(f"claim limit must be >= 1, got {limit}")
    free = "claimed_by IS NULL OR lease_until IS NULL OR lease_until <= ?"
    if take_over:
        free += f" OR claimed_by IN ({marks(len(take_over))})"
    pending = "status = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?)"
    due = f"{where + ' AND ' if where else ''}{pending} AND ({free})"
    due_params = [*params, now, now, *take_over]
    keys = ", ".join(key)
    pick = f"SELECT {keys} FROM {table} WHERE {due} ORDER BY {order} LIMIT ?"
    target = keys if len(key) == 1 else f"({keys})"
    set_claim = f"UPDATE {table} SET claimed_by = ?, lease_until = ? WHERE {target} IN "
    db = repo._db
    if db.dialect == "postgres":
        sql = f"WITH picked AS MATERIALIZED ({pick} FOR UPDATE SKIP LOCKED) {set_claim}(SELECT {keys} FROM picked)"
        args = [*due_params, limit, claimer, lease_until]
    else:
        sql = f"{set_claim}({pick})"
        args = [claimer, lease_until, *due_params, limit]
    sql += f" AND {due} RETURNING {columns}"
    args += due_params
    try:
        rows = repo._q(sql, args)
        db._commit()
    except BaseException:
        db._rollback()
        raise
    return rows
