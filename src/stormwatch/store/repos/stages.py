"""Stage cursors: how far each incremental stage has read the event log (one way of writing them).

A cursor is the last event ``seq`` a stage has processed, per ``(stage, key)``: the scoring stage
keeps one per model version (``key`` = the version), analyze one for the whole log (``key`` =
``"events"``). :meth:`StagesRepo.set` is the only writer: an upsert that never moves a cursor back,
so two writers racing on the same cursor (two ``score`` runs, a retried batch committed late)
leave the larger value, on SQLite and PostgreSQL alike. :meth:`StagesRepo.reset` is the one
deliberate way back (start a stage over).

``set`` and ``reset`` do not commit: a stage advances its cursor in the same transaction as the
rows the cursor covers, and commits both together (a killed run then resumes where it stopped).
"""

from __future__ import annotations

from dataclasses import dataclass

from stormwatch.errors import StoreError
from stormwatch.store.database import Repository
from stormwatch.store.records import now_iso

#: the key of a stage with a single cursor over the whole event log
DEFAULT_KEY = "events"


@dataclass(frozen=True, slots=True)
class StageCursor:
    stage: str
    key: str
    last_seq: int
    updated_at: str


class StagesRepo(Repository):
    def get(self, stage: str, key: str = DEFAULT_KEY) -> int:
        """The last event ``seq`` the stage processed; 0 when it never ran."""
        rows = self._db._query(
            self._db._sql("SELECT last_seq FROM stage_cursors WHERE stage = ? AND key = ?"), (stage, key)
        )
        return int(rows[0][0]) if rows else 0

    def set(self, stage: str, seq: int, key: str = DEFAULT_KEY) -> None:
        """Advance the cursor to ``seq`` (an upsert; a smaller ``seq`` than the stored one is ignored).

        Does not commit: commit together with the rows the cursor covers.
        """
        if not stage or not key:
            raise StoreError("a stage cursor needs a stage name and a key")
        if seq < 0:
            raise StoreError(f"stage cursor {stage}/{key}: seq must be >= 0, got {seq}")
        self._db._execute(
            self._db._sql(
                "INSERT INTO stage_cursors (stage, key, last_seq, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (stage, key) DO UPDATE SET last_seq = excluded.last_seq, updated_at = excluded.updated_at "
                "WHERE stage_cursors.last_seq < excluded.last_seq"
            ),
            (stage, key, int(seq), now_iso()),
        )

    def reset(self, stage: str, key: str | None = None) -> None:
        """Forget the stage's cursor (``key``), or all its cursors; the next run starts at 0. Does not commit."""
        if key is None:
            self._db._execute(self._db._sql("DELETE FROM stage_cursors WHERE stage = ?"), (stage,))
        else:
            self._db._execute(self._db._sql("DELETE FROM stage_cursors WHERE stage = ? AND key = ?"), (stage, key))

    def cursors(self, stage: str | None = None) -> list[StageCursor]:
        """Every cursor (of ``stage``), ordered by stage and key."""
        cols = "stage, key, last_seq, updated_at"
        if stage is None:
            rows = self._db._query(f"SELECT {cols} FROM stage_cursors ORDER BY stage, key")
        else:
            rows = self._db._query(
                self._db._sql(f"SELECT {cols} FROM stage_cursors WHERE stage = ? ORDER BY key"), (stage,)
            )
        return [StageCursor(str(r[0]), str(r[1]), int(r[2]), str(r[3])) for r in rows]
