"""TAXII 2.1 storage over the stormwatch store (both backends): collections, objects, status.

Pagination is keyset pagination on ``(date_added, seq)`` with an opaque, stateless ``next``
token (the position plus a digest of the filters), so a token stays valid for as long as the
objects exist — minutes or days later — and a page costs the same at any depth of any collection
(indexed range scans, no OFFSET, no in-memory cursor). ``date_added`` is assigned by the server,
strictly increasing within a process.

Each stored version carries ``is_first`` / ``is_last`` flags kept up to date on insert, so the
default ``match[version]=last`` is an index range scan too. TLP:RED objects carry an audience (the
principals named for them); everyone else never sees them, whatever the collection permissions.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from stormwatch.intel import STIX_MEDIA_TYPE
from stormwatch.intel.ids import parse_time
from stormwatch.intel.tlp import Tlp, object_tlp
from stormwatch.store import Store

DEFAULT_ROOT = "api1"
DEFAULT_MAX_CONTENT_LENGTH = 64 * 1024 * 1024
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
ANY_PRINCIPAL = "*"

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_ID_RE = re.compile(r"^([a-z][a-z0-9-]{1,248}[a-z0-9])--" + _UUID + "$")
_SCO_TYPES = frozenset(
    {
        "artifact", "autonomous-system", "directory", "domain-name", "email-addr", "email-message", "file",
        "ipv4-addr", "ipv6-addr", "mac-addr", "mutex", "network-traffic", "process", "software", "url",
        "user-account", "windows-registry-key", "x509-certificate",
    }
)  # fmt: skip
_UNVERSIONED = _SCO_TYPES | {"marking-definition"}


class TaxiiError(Exception):
    """An error the routes turn into a TAXII error resource."""

    def __init__(self, status: int, title: str, description: str = "", **details: Any) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.description = description
        self.details = details

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, "http_status": str(self.status)}
        if self.description:
            out["description"] = self.description
        if self.details:
            out["details"] = self.details
        return out


def _fixed(dt: datetime) -> str:
    """Fixed-width UTC timestamp (microseconds): sorts as text on both backends."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def norm_ts(value: str) -> str:
    try:
        return _fixed(parse_time(value))
    except (ValueError, TypeError, OverflowError):
        raise TaxiiError(400, "Bad timestamp", f"{value!r} is not an RFC 3339 timestamp") from None


def display_ts(fixed: str) -> str:
    """Our stored date_added as a STIX timestamp (millisecond precision kept exact: microseconds)."""
    return fixed


_clock_lock = threading.Lock()
_last_added: list[datetime] = [datetime(1970, 1, 1, tzinfo=UTC)]


def _next_added(n: int) -> list[str]:
    """``n`` strictly increasing date_added values (one per object, 1 µs apart)."""
    with _clock_lock:
        start = max(datetime.now(UTC), _last_added[0] + timedelta(microseconds=1))
        out = [start + timedelta(microseconds=i) for i in range(n)]
        if out:
            _last_added[0] = out[-1]
    return [_fixed(t) for t in out]


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
    title: str = "stormwatch threat intelligence",
    description: str | None = None,
    max_content_length: int = DEFAULT_MAX_CONTENT_LENGTH,
) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_.~-]{1,64}", root):
        raise ValueError(f"bad API root name {root!r}")
    if not store.query("SELECT 1 FROM taxii_api_roots WHERE root = ?", (root,)):
        store.execute(
            "INSERT INTO taxii_api_roots (root, title, description, max_content_length, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (root, title, description, max_content_length, _fixed(datetime.now(UTC))),
        )
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
    store.execute(
        "INSERT INTO taxii_collections (id, root, title, description, alias, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (cid, root, title, description, alias, _fixed(datetime.now(UTC))),
    )
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
    store.execute("DELETE FROM taxii_permissions WHERE collection_id = ? AND principal = ?", (collection_id, principal))
    store.execute(
        "INSERT INTO taxii_permissions (collection_id, principal, can_read, can_write, red_named) "
        "VALUES (?, ?, ?, ?, ?)",
        (collection_id, principal, int(read), int(write), int(red_named)),
    )
    store.commit()


# -- reads ---------------------------------------------------------------------------------------
_DEFAULT_ROOT_ROW: tuple[str, str | None, int] = ("stormwatch threat intelligence", None, DEFAULT_MAX_CONTENT_LENGTH)


def get_root(store: Store, root: str) -> dict[str, Any]:
    """The API root resource. The default root (``api1``) always exists, with defaults until a row names it."""
    rows = store.query("SELECT title, description, max_content_length FROM taxii_api_roots WHERE root = ?", (root,))
    if not rows and root != DEFAULT_ROOT:
        raise TaxiiError(404, "Unknown API root", f"there is no API root {root!r}")
    title, description, mcl = rows[0] if rows else _DEFAULT_ROOT_ROW
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
    rows = [str(r[0]) for r in store.query("SELECT root FROM taxii_api_roots ORDER BY created_at, root")]
    return [DEFAULT_ROOT, *(r for r in rows if r != DEFAULT_ROOT)]


def _perm(store: Store, collection_id: str, caller: Caller) -> tuple[bool, bool, bool]:
    rows = store.query(
        "SELECT principal, can_read, can_write, red_named FROM taxii_permissions "
        "WHERE collection_id = ? AND principal IN (?, ?)",
        (collection_id, caller.name, ANY_PRINCIPAL),
    )
    read = write = red = False
    for principal, r, w, rn in rows:
        read = read or bool(r)
        write = write or bool(w)
        red = red or (bool(rn) and principal == caller.name)
    read = read and caller.app_allows("taxii:read", collection_id)
    write = write and caller.app_allows("taxii:write", collection_id)
    return read, write, red


def list_collections(store: Store, root: str, caller: Caller) -> list[Collection]:
    get_root(store, root)
    out = []
    for cid, title, description, alias in store.query(
        "SELECT id, title, description, alias FROM taxii_collections WHERE root = ? ORDER BY created_at, id", (root,)
    ):
        read, write, red = _perm(store, str(cid), caller)
        if read or write:
            out.append(Collection(str(cid), root, title, description, alias, read, write, red))
    return out


def get_collection(store: Store, root: str, collection_id: str, caller: Caller) -> Collection:
    get_root(store, root)
    rows = store.query(
        "SELECT title, description, alias FROM taxii_collections WHERE root = ? AND id = ?", (root, collection_id)
    )
    if not rows:
        raise TaxiiError(404, "Unknown collection", f"there is no collection {collection_id!r} in {root!r}")
    read, write, red = _perm(store, collection_id, caller)
    if not (read or write):
        # the spec allows 403 or 404; 404 does not reveal that the collection exists
        raise TaxiiError(404, "Unknown collection", f"there is no collection {collection_id!r} in {root!r}")
    title, description, alias = rows[0]
    return Collection(collection_id, root, title, description, alias, read, write, red)


@dataclass(slots=True)
class Query:
    """Parsed GET parameters of objects / manifest / versions."""

    limit: int = DEFAULT_PAGE_SIZE
    added_after: str | None = None
    ids: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)
    versions: list[str] = field(default_factory=lambda: ["last"])
    spec_versions: list[str] = field(default_factory=list)
    next: tuple[str, int] | None = None

    def digest(self, scope: str) -> str:
        key = orjson.dumps(
            [scope, self.added_after, sorted(self.ids), sorted(self.types), sorted(self.versions),
             sorted(self.spec_versions)]
        )  # fmt: skip
        return hashlib.sha256(key).hexdigest()[:16]


def _split(values: Iterable[str]) -> list[str]:
    return [v.strip() for raw in values for v in raw.split(",") if v.strip()]


def parse_query(params: Mapping[str, list[str]], *, allowed: set[str], scope: str) -> Query:
    """Parse and check query parameters (400 on anything malformed or unknown to the endpoint)."""
    q = Query()
    for key, values in params.items():
        if key not in allowed:
            raise TaxiiError(400, "Unsupported parameter", f"{key!r} is not supported on this endpoint")
        if any("\x00" in v for v in values):
            raise TaxiiError(400, "Bad parameter", f"{key!r} contains a NUL character")
    if "limit" in params:
        raw = params["limit"][-1]
        try:
            n = int(raw)
        except ValueError:
            raise TaxiiError(400, "Bad limit", f"limit must be a positive integer, got {raw!r}") from None
        if n <= 0:
            raise TaxiiError(400, "Bad limit", f"limit must be a positive integer, got {raw!r}")
        q.limit = min(n, MAX_PAGE_SIZE)
    if "added_after" in params:
        q.added_after = norm_ts(params["added_after"][-1])
    q.ids = _split(params.get("match[id]", []))
    q.types = _split(params.get("match[type]", []))
    if "match[version]" in params:
        vs = _split(params["match[version]"])
        q.versions = [v if v in ("all", "first", "last") else norm_ts(v) for v in vs] or ["last"]
    q.spec_versions = _split(params.get("match[spec_version]", []))
    if "next" in params:
        q.next = _decode_next(params["next"][-1], q.digest(scope))
    return q


def _encode_next(date_added: str, seq: int, digest: str) -> str:
    raw = orjson.dumps([date_added, seq, digest])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_MAX_SEQ = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER on SQLite


def _decode_next(token: str, digest: str) -> tuple[str, int]:
    """The position in a ``next`` token; 400 for anything this server cannot have issued."""
    try:
        if len(token) > 512:
            raise ValueError
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        decoded = orjson.loads(raw)
        if not isinstance(decoded, list) or len(decoded) != 3:
            raise ValueError
        date_added, seq, dig = decoded
        if not isinstance(date_added, str) or not isinstance(dig, str) or len(date_added) > 64:
            raise ValueError
        if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= _MAX_SEQ:
            raise ValueError
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise TaxiiError(400, "Bad next", "the next token is not one this server issued") from None
    if dig != digest:
        raise TaxiiError(
            400, "Bad next", "the next token belongs to a different query: repeat the same filters with it"
        )
    return norm_ts(date_added), seq


@dataclass(slots=True)
class Page:
    rows: list[tuple[Any, ...]]
    more: bool
    next: str | None

    @property
    def first_added(self) -> str | None:
        return str(self.rows[0][0]) if self.rows else None

    @property
    def last_added(self) -> str | None:
        return str(self.rows[-1][0]) if self.rows else None


def _like_escape(name: str) -> str:
    return name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def page(
    store: Store,
    collection_id: str,
    caller: Caller,
    q: Query,
    columns: str,
    *,
    scope: str,
    object_id: str | None = None,
) -> Page:
    """One page of rows ``(date_added, seq, <columns>)`` matching ``q``, in (date_added, seq) order."""
    where = ["collection_id = ?"]
    args: list[Any] = [collection_id]
    if object_id is not None:
        where.append("stix_id = ?")
        args.append(object_id)
    vs = set(q.versions)
    if "all" not in vs:
        conds = []
        if "last" in vs:
            conds.append("is_last = 1")
        if "first" in vs:
            conds.append("is_first = 1")
        stamps = [v for v in vs if v not in ("first", "last")]
        if stamps:
            conds.append("vkey IN (" + ", ".join("?" for _ in stamps) + ")")
            args.extend(stamps)
        where.append(conds[0] if len(conds) == 1 else "(" + " OR ".join(conds) + ")")
    if q.ids:
        where.append("stix_id IN (" + ", ".join("?" for _ in q.ids) + ")")
        args.extend(q.ids)
    if q.types:
        where.append("stix_type IN (" + ", ".join("?" for _ in q.types) + ")")
        args.extend(q.types)
    if q.spec_versions:
        where.append("spec_version IN (" + ", ".join("?" for _ in q.spec_versions) + ")")
        args.extend(q.spec_versions)
    if q.added_after:
        where.append("date_added > ?")
        args.append(q.added_after)
    if q.next:
        where.append("(date_added, seq) > (?, ?)")
        args.extend(q.next)
    where.append("(audience IS NULL OR audience LIKE ? ESCAPE '\\')")
    args.append(f"%|{_like_escape(caller.name)}|%")
    sql = (
        f"SELECT date_added, seq, {columns} FROM taxii_objects WHERE {' AND '.join(where)} "
        f"ORDER BY date_added, seq LIMIT {int(q.limit) + 1}"
    )
    rows = store.query(sql, args)
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    nxt = _encode_next(str(rows[-1][0]), int(rows[-1][1]), q.digest(scope)) if more and rows else None
    return Page(rows, more, nxt)


def object_exists(store: Store, collection_id: str, object_id: str, caller: Caller) -> bool:
    return bool(
        store.query(
            "SELECT 1 FROM taxii_objects WHERE collection_id = ? AND stix_id = ? "
            "AND (audience IS NULL OR audience LIKE ? ESCAPE '\\') LIMIT 1",
            (collection_id, object_id, f"%|{_like_escape(caller.name)}|%"),
        )
    )


# -- writes --------------------------------------------------------------------------------------
def _check(obj: Any, i: int) -> tuple[str | None, dict[str, Any] | None]:
    """(error message, object) for one posted object."""
    if not isinstance(obj, dict):
        return f"object #{i} is not a JSON object", None
    oid = obj.get("id")
    if not isinstance(oid, str) or not _ID_RE.match(oid):
        return f"object #{i}: missing or malformed id", None
    typ = obj.get("type")
    if typ != oid.split("--", 1)[0]:
        return f"{oid}: type {typ!r} does not match the id", None
    if obj.get("spec_version") != "2.1":
        return f"{oid}: spec_version must be '2.1' (got {obj.get('spec_version')!r})", None
    for key in ("created", "modified"):
        if key in obj:
            if not isinstance(obj[key], str):
                return f"{oid}: {key} must be a timestamp", None
            try:
                parse_time(obj[key])
            except (ValueError, OverflowError):
                return f"{oid}: {key} {obj[key]!r} is not a timestamp", None
    if typ not in _SCO_TYPES:
        if "created" not in obj:
            return f"{oid}: created is required", None
        if typ != "marking-definition" and "modified" not in obj:
            return f"{oid}: modified is required", None
        if "modified" in obj and parse_time(obj["modified"]) < parse_time(obj["created"]):
            return f"{oid}: modified is earlier than created", None
    refs = obj.get("object_marking_refs", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        return f"{oid}: object_marking_refs must be a list of ids", None
    cbr = obj.get("created_by_ref")
    if cbr is not None and not (isinstance(cbr, str) and cbr.startswith("identity--") and _ID_RE.match(cbr)):
        return f"{oid}: created_by_ref must be an identity id", None
    if typ == "indicator":
        err = _check_indicator(obj)
        if err is not None:
            return f"{oid}: {err}", None
    return None, obj


def _check_indicator(obj: dict[str, Any]) -> str | None:
    """Why an indicator is not a valid STIX 2.1 indicator (None: it is): pattern, pattern_type, valid_from."""
    pattern, ptype = obj.get("pattern"), obj.get("pattern_type")
    if not isinstance(pattern, str) or not pattern.strip():
        return "an indicator needs a pattern"
    if not isinstance(ptype, str) or not ptype:
        return "an indicator needs a pattern_type"
    valid_from = obj.get("valid_from")
    if not isinstance(valid_from, str):
        return "an indicator needs valid_from"
    try:
        parse_time(valid_from)
    except (ValueError, OverflowError):
        return f"valid_from {valid_from!r} is not a timestamp"
    if ptype == "stix":
        from stix2patterns.validator import run_validator

        try:
            errors = run_validator(pattern, stix_version="2.1")
        except Exception as exc:  # the validator raises for some inputs instead of reporting them
            errors = [str(exc) or type(exc).__name__]
        if errors:
            return f"pattern {pattern[:200]!r} is not a valid STIX 2.1 pattern: {errors[0]}"
    return None


@dataclass(slots=True)
class Incoming:
    obj: dict[str, Any]
    body: str
    version: str
    vkey: str
    tlp: Tlp
    audience: str | None


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
        err, obj = _check(raw, i)
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
        named = [
            str(r[0])
            for r in store.query(
                "SELECT principal FROM taxii_permissions WHERE collection_id = ? AND red_named = 1", (collection_id,)
            )
        ]
        red_audience = sorted({caller.name, *named})
    red_aud = "|" + "|".join(sorted(set(red_audience))) + "|" if red_audience else "||"
    request_ts = _fixed(datetime.now(UTC))
    incoming: list[Incoming] = []
    for obj in checked:
        version_src = obj.get("modified") or obj.get("created")
        tlp = object_tlp(obj, default=Tlp.CLEAR)
        aud: str | None = None
        if audience_for is not None and obj["id"] in audience_for:
            names = audience_for[obj["id"]]
            aud = "|" + "|".join(sorted(set(names))) + "|" if names else "||"
        elif tlp == Tlp.RED:
            aud = red_aud
        vkey = norm_ts(version_src) if version_src else ""
        incoming.append(Incoming(obj, orjson.dumps(obj).decode(), str(version_src or ""), vkey, tlp, aud))
    successes: list[dict[str, Any]] = []
    try:
        _insert(store, collection_id, incoming, successes)
        status_id = str(uuid.uuid4())
        status = {
            "id": status_id,
            "status": "complete",
            "request_timestamp": request_ts,
            "total_count": len(objects),
            "success_count": len(successes),
            "successes": successes,
            "failure_count": 0,
            "failures": [],
            "pending_count": 0,
            "pendings": [],
        }
        stored = [x["id"] for x in successes if "message" not in x]
        _audit(store, caller, "taxii.objects.added", root, collection_id, {
            "status_id": status_id, "objects": len(objects), "stored": len(stored), **_id_evidence(stored),
        })  # fmt: skip
        store.execute(
            "INSERT INTO taxii_status (id, root, principal, status, request_timestamp, total_count, success_count, "
            "failure_count, pending_count, successes, failures, pendings) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                status_id, root, caller.name, "complete", request_ts, len(objects), len(successes), 0, 0,
                orjson.dumps(successes).decode(), "[]", "[]",
            ),
        )  # fmt: skip
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return status


_AUDIT_MAX_IDS = 1000


def _id_evidence(ids: Sequence[str]) -> dict[str, Any]:
    """Object ids for an audit entry: all of them up to 1000, else the first 1000 and a digest of all."""
    out: dict[str, Any] = {"ids": list(ids[:_AUDIT_MAX_IDS])}
    if len(ids) > _AUDIT_MAX_IDS:
        out["ids_truncated"] = True
        out["ids_sha256"] = hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()
    return out


def _audit(store: Store, caller: Caller, action: str, root: str, collection_id: str, evidence: dict[str, Any]) -> None:
    """Append a TAXII write to the hash-chained audit log, in the caller's transaction."""
    from stormwatch.disrupt.audit import AuditEvent, track_event

    track_event(
        store,
        AuditEvent(caller.audit_actor, action, f"taxii-collection:{collection_id}", {"root": root, **evidence}),
    )


def our_identity_ids(store: Store) -> set[str]:
    """The producer identities our exports have used (``share_stix_ids``)."""
    return {
        str(r[0]) for r in store.query("SELECT stix_id FROM share_stix_ids WHERE key LIKE ?", ("identity:producer:%",))
    }


def _claims_to_be_ours(store: Store, objs: Sequence[dict[str, Any]]) -> list[str]:
    """Ids of posted objects that carry our identity as ``created_by_ref`` or reuse an id we minted."""
    ours = our_identity_ids(store)
    ids = sorted({str(o["id"]) for o in objs})
    minted: set[str] = set()
    for k in range(0, len(ids), 500):
        chunk = ids[k : k + 500]
        marks = ", ".join("?" for _ in chunk)
        minted.update(
            str(r[0]) for r in store.query(f"SELECT stix_id FROM share_stix_ids WHERE stix_id IN ({marks})", chunk)
        )
    return [str(o["id"]) for o in objs if o.get("created_by_ref") in ours or o["id"] in minted or o["id"] in ours]


def _insert(store: Store, collection_id: str, incoming: list[Incoming], successes: list[dict[str, Any]]) -> None:
    ids = sorted({i.obj["id"] for i in incoming})
    existing: dict[str, list[tuple[str, int]]] = {}
    for k in range(0, len(ids), 500):
        chunk = ids[k : k + 500]
        marks = ", ".join("?" for _ in chunk)
        for sid, vkey, seq in store.query(
            f"SELECT stix_id, vkey, seq FROM taxii_objects WHERE collection_id = ? AND stix_id IN ({marks})",
            [collection_id, *chunk],
        ):
            existing.setdefault(str(sid), []).append((str(vkey), int(seq)))
    added = _next_added(len(incoming))
    rows: list[tuple[Any, ...]] = []
    touched: set[str] = set()
    for inc, date_added in zip(incoming, added, strict=True):
        sid = inc.obj["id"]
        have = existing.setdefault(sid, [])
        vkey = inc.vkey
        if inc.obj["type"] in _UNVERSIONED and have and not inc.obj.get("modified"):
            successes.append({"id": sid, "version": inc.version or have[0][0], "message": "already present"})
            continue
        if not vkey:
            vkey = date_added
        if any(v == vkey for v, _ in have):
            successes.append({"id": sid, "version": inc.version or vkey, "message": "already present"})
            continue
        have.append((vkey, -1))
        if len(have) > 1:
            touched.add(sid)
        version = inc.version or date_added
        rows.append(
            (collection_id, sid, inc.obj["type"], version, vkey, "2.1", date_added, 1, 1, int(inc.tlp),
             inc.audience, inc.body)
        )  # fmt: skip
        successes.append({"id": sid, "version": version})
    if rows:
        store.executemany(
            "INSERT INTO taxii_objects (collection_id, stix_id, stix_type, version, vkey, spec_version, date_added, "
            "is_first, is_last, tlp, audience, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    for sid in sorted(touched):  # recompute first/last flags of objects that gained a version
        versions = sorted(
            (str(v), int(s)) for v, s in store.query(
                "SELECT vkey, seq FROM taxii_objects WHERE collection_id = ? AND stix_id = ?", (collection_id, sid)
            )
        )  # fmt: skip
        store.execute(
            "UPDATE taxii_objects SET is_first = 0, is_last = 0 WHERE collection_id = ? AND stix_id = ?",
            (collection_id, sid),
        )
        store.execute("UPDATE taxii_objects SET is_first = 1 WHERE seq = ?", (versions[0][1],))
        store.execute("UPDATE taxii_objects SET is_last = 1 WHERE seq = ?", (versions[-1][1],))


def delete_object(
    store: Store, collection_id: str, object_id: str, q: Query, *, caller: Caller, root: str = DEFAULT_ROOT
) -> int:
    """Delete versions of an object (``match[version]`` / ``match[spec_version]``); flags recomputed.

    The deletion is appended to the audit chain in the same transaction.
    """
    where = ["collection_id = ?", "stix_id = ?"]
    args: list[Any] = [collection_id, object_id]
    vs = set(q.versions)
    if "all" not in vs:
        conds = []
        if "last" in vs:
            conds.append("is_last = 1")
        if "first" in vs:
            conds.append("is_first = 1")
        stamps = [v for v in vs if v not in ("first", "last")]
        if stamps:
            conds.append("vkey IN (" + ", ".join("?" for _ in stamps) + ")")
            args.extend(stamps)
        where.append("(" + " OR ".join(conds) + ")")
    if q.spec_versions:
        where.append("spec_version IN (" + ", ".join("?" for _ in q.spec_versions) + ")")
        args.extend(q.spec_versions)
    try:
        gone = store.query(f"SELECT version FROM taxii_objects WHERE {' AND '.join(where)}", args)
        n = len(gone)
        store.execute(f"DELETE FROM taxii_objects WHERE {' AND '.join(where)}", args)
        if n:
            _audit(store, caller, "taxii.object.deleted", root, collection_id, {
                "ids": [object_id], "versions": sorted(str(v[0]) for v in gone)[:_AUDIT_MAX_IDS], "deleted": n,
            })  # fmt: skip
        rest = sorted(
            (str(v), int(s))
            for v, s in store.query(
                "SELECT vkey, seq FROM taxii_objects WHERE collection_id = ? AND stix_id = ?",
                (collection_id, object_id),
            )
        )
        if rest:
            store.execute(
                "UPDATE taxii_objects SET is_first = 0, is_last = 0 WHERE collection_id = ? AND stix_id = ?",
                (collection_id, object_id),
            )
            store.execute("UPDATE taxii_objects SET is_first = 1 WHERE seq = ?", (rest[0][1],))
            store.execute("UPDATE taxii_objects SET is_last = 1 WHERE seq = ?", (rest[-1][1],))
        store.commit()
    except BaseException:
        store.rollback()
        raise
    return n


def get_status(store: Store, root: str, status_id: str, caller: Caller) -> dict[str, Any]:
    rows = store.query(
        "SELECT id, status, request_timestamp, total_count, success_count, failure_count, pending_count, "
        "successes, failures, pendings, principal FROM taxii_status WHERE root = ? AND id = ?",
        (root, status_id),
    )
    if not rows or rows[0][10] != caller.name:
        raise TaxiiError(404, "Unknown status", f"there is no status {status_id!r}")
    r = rows[0]
    return {
        "id": r[0],
        "status": r[1],
        "request_timestamp": r[2],
        "total_count": int(r[3]),
        "success_count": int(r[4]),
        "failure_count": int(r[5]),
        "pending_count": int(r[6]),
        "successes": orjson.loads(r[7]),
        "failures": orjson.loads(r[8]),
        "pendings": orjson.loads(r[9]),
    }
