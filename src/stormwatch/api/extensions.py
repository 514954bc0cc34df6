"""How routers and sub-apps get into the app: built-ins and extensions take the same path.

An *extension* is a callable ``install(app: FastAPI) -> None``, registered with the plugin manager
(:mod:`stormwatch.plugins`, hook ``stormwatch_api_extensions``: name -> install). The built-in
route modules are in :mod:`stormwatch.api.plugin` (:data:`DEFAULT_PLUGINS`); other packages add
theirs through the ``stormwatch`` entry-point group, the older ``stormwatch.api`` group
(``name = "package.module:install"``), or, in-process, with :func:`register` or
:func:`register_router`. :func:`stormwatch.api.app.create_app` installs them all, in order:
built-ins, entry points, in-process registrations.

An extension's routes get the same guarantees as the built-ins: each ``APIRoute`` must depend on
``requires(<permission>)`` (the app refuses to start otherwise) and is covered by the
authentication tests that walk the route table. A mounted sub-app (``app.mount("/taxii2", ...)``)
with media types of its own authenticates itself with
:func:`stormwatch.api.auth.principal_from_authorization`, taking its store from
``app.state.store_pool``, and must be tested by its owner. A TAXII server, say::

    from stormwatch.api import register_permission, register_router, requires, Role

    register_permission("taxii:read", {Role.READ_ONLY, Role.ANALYST})
    router = APIRouter(dependencies=[requires("taxii:read")])
    ...
    def install(app: FastAPI) -> None:
        app.include_router(router, prefix="/taxii2")
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, FastAPI

from stormwatch import plugins
from stormwatch.api.plugin import API_EXTENSIONS as DEFAULT_PLUGINS

__all__ = ["API_PREFIX", "DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "Install", "load_extensions", "register"]

Install = Callable[[FastAPI], None]

API_PREFIX = "/api/v1"
ENTRY_POINT_GROUP = "stormwatch.api"  # the older per-kind group; see stormwatch.plugins.LEGACY_GROUPS
_PREFIX = "stormwatch.api.extension:"  # in-process registrations are plugins named _PREFIX + name


def register(name: str, install: Install) -> None:
    """Install ``install`` into every app created from now on (replacing one of the same name)."""
    plugins.register_entries("api_extensions", {name: install}, name=_PREFIX + name, replace=True)


def unregister(name: str) -> None:
    plugins.unregister(_PREFIX + name)


def register_router(name: str, router: APIRouter, *, prefix: str = API_PREFIX) -> None:
    """Shorthand for an extension that only includes ``router`` under ``prefix``."""

    def install(app: FastAPI) -> None:
        app.include_router(router, prefix=prefix)

    register(name, install)


def load_extensions(*, entry_point_plugins: bool = True) -> list[tuple[str, Install]]:
    """Built-ins, then entry-point plugins (unless ``entry_point_plugins`` is false), then registrations.

    A name already taken by a built-in is not replaced (the manager keeps the first).
    """
    found: list[tuple[str, Install]] = []
    for name, entry in plugins.entries("api_extensions").items():
        if entry.source == "entrypoint" and not entry_point_plugins:
            continue
        install = entry.load()
        if not callable(install):
            raise plugins.PluginError(
                f"plugin {entry.plugin!r}: API extension {name!r} ({entry.spec}) is not callable", plugin=entry.plugin
            )
        found.append((name, install))
    return found
