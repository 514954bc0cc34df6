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


@dataclass(frozen=True, slots=True)
class ScoringColumns:
    """What the scoring stage reads of a batch of events, one tuple per column (in ``seq`` order)."""

    seq: tuple[int, ...]
    event_id: tuple[str, ...]
    account_id: tuple[str, ...]
    conversation_id: tuple[str | None, ...]
    ts: tuple[str, ...]
    messages: tuple[str | None, ...]  # the stored JSON text
    prompt: tuple[str | None, ...]
    refused: tuple[int | None, ...]

    def __len__(self) -> int:
        return len(self.seq)


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
        for c in self.scoring_columns(after, batch):
            yield [
                ScoringInput(
                    int(seq), eid, acc, conv, ts, None if msgs is None else orjson.loads(msgs), prompt,
                    None if refused is None else bool(refused),
                )
                for seq, eid, acc, conv, ts, msgs, prompt, refused in zip(
                    c.seq, c.event_id, c.account_id, c.conversation_id, c.ts, c.messages, c.prompt, c.refused,
                    strict=True,
                )
            ]  # fmt: skip

    def scoring_columns(self, after: int, batch: int) -> Iterator[ScoringColumns]:
        """:meth:`scoring_batches` column by column, the messages as stored (JSON text): the scoring
        stage decodes them in its worker processes, and builds no record per event."""
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
            cols = ScoringColumns(*zip(*rows, strict=True))
            yield cols
            after = int(cols.seq[-1])
