"""The TAXII 2.1 server's tables: API roots, collections, permissions, object versions, statuses.

Storage decisions live here; TAXII semantics (what a caller may see, status resources, audit,
validation) live in :mod:`stormwatch.intel.taxii.server`.

* Pagination is keyset pagination on ``(date_added, seq)`` (:meth:`TaxiiRepo.page` takes the
  position after which to read), so a page costs the same at any depth (indexed range scans, no
  OFFSET). ``date_added`` is assigned by the caller, strictly increasing.
* Each stored version carries ``is_first`` / ``is_last`` flags, recomputed here whenever an object
  gains or loses a version, so ``match[version]=first|last`` is an index range scan too.
* TLP:RED objects carry an audience, stored as ``|name|name|`` (``||``: nobody; NULL: everyone
  the collection lets read). Every read takes the reader's name and filters on it here.

No method commits: the server groups a request's writes (objects, flags, status, audit entry)
into one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stormwatch.store.database import Repository, marks
from stormwatch.store.records import Record

_CHUNK = 500


@dataclass(frozen=True, slots=True)
class ApiRoot(Record):
    root: str
    title: str
    description: str | None
    max_content_length: int
    created_at: str


@dataclass(frozen=True, slots=True)
class CollectionRow(Record):
    id: str
    root: str
    title: str
    description: str | None
    alias: str | None
    created_at: str


@dataclass(frozen=True, slots=True)
class Permission(Record):
    collection_id: str
    principal: str
    can_read: bool
    can_write: bool
    red_named: bool


@dataclass(frozen=True, slots=True)
class ObjectFilter(Record):
    """Which object versions a read selects (the TAXII ``match[...]`` / ``added_after`` / ``next`` filters).

    ``versions`` holds ``"all"``, ``"first"``, ``"last"`` and/or normalised version timestamps (vkeys).
    """

    object_id: str | None = None
    versions: tuple[str, ...] = ("last",)
    ids: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    spec_versions: tuple[str, ...] = ()
    added_after: str | None = None
    #: keyset position: rows strictly after ``(date_added, seq)``
    after: tuple[str, int] | None = None


@dataclass(frozen=True, slots=True)
class StoredObject(Record):
    """One stored version of an object."""

    date_added: str
    seq: int
    stix_id: str
    version: str
    body: str


@dataclass(frozen=True, slots=True)
class VersionKey(Record):
    stix_id: str
    vkey: str
    seq: int


@dataclass(frozen=True, slots=True)
class NewObject(Record):
    collection_id: str
    stix_id: str
    stix_type: str
    version: str
    vkey: str
    spec_version: str
    date_added: str
    tlp: int
    #: the principals who may read it (None: whoever may read the collection; empty: nobody)
    audience: tuple[str, ...] | None
    body: str


@dataclass(frozen=True, slots=True)
class StatusRow(Record):
    id: str
    root: str
    principal: str | None
    status: str
    request_timestamp: str
    total_count: int
    success_count: int
    failure_count: int
    pending_count: int
    successes: list[dict[str, Any]]
    failures: list[dict[str, Any]]
    pendings: list[dict[str, Any]]


def _like_escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def encode_audience(names: Iterable[str] | None) -> str | None:
    if names is None:
        return None
    return "|" + "|".join(sorted(set(names))) + "|" if names else "||"


def _version_where(f: ObjectFilter, where: list[str], args: list[Any]) -> None:
    vs = set(f.versions)
    if "all" in vs:
        return
    conds = []
    if "last" in vs:
        conds.append("is_last = 1")
    if "first" in vs:
        conds.append("is_first = 1")
    stamps = sorted(v for v in vs if v not in ("first", "last"))
    if stamps:
        conds.append(f"vkey IN ({marks(len(stamps))})")
        args.extend(stamps)
    if conds:
        where.append(conds[0] if len(conds) == 1 else "(" + " OR ".join(conds) + ")")


class TaxiiRepo(Repository):
    # -- API roots -----------------------------------------------------------------------------
    def root(self, root: str) -> ApiRoot | None:
        rows = self._q(
            "SELECT root, title, description, max_content_length, created_at FROM taxii_api_roots WHERE root = ?",
            (root,),
        )
        if not rows:
            return None
        r = rows[0]
        return ApiRoot(str(r[0]), str(r[1]), r[2], int(r[3]), str(r[4]))

    def add_root(self, root: ApiRoot) -> bool:
        """Add the root unless it exists; True when added."""
        if self.root(root.root) is not None:
            return False
        self._x(
            "INSERT INTO taxii_api_roots (root, title, description, max_content_length, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (root) DO NOTHING",
            (root.root, root.title, root.description, root.max_content_length, root.created_at),
        )
        return True

    def roots(self) -> list[str]:
        """Root names in creation order."""
        return [str(r[0]) for r in self._q("SELECT root FROM taxii_api_roots ORDER BY created_at, root")]

    # -- collections and permissions --------------------------------------------------------------
    def add_collection(self, c: CollectionRow) -> None:
        self._x(
            "INSERT INTO taxii_collections (id, root, title, description, alias, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (c.id, c.root, c.title, c.description, c.alias, c.created_at),
        )

    def collection(self, collection_id: str, root: str | None = None) -> CollectionRow | None:
        cols = "id, root, title, description, alias, created_at"
        if root is None:
            rows = self._q(f"SELECT {cols} FROM taxii_collections WHERE id = ?", (collection_id,))
        else:
            rows = self._q(f"SELECT {cols} FROM taxii_collections WHERE root = ? AND id = ?", (root, collection_id))
        return self._collection(rows[0]) if rows else None

    def collections(self, root: str) -> list[CollectionRow]:
        rows = self._q(
            "SELECT id, root, title, description, alias, created_at FROM taxii_collections WHERE root = ?"
            " ORDER BY created_at, id",
            (root,),
        )
        return [self._collection(r) for r in rows]

    @staticmethod
    def _collection(r: Sequence[Any]) -> CollectionRow:
        return CollectionRow(str(r[0]), str(r[1]), str(r[2]), r[3], r[4], str(r[5]))

    def set_permission(self, p: Permission) -> None:
        """Insert or replace ``p.principal``'s permission on the collection."""
        self._x(
            "DELETE FROM taxii_permissions WHERE collection_id = ? AND principal = ?", (p.collection_id, p.principal)
        )
        self._x(
            "INSERT INTO taxii_permissions (collection_id, principal, can_read, can_write, red_named)"
            " VALUES (?, ?, ?, ?, ?)",
            (p.collection_id, p.principal, int(p.can_read), int(p.can_write), int(p.red_named)),
        )

    def permissions(self, collection_id: str, principals: Sequence[str] | None = None) -> list[Permission]:
        """The collection's permissions (of these principals), by principal."""
        sql = "SELECT principal, can_read, can_write, red_named FROM taxii_permissions WHERE collection_id = ?"
        args: list[Any] = [collection_id]
        if principals is not None:
            if not principals:
                return []
            sql += f" AND principal IN ({marks(len(principals))})"
            args.extend(principals)
        rows = self._q(sql + " ORDER BY principal", args)
        return [Permission(collection_id, str(r[0]), bool(r[1]), bool(r[2]), bool(r[3])) for r in rows]

    def red_named(self, collection_id: str) -> list[str]:
        """Principals named for TLP:RED objects posted into the collection."""
        rows = self._q(
            "SELECT principal FROM taxii_permissions WHERE collection_id = ? AND red_named = 1 ORDER BY principal",
            (collection_id,),
        )
        return [str(r[0]) for r in rows]

    # -- objects ---------------------------------------------------------------------------------
    def page(self, collection_id: str, f: ObjectFilter, *, reader: str, limit: int) -> list[StoredObject]:
        """Up to ``limit`` versions matching ``f`` that ``reader`` may see, in ``(date_added, seq)`` order."""
        if limit <= 0:
            raise ValueError(f"limit must be positive, got {limit}")
        where = ["collection_id = ?"]
        args: list[Any] = [collection_id]
        if f.object_id is not None:
            where.append("stix_id = ?")
            args.append(f.object_id)
        _version_where(f, where, args)
        for column, values in (("stix_id", f.ids), ("stix_type", f.types), ("spec_version", f.spec_versions)):
            if values:
                where.append(f"{column} IN ({marks(len(values))})")
                args.extend(values)
        if f.added_after:
            where.append("date_added > ?")
            args.append(f.added_after)
        if f.after is not None:
            where.append("(date_added, seq) > (?, ?)")
            args.extend(f.after)
        where.append("(audience IS NULL OR audience LIKE ? ESCAPE '\\')")
        args.append(f"%|{_like_escape(reader)}|%")
        rows = self._q(
            f"SELECT date_added, seq, stix_id, version, body FROM taxii_objects WHERE {' AND '.join(where)}"
            f" ORDER BY date_added, seq LIMIT {int(limit)}",
            args,
        )
        return [StoredObject(str(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]

    def object_visible(self, collection_id: str, object_id: str, *, reader: str) -> bool:
        """Does the collection hold a version of ``object_id`` that ``reader`` may see?"""
        return bool(
            self._q(
                "SELECT 1 FROM taxii_objects WHERE collection_id = ? AND stix_id = ?"
                " AND (audience IS NULL OR audience LIKE ? ESCAPE '\\') LIMIT 1",
                (collection_id, object_id, f"%|{_like_escape(reader)}|%"),
            )
        )

    def version_keys(self, collection_id: str, ids: Iterable[str]) -> list[VersionKey]:
        """The stored versions of these objects in the collection."""
        out: list[VersionKey] = []
        lst = sorted(set(ids))
        for k in range(0, len(lst), _CHUNK):
            chunk = lst[k : k + _CHUNK]
            rows = self._q(
                f"SELECT stix_id, vkey, seq FROM taxii_objects WHERE collection_id = ? AND stix_id IN"
                f" ({marks(len(chunk))}) ORDER BY stix_id, vkey",
                [collection_id, *chunk],
            )
            out.extend(VersionKey(str(r[0]), str(r[1]), int(r[2])) for r in rows)
        return out

    def add_objects(self, objects: Sequence[NewObject]) -> None:
        """Store new versions and recompute the first/last flags of every object they touch."""
        if not objects:
            return
        self._db._executemany(
            self._db._sql(
                "INSERT INTO taxii_objects (collection_id, stix_id, stix_type, version, vkey, spec_version, date_added,"
                " is_first, is_last, tlp, audience, body) VALUES (?, ?, ?, ?, ?, ?, ?, 1, 1, ?, ?, ?)"
            ),
            [
                (o.collection_id, o.stix_id, o.stix_type, o.version, o.vkey, o.spec_version, o.date_added, o.tlp,
                 encode_audience(o.audience), o.body)
                for o in objects
            ],
        )  # fmt: skip
        counts = self._version_counts(objects)
        for cid, sid in sorted(k for k, n in counts.items() if n > 1):
            self._refresh_flags(cid, sid)

    def _version_counts(self, objects: Sequence[NewObject]) -> dict[tuple[str, str], int]:
        by_collection: dict[str, set[str]] = {}
        for o in objects:
            by_collection.setdefault(o.collection_id, set()).add(o.stix_id)
        counts: dict[tuple[str, str], int] = {}
        for cid, ids in by_collection.items():
            for v in self.version_keys(cid, ids):
                counts[(cid, v.stix_id)] = counts.get((cid, v.stix_id), 0) + 1
        return counts

    def _refresh_flags(self, collection_id: str, stix_id: str) -> None:
        rest = sorted(
            (str(v), int(s))
            for v, s in self._q(
                "SELECT vkey, seq FROM taxii_objects WHERE collection_id = ? AND stix_id = ?", (collection_id, stix_id)
            )
        )
        if not rest:
            return
        self._x(
            "UPDATE taxii_objects SET is_first = 0, is_last = 0 WHERE collection_id = ? AND stix_id = ?",
            (collection_id, stix_id),
        )
        self._x("UPDATE taxii_objects SET is_first = 1 WHERE seq = ?", (rest[0][1],))
        self._x("UPDATE taxii_objects SET is_last = 1 WHERE seq = ?", (rest[-1][1],))

    def delete_versions(self, collection_id: str, object_id: str, f: ObjectFilter) -> list[str]:
        """Delete the object's versions selected by ``f.versions`` / ``f.spec_versions``; return their versions.

        The remaining versions' first/last flags are recomputed.
        """
        where = ["collection_id = ?", "stix_id = ?"]
        args: list[Any] = [collection_id, object_id]
        _version_where(f, where, args)
        if f.spec_versions:
            where.append(f"spec_version IN ({marks(len(f.spec_versions))})")
            args.extend(f.spec_versions)
        cond = " AND ".join(where)
        gone = sorted(str(r[0]) for r in self._q(f"SELECT version FROM taxii_objects WHERE {cond}", args))
        if gone:
            self._x(f"DELETE FROM taxii_objects WHERE {cond}", args)
            self._refresh_flags(collection_id, object_id)
        return gone

    def count_objects(self, collection_id: str | None = None) -> int:
        if collection_id is None:
            return int(self._q("SELECT COUNT(*) FROM taxii_objects")[0][0])
        return int(self._q("SELECT COUNT(*) FROM taxii_objects WHERE collection_id = ?", (collection_id,))[0][0])

    # -- status resources ------------------------------------------------------------------------
    def add_status(self, s: StatusRow) -> None:
        self._x(
            "INSERT INTO taxii_status (id, root, principal, status, request_timestamp, total_count, success_count,"
            " failure_count, pending_count, successes, failures, pendings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (s.id, s.root, s.principal, s.status, s.request_timestamp, s.total_count, s.success_count,
             s.failure_count, s.pending_count, orjson.dumps(s.successes).decode(), orjson.dumps(s.failures).decode(),
             orjson.dumps(s.pendings).decode()),
        )  # fmt: skip

    def status(self, root: str, status_id: str) -> StatusRow | None:
        rows = self._q(
            "SELECT id, root, principal, status, request_timestamp, total_count, success_count, failure_count,"
            " pending_count, successes, failures, pendings FROM taxii_status WHERE root = ? AND id = ?",
            (root, status_id),
        )
        if not rows:
            return None
        r = rows[0]
        return StatusRow(
            str(r[0]), str(r[1]), r[2], str(r[3]), str(r[4]), int(r[5]), int(r[6]), int(r[7]), int(r[8]),
            orjson.loads(r[9]), orjson.loads(r[10]), orjson.loads(r[11]),
        )  # fmt: skip
