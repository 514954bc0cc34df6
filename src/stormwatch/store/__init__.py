"""Open a store from a URL. ``sqlite:///...`` (default) or ``postgresql://...``.

Backends are plugins (:mod:`stormwatch.plugins`, hook ``stormwatch_stores``: URL scheme -> Store
class); the built-ins are in :mod:`stormwatch.store.plugin`, third parties add theirs through the
``stormwatch`` entry-point group (or the older ``stormwatch.stores`` group). ``Store``,
``QuarantineRow`` and ``RunRow`` are imported from :mod:`stormwatch.store.base` on first use, so
that importing this package (and the built-in plugin) stays cheap.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from stormwatch import plugins
from stormwatch.errors import ConfigError

if TYPE_CHECKING:
    from stormwatch.store.base import QuarantineRow, RunRow, Store

DEFAULT_DB_URL = "sqlite:///stormwatch.db"

__all__ = ["DEFAULT_DB_URL", "QuarantineRow", "RunRow", "Store", "open_store", "resolve_db_url", "store_schemes"]


def __getattr__(name: str) -> Any:
    if name in ("QuarantineRow", "RunRow", "Store"):
        from stormwatch.store import base

        value = getattr(base, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def resolve_db_url(url: str | None = None) -> str:
    """``--db`` beats ``STORMWATCH_DB`` beats the default ``sqlite:///stormwatch.db``."""
    return url or os.environ.get("STORMWATCH_DB") or DEFAULT_DB_URL


def store_schemes() -> list[str]:
    """URL schemes with a registered backend."""
    return list(plugins.entries("stores"))


def open_store(url: str | None = None, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the store at ``url``."""
    url = resolve_db_url(url)
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    entry = plugins.entries("stores").get(scheme)
    if entry is None:
        raise ConfigError(
            f"unsupported database URL {url!r}",
            hint="use sqlite:///path/to/stormwatch.db or postgresql://user@host:5432/dbname",
        )
    cls = entry.load()
    store: Store = cls(url)
    if migrate:
        store.migrate()
    return store
