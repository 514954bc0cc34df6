"""Enforcement: decisions, actions and their claims, cases, appeals, labels."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stormwatch.store.sql import SqlStore


class DisruptRepo:
    def __init__(self, db: SqlStore) -> None:
        self._db = db
