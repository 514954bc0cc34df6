"""TAXII 2.1 request vocabulary: the error resource, timestamps, query parameters and ``next`` tokens.

A ``next`` token is the keyset position of the last row served plus a digest of the filters, so it
stays valid for as long as the objects exist (minutes or days later) and cannot be replayed against
a different query (400).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from stormwatch.intel.ids import parse_time
from stormwatch.store.repos.taxii import ObjectFilter

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100
_MAX_SEQ = 2**63 - 1  # BIGINT on PostgreSQL, INTEGER on SQLite


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


def fixed_ts(dt: datetime) -> str:
    """Fixed-width UTC timestamp (microseconds): sorts as text on both backends."""
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def norm_ts(value: str) -> str:
    try:
        return fixed_ts(parse_time(value))
    except (ValueError, TypeError, OverflowError):
        raise TaxiiError(400, "Bad timestamp", f"{value!r} is not an RFC 3339 timestamp") from None


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

    def filter(self, object_id: str | None = None) -> ObjectFilter:
        """The store's filter for this query (one object's versions when ``object_id`` is given)."""
        return ObjectFilter(
            object_id=object_id,
            versions=tuple(self.versions),
            ids=tuple(self.ids),
            types=tuple(self.types),
            spec_versions=tuple(self.spec_versions),
            added_after=self.added_after,
            after=self.next,
        )


def _split(values: Iterable[str]) -> list[str]:
    return [v.strip() for raw in values for v in raw.split(",") if v.strip()]


def parse_query(
    params: Mapping[str, list[str]], *, allowed: set[str], scope: str, versions: list[str] | None = None
) -> Query:
    """Parse and check query parameters (400 on anything malformed or unknown to the endpoint).

    ``versions`` fixes ``match[version]`` for an endpoint that does not take it (the versions
    endpoint lists all), before a ``next`` token is checked against the query's digest.
    """
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
    if versions is not None:
        q.versions = list(versions)
    if "next" in params:
        q.next = decode_next(params["next"][-1], q.digest(scope))
    return q


def encode_next(date_added: str, seq: int, digest: str) -> str:
    raw = orjson.dumps([date_added, seq, digest])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_next(token: str, digest: str) -> tuple[str, int]:
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
