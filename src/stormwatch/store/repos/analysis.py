"""The analysis result (:mod:`stormwatch.result`): judgements, clusters, links, evidence."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stormwatch.store.sql import SqlStore


class AnalysisRepo:
    def __init__(self, db: SqlStore) -> None:
        self._db = db
