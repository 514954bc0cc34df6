"""The SQL shared by the SQLite and PostgreSQL backends.

Statements are written once with ``?`` placeholders; the PostgreSQL backend rewrites them to
``%s``. Each backend supplies the connection and the few things that differ (bulk loading,
migration locking).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Self

import orjson

from stormwatch.errors import StoreError
from stormwatch.events import EVENT_COLUMNS as CANONICAL_EVENT_COLUMNS
from stormwatch.events import Account, Event, Rejected
from stormwatch.store.base import QuarantineRow, RunRow
from stormwatch.store.records import now_iso

if TYPE_CHECKING:
    from stormwatch.store.repos.analysis import AnalysisRepo
    from stormwatch.store.repos.audit import AuditRepo
    from stormwatch.store.repos.detections import DetectionsRepo
    from stormwatch.store.repos.disrupt import DisruptRepo
    from stormwatch.store.repos.events import EventsRepo
    from stormwatch.store.repos.intel import IntelRepo
    from stormwatch.store.repos.stages import StagesRepo
    from stormwatch.store.repos.taxii import TaxiiRepo
    from stormwatch.store.repos.tokens import TokensRepo
from stormwatch.store.migrations import LATEST, MIGRATIONS

#: the ``events`` table: the canonical event's columns, then the ingest run that stored it
EVENT_COLUMNS = (*CANONICAL_EVENT_COLUMNS, "run_id")
ACCOUNT_COLUMNS = (
    "account_id",
    "created_at",
    "email_domain",
    "email_hash",
    "payment_fingerprint",
    "phone_hash",
    "device_id",
    "signup_ip",
    "country",
    "org_id",
    "status",
    "attributes",
    "updated_at",
)
RUN_COLUMNS = (
    "run_id",
    "started_at",
    "finished_at",
    "status",
    "files",
    "read_count",
    "stored_count",
    "duplicate_count",
    "quarantined_count",
    "accounts_count",
)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def event_row(e: Event, run_id: str | None) -> tuple[Any, ...]:
    return (
        e.event_id,
        e.ts,
        e.account_id,
        e.org_id,
        e.end_user_id,
        e.api_key_id,
        e.ip,
        e.user_agent,
        e.model,
        e.conversation_id,
        e.refused,
        _json(e.messages),
        e.prompt,
        e.response,
        _json(e.attributes),
        e.source,
        run_id,
    )


def row_event(row: Sequence[Any]) -> Event:
    (
        event_id,
        ts,
        account_id,
        org_id,
        end_user_id,
        api_key_id,
        ip,
        user_agent,
        model,
        conversation_id,
        refused,
        messages,
        prompt,
        response,
        attributes,
        source,
        _run,
    ) = row
    return Event(
        event_id=event_id,
        ts=ts,
        account_id=account_id,
        org_id=org_id,
        end_user_id=end_user_id,
        api_key_id=api_key_id,
        ip=ip,
        user_agent=user_agent,
        model=model,
        conversation_id=conversation_id,
        refused=None if refused is None else bool(refused),
        messages=None if messages is None else orjson.loads(messages),
        prompt=prompt,
        response=response,
        attributes=None if attributes is None else orjson.loads(attributes),
        source=source,
    )


def account_row(a: Account, updated_at: str) -> tuple[Any, ...]:
    return (
        a.account_id,
        a.created_at,
        a.email_domain,
        a.email_hash,
        a.payment_fingerprint,
        a.phone_hash,
        a.device_id,
        a.signup_ip,
        a.country,
        a.org_id,
        a.status,
        _json(a.attributes),
        updated_at,
    )


class SqlStore:
    """Backend-neutral implementation of :class:`~stormwatch.store.base.Store`."""

    url: str
    dialect: str
    placeholder = "?"

    def __init__(self, url: str) -> None:
        self.url = url

    # -- backend hooks -------------------------------------------------------------------------
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _commit(self) -> None:
        raise NotImplementedError

    def _rollback(self) -> None:
        raise NotImplementedError

    def _lock_migrations(self) -> None:
        """Serialise concurrent migrators (PostgreSQL takes an advisory lock)."""

    def _unlock_migrations(self) -> None:
        """Release what :meth:`_lock_migrations` took."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    # -- repositories, one per concern (see stormwatch.store.repos) ----------------------------------
    @cached_property
    def events(self) -> EventsRepo:
        from stormwatch.store.repos.events import EventsRepo

        return EventsRepo(self)

    @cached_property
    def detections(self) -> DetectionsRepo:
        from stormwatch.store.repos.detections import DetectionsRepo

        return DetectionsRepo(self)

    @cached_property
    def stages(self) -> StagesRepo:
        from stormwatch.store.repos.stages import StagesRepo

        return StagesRepo(self)

    @cached_property
    def analysis(self) -> AnalysisRepo:
        from stormwatch.store.repos.analysis import AnalysisRepo

        return AnalysisRepo(self)

    @cached_property
    def intel(self) -> IntelRepo:
        from stormwatch.store.repos.intel import IntelRepo

        return IntelRepo(self)

    @cached_property
    def taxii(self) -> TaxiiRepo:
        from stormwatch.store.repos.taxii import TaxiiRepo

        return TaxiiRepo(self)

    @cached_property
    def disrupt(self) -> DisruptRepo:
        from stormwatch.store.repos.disrupt import DisruptRepo

        return DisruptRepo(self)

    @cached_property
    def audit(self) -> AuditRepo:
        from stormwatch.store.repos.audit import AuditRepo

        return AuditRepo(self)

    @cached_property
    def tokens(self) -> TokensRepo:
        from stormwatch.store.repos.tokens import TokensRepo

        return TokensRepo(self)

    # -- generic access for the pipeline stages' own tables ----------------------------------------
    # Statements use ``?`` placeholders on every backend.
    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._execute(self._sql(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> int:
        return self._executemany(self._sql(sql), rows) if rows else 0

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._query(self._sql(sql), params)

    def commit(self) -> None:
        self._commit()

    def rollback(self) -> None:
        self._rollback()

    # -- schema --------------------------------------------------------------------------------
    def schema_version(self) -> int:
        rows = self._query(self._table_exists_sql(), ("schema_migrations",))
        if not rows:
            return 0
        got = self._query("SELECT MAX(version) FROM schema_migrations")
        return int(got[0][0] or 0)

    def _table_exists_sql(self) -> str:
        raise NotImplementedError

    def migrate(self) -> list[int]:
        applied: list[int] = []
        try:
            self._lock_migrations()
            self._execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            self._commit()
            current = self.schema_version()
            if current > LATEST:
                raise StoreError(
                    f"the database is at schema version {current}, newer than this stormwatch ({LATEST})",
                    hint="upgrade stormwatch before using this database",
                )
            done = {int(r[0]) for r in self._query("SELECT version FROM schema_migrations")}
            for m in MIGRATIONS:
                if m.version in done:
                    continue
                for stmt in m.statements(self.dialect):
                    self._execute(stmt)
                self._execute(
                    self._sql("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)"),
                    (m.version, m.name, now_iso()),
                )
                self._commit()
                applied.append(m.version)
        except StoreError:
            self._rollback()
            raise
        except Exception as exc:
            self._rollback()
            raise StoreError(f"migration failed on {self.url}: {exc}") from exc
        finally:
            self._unlock_migrations()
        return applied

    # -- events --------------------------------------------------------------------------------
    def insert_events(self, events: Sequence[Event], run_id: str | None = None) -> int:
        return self.insert_event_rows([event_row(e, run_id) for e in events])

    def insert_event_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """Store rows made by :func:`event_row` (in ``EVENT_COLUMNS`` order); return how many were new."""
        if not rows:
            return 0
        sql = self._sql(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' * len(EVENT_COLUMNS))}) "
            "ON CONFLICT (event_id) DO NOTHING"
        )
        n = self._executemany(sql, rows)
        self._commit()
        return n

    def count_events(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM events")[0][0])

    def iter_events(self, *, after_seq: int = 0, batch_size: int = 5000) -> Iterator[tuple[int, Event]]:
        sql = self._sql(f"SELECT seq, {', '.join(EVENT_COLUMNS)} FROM events WHERE seq > ? ORDER BY seq LIMIT ?")
        last = after_seq
        while True:
            rows = self._query(sql, (last, batch_size))
            if not rows:
                return
            for row in rows:
                yield int(row[0]), row_event(row[1:])
            last = int(rows[-1][0])

    def get_event(self, event_id: str) -> Event | None:
        rows = self._query(self._sql(f"SELECT {', '.join(EVENT_COLUMNS)} FROM events WHERE event_id = ?"), (event_id,))
        return row_event(rows[0]) if rows else None

    # -- accounts ------------------------------------------------------------------------------
    def upsert_accounts(self, accounts: Sequence[Account]) -> int:
        if not accounts:
            return 0
        stamp = now_iso()
        cols = ", ".join(ACCOUNT_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in ACCOUNT_COLUMNS[1:])
        sql = self._sql(
            f"INSERT INTO accounts ({cols}) VALUES ({', '.join('?' * len(ACCOUNT_COLUMNS))}) "
            f"ON CONFLICT (account_id) DO UPDATE SET {updates}"
        )
        self._executemany(sql, [account_row(a, stamp) for a in accounts])
        self._commit()
        return len(accounts)

    def get_account(self, account_id: str) -> Account | None:
        rows = self._query(
            self._sql(f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM accounts WHERE account_id = ?"),
            (account_id,),
        )
        if not rows:
            return None
        r = rows[0]
        return Account(
            account_id=r[0],
            created_at=r[1],
            email_domain=r[2],
            email_hash=r[3],
            payment_fingerprint=r[4],
            phone_hash=r[5],
            device_id=r[6],
            signup_ip=r[7],
            country=r[8],
            org_id=r[9],
            status=r[10],
            attributes=None if r[11] is None else orjson.loads(r[11]),
        )

    def count_accounts(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM accounts")[0][0])

    # -- quarantine ----------------------------------------------------------------------------
    def add_quarantine(self, items: Sequence[Rejected], run_id: str | None, kind: str = "event") -> None:
        if not items:
            return
        stamp = now_iso()
        # The same bad line read again (a re-run) is not quarantined twice.
        sql = self._sql(
            "INSERT INTO quarantine (run_id, kind, source, line, field, reason, raw, raw_sha256, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"
        )
        self._executemany(
            sql,
            [
                (
                    run_id,
                    kind,
                    r.source,
                    r.line,
                    r.field,
                    r.reason,
                    r.raw,
                    hashlib.sha256(r.raw).hexdigest(),
                    stamp,
                )
                for r in items
            ],
        )
        self._commit()

    def list_quarantine(self, *, run_id: str | None = None, limit: int = 50, offset: int = 0) -> list[QuarantineRow]:
        cols = "id, run_id, kind, source, line, field, reason, raw, created_at"
        if run_id is None:
            rows = self._query(
                self._sql(f"SELECT {cols} FROM quarantine ORDER BY id LIMIT ? OFFSET ?"), (limit, offset)
            )
        else:
            rows = self._query(
                self._sql(f"SELECT {cols} FROM quarantine WHERE run_id = ? ORDER BY id LIMIT ? OFFSET ?"),
                (run_id, limit, offset),
            )
        return [
            QuarantineRow(
                int(r[0]),
                r[1],
                r[2],
                r[3],
                None if r[4] is None else int(r[4]),
                r[5],
                r[6],
                bytes(r[7]),
                r[8],
            )
            for r in rows
        ]

    def count_quarantine(self, run_id: str | None = None) -> int:
        if run_id is None:
            return int(self._query("SELECT COUNT(*) FROM quarantine")[0][0])
        return int(self._query(self._sql("SELECT COUNT(*) FROM quarantine WHERE run_id = ?"), (run_id,))[0][0])

    # -- runs ----------------------------------------------------------------------------------
    def start_run(self, run_id: str, files: Sequence[str]) -> None:
        self._execute(
            self._sql("INSERT INTO ingest_runs (run_id, started_at, status, files) VALUES (?, ?, ?, ?)"),
            (run_id, now_iso(), "running", orjson.dumps(list(files)).decode()),
        )
        self._commit()

    def finish_run(self, run: RunRow) -> None:
        self._execute(
            self._sql(
                "UPDATE ingest_runs SET finished_at = ?, status = ?, read_count = ?, stored_count = ?, "
                "duplicate_count = ?, quarantined_count = ?, accounts_count = ? WHERE run_id = ?"
            ),
            (
                run.finished_at or now_iso(),
                run.status,
                run.read,
                run.stored,
                run.duplicates,
                run.quarantined,
                run.accounts,
                run.run_id,
            ),
        )
        self._commit()

    def get_run(self, run_id: str) -> RunRow | None:
        rows = self._query(self._sql(f"SELECT {', '.join(RUN_COLUMNS)} FROM ingest_runs WHERE run_id = ?"), (run_id,))
        if not rows:
            return None
        r = rows[0]
        return RunRow(r[0], r[1], r[2], r[3], orjson.loads(r[4]), int(r[5]), int(r[6]), int(r[7]), int(r[8]), int(r[9]))
