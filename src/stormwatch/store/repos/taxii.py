"""The TAXII 2.1 server's collections, objects, versions, permissions and statuses."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stormwatch.store.sql import SqlStore


class TaxiiRepo:
    def __init__(self, db: SqlStore) -> None:
        self._db = db
