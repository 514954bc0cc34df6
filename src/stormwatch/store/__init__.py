"""Open a store from a URL. ``sqlite:///...`` (default) or ``postgresql://...``.

Backends register under the ``stormwatch.stores`` entry-point group by URL scheme; the built-ins
are listed in :data:`DEFAULT_PLUGINS` and loaded the same way.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from stormwatch.errors import ConfigError
from stormwatch.store.base import QuarantineRow, RunRow, Store

DEFAULT_DB_URL = "sqlite:///stormwatch.db"
DEFAULT_PLUGINS: dict[str, str] = {
    "sqlite": "stormwatch.store.sqlite:SQLiteStore",
    "postgresql": "stormwatch.store.postgres:PostgresStore",
    "postgres": "stormwatch.store.postgres:PostgresStore",
}

__all__ = ["DEFAULT_DB_URL", "QuarantineRow", "RunRow", "Store", "open_store", "resolve_db_url"]


def resolve_db_url(url: str | None = None) -> str:
    """``--db`` beats ``STORMWATCH_DB`` beats the default ``sqlite:///stormwatch.db``."""
    return url or os.environ.get("STORMWATCH_DB") or DEFAULT_DB_URL


def open_store(url: str | None = None, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the store at ``url``."""
    url = resolve_db_url(url)
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    specs = dict(DEFAULT_PLUGINS)
    for ep in entry_points(group="stormwatch.stores"):
        specs.setdefault(ep.name, ep.value)
    spec = specs.get(scheme)
    if spec is None:
        raise ConfigError(
            f"unsupported database URL {url!r}",
            hint="use sqlite:///path/to/stormwatch.db or postgresql://user@host:5432/dbname",
        )
    module, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    store: Store = cls(url)
    if migrate:
        store.migrate()
    return store
