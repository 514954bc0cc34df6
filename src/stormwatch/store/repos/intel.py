"""Partner intelligence and our sharing bookkeeping: the tables of :mod:`stormwatch.intel`.

* ``intel_objects`` / ``intel_indicators``: imported STIX objects (one row per id, the newest
  version) and the indicators compiled from them (:mod:`stormwatch.intel.importer`); read by the
  intel matching of the analysis (:meth:`IntelRepo.active_indicators`, :meth:`IntelRepo.observations`).
* ``share_stix_ids``: the stable STIX ids our exports minted (:mod:`stormwatch.intel.ids`).
* ``share_secrets`` / ``share_exports``: the per-database HMAC secret and the export log.
* ``share_pull_checkpoints`` / ``share_pulled_objects``: the TAXII poller's position and inbox.

No method commits unless its docstring says so: the callers group writes into one transaction
(an import, a pulled page with its checkpoint) and commit or roll back together.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stormwatch.store.database import Repository, marks
from stormwatch.store.records import Record, now_iso

_CHUNK = 500  # ids per IN (...) list: well below SQLite's and PostgreSQL's parameter limits

#: the observable kinds of ``account_attributes`` the indicators can match
OBSERVABLE_KINDS = ("ip", "user_agent", "url", "domain", "email")


# -- records ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class StoredVersion(Record):
    """The version of an imported object we hold: its ``modified`` (or ``created``) and canonical JSON."""

    modified: str
    raw: str


@dataclass(frozen=True, slots=True)
class IntelObject(Record):
    id: str
    type: str
    spec_version: str | None
    created: str | None
    modified: str | None
    revoked: bool
    name: str | None
    raw: str
    source: str | None
    imported_at: str


@dataclass(frozen=True, slots=True)
class CompiledCache(Record):
    """What the last rebuild compiled for an indicator (reused while its pattern is unchanged)."""

    pattern: str
    compiled: str | None
    unsupported_reason: str | None


@dataclass(frozen=True, slots=True)
class IndicatorRow(Record):
    id: str
    name: str | None
    pattern: str
    pattern_type: str
    valid_from: str | None
    valid_until: str | None
    revoked: bool
    confidence: int | None
    indicator_types: tuple[str, ...]
    intrusion_sets: tuple[str, ...]
    unsupported_reason: str | None
    #: the compiled pattern as JSON text (:meth:`CompiledPattern.to_json`), None when unsupported
    compiled: str | None
    modified: str | None

    @property
    def supported(self) -> bool:
        return self.unsupported_reason is None


@dataclass(frozen=True, slots=True)
class ActiveIndicator(Record):
    """A supported, unrevoked indicator, as the matching reads it."""

    id: str
    name: str | None
    compiled: Any  # the parsed JSON of the compiled pattern
    valid_from: str | None
    valid_until: str | None
    confidence: int | None
    types: tuple[str, ...]
    intrusion_sets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttributeObservation(Record):
    """An observable an account was seen with (``account_attributes``)."""

    account_id: str
    kind: str
    value: str
    n: int
    first_ts: str | None
    last_ts: str | None


@dataclass(frozen=True, slots=True)
class AccountObservation(Record):
    """The observables of an account record: sign-up IP, e-mail domain, address (or its hash)."""

    account_id: str
    created_at: str | None
    signup_ip: str | None
    email_domain: str | None
    email_hash: str | None
    #: ``attributes.email`` when the record carries the address
    email: str | None


@dataclass(frozen=True, slots=True)
class StixId(Record):
    stix_id: str
    created: str
    modified: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class ExportRecord(Record):
    export_id: str
    format: str
    recipient: str | None
    destination: str
    objects: int
    max_tlp: str | None
    created_at: str
    policy_digest: str | None = None


@dataclass(frozen=True, slots=True)
class Checkpoint(Record):
    url: str
    collection_id: str
    added_after: str | None
    next_token: str | None
    objects: int
    last_run_at: str | None
    status: str | None


@dataclass(frozen=True, slots=True)
class PulledObject(Record):
    source: str
    stix_id: str
    version: str
    body: str


#: ``share_pulled_objects.imported``: waiting, handed to the importer, refused by it
PULLED_PENDING, PULLED_IMPORTED, PULLED_REJECTED = 0, 1, -1


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


class IntelRepo(Repository):
    # -- imported objects ----------------------------------------------------------------------
    def object_versions(self) -> dict[str, StoredVersion]:
        """Every imported object's stored version, by id."""
        return {
            str(r[0]): StoredVersion(str(r[1] or ""), str(r[2]))
            for r in self._q("SELECT id, modified, raw FROM intel_objects")
        }

    def put_object(self, obj: IntelObject) -> None:
        """Store ``obj``, replacing the stored version of the same id. Does not commit."""
        self._x("DELETE FROM intel_objects WHERE id = ?", (obj.id,))
        self._x(
            "INSERT INTO intel_objects (id, type, spec_version, created, modified, revoked, name, raw, source,"
            " imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (obj.id, obj.type, obj.spec_version, obj.created, obj.modified, int(obj.revoked), obj.name, obj.raw,
             obj.source, obj.imported_at),
        )  # fmt: skip

    def objects_of_type(self, *types: str) -> list[dict[str, Any]]:
        """The imported objects of these STIX types (parsed), in id order."""
        if not types:
            return []
        rows = self._q(f"SELECT raw FROM intel_objects WHERE type IN ({marks(len(types))}) ORDER BY id", types)
        return [orjson.loads(r[0]) for r in rows]

    def raw_objects(self, ids: Iterable[str]) -> dict[str, str]:
        """The stored JSON text of these objects (ids not imported are absent)."""
        out: dict[str, str] = {}
        for chunk in _chunks(sorted(set(ids))):
            for oid, raw in self._q(f"SELECT id, raw FROM intel_objects WHERE id IN ({marks(len(chunk))})", chunk):
                out[str(oid)] = str(raw)
        return out

    def count_objects(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM intel_objects")[0][0])

    # -- indicators ----------------------------------------------------------------------------
    def compiled_cache(self) -> dict[str, CompiledCache]:
        return {
            str(r[0]): CompiledCache(str(r[1]), r[2], r[3])
            for r in self._q("SELECT id, pattern, compiled, unsupported_reason FROM intel_indicators")
        }

    def replace_indicators(self, rows: Sequence[IndicatorRow], *, updated_at: str | None = None) -> None:
        """Replace the whole indicator table with ``rows``. Does not commit."""
        stamp = updated_at or now_iso()
        self._x("DELETE FROM intel_indicators")
        self._xm(
            "INSERT INTO intel_indicators (id, name, pattern, pattern_type, valid_from, valid_until, revoked,"
            " confidence, indicator_types, intrusion_sets, supported, unsupported_reason, compiled, modified,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (r.id, r.name, r.pattern, r.pattern_type, r.valid_from, r.valid_until, int(r.revoked), r.confidence,
                 orjson.dumps(sorted(r.indicator_types)).decode(), orjson.dumps(sorted(r.intrusion_sets)).decode(),
                 int(r.supported), r.unsupported_reason, r.compiled, r.modified, stamp)
                for r in rows
            ],
        )  # fmt: skip

    def indicators(self) -> list[IndicatorRow]:
        """Every indicator row (supported or not, revoked or not), in id order."""
        rows = self._q(
            "SELECT id, name, pattern, pattern_type, valid_from, valid_until, revoked, confidence, indicator_types,"
            " intrusion_sets, unsupported_reason, compiled, modified FROM intel_indicators ORDER BY id"
        )
        return [
            IndicatorRow(
                str(r[0]), r[1], str(r[2]), str(r[3]), r[4], r[5], bool(r[6]), None if r[7] is None else int(r[7]),
                tuple(orjson.loads(r[8] or "[]")), tuple(orjson.loads(r[9] or "[]")), r[10], r[11], r[12],
            )
            for r in rows
        ]  # fmt: skip

    def active_indicators(self) -> list[ActiveIndicator]:
        """Supported, unrevoked indicators in id order (what the account analysis matches)."""
        rows = self._q(
            "SELECT id, name, compiled, valid_from, valid_until, confidence, indicator_types, intrusion_sets"
            " FROM intel_indicators WHERE supported = 1 AND revoked = 0 ORDER BY id"
        )
        return [
            ActiveIndicator(
                id=str(r[0]),
                name=r[1],
                compiled=orjson.loads(r[2]),
                valid_from=r[3],
                valid_until=r[4],
                confidence=None if r[5] is None else int(r[5]),
                types=tuple(orjson.loads(r[6] or "[]")),
                intrusion_sets=tuple(orjson.loads(r[7] or "[]")),
            )
            for r in rows
        ]

    # -- what accounts were seen with (the matching's other input) --------------------------------
    def attribute_observations(self) -> Iterator[AttributeObservation]:
        rows = self._q(
            "SELECT account_id, kind, value, n, first_ts, last_ts FROM account_attributes"
            f" WHERE kind IN ({marks(len(OBSERVABLE_KINDS))})",
            OBSERVABLE_KINDS,
        )
        for acc, kind, value, n, first, last in rows:
            yield AttributeObservation(str(acc), str(kind), str(value), int(n), first, last)

    def account_observations(self) -> Iterator[AccountObservation]:
        rows = self._q("SELECT account_id, created_at, signup_ip, email_domain, email_hash, attributes FROM accounts")
        for acc, created, signup_ip, domain, email_hash, attrs in rows:
            email = orjson.loads(attrs).get("email") if attrs and '"email"' in attrs else None
            yield AccountObservation(
                str(acc), created, signup_ip, domain, email_hash, email if isinstance(email, str) and email else None
            )

    # -- stable STIX ids -------------------------------------------------------------------------
    def stix_ids(self) -> dict[str, StixId]:
        """Every minted id, by its key (``identity:producer:...``, ``cluster:...``, ...)."""
        return {
            str(r[0]): StixId(str(r[1]), str(r[2]), str(r[3]), str(r[4]))
            for r in self._q("SELECT key, stix_id, created, modified, content_hash FROM share_stix_ids")
        }

    def put_stix_ids(self, entries: Mapping[str, StixId]) -> None:
        """Insert or replace these keys' ids. Does not commit."""
        for key in sorted(entries):
            e = entries[key]
            self._x("DELETE FROM share_stix_ids WHERE key = ?", (key,))
            self._x(
                "INSERT INTO share_stix_ids (key, stix_id, created, modified, content_hash) VALUES (?, ?, ?, ?, ?)",
                (key, e.stix_id, e.created, e.modified, e.content_hash),
            )

    def producer_identity_ids(self) -> set[str]:
        """The producer identities our exports have used."""
        rows = self._q("SELECT stix_id FROM share_stix_ids WHERE key LIKE ?", ("identity:producer:%",))
        return {str(r[0]) for r in rows}

    def minted(self, ids: Iterable[str]) -> set[str]:
        """Which of ``ids`` we minted."""
        out: set[str] = set()
        for chunk in _chunks(sorted(set(ids))):
            rows = self._q(f"SELECT stix_id FROM share_stix_ids WHERE stix_id IN ({marks(len(chunk))})", chunk)
            out.update(str(r[0]) for r in rows)
        return out

    # -- secrets and the export log --------------------------------------------------------------
    def secret(self, name: str) -> str | None:
        rows = self._q("SELECT secret FROM share_secrets WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def add_secret(self, name: str, secret: str, created_at: str) -> str:
        """Store ``secret`` under ``name`` unless one is there already; return the stored one. Commits.

        Two processes creating the secret at once both end up with the first one stored.
        """
        self._x(
            "INSERT INTO share_secrets (name, secret, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (name, secret, created_at),
        )
        self._db._commit()
        stored = self.secret(name)
        assert stored is not None
        return stored

    def record_export(self, rec: ExportRecord) -> None:
        """Append to the export log. Does not commit."""
        self._x(
            "INSERT INTO share_exports (export_id, format, recipient, destination, objects, max_tlp, policy_digest,"
            " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (rec.export_id, rec.format, rec.recipient, rec.destination, rec.objects, rec.max_tlp, rec.policy_digest,
             rec.created_at),
        )  # fmt: skip

    def exports(self) -> list[ExportRecord]:
        rows = self._q(
            "SELECT export_id, format, recipient, destination, objects, max_tlp, created_at, policy_digest"
            " FROM share_exports ORDER BY created_at, export_id"
        )
        return [ExportRecord(str(r[0]), str(r[1]), r[2], str(r[3]), int(r[4]), r[5], str(r[6]), r[7]) for r in rows]

    # -- the TAXII poller ------------------------------------------------------------------------
    def checkpoint(self, url: str, collection_id: str) -> Checkpoint | None:
        rows = self._q(
            "SELECT added_after, next_token, objects, last_run_at, status FROM share_pull_checkpoints"
            " WHERE url = ? AND collection_id = ?",
            (url, collection_id),
        )
        if not rows:
            return None
        r = rows[0]
        return Checkpoint(url, collection_id, r[0], r[1], int(r[2] or 0), r[3], r[4])

    def save_checkpoint(
        self, url: str, collection_id: str, *, added_after: str | None, next_token: str | None, new_objects: int,
        status: str,
    ) -> Checkpoint:  # fmt: skip
        """Move the checkpoint (the object count grows by ``new_objects``). Does not commit."""
        old = self.checkpoint(url, collection_id)
        cp = Checkpoint(
            url, collection_id, added_after, next_token, (old.objects if old else 0) + new_objects, now_iso(), status
        )
        self._x("DELETE FROM share_pull_checkpoints WHERE url = ? AND collection_id = ?", (url, collection_id))
        self._x(
            "INSERT INTO share_pull_checkpoints (url, collection_id, added_after, next_token, objects, last_run_at,"
            " status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cp.url, cp.collection_id, cp.added_after, cp.next_token, cp.objects, cp.last_run_at, cp.status),
        )
        return cp

    def add_pulled(self, source: str, objects: Sequence[Mapping[str, Any]]) -> int:
        """Keep pulled objects not kept yet (by source, id and version); return how many were new. No commit."""
        now = now_iso()
        new = 0
        for o in objects:
            oid = o.get("id")
            if not isinstance(oid, str):
                continue
            version = str(o.get("modified") or o.get("created") or "")
            if self._q(
                "SELECT 1 FROM share_pulled_objects WHERE source = ? AND stix_id = ? AND version = ?",
                (source, oid, version),
            ):
                continue
            self._x(
                "INSERT INTO share_pulled_objects (source, stix_id, version, body, date_added, pulled_at, imported)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (source, oid, version, orjson.dumps(o).decode(), None, now, PULLED_PENDING),
            )
            new += 1
        return new

    def pending_pulled(self) -> list[PulledObject]:
        rows = self._q(
            "SELECT source, stix_id, version, body FROM share_pulled_objects WHERE imported = ?"
            " ORDER BY pulled_at, source, stix_id, version",
            (PULLED_PENDING,),
        )
        return [PulledObject(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in rows]

    def mark_pulled(self, objects: Sequence[PulledObject], state: int) -> None:
        """Set the import state of pulled objects (:data:`PULLED_IMPORTED` / :data:`PULLED_REJECTED`). No commit."""
        if state not in (PULLED_PENDING, PULLED_IMPORTED, PULLED_REJECTED):
            raise ValueError(f"unknown pulled-object state {state}")
        self._xm(
            "UPDATE share_pulled_objects SET imported = ? WHERE source = ? AND stix_id = ? AND version = ?",
            [(state, o.source, o.stix_id, o.version) for o in objects],
        )

    def count_pulled(self, state: int | None = None) -> int:
        if state is None:
            return int(self._q("SELECT COUNT(*) FROM share_pulled_objects")[0][0])
        return int(self._q("SELECT COUNT(*) FROM share_pulled_objects WHERE imported = ?", (state,))[0][0])
