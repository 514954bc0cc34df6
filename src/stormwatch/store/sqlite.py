"""SQLite: the zero-setup embedded default (``sqlite:///path/to/file.db`` or ``sqlite:///:memory:``)."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stormwatch.errors import StoreError
from stormwatch.store.sql import SqlStore

log = logging.getLogger(__name__)


def _create_private(path: str) -> None:
    """Create a new database file readable by its owner only (0600): it holds the sharing HMAC secret
    and API token hashes. SQLite gives the -wal and -shm files the database file's mode. An existing
    file is left as it is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StoreError(f"cannot create SQLite database {path!r}: {exc.strerror or exc}") from exc
    os.close(fd)


class SQLiteStore(SqlStore):
    dialect = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url.removeprefix("sqlite:")
        if not path:
            raise StoreError(f"no file in {url!r}", hint="write sqlite:///path/to/stormwatch.db")
        if path != ":memory:":
            parent = Path(path).expanduser().resolve().parent
            if not parent.is_dir():
                raise StoreError(f"folder {parent} does not exist (database URL {url!r})")
            _create_private(path)
        self.path = path
        try:
            self.conn = sqlite3.connect(path, isolation_level="DEFERRED", check_same_thread=False)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.execute("PRAGMA cache_size=-262144")  # 256 MiB page cache: index inserts stay in memory
            self.conn.execute("PRAGMA wal_autocheckpoint=20000")  # checkpoint every ~80 MiB of WAL, not 4 MiB
            self.conn.execute("PRAGMA temp_store=MEMORY")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self.conn.execute("PRAGMA busy_timeout=30000")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {path!r}: {exc}") from exc

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self.conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        try:
            cur = self.conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            self.conn.rollback()
            raise StoreError(f"SQLite: {exc}") from exc
        return int(cur.rowcount)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            return list(self.conn.execute(sql, params).fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite: {exc}") from exc

    def _commit(self) -> None:
        self.conn.commit()

    def _rollback(self) -> None:
        self.conn.rollback()

    def _table_exists_sql(self) -> str:
        return "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"

    def close(self) -> None:
        self.conn.close()

    def defer_checkpoints(self, pages: int = 2000) -> None:
        """Checkpoint in this connection's commits only the little a :class:`BackgroundCheckpointer`
        has not copied yet: the commit that takes the WAL past ``pages`` pages checkpoints it, and
        finds nearly every page already in the database file."""
        self._execute(f"PRAGMA wal_autocheckpoint={int(pages)}")


class BackgroundCheckpointer:
    """Copies one SQLite database's WAL into the database file from a thread of its own, so that
    the checkpoints inside commits have almost nothing left to do.

    By default SQLite checkpoints inside the commit that pushes the WAL past ``wal_autocheckpoint``
    pages: that commit copies the whole WAL into the database (and syncs it) before it returns. A
    server that answers only after its events are committed (``stormwatch serve``) turns that into
    a stall of every request waiting on that commit (80-90 ms at 500 requests/s on this 2-core
    machine, every few seconds). Here a thread runs a ``PASSIVE`` checkpoint every ``interval_s``
    seconds on its own connection: a passive checkpoint never blocks a writer (commits go on
    appending to the WAL while it copies). It cannot finish while commits keep coming, so it cannot
    restart the WAL from its beginning either: the server's connections still checkpoint in the
    commit that takes the WAL past a small size (:meth:`SQLiteStore.defer_checkpoints`), and that
    checkpoint finds all but the last fraction of a second's pages already copied, and restarts
    the WAL. Other processes on the same file keep SQLite's default behaviour."""

    def __init__(self, path: str, interval_s: float = 0.2, *, owner: object | None = None) -> None:
        import threading
        import weakref

        self.path = path
        self.interval_s = interval_s
        self.checkpoints = 0
        # the thread ends with its owner (the pool) or its file, even if nobody calls stop()
        self._owner = weakref.ref(owner) if owner is not None else None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stormwatch-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from urllib.parse import quote

        try:  # mode=rw: never create the file (it may have been deleted since the pool opened it)
            conn = sqlite3.connect(
                f"file:{quote(self.path)}?mode=rw", uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            log.debug("WAL checkpoints: cannot open %s: %s", self.path, exc)
            return
        try:
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stop.wait(self.interval_s):
                if (self._owner is not None and self._owner() is None) or not os.path.exists(self.path):
                    return
                self.checkpoint(conn)
            self.checkpoint(conn)  # leave a short WAL behind
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as exc:  # busy or locked: the next round tries again
            log.debug("WAL checkpoint of %s skipped: %s", self.path, exc)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
