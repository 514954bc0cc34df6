"""The TAXII 2.1 server's semantics over ``store.taxii``: who sees what, writes, statuses, audit.

Storage (keyset pages, first/last version flags, audiences) is :class:`~stormwatch.store.repos.taxii.TaxiiRepo`;
the HTTP surface is :mod:`stormwatch.intel.taxii.app`. This module decides:

* what a caller may read or write: the collection's permission rows (for the caller's name or
  ``*``) and the embedding app's gate (API roles / scopes) must both allow it; a collection the
  caller may neither read nor write is a 404, never revealing that it exists;
* TLP:RED objects carry an audience (the principals named for them); everyone else never sees them,
  whatever the collection permissions;
* a posted envelope is validated whole (:mod:`.validate`; one bad object: 422, nothing stored),
  objects claiming to be ours are refused unless the caller is trusted (403, audited), and every
  stored envelope and every deletion is appended to the audit chain in the same transaction.
"""

from __future__ import annotations

import hashlib
import re
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stormwatch.intel import STIX_MEDIA_TYPE
from stormwatch.intel.taxii.query import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    Query,
    TaxiiError,
    encode_next,
    fixed_ts,
    norm_ts,
    parse_query,
)
from stormwatch.intel.taxii.validate import UNVERSIONED, check_object
from stormwatch.intel.tlp import Tlp, object_tlp
from stormwatch.store import Store
from stormwatch.store.repos.audit import AuditEvent
from stormwatch.store.repos.taxii import ApiRoot, CollectionRow, NewObject, Permission, StatusRow, StoredObject

__all__ = [
    "ANY_PRINCIPAL",
    "DEFAULT_MAX_CONTENT_LENGTH",
    "DEFAULT_PAGE_SIZE",
    "DEFAULT_ROOT",
    "MAX_PAGE_SIZE",
    "Caller",
    "Collection",
    "Page",
    "Query",
    "TaxiiError",
    "add_objects",
    "create_collection",
    "delete_object",
    "ensure_root",
    "get_collection",
    "get_root",
    "get_status",
    "grant",
    "list_collections",
    "list_roots",
    "norm_ts",
    "object_exists",
    "our_identity_ids",
    "page",
    "parse_query",
]

DEFAULT_ROOT = "api1"
DEFAULT_TITLE = "stormwatch threat intelligence"
DEFAULT_MAX_CONTENT_LENGTH = 64 * 1024 * 1024
ANY_PRINCIPAL = "*"
_AUDIT_MAX_IDS = 1000

_clock_lock = threading.Lock()
_last_added: list[datetime] = [datetime(1970, 1, 1, tzinfo=UTC)]


def _next_added(n: int) -> list[str]:
    """``n`` strictly increasing date_added values (one per object, 1 µs apart)."""
    with _clock_lock:
        start = max(datetime.now(UTC), _last_added[0] + timedelta(microseconds=1))
        out = [start + timedelta(microseconds=i) for i in range(n)]
        if out:
            _last_added[0] = out[-1]
    return [fixed_ts(t) for t in out]


# -- principals ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the TAXII server: a name (matched against collection permissions)."""

    name: str
    #: extra gate from the embedding app (roles/scopes): (permission, collection_id) -> allowed
    gate: Any = None
    #: may publish versions of our own objects (API admin tokens, ``stormwatch intel taxii publish``)
    trusted: bool = False
    #: how the audit log names the caller (default ``taxii:<name>``)
    actor: str | None = None

    @property
    def audit_actor(self) -> str:
        return self.actor or f"taxii:{self.name}"

    def app_allows(self, permission: str, collection_id: str) -> bool:
        return True if self.gate is None else bool(self.gate(permission, collection_id))


@dataclass(frozen=True, slots=True)
class Collection:
    id: str
    root: str
    title: str
    description: str | None
    alias: str | None
    can_read: bool
    can_write: bool
    red_named: bool

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "can_read": self.can_read,
            "can_write": self.can_write,
            "media_types": [STIX_MEDIA_TYPE],
        }
        if self.description:
            out["description"] = self.description
        if self.alias:
            out["alias"] = self.alias
        return out


# -- administration ------------------------------------------------------------------------------
def ensure_root(
    store: Store,
    root: str = DEFAULT_ROOT,
    *,
    title: str = DEFAULT_TITLE,
    description: str | None = None,
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.~-]{1,64}", root):
        raise ValueError(f"bad API root name {root!r}")
    if max_content_length <= 0:
        raise ValueError(f"max_content_length must be positive, got {max_content_length}")
    if store.taxii.add_root(ApiRoot(root, title, description, max_content_length, fixed_ts(datetime.now(UTC)))):
        store.commit()


def create_collection(
    store: Store,
    title: str,
    *,
    root: str = DEFAULT_ROOT,
    description: str | None = None,
    alias: str | None = None,
    collection_id: str | None = None,
) -> str:
    ensure_root(store, root)
    cid = collection_id or str(uuid.uuid4())
    store.taxii.add_collection(CollectionRow(cid, root, title, description, alias, fixed_ts(datetime.now(UTC))))
    store.commit()
    return cid


def grant(
    store: Store, collection_id: str, principal: str, *, read: bool = True, write: bool = False,
    red_named: bool = False,
) -> None:  # fmt: skip
    """Let ``principal`` (a token name, or ``*`` for every authenticated caller) read/write a collection.

    ``red_named`` names the principal for TLP:RED objects *posted* into the collection; the
    wildcard can never be named for RED.
    """
    if principal == ANY_PRINCIPAL and red_named:
        raise ValueError("TLP:RED needs named recipients: '*' cannot be red_named")
    store.taxii.set_permission(Permission(collection_id, principal, read, write, red_named))
    store.commit()


# -- reads ---------------------------------------------------------------------------------------
def get_root(store: Store, root: str) -> dict[str, Any]:
    """The API root resource. The default root (``api1``) always exists, with defaults until a row names it."""
    row = store.taxii.root(root)
    if row is None and root != DEFAULT_ROOT:
        raise TaxiiError(404, "Unknown API root", f"there is no API root {root!r}")
    title, description, mcl = (
        (row.title, row.description, row.max_content_length)
        if row is not None
        else (DEFAULT_TITLE, None, DEFAULT_MAX_CONTENT_LENGTH)
    )
    out: dict[str, Any] = {
        "title": title,
        "versions": ["application/taxii+json;version=2.1"],
        "max_content_length": int(mcl),
    }
    if description:
        out["description"] = description
    return out


def list_roots(store: Store) -> list[str]:
    """API roots, the default one first (it exists from the start, even before its first collection)."""
    return [DEFAULT_ROOT, *(r for r in store.taxii.roots() if r != DEFAULT_ROOT)]


def _perm(store: Store, collection_id: str, caller: Caller) -> tuple[bool, bool, bool]:
    read = write = red = False
    for p in store.taxii.permissions(collection_id, [caller.name, ANY_PRINCIPAL]):
        read = read or p.can_read
        write = write or p.can_write
        red = red or (p.red_named and p.principal == caller.name)
    read = read and caller.app_allows("taxii:read", collection_id)
    write = write and caller.app_allows("taxii:write", collection_id)
    return read, write, red


def _collection(row: CollectionRow, perm: tuple[bool, bool, bool]) -> Collection:
    return Collection(row.id, row.root, row.title, row.description, row.alias, *perm)


def list_collections(store: Store, root: str, caller: Caller) -> list[Collection]:
    get_root(store, root)
    out = []
    for row in store.taxii.collections(root):
        perm = _perm(store, row.id, caller)
        if perm[0] or perm[1]:
            out.append(_collection(row, perm))
    return out


def get_collection(store: Store, root: str, collection_id: str, caller: Caller) -> Collection:
    get_root(store, root)
    row = store.taxii.collection(collection_id, root)
    perm = _perm(store, collection_id, caller) if row is not None else (False, False, False)
    if row is None or not (perm[0] or perm[1]):
        # the spec allows 403 or 404; 404 does not reveal that the collection exists
        raise TaxiiError(404, "Unknown collection", f"there is no collection {collection_id!r} in {root!r}")
    return _collection(row, perm)


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[StoredObject]
    more: bool
    next: str | None

    @property
    def first_added(self) -> str | None:
        return self.rows[0].date_added if self.rows else None

    @property
    def last_added(self) -> str | None:
        return self.rows[-1].date_added if self.rows else None


def page(
    store: Store, collection_id: str, caller: Caller, q: Query, *, scope: str, object_id: str | None = None
) -> Page:
    """One page of the versions matching ``q`` that ``caller`` may see, in (date_added, seq) order."""
    rows = store.taxii.page(collection_id, q.filter(object_id), reader=caller.name, limit=q.limit + 1)
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    nxt = encode_next(rows[-1].date_added, rows[-1].seq, q.digest(scope)) if more and rows else None
    return Page(rows, more, nxt)


def object_exists(store: Store, collection_id: str, object_id: str, caller: Caller) -> bool:
    return store.taxii.object_visible(collection_id, object_id, reader=caller.name)


# -- writes --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Incoming:
    obj: dict[str, Any]
    body: str
    version: str
    vkey: str
    tlp: Tlp
    audience: tuple[str, ...] | None


def add_objects(
    store: Store,
    root: str,
    collection_id: str,
    caller: Caller,
    objects: Sequence[Any],
    *,
    red_audience: Sequence[str] | None = None,
    audience_for: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Store a posted envelope's objects in one transaction and return the status resource.

    Any invalid object rejects the whole request (422, nothing stored): a partner's bad object
    never poisons a collection. The same id + version posted again is a success (idempotent).
    Objects that claim to be ours (``created_by_ref`` one of our producer identities, or an id we
    minted) are refused (403, nothing stored, the attempt audited) unless the caller is trusted.
    Every stored envelope is appended to the audit chain in the same transaction.
    TLP:RED (and unknown markings) get an audience: ``red_audience`` when given (our exporters pass
    the recipient's principals), else the poster plus the collection's red-named principals.
    ``audience_for`` can name the audience of individual objects (by id).
    """
    failures = []
    checked: list[dict[str, Any]] = []
    for i, raw in enumerate(objects):
        err, obj = check_object(raw, i)
        if err is not None or obj is None:
            failures.append({"id": raw.get("id") if isinstance(raw, dict) else None, "message": err})
        else:
            checked.append(obj)
    if failures:
        raise TaxiiError(
            422,
            "Unprocessable objects",
            f"{len(failures)} of {len(objects)} objects are invalid; nothing was stored",
            failures=failures[:100],
        )
    if not caller.trusted:
        forged = _claims_to_be_ours(store, checked)
        if forged:
            _audit(store, caller, "taxii.objects.refused", root, collection_id, {
                "reason": "objects claim our identity", "objects": len(objects), **_id_evidence(forged),
            })  # fmt: skip
            store.commit()
            raise TaxiiError(
                403,
                "Forbidden",
                f"{len(forged)} of {len(objects)} objects claim to be ours (our identity as created_by_ref, "
                "or an id we minted); only the exporter or an admin may publish them; nothing was stored",
                failures=[{"id": oid, "message": "claims our identity"} for oid in forged[:100]],
            )
    if red_audience is None:
        red_audience = sorted({caller.name, *store.taxii.red_named(collection_id)})
    red_aud = tuple(sorted(set(red_audience)))
    request_ts = fixed_ts(datetime.now(UTC))
    incoming: list[_Incoming] = []
    for obj in checked:
        version_src = obj.get("modified") or obj.get("created")
        tlp = object_tlp(obj, default=Tlp.CLEAR)
        aud: tuple[str, ...] | None = None
        if audience_for is not None and obj["id"] in audience_for:
            aud = tuple(sorted(set(audience_for[obj["id"]])))
        elif tlp == Tlp.RED:
            aud = red_aud
        vkey = norm_ts(version_src) if version_src else ""
        incoming.append(_Incoming(obj, orjson.dumps(obj).decode(), str(version_src or ""), vkey, tlp, aud))
    try:
        successes = _insert(store, collection_id, incoming)
        status_id = str(uuid.uuid4())
        status = StatusRow(
            id=status_id, root=root, principal=caller.name, status="complete", request_timestamp=request_ts,
            total_count=len(objects), success_count=len(successes), failure_count=0, pending_count=0,
            successes=successes, failures=[], pendings=[],
        )  # fmt: skip
        stored = [x["id"] for x in successes if "message" not in x]
        _audit(store, caller, "taxii.objects.added", root, collection_id, {
            "status_id": status_id, "objects": len(objects), "stored": len(stored), **_id_evidence(stored),
        })  # fmt: skip
        store.taxii.add_status(status)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return _status_resource(status)


def _id_evidence(ids: Sequence[str]) -> dict[str, Any]:
    """Object ids for an audit entry: all of them up to 1000, else the first 1000 and a digest of all."""
    out: dict[str, Any] = {"ids": list(ids[:_AUDIT_MAX_IDS])}
    if len(ids) > _AUDIT_MAX_IDS:
        out["ids_truncated"] = True
        out["ids_sha256"] = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return out


def _audit(store: Store, caller: Caller, action: str, root: str, collection_id: str, evidence: dict[str, Any]) -> None:
    """Append a TAXII write to the hash-chained audit log, in the caller's transaction."""
    store.audit.append(
        AuditEvent(caller.audit_actor, action, f"taxii-collection:{collection_id}", {"root": root, **evidence})
    )


def our_identity_ids(store: Store) -> set[str]:
    """The producer identities our exports have used."""
    return store.intel.producer_identity_ids()


def _claims_to_be_ours(store: Store, objs: Sequence[dict[str, Any]]) -> list[str]:
    """Ids of posted objects that carry our identity as ``created_by_ref`` or reuse an id we minted."""
    ours = our_identity_ids(store)
    minted = store.intel.minted(str(o["id"]) for o in objs)
    return [str(o["id"]) for o in objs if o.get("created_by_ref") in ours or o["id"] in minted or o["id"] in ours]


def _insert(store: Store, collection_id: str, incoming: list[_Incoming]) -> list[dict[str, Any]]:
    """Store the versions not stored yet; return the status resource's ``successes``."""
    have: dict[str, list[str]] = {}
    for v in store.taxii.version_keys(collection_id, (i.obj["id"] for i in incoming)):
        have.setdefault(v.stix_id, []).append(v.vkey)
    successes: list[dict[str, Any]] = []
    rows: list[NewObject] = []
    for inc, date_added in zip(incoming, _next_added(len(incoming)), strict=True):
        sid = inc.obj["id"]
        versions = have.setdefault(sid, [])
        if inc.obj["type"] in UNVERSIONED and versions and not inc.obj.get("modified"):
            successes.append({"id": sid, "version": inc.version or versions[0], "message": "already present"})
            continue
        vkey = inc.vkey or date_added
        if vkey in versions:
            successes.append({"id": sid, "version": inc.version or vkey, "message": "already present"})
            continue
        versions.append(vkey)
        version = inc.version or date_added
        rows.append(
            NewObject(collection_id, sid, inc.obj["type"], version, vkey, "2.1", date_added, int(inc.tlp),
                      inc.audience, inc.body)
        )  # fmt: skip
        successes.append({"id": sid, "version": version})
    store.taxii.add_objects(rows)
    return successes


def delete_object(
    store: Store, collection_id: str, object_id: str, q: Query, *, caller: Caller, root: str = DEFAULT_ROOT
) -> int:
    """Delete versions of an object (``match[version]`` / ``match[spec_version]``); flags recomputed.

    The deletion is appended to the audit chain in the same transaction.
    """
    try:
        gone = store.taxii.delete_versions(collection_id, object_id, q.filter(object_id))
        if gone:
            _audit(store, caller, "taxii.object.deleted", root, collection_id, {
                "ids": [object_id], "versions": gone[:_AUDIT_MAX_IDS], "deleted": len(gone),
            })  # fmt: skip
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return len(gone)


def _status_resource(s: StatusRow) -> dict[str, Any]:
    return {
        "id": s.id,
        "status": s.status,
        "request_timestamp": s.request_timestamp,
        "total_count": s.total_count,
        "success_count": s.success_count,
        "failure_count": s.failure_count,
        "pending_count": s.pending_count,
        "successes": s.successes,
        "failures": s.failures,
        "pendings": s.pendings,
    }


def get_status(store: Store, root: str, status_id: str, caller: Caller) -> dict[str, Any]:
    row = store.taxii.status(root, status_id)
    if row is None or row.principal != caller.name:
        raise TaxiiError(404, "Unknown status", f"there is no status {status_id!r}")
    return _status_resource(row)
