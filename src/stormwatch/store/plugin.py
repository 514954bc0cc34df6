"""The store's built-in plugin: the SQLite and PostgreSQL backends and ``stormwatch db``."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl

#: URL scheme -> Store class (``postgres`` is an alias of ``postgresql``)
STORES: dict[str, str] = {
    "sqlite": "stormwatch.store.sqlite:SQLiteStore",
    "postgresql": "stormwatch.store.postgres:PostgresStore",
    "postgres": "stormwatch.store.postgres:PostgresStore",
}


@hookimpl
def stormwatch_stores() -> Mapping[str, str]:
    return STORES


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {"db": Command("stormwatch.store.cli:db_group", "Database schema and status.")}
