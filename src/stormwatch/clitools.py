"""Helpers shared by every package's command line: opening the store, printing JSON.

Package CLIs import this module (never the root :mod:`stormwatch.cli`, which imports them).
"""

from __future__ import annotations

from typing import Any

import click
import orjson


def echo_json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode())


def open_ctx_store(ctx: click.Context) -> Any:
    from stormwatch.store import open_store

    return open_store(ctx.obj.get("db_url") if ctx.obj else None)
