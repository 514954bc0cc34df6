"""API tokens (hashes only) and their use."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stormwatch.store.sql import SqlStore


class TokensRepo:
    def __init__(self, db: SqlStore) -> None:
        self._db = db
