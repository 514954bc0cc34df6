"""The analysis result (:mod:`stormwatch.result`): judgements, clusters, links, evidence, and analyze's own tables.

Tables (migration 0003; 0009 adds the review queue and exemption columns of ``account_judgements``):
``account_judgements``, ``clusters``, ``cluster_members``, ``link_edges``
(the result, replaced as a whole by :meth:`AnalysisRepo.write`, or in part by
:meth:`AnalysisRepo.write_changes` after an incremental run), ``account_features`` and
``account_attributes`` (per-account features, rewritten incrementally), ``intel_hits`` (indicator
matches, rewritten each run); migration 0010 adds ``analysis_inputs`` (per account: the fingerprint
of what its judgement was computed from) and ``analysis_state`` (run state: the global fingerprint).
:meth:`AnalysisRepo.lock` serialises analyze runs.

Reads return :mod:`stormwatch.result` records; list reads take filters and a keyset ``after`` (the
sort key of the last item of the previous page). Writes do not commit: analyze commits the result,
its features and the stage cursor together.

A few reads serve the result's readers and touch the event log (an account's timeline and top
requests, the activity window and end users of flagged accounts): they live here so that readers
of the analysis need no other SQL.

Why this module is long: it is every statement on nine tables plus the row <-> record mapping,
kept together so that adding a column touches this file and :mod:`stormwatch.result` only.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import orjson

from stormwatch.errors import InputError, StoreError
from stormwatch.result import (
    AccountFacts,
    AccountGraph,
    AccountState,
    AnalysisResult,
    Cluster,
    ClusterEvidence,
    Evidence,
    IntelHit,
    Judgement,
    LinkEdge,
    Observation,
)
from stormwatch.store.database import Repository, marks
from stormwatch.store.records import now_iso

__all__ = [
    "AccountActivity",
    "AnalysisRepo",
    "Attribute",
    "EndUserStats",
    "FeatureRecord",
    "FeatureState",
    "FlaggedRequest",
    "ScanChunk",
    "TopRequest",
]

#: characters of the end of each event's request text that analyze reads (language, URLs, e-mails)
TAIL_CHARS = 1500
_CHUNK = 500  # ids per IN (...) list

_J_COLS = (
    "account_id, risk, flagged, level, cluster_id, actor, actor_ref, confidence, confidence_label, ttps,"
    " evidence, explanation, analyzed_at, model_version, review_rank, within_budget, exemption"
)
_J_N = 17  # columns of _J_COLS
_C_COLS = "cluster_id, size, actor, actor_ref, confidence, confidence_label, flagged_accounts, evidence, updated_at"
_E_COLS = "cluster_id, account_a, account_b, kind, value, weight"
_H_COLS = "account_id, indicator_id, kind, value, n, first_ts, last_ts, degree, strength, intrusion_sets"
_TABLES = ("account_judgements", "clusters", "cluster_members", "link_edges")
_ANALYZE_LOCK = 0x5357_414E  # PostgreSQL advisory lock key of analyze runs


class FeatureRecord(Protocol):
    """What :meth:`AnalysisRepo.replace_features` stores per account (analyze.features.AccountFeatures)."""

    account_id: str
    n_events: int
    first_ts: str
    last_ts: str
    n_high: int
    max_score: float
    content_score: float
    ttp_breadth: int
    home_utc_offset: float | None
    refusals: int
    rephrases: int
    features: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FeatureState:
    known: int  # accounts with features
    stale: int  # ... computed under another model version


@dataclass(frozen=True, slots=True)
class Attribute:
    """An observable an account was seen with (``account_attributes``)."""

    account_id: str
    kind: str
    value: str
    n: int
    first_ts: str | None
    last_ts: str | None


@dataclass(frozen=True, slots=True)
class ScanChunk:
    """Events joined with their detection under one model version, as columns (one tuple per field)."""

    seq: tuple[int, ...]
    event_id: tuple[str, ...]
    account_id: tuple[str, ...]
    ts: tuple[str, ...]
    ip: tuple[str | None, ...]
    user_agent: tuple[str | None, ...]
    api_key_id: tuple[str | None, ...]
    conversation_id: tuple[str | None, ...]
    refused: tuple[Any, ...]
    attributes: tuple[str | None, ...]
    tail: tuple[str, ...]  # the last TAIL_CHARS characters of the request text
    score: tuple[float | None, ...]
    categories: tuple[str | None, ...]

    def __len__(self) -> int:
        return len(self.seq)


@dataclass(frozen=True, slots=True)
class TopRequest:
    event_id: str
    ts: str
    score: float
    top_ttp: str | None


@dataclass(frozen=True, slots=True)
class EndUserStats:
    distinct: dict[str, int]  # account -> distinct end users
    flagged: dict[str, dict[str, int]]  # account -> end user -> flagged events


@dataclass(frozen=True, slots=True)
class FlaggedRequest:
    """A flagged event with its user-side fields, for aggregate readers (transparency reports)."""

    event_id: str
    account_id: str
    ts: str
    top_ttp: str | None
    refused: bool
    prompt: str | None
    messages: str | None


@dataclass(frozen=True, slots=True)
class AccountActivity:
    account_id: str
    first_ts: str | None
    last_ts: str | None
    events: int


def _loads(value: Any, what: str) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise StoreError(f"{what}: stored JSON is malformed ({exc})") from exc


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _ttps(value: Any) -> dict[str, float]:
    """TTPs as stored: ``{id: share}``; a list of ids (or of ``{"id": ..}``) reads as share 1.0 each."""
    if isinstance(value, Mapping):
        return {str(k): float(v) for k, v in value.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    out: dict[str, float] = {}
    for v in value or ():
        ident = (v.get("id") or v.get("ttp") or v.get("technique")) if isinstance(v, Mapping) else v
        if ident is not None:
            out[str(ident)] = 1.0
    return out


def _chunks(items: Sequence[str], n: int = _CHUNK) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield list(items[i : i + n])


class AnalysisRepo(Repository):
    # -- plumbing ------------------------------------------------------------------------------------

    # -- row <-> record --------------------------------------------------------------------------------
    @staticmethod
    def _judgement(r: Sequence[Any]) -> Judgement:
        what = f"judgement of {r[0]!r}"
        try:
            evidence = _loads(r[10], what)
            return Judgement(
                account_id=str(r[0]),
                risk=float(r[1]),
                level=str(r[3]),
                cluster_id=r[4],
                actor=r[5],
                actor_ref=r[6],
                confidence=None if r[7] is None else float(r[7]),
                confidence_label=r[8],
                ttps=_ttps(_loads(r[9], what)),
                evidence=tuple(Evidence.from_dict(e) for e in evidence or ()),
                explanation=_loads(r[11], what) or {},
                analyzed_at=r[12],
                model_version=r[13],
                review_rank=None if r[14] is None else int(r[14]),
                within_budget=None if r[15] is None else bool(r[15]),
                exemption=_loads(r[16], what) if r[16] is not None else None,
            )
        except InputError as exc:
            raise StoreError(f"{what}: {exc}") from exc

    @staticmethod
    def _judgement_row(j: Judgement, analyzed_at: str) -> tuple[Any, ...]:
        return (
            j.account_id,
            j.risk,
            int(j.flagged),
            j.level,
            j.cluster_id,
            j.actor,
            j.actor_ref,
            j.confidence,
            j.confidence_label,
            _dumps(dict(j.ttps)),
            _dumps([e.to_dict() for e in j.evidence]),
            _dumps(dict(j.explanation)),
            j.analyzed_at or analyzed_at,
            j.model_version,
            j.review_rank,
            None if j.within_budget is None else int(j.within_budget),
            None if j.exemption is None else _dumps(dict(j.exemption)),
        )

    @staticmethod
    def _cluster(r: Sequence[Any], members: Sequence[str] = (), edges: Sequence[LinkEdge] = ()) -> Cluster:
        what = f"cluster {r[0]!r}"
        try:
            ev = _loads(r[7], what)
            return Cluster(
                cluster_id=str(r[0]),
                members=tuple(members),
                size=int(r[1]),
                actor=r[2],
                actor_ref=r[3],
                confidence=None if r[4] is None else float(r[4]),
                confidence_label=r[5],
                flagged_accounts=int(r[6]),
                evidence=ClusterEvidence.from_dict(ev if isinstance(ev, Mapping) else {}),
                updated_at=r[8],
                edges=tuple(edges),
            )
        except InputError as exc:
            raise StoreError(f"{what}: {exc}") from exc

    @staticmethod
    def _cluster_row(c: Cluster, updated_at: str) -> tuple[Any, ...]:
        return (
            c.cluster_id,
            c.size,
            c.actor,
            c.actor_ref,
            c.confidence,
            c.confidence_label,
            c.flagged_accounts,
            _dumps(c.evidence.to_dict()),
            c.updated_at or updated_at,
        )

    @staticmethod
    def _edge(r: Sequence[Any]) -> LinkEdge:
        return LinkEdge(str(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), float(r[5]))

    # -- the result: write ---------------------------------------------------------------------------
    def write(self, result: AnalysisResult) -> None:
        """Replace the stored result (judgements, clusters, members, link edges) with ``result``.

        Does not commit."""
        now = result.analyzed_at or now_iso()
        for table in _TABLES:
            self._x(f"DELETE FROM {table}")
        self._xm(
            f"INSERT INTO account_judgements ({_J_COLS}) VALUES ({marks(_J_N)})",
            [self._judgement_row(j, now) for j in result.judgements],
        )
        self._xm(
            f"INSERT INTO clusters ({_C_COLS}) VALUES ({marks(9)})",
            [self._cluster_row(c, now) for c in result.clusters],
        )
        self._xm(
            "INSERT INTO cluster_members (cluster_id, account_id) VALUES (?, ?)",
            [(c.cluster_id, m) for c in result.clusters for m in c.members],
        )
        self._xm(
            f"INSERT INTO link_edges ({_E_COLS}) VALUES ({marks(6)})",
            [(e.cluster_id, e.account_a, e.account_b, e.kind, e.value, e.weight) for e in result.links],
        )

    def write_changes(
        self,
        judgements: Sequence[Judgement],
        clusters: Sequence[Cluster],
        links: Sequence[LinkEdge],
        *,
        remove_accounts: Sequence[str] = (),
        remove_clusters: Sequence[str] = (),
    ) -> None:
        """Upsert part of the result (incremental analysis): the judgements of ``judgements`` and
        ``remove_accounts`` are deleted, then ``judgements`` inserted; the clusters (with members and
        edges) named in ``remove_clusters`` or in ``clusters`` are deleted, then ``clusters`` and
        ``links`` inserted. Does not commit."""
        now = now_iso()
        gone = sorted({j.account_id for j in judgements} | set(remove_accounts))
        for part in _chunks(gone):
            self._x(f"DELETE FROM account_judgements WHERE account_id IN ({marks(len(part))})", part)
        cids = sorted({c.cluster_id for c in clusters} | set(remove_clusters))
        for table in ("link_edges", "cluster_members", "clusters"):
            for part in _chunks(cids):
                self._x(f"DELETE FROM {table} WHERE cluster_id IN ({marks(len(part))})", part)
        self._xm(
            f"INSERT INTO account_judgements ({_J_COLS}) VALUES ({marks(_J_N)})",
            [self._judgement_row(j, now) for j in judgements],
        )
        self._xm(f"INSERT INTO clusters ({_C_COLS}) VALUES ({marks(9)})", [self._cluster_row(c, now) for c in clusters])
        self._xm(
            "INSERT INTO cluster_members (cluster_id, account_id) VALUES (?, ?)",
            [(c.cluster_id, m) for c in clusters for m in c.members],
        )
        self._xm(
            f"INSERT INTO link_edges ({_E_COLS}) VALUES ({marks(6)})",
            [(e.cluster_id, e.account_a, e.account_b, e.kind, e.value, e.weight) for e in links],
        )

    def judgement_count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM account_judgements")[0][0])

    def judgements_at(self, levels: Sequence[str]) -> list[str]:
        """The accounts whose stored judgement is at one of ``levels``."""
        return [
            str(r[0])
            for r in self._q(f"SELECT account_id FROM account_judgements WHERE level IN ({marks(len(levels))})", levels)
        ]

    def cluster_ids_of(self, account_ids: Sequence[str]) -> set[str]:
        """The stored clusters holding any of ``account_ids``."""
        out: set[str] = set()
        for part in _chunks(sorted(set(account_ids))):
            out |= {
                str(r[0])
                for r in self._q(
                    f"SELECT DISTINCT cluster_id FROM cluster_members WHERE account_id IN ({marks(len(part))})", part
                )
            }
        return out

    def result_counts(self) -> dict[str, int]:
        """Counts over the stored result: accounts, clusters, enforce, review, attributed, exempt,
        exempt_held_back, review_within_budget, raised_by_model."""
        out = {"accounts": 0, "enforce": 0, "review": 0, "attributed": 0, "exempt": 0, "review_within_budget": 0}
        for level, named, exempt, within, n in self._q(
            "SELECT level, actor IS NOT NULL, exemption IS NOT NULL, within_budget, COUNT(*) FROM account_judgements"
            " GROUP BY level, actor IS NOT NULL, exemption IS NOT NULL, within_budget"
        ):
            n = int(n)
            out["accounts"] += n
            if level in ("enforce", "review"):
                out[str(level)] += n
            out["attributed"] += n if named else 0
            out["exempt"] += n if exempt else 0
            out["review_within_budget"] += n if within else 0
        out["exempt_held_back"] = sum(
            bool((_loads(r[0], "exemption") or {}).get("held_back"))
            for r in self._q("SELECT exemption FROM account_judgements WHERE exemption IS NOT NULL")
        )
        out["raised_by_model"] = sum(
            bool((_loads(r[0], "explanation") or {}).get("raised_by_account_model"))
            for r in self._q("SELECT explanation FROM account_judgements WHERE level = 'review'")
        )
        out["clusters"] = int(self._q("SELECT COUNT(*) FROM clusters")[0][0])
        return out

    # -- incremental analysis: per-account input fingerprints, run state, the analysis lock ---------------
    def fingerprints(self) -> dict[str, str]:
        """account -> fingerprint of what its stored judgement was computed from."""
        return {str(a): str(f) for a, f in self._q("SELECT account_id, fingerprint FROM analysis_inputs")}

    def put_fingerprints(self, rows: Mapping[str, str], *, remove: Sequence[str] = (), replace: bool = False) -> None:
        """Upsert ``account -> fingerprint`` (all rows replaced when ``replace``); drop ``remove``. Does not commit."""
        if replace:
            self._x("DELETE FROM analysis_inputs")
        else:
            for part in _chunks(sorted(set(rows) | set(remove))):
                self._x(f"DELETE FROM analysis_inputs WHERE account_id IN ({marks(len(part))})", part)
        items = sorted(rows.items())
        for i in range(0, len(items), 50_000):
            self._xm("INSERT INTO analysis_inputs (account_id, fingerprint) VALUES (?, ?)", items[i : i + 50_000])

    def state(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM analysis_state WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def set_state(self, key: str, value: str) -> None:
        """Upsert one run-state value. Does not commit."""
        self._x(
            "INSERT INTO analysis_state (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def lock(self, timeout_s: float = 900.0) -> None:
        """Serialise analyze runs: take the database's write lock (SQLite ``BEGIN IMMEDIATE``) or a
        transaction-scoped advisory lock (PostgreSQL), waiting up to ``timeout_s``. Held until the
        caller commits or rolls back; read the stage cursor *after* taking it, so a run that waited
        sees what the other one did. Raises :class:`StoreError` when the wait runs out."""
        import time

        deadline = time.monotonic() + timeout_s
        if self._db.dialect == "postgres":
            self._x(f"SET LOCAL lock_timeout = '{int(timeout_s * 1000)}ms'")
            try:
                self._q("SELECT pg_advisory_xact_lock(?)", (_ANALYZE_LOCK,))
            except StoreError as exc:
                raise StoreError(f"another analyze run holds the analysis lock ({exc})") from exc
            return
        self._db._commit()  # BEGIN IMMEDIATE needs no transaction open
        while True:
            try:
                self._db._execute("BEGIN IMMEDIATE")
                return
            except StoreError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc).lower():
                    raise
                if time.monotonic() >= deadline:
                    raise StoreError(
                        f"another analyze run (or a writer) held the database for over {timeout_s:.0f} s"
                    ) from exc
                time.sleep(0.2)

    def put_judgement(self, j: Judgement) -> None:
        """Insert or replace one account's judgement (seeding, corrections). Does not commit."""
        self._x("DELETE FROM account_judgements WHERE account_id = ?", (j.account_id,))
        self._x(f"INSERT INTO account_judgements ({_J_COLS}) VALUES ({marks(_J_N)})", self._judgement_row(j, now_iso()))

    def put_cluster(self, c: Cluster, edges: Sequence[LinkEdge] = ()) -> None:
        """Insert or replace one cluster with its members and edges. Does not commit."""
        for table in ("clusters", "cluster_members", "link_edges"):
            self._x(f"DELETE FROM {table} WHERE cluster_id = ?", (c.cluster_id,))
        self._x(f"INSERT INTO clusters ({_C_COLS}) VALUES ({marks(9)})", self._cluster_row(c, now_iso()))
        self._xm("INSERT INTO cluster_members (cluster_id, account_id) VALUES (?, ?)",
                   [(c.cluster_id, m) for m in c.members])  # fmt: skip
        for e in (*c.edges, *edges):
            if e.cluster_id != c.cluster_id:
                raise InputError(f"edge of cluster {e.cluster_id!r} given with cluster {c.cluster_id!r}")
        self._xm(
            f"INSERT INTO link_edges ({_E_COLS}) VALUES ({marks(6)})",
            [(e.cluster_id, e.account_a, e.account_b, e.kind, e.value, e.weight) for e in (*c.edges, *edges)],
        )

    # -- the result: read ----------------------------------------------------------------------------
    def judgement(self, account_id: str) -> Judgement | None:
        rows = self._q(f"SELECT {_J_COLS} FROM account_judgements WHERE account_id = ?", (account_id,))
        return self._judgement(rows[0]) if rows else None

    def judgements(
        self,
        *,
        account_ids: Sequence[str] | None = None,
        flagged: bool | None = None,
        level: str | None = None,
        actor: str | None = None,
        cluster_id: str | None = None,
        min_risk: float | None = None,
        order: Literal["account", "risk"] = "account",
        after: tuple[float, str] | tuple[str] | None = None,
        limit: int | None = None,
    ) -> list[Judgement]:
        """Judgements matching every filter given.

        ``order="account"``: by account id (``after`` = ``(account_id,)``); ``order="risk"``: riskiest
        first, ties by account id (``after`` = ``(risk, account_id)`` of the last item seen).
        ``actor`` matches the actor's name or its STIX ref.
        """
        if order not in ("account", "risk"):
            raise InputError(f"unknown judgement order {order!r}")
        if limit is not None and limit < 0:
            raise InputError("limit must be >= 0")
        if min_risk is not None and not 0.0 <= min_risk <= 1.0:
            raise InputError("min_risk must be in 0..1")
        where: list[str] = []
        params: list[Any] = []
        if flagged is not None:
            where.append("flagged = ?")
            params.append(int(flagged))
        if level is not None:
            where.append("level = ?")
            params.append(level)
        if actor is not None:
            where.append("(actor = ? OR actor_ref = ?)")
            params += [actor, actor]
        if cluster_id is not None:
            where.append("cluster_id = ?")
            params.append(cluster_id)
        if min_risk is not None:
            where.append("risk >= ?")
            params.append(min_risk)
        if after is not None:
            if order == "risk":
                if len(after) != 2:
                    raise InputError("after must be (risk, account_id) for order='risk'")
                where.append("(risk < ? OR (risk = ? AND account_id > ?))")
                params += [after[0], after[0], after[1]]
            else:
                where.append("account_id > ?")
                params.append(after[-1])
        sql = f"SELECT {_J_COLS} FROM account_judgements"
        sql += " ORDER BY risk DESC, account_id" if order == "risk" else " ORDER BY account_id"
        if account_ids is not None:
            # ids go in chunks; the chunks are merged back into the requested order
            wanted = sorted(set(account_ids))
            got: list[Judgement] = []
            for part in _chunks(wanted):
                clause = " AND ".join([*where, f"account_id IN ({marks(len(part))})"])
                got += [self._judgement(r) for r in self._q(sql.replace(" ORDER BY", f" WHERE {clause} ORDER BY"),
                                                            (*params, *part))]  # fmt: skip
            if order == "risk":
                got.sort(key=lambda j: (-j.risk, j.account_id))
            else:
                got.sort(key=lambda j: j.account_id)
            return got[:limit] if limit is not None else got
        if where:
            sql = sql.replace(" ORDER BY", " WHERE " + " AND ".join(where) + " ORDER BY")
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._judgement(r) for r in self._q(sql, params)]

    def clusters(
        self,
        *,
        min_size: int | None = None,
        actor: str | None = None,
        min_confidence: float | None = None,
        order: Literal["size", "flagged"] = "size",
        after: tuple[int, str] | None = None,
        limit: int | None = None,
        members: bool = False,
    ) -> list[Cluster]:
        """Clusters matching every filter given, without edges.

        ``order="size"``: largest first, ties by id (``after`` = ``(size, cluster_id)``);
        ``order="flagged"``: most flagged accounts first, then confidence, size, id (no ``after``).
        ``actor`` matches the actor's name or ref. ``members=True`` fills ``Cluster.members``.
        """
        if order not in ("size", "flagged"):
            raise InputError(f"unknown cluster order {order!r}")
        if limit is not None and limit < 0:
            raise InputError("limit must be >= 0")
        where: list[str] = []
        params: list[Any] = []
        if min_size is not None:
            where.append("size >= ?")
            params.append(min_size)
        if actor is not None:
            where.append("(actor = ? OR actor_ref = ?)")
            params += [actor, actor]
        if min_confidence is not None:
            where.append("confidence >= ?")
            params.append(min_confidence)
        if after is not None:
            if order != "size" or len(after) != 2:
                raise InputError("after must be (size, cluster_id) with order='size'")
            where.append("(size < ? OR (size = ? AND cluster_id > ?))")
            params += [after[0], after[0], after[1]]
        sql = f"SELECT {_C_COLS} FROM clusters"
        if where:
            sql += " WHERE " + " AND ".join(where)
        if order == "size":
            sql += " ORDER BY size DESC, cluster_id"
        else:
            sql += " ORDER BY flagged_accounts DESC, confidence DESC, size DESC, cluster_id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        rows = self._q(sql, params)
        by_cluster: dict[str, list[str]] = {}
        if members and rows:
            ids = [str(r[0]) for r in rows]
            for part in _chunks(ids):
                for cid, acct in self._q(
                    f"SELECT cluster_id, account_id FROM cluster_members WHERE cluster_id IN ({marks(len(part))})"
                    " ORDER BY account_id",
                    part,
                ):
                    by_cluster.setdefault(str(cid), []).append(str(acct))
        return [self._cluster(r, by_cluster.get(str(r[0]), ())) for r in rows]

    def cluster(self, cluster_id: str, *, max_edges: int | None = None) -> Cluster | None:
        """One cluster with its members (by account id) and edges (strongest first, at most ``max_edges``)."""
        rows = self._q(f"SELECT {_C_COLS} FROM clusters WHERE cluster_id = ?", (cluster_id,))
        if not rows:
            return None
        members = [
            str(r[0])
            for r in self._q(
                "SELECT account_id FROM cluster_members WHERE cluster_id = ? ORDER BY account_id", (cluster_id,)
            )
        ]
        return self._cluster(rows[0], members, self.edges(cluster_id, limit=max_edges))

    def edges(self, cluster_id: str, *, limit: int | None = None) -> list[LinkEdge]:
        """A cluster's link edges, strongest first (ties: accounts, kind, value)."""
        sql = (
            f"SELECT {_E_COLS} FROM link_edges WHERE cluster_id = ?"
            " ORDER BY weight DESC, account_a, account_b, kind, value"
        )
        params: list[Any] = [cluster_id]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [self._edge(r) for r in self._q(sql, params)]

    def links(self) -> list[LinkEdge]:
        """Every link edge, in the order written."""
        return [self._edge(r) for r in self._q(f"SELECT {_E_COLS} FROM link_edges")]

    def result(self) -> AnalysisResult:
        """The stored result as one record (judgements by account, clusters by id with members)."""
        js = self.judgements()
        cs = sorted(self.clusters(members=True), key=lambda c: c.cluster_id)
        versions = {j.model_version for j in js}
        return AnalysisResult(
            judgements=tuple(js),
            clusters=tuple(cs),
            links=tuple(self.links()),
            model_version=versions.pop() if len(versions) == 1 else None,
            analyzed_at=max((j.analyzed_at for j in js if j.analyzed_at), default=None),
        )

    # -- per-account features and observables (analyze's incremental part) ---------------------------------
    def feature_state(self, model_version: str) -> FeatureState:
        known = int(self._q("SELECT COUNT(*) FROM account_features")[0][0])
        stale = int(self._q("SELECT COUNT(*) FROM account_features WHERE model_version <> ?", (model_version,))[0][0])
        return FeatureState(known, stale)

    def max_event_seq(self) -> int:
        return int(self._q("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])

    def accounts_with_events_after(self, seq: int) -> list[str]:
        return sorted(str(r[0]) for r in self._q("SELECT DISTINCT account_id FROM events WHERE seq > ?", (seq,)))

    def _scan_sql(self, where: str) -> str:
        text = "COALESCE(e.messages, e.prompt, '')"
        tail = f"right({text}, {TAIL_CHARS})" if self._db.dialect == "postgres" else f"substr({text}, -{TAIL_CHARS})"
        return (
            "SELECT e.seq, e.event_id, e.account_id, e.ts, e.ip, e.user_agent, e.api_key_id, e.conversation_id,"
            f" e.refused, e.attributes, {tail}, d.score, d.categories FROM events e LEFT JOIN detections d"
            f" ON d.event_id = e.event_id AND d.model_version = ? WHERE {where}"
        )

    @staticmethod
    def _scan_chunk(rows: list[tuple[Any, ...]]) -> ScanChunk:
        if not rows:
            return ScanChunk((), (), (), (), (), (), (), (), (), (), (), (), ())
        cols = list(zip(*rows, strict=True))
        return ScanChunk(*cols)

    def scan(
        self,
        model_version: str,
        account_ids: Sequence[str] | None = None,
        *,
        chunk: int = 100_000,
        after: int = 0,
        upto: int | None = None,
        conversations: Mapping[str, Collection[str]] | None = None,
    ) -> Iterator[ScanChunk]:
        """Events with their scores: those of ``account_ids``; or those of each account of
        ``conversations`` in the conversations listed for it (found in the account index, which holds
        the conversation: events outside them are not read); else all those with
        ``after < seq <= upto`` (``upto`` None: the newest), in ``seq`` windows of ``chunk``."""
        if chunk < 1:
            raise InputError("chunk must be >= 1")
        if conversations is not None:
            yield from self._scan_conversations(model_version, conversations)
            return
        if account_ids is None:
            hi = self._q("SELECT MAX(seq) FROM events")[0][0] or 0
            hi = hi if upto is None else min(hi, upto)
            lo = after
            while lo < hi:
                top = min(lo + chunk, hi)
                yield self._scan_chunk(self._q(self._scan_sql("e.seq > ? AND e.seq <= ?"), (model_version, lo, top)))
                lo = top
            return
        for part in _chunks(account_ids):
            yield self._scan_chunk(
                self._q(self._scan_sql(f"e.account_id IN ({marks(len(part))})"), (model_version, *part))
            )

    def _scan_conversations(
        self, model_version: str, conversations: Mapping[str, Collection[str]]
    ) -> Iterator[ScanChunk]:
        pairs = sorted({(a, c) for a, cs in conversations.items() for c in cs})
        for k in range(0, len(pairs), _CHUNK):  # at most 2 x _CHUNK ids per query
            part = set(pairs[k : k + _CHUNK])
            accounts, convs = sorted({a for a, _ in part}), sorted({c for _, c in part})
            where = f"e.account_id IN ({marks(len(accounts))}) AND e.conversation_id IN ({marks(len(convs))})"
            rows = self._q(self._scan_sql(where), (model_version, *accounts, *convs))
            # only the pairs asked for (an account may share a conversation id with another)
            yield self._scan_chunk([r for r in rows if (r[2], r[7]) in part])

    def replace_features(
        self,
        features: Sequence[FeatureRecord],
        attributes: Sequence[tuple[str, str, str, int, str, str]],
        model_version: str,
        *,
        accounts: Sequence[str] | None = None,
    ) -> None:
        """Replace the features and observables of ``accounts`` (all when None). Does not commit.

        ``attributes`` rows are (account_id, kind, value, n, first_ts, last_ts)."""
        if accounts is None:
            self._x("DELETE FROM account_features")
            self._x("DELETE FROM account_attributes")
        else:
            for table in ("account_features", "account_attributes"):
                for part in _chunks(accounts):
                    self._x(f"DELETE FROM {table} WHERE account_id IN ({marks(len(part))})", part)
        now = now_iso()
        self._xm(
            "INSERT INTO account_features (account_id, n_events, first_ts, last_ts, n_high, max_score, content_score,"
            " ttp_breadth, home_utc_offset, refusals, rephrases, features, model_version, updated_at, aggregate)"
            f" VALUES ({marks(15)})",
            [
                (f.account_id, f.n_events, f.first_ts, f.last_ts, f.n_high, f.max_score, f.content_score,
                 f.ttp_breadth, f.home_utc_offset, f.refusals, f.rephrases, _dumps(f.features), model_version, now,
                 getattr(f, "aggregate", None))
                for f in features
            ],
        )  # fmt: skip
        for i in range(0, len(attributes), 50_000):
            self._xm(
                f"INSERT INTO account_attributes (account_id, kind, value, n, first_ts, last_ts) VALUES ({marks(6)})",
                attributes[i : i + 50_000],
            )

    def aggregates(self, account_ids: Sequence[str], model_version: str) -> dict[str, str]:
        """The stored aggregates (``analyze.aggregates``, as JSON) of ``account_ids`` computed under
        ``model_version``; accounts without one are left out."""
        out: dict[str, str] = {}
        for part in _chunks(account_ids):
            for a, g in self._q(
                f"SELECT account_id, aggregate FROM account_features WHERE account_id IN ({marks(len(part))})"
                " AND model_version = ? AND aggregate IS NOT NULL",
                (*part, model_version),
            ):
                out[str(a)] = str(g)
        return out

    def features(self, account_id: str) -> dict[str, Any] | None:
        rows = self._q("SELECT features FROM account_features WHERE account_id = ?", (account_id,))
        return _loads(rows[0][0], f"features of {account_id!r}") if rows else None

    def attributes(
        self, *, account_ids: Sequence[str] | None = None, kinds: Sequence[str] | None = None, ordered: bool = True
    ) -> list[Attribute]:
        """Observables (of ``account_ids``, of ``kinds``): by account, kind, most used first (``ordered``),
        else in stored order."""
        where: list[str] = []
        params: list[Any] = []
        if kinds is not None:
            where.append(f"kind IN ({marks(len(kinds))})")
            params += list(kinds)
        sql = "SELECT account_id, kind, value, n, first_ts, last_ts FROM account_attributes"
        order = " ORDER BY account_id, kind, n DESC, value" if ordered else ""
        if account_ids is None:
            rows = self._q(sql + (" WHERE " + " AND ".join(where) if where else "") + order, params)
        else:
            rows = []
            ids = sorted(set(account_ids)) if ordered else list(account_ids)
            for part in _chunks(ids):
                clause = " AND ".join([*where, f"account_id IN ({marks(len(part))})"])
                rows += self._q(f"{sql} WHERE {clause}{order}", (*params, *part))
        return [Attribute(str(r[0]), str(r[1]), str(r[2]), int(r[3] or 0), r[4], r[5]) for r in rows]

    def crowded_values(self, kind: str, min_accounts: int) -> set[str]:
        """Values of ``kind`` seen on at least ``min_accounts`` accounts (VPN exits, NATs)."""
        return {
            str(r[0])
            for r in self._q(
                "SELECT value FROM account_attributes WHERE kind = ? GROUP BY value HAVING COUNT(*) >= ?",
                (kind, min_accounts),
            )
        }

    # -- intel hits ------------------------------------------------------------------------------------
    def replace_hits(self, hits: Sequence[IntelHit]) -> None:
        """Replace every stored indicator hit. Does not commit."""
        self._x("DELETE FROM intel_hits")
        self._xm(
            f"INSERT INTO intel_hits ({_H_COLS}) VALUES ({marks(10)})",
            [(h.account_id, h.indicator_id, h.kind, h.value, h.n, h.first_ts, h.last_ts, h.degree, h.strength,
              _dumps(list(h.intrusion_sets))) for h in hits],
        )  # fmt: skip

    @staticmethod
    def _hit(r: Sequence[Any]) -> IntelHit:
        refs = _loads(r[9], "intel hit")
        return IntelHit(
            str(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4]), r[5], r[6], int(r[7]), float(r[8]),
            tuple(str(x) for x in refs) if isinstance(refs, list) else (),
        )  # fmt: skip

    def hits(self, account_ids: Sequence[str] | None = None) -> list[IntelHit]:
        """Indicator hits (of ``account_ids``), in stored order."""
        if account_ids is None:
            return [self._hit(r) for r in self._q(f"SELECT {_H_COLS} FROM intel_hits")]
        out: list[IntelHit] = []
        for part in _chunks(list(account_ids)):
            out += [
                self._hit(r)
                for r in self._q(f"SELECT {_H_COLS} FROM intel_hits WHERE account_id IN ({marks(len(part))})", part)
            ]
        return out

    # -- the input graph -------------------------------------------------------------------------------
    def load_graph(self) -> AccountGraph:
        """The account graph analyze's algorithms read. Observations are ordered by account, kind and value
        (their numbering decides ties between equal links): not by storage order, which an incremental
        run changes (it rewrites the rows of the accounts it merged new events into)."""
        accounts = tuple(
            AccountFacts(str(r[0]), r[1], r[2], r[3], r[4], r[5], r[6], r[7])
            for r in self._q(
                "SELECT account_id, created_at, device_id, payment_fingerprint, phone_hash, signup_ip, email_domain,"
                " org_id FROM accounts"
            )
        )
        observations = tuple(
            Observation(str(r[0]), str(r[1]), str(r[2]), r[3], r[4])
            for r in sorted(  # in code-point order on every backend (a database's collation may differ)
                self._q(
                    "SELECT account_id, kind, value, first_ts, last_ts FROM account_attributes"
                    " WHERE kind IN ('ip', 'api_key')"
                ),
                key=lambda r: (str(r[0]), str(r[1]), str(r[2])),
            )
        )
        states = tuple(
            AccountState(str(r[0]), int(r[1]), float(r[2]), int(r[3]), int(r[4]), _loads(r[5], f"features of {r[0]!r}"))
            for r in self._q(
                "SELECT account_id, n_events, content_score, ttp_breadth, rephrases, features FROM account_features"
            )
        )
        sets = tuple(
            _loads(r[0], "intrusion-set")
            for r in self._q("SELECT raw FROM intel_objects WHERE type = 'intrusion-set' AND revoked = 0")
        )
        names = {str(r[0]): r[1] for r in self._q("SELECT id, name FROM intel_indicators")}
        return AccountGraph(accounts, observations, states, tuple(self.hits()), sets, names)

    # -- reads for the result's readers (reports, findings) that touch the event log --------------------
    def event_days(self, account_id: str) -> dict[str, int]:
        """Events per UTC day (``YYYY-MM-DD``) of one account."""
        days: dict[str, int] = {}
        for (ts,) in self._q("SELECT ts FROM events WHERE account_id = ?", (account_id,)):
            days[str(ts)[:10]] = days.get(str(ts)[:10], 0) + 1
        return dict(sorted(days.items()))

    def top_requests(self, account_id: str, model_version: str | None, limit: int) -> list[TopRequest]:
        """The account's highest-scored events under ``model_version``."""
        return [
            TopRequest(str(r[0]), str(r[1]), float(r[2]), r[3])
            for r in self._q(
                # through the events' (account_id, ts) index and the detections' primary key
                "SELECT d.event_id, d.ts, d.score, d.top_ttp FROM events e JOIN detections d"
                " ON d.event_id = e.event_id AND d.model_version = ? WHERE e.account_id = ?"
                " ORDER BY d.score DESC, d.event_id LIMIT ?",
                (model_version, account_id, limit),
            )
        ]

    def activity(self, account_ids: Sequence[str]) -> dict[str, AccountActivity]:
        """First and last event and event count of each account (accounts without events are left out)."""
        out: dict[str, AccountActivity] = {}
        for part in _chunks(list(account_ids)):
            for r in self._q(
                f"SELECT account_id, MIN(ts), MAX(ts), COUNT(*) FROM events WHERE account_id IN ({marks(len(part))})"
                " GROUP BY account_id",
                part,
            ):
                out[str(r[0])] = AccountActivity(str(r[0]), r[1], r[2], int(r[3]))
        return out

    def end_users(self, account_ids: Sequence[str]) -> dict[str, list[str]]:
        """The distinct end-user ids seen on each account's events."""
        out: dict[str, list[str]] = {}
        for part in _chunks(list(account_ids)):
            for r in self._q(
                f"SELECT DISTINCT account_id, end_user_id FROM events WHERE account_id IN ({marks(len(part))})"
                " AND end_user_id IS NOT NULL",
                part,
            ):
                out.setdefault(str(r[0]), []).append(str(r[1]))
        return out

    def flagged_texts(self, account_id: str, limit: int) -> list[tuple[str | None, str | None]]:
        """(prompt, response) of the account's highest-scored flagged events."""
        return [
            (r[0], r[1])
            for r in self._q(
                "SELECT e.prompt, e.response FROM detections d JOIN events e ON e.event_id = d.event_id"
                " WHERE d.account_id = ? AND d.flagged = 1 ORDER BY d.score DESC LIMIT ?",
                (account_id, limit),
            )
        ]

    def flagged_requests(
        self, model_version: str, *, since: str | None = None, until: str | None = None
    ) -> list[FlaggedRequest]:
        """Events flagged under ``model_version`` with ``since <= ts < until`` (ISO strings), in time order."""
        rows = self._q(
            "SELECT d.event_id, d.account_id, d.ts, d.top_ttp, e.refused, e.prompt, e.messages FROM detections d"
            " JOIN events e ON e.event_id = d.event_id WHERE d.model_version = ? AND d.flagged = 1"
            " AND d.ts >= ? AND d.ts < ? ORDER BY d.ts, d.event_id",
            (model_version, since or "", until or "\uffff"),
        )
        return [FlaggedRequest(str(r[0]), str(r[1]), str(r[2]), r[3], bool(r[4]), r[5], r[6]) for r in rows]

    def account_facts(self, account_ids: Sequence[str] | None = None) -> dict[str, AccountFacts]:
        """The account records (among ``account_ids``): linking fields and status, in stored order."""
        sql = (
            "SELECT account_id, created_at, device_id, payment_fingerprint, phone_hash, signup_ip, email_domain,"
            " org_id, status FROM accounts"
        )
        parts = [self._q(sql)] if account_ids is None else [
            self._q(f"{sql} WHERE account_id IN ({marks(len(p))})", p) for p in _chunks(list(account_ids))
        ]  # fmt: skip
        return {str(r[0]): AccountFacts(str(r[0]), *r[1:9]) for rows in parts for r in rows}

    def end_user_stats(self) -> EndUserStats:
        """Per account: distinct end users, and flagged events per end user (policies' ``block_end_user``)."""
        distinct = {
            str(a): int(n)
            for a, n in self._q(
                "SELECT account_id, COUNT(DISTINCT end_user_id) FROM events"
                " WHERE end_user_id IS NOT NULL GROUP BY account_id"
            )
        }
        flagged: dict[str, dict[str, int]] = {}
        for acct, user, n in self._q(
            "SELECT e.account_id, e.end_user_id, COUNT(DISTINCT e.event_id) FROM events e"
            " JOIN detections d ON d.event_id = e.event_id"
            " WHERE d.flagged = 1 AND e.end_user_id IS NOT NULL GROUP BY e.account_id, e.end_user_id"
        ):
            flagged.setdefault(str(acct), {})[str(user)] = int(n)
        return EndUserStats(distinct, flagged)
