"""``stormwatch db``: database schema and status.

The store sits below :mod:`stormwatch.clitools` (which opens stores), so this CLI opens its store itself.
"""

from __future__ import annotations

import click
import orjson

from stormwatch.store import open_store


@click.group("db")
def db_group() -> None:
    """Database schema and status."""


@db_group.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending schema migrations (every command also does this on start)."""
    from stormwatch.store import resolve_db_url

    store = open_store(ctx.obj.get("db_url"), migrate=False)
    try:
        applied = store.migrate()
        click.echo(
            f"{resolve_db_url(ctx.obj.get('db_url'))}: schema version {store.schema_version()}"
            + (f" (applied {applied})" if applied else " (up to date)")
        )
    finally:
        store.close()


@db_group.command("info")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_info(ctx: click.Context, as_json: bool) -> None:
    """Show the schema version and row counts."""
    with open_store(ctx.obj.get("db_url") if ctx.obj else None) as store:
        info = {
            "url": store.url,
            "schema_version": store.schema_version(),
            "events": store.count_events(),
            "accounts": store.count_accounts(),
            "quarantined": store.count_quarantine(),
        }
    if as_json:
        click.echo(orjson.dumps(info, option=orjson.OPT_SORT_KEYS).decode())
    else:
        for k, v in info.items():
            click.echo(f"{k:15} {v}")
