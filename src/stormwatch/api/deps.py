"""Per-request database access: a small pool of stores, one store per request at a time.

A :class:`~stormwatch.store.Store` wraps one connection and is not safe to share between two
requests running at once, so the app keeps a pool: a request takes a store, uses it (in one worker
thread at a time) and gives it back after rolling back whatever it left open, so no request sees or
holds another's transaction. The first store opened migrates the database. The pool itself is
:class:`stormwatch.store.pool.StorePool`, shared with the TAXII server mounted in the API.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request

from stormwatch.store import Store
from stormwatch.store.pool import StorePool

__all__ = ["StorePool", "get_pool", "get_store"]


def get_pool(request: Request) -> StorePool:
    pool = request.app.state.store_pool
    assert isinstance(pool, StorePool)
    return pool


def get_store(request: Request) -> Iterator[Store]:
    """FastAPI dependency: a store for this request, returned to the pool afterwards."""
    pool = get_pool(request)
    store = pool.acquire()
    try:
        yield store
    finally:
        pool.release(store)
