"""Reads of the event log for the incremental stages (by ``seq``, the order events were stored in).

Writing events, accounts, quarantine and ingest runs stays on the store itself
(``store.insert_events``, ``store.upsert_accounts``, ``store.add_quarantine``, ``store.start_run``, ...):
ingest is their one writer. This repository answers what a stage reading the log after its cursor
(``store.stages``) asks: how far the log goes, what changed after a seq, and the scoring stage's
slim rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from stormwatch.errors import StoreError
from stormwatch.store.database import Repository


@dataclass(frozen=True, slots=True)
class ScoringInput:
    """What the scoring stage reads of one event (its text, not the whole record)."""

    seq: int
    event_id: str
    account_id: str
    conversation_id: str | None
    ts: str
    messages: list[dict[str, Any]] | None
    prompt: str | None
    refused: bool | None


class EventsRepo(Repository):
    def max_seq(self) -> int:
        """The last event's seq (0 for an empty log)."""
        return int(self._q("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    def count_after(self, seq: int) -> int:
        """How many events were stored after ``seq``."""
        return int(self._q("SELECT COUNT(*) FROM events WHERE seq > ?", (seq,))[0][0])

    def accounts_after(self, seq: int) -> list[str]:
        """Accounts with an event stored after ``seq``, sorted."""
        return sorted(str(r[0]) for r in self._q("SELECT DISTINCT account_id FROM events WHERE seq > ?", (seq,)))

    def scoring_batches(self, after: int, batch: int) -> Iterator[list[ScoringInput]]:
        """Events after ``after`` in seq order, ``batch`` at a time."""
        for rows in self.scoring_rows(after, batch):
            yield [
                ScoringInput(
                    int(r[0]),
                    r[1],
                    r[2],
                    r[3],
                    r[4],
                    None if r[5] is None else orjson.loads(r[5]),
                    r[6],
                    None if r[7] is None else bool(r[7]),
                )
                for r in rows
            ]

    def scoring_rows(self, after: int, batch: int) -> Iterator[list[tuple[Any, ...]]]:
        """:meth:`scoring_batches` as the stored rows: ``(seq, event_id, account_id, conversation_id,
        ts, messages JSON text, prompt, refused 0/1/None)`` (the scoring stage decodes the messages in
        its worker processes)."""
        if batch < 1:
            raise StoreError(f"batch must be at least 1, got {batch}")
        sql = (
            "SELECT seq, event_id, account_id, conversation_id, ts, messages, prompt, refused FROM events "
            "WHERE seq > ? ORDER BY seq LIMIT ?"
        )
        while True:
            rows = self._q(sql, (after, batch))
            if not rows:
                return
            yield rows
            after = int(rows[-1][0])
