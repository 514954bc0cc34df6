"""What a repository needs from a backend: the private SQL primitives and the dialect.

Repositories (:mod:`stormwatch.store.repos`) are typed against this protocol rather than the concrete
:class:`~stormwatch.store.sql.SqlStore`, so the store's modules depend one way: backends -> repositories ->
this protocol.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol, TypeVar

from stormwatch.events import Event

T = TypeVar("T")


class Database(Protocol):
    dialect: str

    def _sql(self, sql: str) -> str:
        """``sql`` with the backend's placeholder instead of ``?``."""
        ...

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int: ...

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def _commit(self) -> None: ...

    def _rollback(self) -> None: ...

    def get_event(self, event_id: str) -> Event | None: ...


def marks(n: int) -> str:
    """``?, ?, ?`` for an ``IN (...)`` of ``n`` values."""
    return ", ".join("?" * n)


def chunks(items: Sequence[T], n: int = 500) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``n`` (bound parameters per statement stay under the backends' limits)."""
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Repository:
    """Base of every repository: the backend and the three statement helpers (``?`` placeholders)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def _q(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a query."""
        return self._db._query(self._db._sql(sql), params)

    def _x(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; return the number of rows it changed (-1 when the backend does not say)."""
        cur = self._db._execute(self._db._sql(sql), params)
        return int(getattr(cur, "rowcount", -1))

    def _xm(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        """Run one statement per row (nothing for no rows)."""
        return self._db._executemany(self._db._sql(sql), rows) if rows else 0
