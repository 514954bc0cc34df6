"""Cursor pagination shared by the list routes: ``?limit=N&cursor=...`` -> ``{items, next_cursor}``.

A cursor is opaque to clients (URL-safe base64 of a small JSON array). Routes over our own tables
use it for keyset pagination (the sort key of the last item: stable under inserts); routes over a
service function that pages by offset carry the offset in it. ``next_cursor`` is ``null`` on the
last page.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar

import orjson
from fastapi import Query

from stormwatch.api.errors import BadRequest

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: longest cursor accepted (a key with a 256-character non-ASCII id fits); longer: 400
MAX_CURSOR_LENGTH = 2048
#: largest offset or integer key a cursor may carry: fits a signed 64-bit column on both backends
MAX_CURSOR_INT = 2**62
#: longest string key a cursor may carry
MAX_CURSOR_STR = 300

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[
    str | None,
    Query(description="`next_cursor` of the previous page, unchanged; leave out for the first page."),
]
#: what one item of a cursor's key must be
KeyKind = Literal["int", "number", "str"]

_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_LOC = ("query", "cursor")


def _bad(why: str) -> BadRequest:
    return BadRequest(f"malformed cursor ({why}): pass back next_cursor unchanged", loc=_LOC)


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def _check_item(value: Any, kind: KeyKind, index: int) -> Any:
    if kind == "str":
        if not isinstance(value, str) or len(value) > MAX_CURSOR_STR or "\x00" in value:
            raise _bad(f"item {index} is not a short string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"item {index} is not a number")
    if kind == "int":
        if not isinstance(value, int) or not 0 <= value <= MAX_CURSOR_INT:
            raise _bad(f"item {index} is not an integer in 0..2^62")
        return value
    if not math.isfinite(value) or abs(value) > MAX_CURSOR_INT:
        raise _bad(f"item {index} is out of range")
    return float(value)


def decode_cursor(cursor: str | None, kinds: Sequence[KeyKind]) -> list[Any] | None:
    """The key in ``cursor``: a list with one item of each kind in ``kinds``; ``None`` for no cursor.

    Anything else (not base64url, not JSON, not a list, the wrong length, an item of the wrong type
    or out of range: 2^63, a negative offset, an object) answers 400 naming ``cursor``, so a
    tampered cursor never reaches the database.
    """
    if cursor is None or cursor == "":
        return None
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise _bad(f"longer than {MAX_CURSOR_LENGTH} characters")
    if not _BASE64URL.fullmatch(cursor) or len(cursor) % 4 == 1:
        raise _bad("not base64url")
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise _bad("not JSON") from None
    if not isinstance(key, list) or len(key) != len(kinds):
        raise _bad(f"not a list of {len(kinds)}")
    return [_check_item(v, kind, i) for i, (v, kind) in enumerate(zip(key, kinds, strict=True))]


def decode_offset(cursor: str | None) -> int:
    key = decode_cursor(cursor, ("int",))
    return 0 if key is None else int(key[0])


def page(items: Sequence[T], limit: int, key: Callable[[T], Sequence[Any]]) -> tuple[list[T], str | None]:
    """Given up to ``limit + 1`` items, the first ``limit`` and the cursor after them (if more exist)."""
    shown = list(items[:limit])
    more = len(items) > limit
    return shown, encode_cursor(key(shown[-1])) if more and shown else None


def offset_page(fetch: Callable[[int, int], Sequence[Any]], limit: int, cursor: str | None) -> dict[str, Any]:
    """A page from a service function that takes ``(limit, offset)`` and returns ``to_dict()``-able items."""
    offset = decode_offset(cursor)
    items = list(fetch(limit + 1, offset))
    more = len(items) > limit
    return {
        "items": [i.to_dict() for i in items[:limit]],
        "next_cursor": encode_cursor([offset + limit]) if more else None,
    }
