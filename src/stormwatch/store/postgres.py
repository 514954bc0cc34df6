"""PostgreSQL, for a shared deployment (``postgresql://user@host:5432/db[?schema=name]``).

Needs the ``postgres`` extra (psycopg 3). Events are bulk-loaded with ``COPY`` into a temporary
table and moved with ``INSERT ... ON CONFLICT DO NOTHING``, which keeps ingest idempotent.
PostgreSQL text cannot hold U+0000: such characters are stored as U+FFFD (documented in the README).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from stormwatch.errors import ConfigError, StoreError
from stormwatch.store.sql import EVENT_COLUMNS, SqlStore

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_MIGRATION_LOCK = 0x5707_3A7C


def _clean(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


class PostgresStore(SqlStore):
    dialect = "postgres"
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ConfigError("PostgreSQL support needs psycopg", hint="pip install 'stormwatch[postgres]'") from exc
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        schema = query.pop("schema", [None])[0]
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise ConfigError(f"bad schema name {schema!r} in the database URL")
        rest = "&".join(f"{k}={v[0]}" for k, v in query.items())
        dsn = urlunsplit((parts.scheme.replace("postgres+psycopg", "postgresql"), parts.netloc, parts.path, rest, ""))
        self._psycopg = psycopg
        try:
            self.conn = psycopg.connect(dsn, connect_timeout=10)
            if schema:
                self.conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                self.conn.execute(f'SET search_path TO "{schema}"')
                self.conn.commit()
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {parts.hostname}:{parts.port or 5432}: {exc}".strip(),
                hint="check that the server runs and the URL is right",
            ) from exc
        self.schema = schema
        self._staging = False

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            return self.conn.execute(sql, [_clean(p) for p in params])
        except self._psycopg.Error as exc:
            self.conn.rollback()
            raise StoreError(f"PostgreSQL: {exc}") from exc

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        try:
            with self.conn.cursor() as cur:
                cur.executemany(sql, [[_clean(v) for v in r] for r in rows])
                return int(cur.rowcount)
        except self._psycopg.Error as exc:
            self.conn.rollback()
            raise StoreError(f"PostgreSQL: {exc}") from exc

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            with self.conn.cursor() as cur:
                cur.execute(sql, list(params))
                return list(cur.fetchall())
        except self._psycopg.Error as exc:
            self.conn.rollback()
            raise StoreError(f"PostgreSQL: {exc}") from exc

    def _commit(self) -> None:
        self.conn.commit()

    def _rollback(self) -> None:
        self.conn.rollback()

    def _lock_migrations(self) -> None:
        self._execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        self._commit()

    def _unlock_migrations(self) -> None:
        self._execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
        self._commit()

    def _table_exists_sql(self) -> str:
        return "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = %s"

    def insert_event_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        if not rows:
            return 0
        cols = ", ".join(EVENT_COLUMNS)
        try:
            with self.conn.cursor() as cur:
                if not self._staging:
                    cur.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS events_in (ord BIGINT, "
                        + ", ".join(f"{c} {'BOOLEAN' if c == 'refused' else 'TEXT'}" for c in EVENT_COLUMNS)
                        + ") ON COMMIT DELETE ROWS"
                    )
                    self._staging = True
                with cur.copy(f"COPY events_in (ord, {cols}) FROM STDIN") as copy:
                    for i, row in enumerate(rows):
                        copy.write_row((i, *(_clean(v) for v in row)))
                cur.execute(
                    f"INSERT INTO events ({cols}) SELECT {cols} FROM events_in ORDER BY ord "
                    "ON CONFLICT (event_id) DO NOTHING"
                )
                n = int(cur.rowcount)
            self.conn.commit()
        except self._psycopg.Error as exc:
            self.conn.rollback()
            self._staging = False
            raise StoreError(f"PostgreSQL: {exc}") from exc
        return n

    def close(self) -> None:
        self.conn.close()
