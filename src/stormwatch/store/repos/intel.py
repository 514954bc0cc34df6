"""Partner intelligence: STIX objects, indicators, observables for matching, pull checkpoints, STIX ids."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stormwatch.store.sql import SqlStore


class IntelRepo:
    def __init__(self, db: SqlStore) -> None:
        self._db = db
