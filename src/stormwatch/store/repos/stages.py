"""Stage cursors: how far each incremental stage has read the event log (one way of writing them)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stormwatch.store.sql import SqlStore


class StagesRepo:
    def __init__(self, db: SqlStore) -> None:
        self._db = db
