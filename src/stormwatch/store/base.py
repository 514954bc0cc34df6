"""The storage protocol every backend implements, and the row types it returns.

Backends: :mod:`~stormwatch.store.sqlite` (the embedded default) and
:mod:`~stormwatch.store.postgres` (a shared deployment). Both pass the same contract suite in
``tests/test_store_contract.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from stormwatch.events import Account, Event, Rejected

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


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    id: int
    run_id: str | None
    kind: str
    source: str
    line: int | None
    field: str | None
    reason: str
    raw: bytes
    created_at: str


@dataclass(frozen=True, slots=True)
class RunRow:
    run_id: str
    started_at: str
    finished_at: str | None
    status: str
    files: list[str]
    read: int
    stored: int
    duplicates: int
    quarantined: int
    accounts: int


@runtime_checkable
class Store(Protocol):
    """What the pipeline needs from a database."""

    url: str
    dialect: str

    # repositories, one per concern (stormwatch.store.repos): the only way callers reach tables
    @property
    def events(self) -> EventsRepo: ...

    @property
    def detections(self) -> DetectionsRepo: ...

    @property
    def stages(self) -> StagesRepo: ...

    @property
    def analysis(self) -> AnalysisRepo: ...

    @property
    def intel(self) -> IntelRepo: ...

    @property
    def taxii(self) -> TaxiiRepo: ...

    @property
    def disrupt(self) -> DisruptRepo: ...

    @property
    def audit(self) -> AuditRepo: ...

    @property
    def tokens(self) -> TokensRepo: ...

    def migrate(self) -> list[int]:
        """Apply pending migrations; return the versions applied now."""
        ...

    def schema_version(self) -> int: ...

    def insert_events(self, events: Sequence[Event], run_id: str | None = None) -> int:
        """Store events not stored yet (by ``event_id``); return how many were new."""
        ...

    def insert_event_rows(self, rows: Sequence[tuple[Any, ...]]) -> int:
        """The same for rows already made by ``stormwatch.store.sql.event_row`` (parallel ingest)."""
        ...

    def upsert_accounts(self, accounts: Sequence[Account]) -> int:
        """Insert or replace account records; return how many were written."""
        ...

    def add_quarantine(self, items: Sequence[Rejected], run_id: str | None, kind: str = "event") -> None: ...

    def list_quarantine(
        self, *, run_id: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[QuarantineRow]: ...

    def count_quarantine(self, run_id: str | None = None) -> int: ...

    def start_run(self, run_id: str, files: Sequence[str]) -> None: ...

    def finish_run(self, run: RunRow) -> None: ...

    def get_run(self, run_id: str) -> RunRow | None: ...

    def count_events(self) -> int: ...

    def iter_events(self, *, after_seq: int = 0, batch_size: int = 5000) -> Iterator[tuple[int, Event]]:
        """Events in ingest order, with their sequence number (for incremental stages)."""
        ...

    def get_account(self, account_id: str) -> Account | None: ...

    def count_accounts(self) -> int: ...

    def get_event(self, event_id: str) -> Event | None: ...

    # No raw SQL for callers: tables are reached through the repositories above. The backends keep
    # ``execute/executemany/query`` for the repositories (and for tests that seed a database).

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Store:
        """``with open_store(url) as store:`` closes the store at the end."""
        ...

    def __exit__(self, *exc: object) -> None: ...
