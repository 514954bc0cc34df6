"""Per-event detections and the model registry (score/).

``detections`` holds one calibrated score per (event, model version); ``models`` names each model
version and its status (``active``: one at a time; ``candidate``: scored in shadow; ``retired``).
The scoring stage writes detections with :meth:`DetectionsRepo.insert` in the same transaction as
its stage cursor (``store.stages.set``), then commits both; the registry's writes commit themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stormwatch.errors import StoreError
from stormwatch.store.database import Repository
from stormwatch.store.records import now_iso

MODEL_STATUSES = ("active", "candidate", "retired")
_DETECTION_COLUMNS = (
    "event_id, model_version, account_id, conversation_id, ts, score, flagged, top_ttp, categories, explanation, "
    "scored_at"
)
_MODEL_COLUMNS = "name, version, kind, status, metadata, created_at, updated_at"


#: a detection in column order: (event_id, model_version, account_id, conversation_id, ts, score,
#: flagged 0/1, top_ttp, categories JSON, explanation JSON or None, scored_at)
DetectionRow = tuple[str, str, str, str | None, str, float, int, str | None, str, str | None, str]


@dataclass(frozen=True, slots=True)
class Detection:
    """One event's score by one model version."""

    event_id: str
    model_version: str
    account_id: str
    conversation_id: str | None
    ts: str
    score: float
    flagged: bool
    top_ttp: str | None
    #: JSON object ``{LLMT id: probability}`` as stored (small values left out)
    categories: str
    #: JSON list of conversation evidence (flagged events only), as stored
    explanation: str | None
    scored_at: str


@dataclass(frozen=True, slots=True)
class ModelRecord:
    """A registered model version (``stormwatch.score.models.ModelEntry`` adds where its artifact is)."""

    name: str
    version: str
    kind: str
    status: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class ScoreDifference:
    """One event scored by two model versions (``compare``'s largest differences)."""

    event_id: str
    account_id: str
    a_score: float
    b_score: float
    a_flagged: bool
    b_flagged: bool
    a_ttp: str | None
    b_ttp: str | None


@dataclass(frozen=True, slots=True)
class ModelComparison:
    """Two model versions on the events both scored."""

    both_scored: int
    both_flagged: int
    only_a: int
    only_b: int
    mean_abs_diff: float
    #: accounts with any event scored by both: (account_id, flagged by a, flagged by b)
    accounts: tuple[tuple[str, bool, bool], ...]
    #: ``"a_ttp -> b_ttp"`` -> events, most first (20 at most)
    top_ttp_changes: tuple[tuple[str, int], ...]
    biggest_differences: tuple[ScoreDifference, ...]


def _model(r: Sequence[Any]) -> ModelRecord:
    return ModelRecord(
        str(r[0]), str(r[1]), str(r[2]), str(r[3]), orjson.loads(r[4]) if r[4] else {}, str(r[5]), str(r[6])
    )


class DetectionsRepo(Repository):
    # -- detections ----------------------------------------------------------------------------
    def insert(self, rows: Sequence[Detection]) -> int:
        """Store detections not stored yet (by event and model version); does not commit."""
        return self.insert_rows(
            [
                (
                    d.event_id,
                    d.model_version,
                    d.account_id,
                    d.conversation_id,
                    d.ts,
                    d.score,
                    int(d.flagged),
                    d.top_ttp,
                    d.categories,
                    d.explanation,
                    d.scored_at,
                )
                for d in rows
            ]
        )

    def insert_rows(self, rows: Sequence[DetectionRow]) -> int:
        """:meth:`insert` for rows already in column order (``DetectionRow``; the scoring stage's
        bulk path, which skips building a record per event); does not commit."""
        if not rows:
            return 0
        sql = self._db._sql(
            f"INSERT INTO detections ({_DETECTION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (event_id, model_version) DO NOTHING"
        )
        return self._db._executemany(sql, rows)

    def get(self, event_id: str, model_version: str) -> Detection | None:
        rows = self._q(
            f"SELECT {_DETECTION_COLUMNS} FROM detections WHERE event_id = ? AND model_version = ?",
            (event_id, model_version),
        )
        if not rows:
            return None
        r = rows[0]
        return Detection(r[0], r[1], r[2], r[3], r[4], float(r[5]), bool(r[6]), r[7], r[8], r[9], r[10])

    def explanation(self, event_id: str, model_version: str) -> list[dict[str, Any]]:
        """The conversation evidence kept at scoring time (empty when none was kept)."""
        rows = self._q(
            "SELECT explanation FROM detections WHERE event_id = ? AND model_version = ?", (event_id, model_version)
        )
        if not rows or not rows[0][0]:
            return []
        got: list[dict[str, Any]] = orjson.loads(rows[0][0])
        return got

    def counts_by_model(self) -> dict[str, int]:
        """Scored events per model version."""
        return {str(r[0]): int(r[1]) for r in self._q("SELECT model_version, COUNT(*) FROM detections GROUP BY 1")}

    def latest_model_version(self) -> str | None:
        """The model version that scored most recently (None before any scoring)."""
        rows = self._q("SELECT model_version FROM detections ORDER BY scored_at DESC LIMIT 1")
        return str(rows[0][0]) if rows else None

    def compare(self, a: str, b: str, *, top: int = 10) -> ModelComparison:
        """How versions ``a`` and ``b`` differ on the events both scored."""
        base = (
            "FROM detections a JOIN detections b ON a.event_id = b.event_id "
            "WHERE a.model_version = ? AND b.model_version = ?"
        )
        params = (a, b)
        row = self._q(
            "SELECT COUNT(*), "
            "SUM(CASE WHEN a.flagged = 1 AND b.flagged = 1 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN a.flagged = 1 AND b.flagged = 0 THEN 1 ELSE 0 END), "
            "SUM(CASE WHEN a.flagged = 0 AND b.flagged = 1 THEN 1 ELSE 0 END), "
            f"AVG(ABS(a.score - b.score)) {base}",
            params,
        )[0]
        moves = self._q(
            f"SELECT COALESCE(a.top_ttp, '-') || ' -> ' || COALESCE(b.top_ttp, '-'), COUNT(*) {base} "
            "AND COALESCE(a.top_ttp, '-') <> COALESCE(b.top_ttp, '-') GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20",
            params,
        )
        accounts = self._q(f"SELECT a.account_id, MAX(a.flagged), MAX(b.flagged) {base} GROUP BY a.account_id", params)
        diffs = self._q(
            "SELECT a.event_id, a.account_id, a.score, b.score, a.flagged, b.flagged, a.top_ttp, b.top_ttp "
            f"{base} ORDER BY ABS(a.score - b.score) DESC, a.event_id LIMIT ?",
            (*params, top),
        )
        return ModelComparison(
            both_scored=int(row[0] or 0),
            both_flagged=int(row[1] or 0),
            only_a=int(row[2] or 0),
            only_b=int(row[3] or 0),
            mean_abs_diff=float(row[4] or 0.0),
            accounts=tuple((str(r[0]), bool(r[1]), bool(r[2])) for r in accounts),
            top_ttp_changes=tuple((str(r[0]), int(r[1])) for r in moves),
            biggest_differences=tuple(
                ScoreDifference(str(r[0]), str(r[1]), float(r[2]), float(r[3]), bool(r[4]), bool(r[5]), r[6], r[7])
                for r in diffs
            ),
        )

    # -- the model registry --------------------------------------------------------------------
    def models(self, status: str | None = None) -> list[ModelRecord]:
        """Registered model versions (with ``status`` only), oldest first."""
        if status:
            rows = self._q(
                f"SELECT {_MODEL_COLUMNS} FROM models WHERE status = ? ORDER BY created_at, version", (status,)
            )
        else:
            rows = self._q(f"SELECT {_MODEL_COLUMNS} FROM models ORDER BY created_at, version")
        return [_model(r) for r in rows]

    def model(self, version: str) -> ModelRecord | None:
        rows = self._q(
            f"SELECT {_MODEL_COLUMNS} FROM models WHERE version = ? ORDER BY created_at, name LIMIT 1", (version,)
        )
        return _model(rows[0]) if rows else None

    def register_model(
        self, *, name: str, version: str, kind: str, status: str, metadata: dict[str, Any] | None = None
    ) -> ModelRecord:
        """Add a model version or change its status and metadata; commits.

        Making one ``active`` retires the active one in the same transaction (one active at a time).
        """
        if status not in MODEL_STATUSES:
            raise StoreError(f"unknown model status {status!r}", hint=f"one of {', '.join(MODEL_STATUSES)}")
        if not name or not version:
            raise StoreError("a model needs a name and a version")
        stamp = now_iso()
        try:
            if status == "active":
                self._db._execute(
                    self._db._sql(
                        "UPDATE models SET status = 'retired', updated_at = ? WHERE status = 'active' AND version <> ?"
                    ),
                    (stamp, version),
                )
            self._db._execute(
                self._db._sql(
                    f"INSERT INTO models ({_MODEL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (name, version) DO UPDATE SET status = excluded.status, "
                    "metadata = excluded.metadata, updated_at = excluded.updated_at"
                ),
                (name, version, kind, status, orjson.dumps(metadata or {}).decode(), stamp, stamp),
            )
        except BaseException:
            self._db._rollback()
            raise
        self._db._commit()
        got = self._q(f"SELECT {_MODEL_COLUMNS} FROM models WHERE name = ? AND version = ?", (name, version))
        return _model(got[0])
