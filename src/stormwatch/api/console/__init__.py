"""The analyst console: server-rendered pages at ``/console`` in the API (``stormwatch serve``).

Sign-in with an API token opens a session (a signed, HttpOnly, SameSite=Strict cookie); every page
then applies the API's own permission checks and service functions (see :mod:`.views`). Jinja2
templates with autoescape, htmx vendored under ``static/`` (no Node build step), a strict CSP.
See ``docs/console.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.routing import BaseRoute

__all__ = ["CONSOLE_PREFIX", "install", "is_console_route"]

CONSOLE_PREFIX = "/console"


def install(app: FastAPI) -> None:
    """Mount the console at ``/console``; it shares the app's store pool and authenticates itself."""
    from stormwatch.api.console.session import SessionKeeper, secret_path
    from stormwatch.api.console.views import Console

    pool = app.state.store_pool
    keeper = SessionKeeper(secret_path(pool.url))
    console = Console(pool, keeper, prefix=CONSOLE_PREFIX)
    app.state.console = console
    app.mount(CONSOLE_PREFIX, console.app(), name="console")


def is_console_route(route: BaseRoute) -> bool:
    """The console's mount: the API guard leaves it to the console's own session check."""
    return getattr(route, "path", None) == CONSOLE_PREFIX and getattr(route, "name", None) == "console"
