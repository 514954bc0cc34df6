"""SQLite: the zero-setup embedded default (``sqlite:///path/to/file.db`` or ``sqlite:///:memory:``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stormwatch.errors import StoreError
from stormwatch.store.sql import SqlStore


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
