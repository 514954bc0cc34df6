"""``stormwatch watch``: the one-active-watcher lease and the notifications already sent.

Two watchers on one store must not double an effect. Two tables make that hold:

* ``watch_leases``: one row per lease name. :meth:`WatchRepo.acquire_lease` is one upsert that
  takes the row only when it is free, expired, already ours, or held by a claimer the caller knows
  to be dead; the caller then reads who holds it. A watcher without the lease does no work.
* ``watch_notifications``: one row per (account, level, channel). A decision is queued once
  (``ON CONFLICT DO NOTHING``), claimed by one sender at a time (``claimed_by`` and a lease, as
  :meth:`stormwatch.store.repos.disrupt.DisruptRepo.claim_actions` does for actions) and marked
  ``sent`` with an update conditional on still holding the claim. A restarted watcher finds the
  rows and never sends a ``sent`` one again.

Every method here commits: a lease or a claim must be visible to the other watcher at once.
The repository is reached with :func:`watch_repo` (``watch_repo(store).acquire_lease(...)``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from stormwatch.errors import StoreError
from stormwatch.store.database import Database, Repository, marks
from stormwatch.store.records import Record
from stormwatch.store.repos._claims import claim_due

if TYPE_CHECKING:
    from stormwatch.store.base import Store

__all__ = ["Lease", "NewDecision", "Notification", "WatchRepo", "notification_id", "watch_repo"]


def watch_repo(store: Store) -> WatchRepo:
    """The watcher's tables on ``store`` (every backend is a :class:`~stormwatch.store.database.Database`)."""
    return WatchRepo(cast(Database, store))


_N_COLS = "account_id, level, channel, notification_id, actor, status, attempts, last_error, created_at, sent_at"


def notification_id(account_id: str, level: str) -> str:
    """The stable id of the notification of ``account_id`` reaching ``level`` (every channel shares it)."""
    return "ntf_" + hashlib.sha256(f"{account_id}\x1f{level}".encode()).hexdigest()[:24]


@dataclass(frozen=True, slots=True)
class Lease(Record):
    name: str
    holder: str
    lease_until: str
    acquired_at: str
    renewed_at: str


@dataclass(frozen=True, slots=True)
class NewDecision(Record):
    """An account judged ``enforce`` or ``review`` that a channel has not been told about."""

    account_id: str
    level: str
    actor: str | None


@dataclass(frozen=True, slots=True)
class Notification(Record):
    account_id: str
    level: str
    channel: str
    notification_id: str
    actor: str | None
    status: str  # pending | sent | dead
    attempts: int
    last_error: str | None
    created_at: str
    sent_at: str | None


def _notification(r: Sequence[Any]) -> Notification:
    return Notification(
        account_id=str(r[0]),
        level=str(r[1]),
        channel=str(r[2]),
        notification_id=str(r[3]),
        actor=None if r[4] is None else str(r[4]),
        status=str(r[5]),
        attempts=int(r[6]),
        last_error=None if r[7] is None else str(r[7]),
        created_at=str(r[8]),
        sent_at=None if r[9] is None else str(r[9]),
    )


class WatchRepo(Repository):
    # -- the lease --------------------------------------------------------------------------------
    def acquire_lease(
        self, name: str, holder: str, *, now: str, lease_until: str, take_over: Sequence[str] = ()
    ) -> bool:
        """Take (or keep) lease ``name`` for ``holder`` and commit; True when ``holder`` holds it now.

        Taken when nobody holds it, its lease expired at ``now``, ``holder`` already holds it, or its
        holder is one of ``take_over`` (holders the caller knows are dead).
        """
        if not name or not holder:
            raise StoreError("a lease needs a name and a holder")
        free = "watch_leases.holder = excluded.holder OR watch_leases.lease_until <= ?"
        if take_over:
            free += f" OR watch_leases.holder IN ({marks(len(take_over))})"
        sql = (
            "INSERT INTO watch_leases (name, holder, lease_until, acquired_at, renewed_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until, "
            "acquired_at = CASE WHEN watch_leases.holder = excluded.holder THEN watch_leases.acquired_at "
            "ELSE excluded.acquired_at END, renewed_at = excluded.renewed_at "
            f"WHERE {free}"
        )
        try:
            self._x(sql, (name, holder, lease_until, now, now, now, *take_over))
            rows = self._q("SELECT holder FROM watch_leases WHERE name = ?", (name,))
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise
        return bool(rows) and str(rows[0][0]) == holder

    def renew_lease(self, name: str, holder: str, *, now: str, lease_until: str) -> bool:
        """Extend ``holder``'s lease and commit; False when it no longer holds it."""
        try:
            n = self._x(
                "UPDATE watch_leases SET lease_until = ?, renewed_at = ? WHERE name = ? AND holder = ?",
                (lease_until, now, name, holder),
            )
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise
        return n > 0

    def release_lease(self, name: str, holder: str) -> bool:
        """Give the lease up (only ``holder``'s) and commit; True when a row was released."""
        try:
            n = self._x("DELETE FROM watch_leases WHERE name = ? AND holder = ?", (name, holder))
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise
        return n > 0

    def lease(self, name: str) -> Lease | None:
        rows = self._q(
            "SELECT name, holder, lease_until, acquired_at, renewed_at FROM watch_leases WHERE name = ?", (name,)
        )
        if not rows:
            return None
        r = rows[0]
        return Lease(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]))

    # -- notifications ----------------------------------------------------------------------------
    def new_decisions(self, channel: str, *, limit: int) -> list[NewDecision]:
        """Accounts at ``enforce``, or at ``review`` within the review budget, that ``channel`` has
        not queued yet for that level (by account id)."""
        if limit < 1:
            raise StoreError(f"limit must be >= 1, got {limit}")
        rows = self._q(
            "SELECT j.account_id, j.level, j.actor FROM account_judgements j "
            "WHERE (j.level = 'enforce' OR (j.level = 'review' AND (j.within_budget IS NULL OR j.within_budget <> 0))) "
            "AND NOT EXISTS (SELECT 1 FROM watch_notifications n WHERE n.account_id = j.account_id "
            "AND n.level = j.level AND n.channel = ?) ORDER BY j.account_id LIMIT ?",
            (channel, limit),
        )
        return [NewDecision(str(r[0]), str(r[1]), None if r[2] is None else str(r[2])) for r in rows]

    def queue(self, channel: str, decisions: Sequence[NewDecision], *, now: str) -> None:
        """Queue one pending notification per decision (one already queued is left as it is) and commit."""
        rows = [
            (d.account_id, d.level, channel, notification_id(d.account_id, d.level), d.actor, now) for d in decisions
        ]
        try:
            self._xm(
                "INSERT INTO watch_notifications (account_id, level, channel, notification_id, actor, status, "
                "created_at) VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT (account_id, level, channel) DO NOTHING",
                rows,
            )
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise

    def live_claimers(self, channel: str, *, now: str) -> list[str]:
        """Who holds an unexpired claim on a pending notification of ``channel``."""
        rows = self._q(
            "SELECT DISTINCT claimed_by FROM watch_notifications WHERE channel = ? AND status = 'pending' "
            "AND claimed_by IS NOT NULL AND lease_until > ?",
            (channel, now),
        )
        return sorted(str(r[0]) for r in rows)

    def claim(
        self, channel: str, claimer: str, *, now: str, lease_until: str, limit: int, take_over: Sequence[str] = ()
    ) -> list[Notification]:
        """Claim up to ``limit`` due pending notifications of ``channel`` in one statement, and commit."""
        rows = claim_due(
            self,
            table="watch_notifications",
            key=("account_id", "level"),
            where="channel = ?",
            params=[channel],
            order="created_at, account_id, level",
            columns=_N_COLS,
            claimer=claimer,
            now=now,
            lease_until=lease_until,
            limit=limit,
            take_over=take_over,
        )
        return sorted((_notification(r) for r in rows), key=lambda n: (n.created_at, n.account_id, n.level))

    def _ids_clause(self, ids: Sequence[str]) -> str:
        return f"notification_id IN ({marks(len(ids))})"

    def mark_sent(self, channel: str, claimer: str, ids: Sequence[str], *, sent_at: str) -> int:
        """Mark claimed notifications sent (only while ``claimer`` holds them) and commit; how many changed."""
        if not ids:
            return 0
        try:
            n = self._x(
                "UPDATE watch_notifications SET status = 'sent', sent_at = ?, attempts = attempts + 1, "
                "claimed_by = NULL, lease_until = NULL, last_error = NULL WHERE channel = ? AND claimed_by = ? "
                f"AND status = 'pending' AND {self._ids_clause(ids)}",
                (sent_at, channel, claimer, *ids),
            )
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise
        return n

    def record_failure(
        self,
        channel: str,
        claimer: str,
        ids: Sequence[str],
        *,
        error: str,
        next_attempt_at: str,
        max_attempts: int,
    ) -> int:
        """Count a failed send of claimed notifications and release them: retried at ``next_attempt_at``,
        or ``dead`` once they reached ``max_attempts``. Commits; returns how many changed."""
        if not ids:
            return 0
        try:
            n = self._x(
                "UPDATE watch_notifications SET attempts = attempts + 1, last_error = ?, next_attempt_at = ?, "
                "status = CASE WHEN attempts + 1 >= ? THEN 'dead' ELSE 'pending' END, "
                "claimed_by = NULL, lease_until = NULL WHERE channel = ? AND claimed_by = ? AND status = 'pending' "
                f"AND {self._ids_clause(ids)}",
                (error[:500], next_attempt_at, max_attempts, channel, claimer, *ids),
            )
            self._db._commit()
        except BaseException:
            self._db._rollback()
            raise
        return n

    def notifications(
        self, *, channel: str | None = None, status: str | None = None, limit: int = 1000
    ) -> list[Notification]:
        where, params = [], []
        if channel is not None:
            where.append("channel = ?")
            params.append(channel)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        sql = f"SELECT {_N_COLS} FROM watch_notifications"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at, account_id, level, channel LIMIT ?"
        return [_notification(r) for r in self._q(sql, (*params, limit))]

    def count(self, channel: str | None = None) -> dict[str, int]:
        """Notifications by status (of ``channel``, or all)."""
        if channel is None:
            rows = self._q("SELECT status, COUNT(*) FROM watch_notifications GROUP BY status")
        else:
            rows = self._q(
                "SELECT status, COUNT(*) FROM watch_notifications WHERE channel = ? GROUP BY status", (channel,)
            )
        return {str(r[0]): int(r[1]) for r in rows}
