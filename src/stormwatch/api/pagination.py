"""Cursor pagination shared by the list routes: ``?limit=N&cursor=...`` -> ``{items, next_cursor}``.

A cursor is opaque to clients (URL-safe base64 of a small JSON array). Routes over our own tables
use it for keyset pagination (the sort key of the last item: stable under inserts); routes over a
service function that pages by offset carry the offset in it. ``next_cursor`` is ``null`` on the
last page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Query

from stormwatch.errors import InputError

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[
    str | None, Query(max_length=512, description="`next_cursor` of the previous page; leave out for the first.")
]


def encode_cursor(key: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(key))).decode().rstrip("=")


def decode_cursor(cursor: str | None, arity: int) -> list[Any] | None:
    """The key in ``cursor`` (a list of ``arity`` items), ``None`` for no cursor; 400 if malformed."""
    if cursor is None or cursor == "":
        return None
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise InputError("malformed cursor: pass back next_cursor unchanged") from None
    if not isinstance(key, list) or len(key) != arity:
        raise InputError("malformed cursor: pass back next_cursor unchanged")
    return key


def decode_offset(cursor: str | None) -> int:
    key = decode_cursor(cursor, 1)
    if key is None:
        return 0
    if not isinstance(key[0], int) or isinstance(key[0], bool) or key[0] < 0:
        raise InputError("malformed cursor: pass back next_cursor unchanged")
    return key[0]


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
