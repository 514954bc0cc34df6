"""A small pool of stores over one database URL: one store per request (or worker) at a time.

A :class:`~stormwatch.store.Store` wraps one connection and is not safe to share between two
requests running at once, so servers keep a pool: a request takes a store, uses it (in one worker
thread at a time) and gives it back after rolling back whatever it left open, so no request sees or
holds another's transaction. The first store opened migrates the database.

The stormwatch API keeps one (``app.state.store_pool``); the TAXII server mounted in it uses the
same pool, and ``stormwatch intel serve`` makes its own.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from stormwatch.errors import StoreError
from stormwatch.store import Store, open_store

__all__ = ["StorePool", "StoreSource"]


class StoreSource(Protocol):
    """Where a server gets a store for one request."""

    def acquire(self, timeout: float = 30.0) -> Store: ...

    def release(self, store: Store) -> None: ...


class StorePool:
    """``background_checkpoints``: one thread of the pool copies the WAL of its SQLite database into
    the database file (:class:`~stormwatch.store.sqlite.BackgroundCheckpointer`) and the pool's
    connections checkpoint in their commits only what is left, often, so no request waits long for
    a checkpoint inside its commit. Servers set it; it does nothing for other databases."""

    def __init__(
        self,
        url: str | None = None,
        *,
        size: int = 4,
        factory: Callable[[], Store] | None = None,
        background_checkpoints: bool = False,
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be at least 1")
        self.url = url
        self.size = size
        self._factory = factory
        self.background_checkpoints = background_checkpoints
        self.checkpointer: Any = None
        self._idle: queue.LifoQueue[Store] = queue.LifoQueue()
        self._opened = 0
        self._migrated = False
        self._lock = threading.Lock()
        self._all: list[Store] = []

    def _open(self) -> Store:
        if self._factory is not None:
            store = self._factory()
        else:
            store = open_store(self.url, migrate=not self._migrated)
            self._migrated = True
        path = getattr(store, "path", None)
        if self.background_checkpoints and isinstance(path, str) and path != ":memory:":
            from stormwatch.store.sqlite import BackgroundCheckpointer

            store.defer_checkpoints()  # type: ignore[attr-defined]
            if self.checkpointer is None:  # called under self._lock
                self.checkpointer = BackgroundCheckpointer(path, owner=self)
        return store

    def acquire(self, timeout: float = 30.0) -> Store:
        """A store for the caller alone; :class:`StoreError` when none is free after ``timeout`` seconds."""
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._opened < self.size:
                store = self._open()
                self._opened += 1
                self._all.append(store)
                return store
        try:
            return self._idle.get(timeout=timeout)
        except queue.Empty:
            raise StoreError(f"no database connection free after {timeout:.0f} s") from None

    def release(self, store: Store) -> None:
        """Give a store back, rolling back what it left open (a dead connection is dropped)."""
        try:
            store.rollback()
        except StoreError:  # pragma: no cover - a dead connection: drop it, open another next time
            with self._lock:
                self._opened -= 1
                self._all.remove(store)
            return
        self._idle.put(store)

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()
            self._opened = 0
            self._idle = queue.LifoQueue()
            if self.checkpointer is not None:
                self.checkpointer.stop()
                self.checkpointer = None
