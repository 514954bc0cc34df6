"""Stable STIX identifiers: a UUIDv4 minted once per exported object, kept in ``share_stix_ids``.

An object keeps its id across exports; when its content changes it gets a later ``modified``
(a new STIX version), otherwise it keeps the old timestamps, so re-exporting is idempotent for a
consumer. Cyber-observable ids are deterministic UUIDv5 (STIX 2.1 §2.9), computed, not stored.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from stormwatch.store import Store
from stormwatch.store.repos.intel import StixId

SCO_NAMESPACE = uuid.UUID("00abedb4-aa42-466c-9c01-fed23315a9b7")
#: id-contributing properties of the observables we emit (STIX 2.1 §6)
SCO_ID_PROPS: dict[str, tuple[str, ...]] = {
    "ipv4-addr": ("value",),
    "ipv6-addr": ("value",),
    "domain-name": ("value",),
    "email-addr": ("value",),
    "url": ("value",),
    "user-account": ("account_type", "user_id", "account_login"),
}


def stix_time(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(s: str) -> datetime:
    """Parse an RFC 3339 / STIX timestamp (``Z`` or offset, any fraction)."""
    v = s.strip().replace("z", "Z")
    if v.endswith("Z"):
        v = v[:-1] + "+00:00"
    if "T" not in v and " " not in v and len(v) == 10:
        v += "T00:00:00+00:00"
    # Python < 3.12 fromisoformat accepts up to 6 fraction digits: trim longer fractions
    if "." in v:
        head, _, rest = v.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        tail = rest[len(digits) :]
        v = f"{head}.{(digits + '000000')[:6]}{tail}"
    dt = datetime.fromisoformat(v)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def sco_id(obj_type: str, props: dict[str, Any]) -> str:
    contributing = {k: props[k] for k in SCO_ID_PROPS.get(obj_type, ()) if k in props}
    name = json.dumps(contributing, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return f"{obj_type}--{uuid.uuid5(SCO_NAMESPACE, name)}"


def content_hash(obj: dict[str, Any]) -> str:
    body = {k: v for k, v in obj.items() if k not in ("id", "created", "modified")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(slots=True)
class IdEntry:
    stix_id: str
    created: str
    modified: str
    content_hash: str


class IdRegistry(Protocol):
    def get(self, key: str) -> IdEntry | None: ...

    def put(self, key: str, entry: IdEntry) -> None: ...


class MemoryRegistry:
    def __init__(self) -> None:
        self.entries: dict[str, IdEntry] = {}

    def get(self, key: str) -> IdEntry | None:
        return self.entries.get(key)

    def put(self, key: str, entry: IdEntry) -> None:
        self.entries[key] = entry


class StoreRegistry:
    """Registry over the store's STIX ids (``store.intel``); :meth:`flush` writes what changed (caller commits)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.entries: dict[str, IdEntry] = {
            key: IdEntry(e.stix_id, e.created, e.modified, e.content_hash) for key, e in store.intel.stix_ids().items()
        }
        self.dirty: set[str] = set()

    def get(self, key: str) -> IdEntry | None:
        return self.entries.get(key)

    def put(self, key: str, entry: IdEntry) -> None:
        self.entries[key] = entry
        self.dirty.add(key)

    def flush(self) -> None:
        self.store.intel.put_stix_ids(
            {
                key: StixId(e.stix_id, e.created, e.modified, e.content_hash)
                for key in self.dirty
                for e in (self.entries[key],)
            }
        )
        self.dirty.clear()


def stamp(registry: IdRegistry, key: str, obj: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Give ``obj`` (built without id/created/modified) its stable id and version timestamps."""
    h = content_hash(obj)
    entry = registry.get(key)
    now_s = stix_time(now)
    if entry is None:
        entry = IdEntry(f"{obj['type']}--{uuid.uuid4()}", now_s, now_s, h)
        registry.put(key, entry)
    elif entry.content_hash != h:
        modified = now_s
        if parse_time(modified) <= parse_time(entry.modified):  # a new version must be strictly later
            modified = stix_time(parse_time(entry.modified) + timedelta(milliseconds=1))
        entry = IdEntry(entry.stix_id, entry.created, modified, h)
        registry.put(key, entry)
    out = {"type": obj["type"], "spec_version": "2.1", "id": entry.stix_id, "created": entry.created,
           "modified": entry.modified}  # fmt: skip
    out.update({k: v for k, v in obj.items() if k not in ("type", "spec_version")})
    return out
