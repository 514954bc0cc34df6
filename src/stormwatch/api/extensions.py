"""How routers and sub-apps get into the app: built-ins and extensions take the same path.

An *extension* is a callable ``install(app: FastAPI) -> None``. The built-in route modules are
listed in :data:`DEFAULT_PLUGINS`; other packages add theirs under the ``stormwatch.api``
entry-point group (``name = "package.module:install"``), or, in-process, with :func:`register`
or :func:`register_router`. :func:`stormwatch.api.app.create_app` installs them all, in order:
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

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from fastapi import APIRouter, FastAPI

__all__ = ["API_PREFIX", "DEFAULT_PLUGINS", "ENTRY_POINT_GROUP", "Install", "load_extensions", "register"]

Install = Callable[[FastAPI], None]

API_PREFIX = "/api/v1"
ENTRY_POINT_GROUP = "stormwatch.api"
#: the built-in route modules, loaded the same way as entry points
DEFAULT_PLUGINS: dict[str, str] = {
    "health": "stormwatch.api.routes.health:install",
    "tokens": "stormwatch.api.routes.tokens:install",
    "accounts": "stormwatch.api.routes.accounts:install",
    "events": "stormwatch.api.routes.events:install",
    "clusters": "stormwatch.api.routes.clusters:install",
    "cases": "stormwatch.api.routes.cases:install",
    "enforcement": "stormwatch.api.routes.enforcement:install",
    "appeals": "stormwatch.api.routes.appeals:install",
    "audit": "stormwatch.api.routes.audit:install",
    "taxii": "stormwatch.intel.taxii.api:install",
}

_registered: dict[str, Install] = {}


def register(name: str, install: Install) -> None:
    """Install ``install`` into every app created from now on (replacing one of the same name)."""
    _registered[name] = install


def unregister(name: str) -> None:
    _registered.pop(name, None)


def register_router(name: str, router: APIRouter, *, prefix: str = API_PREFIX) -> None:
    """Shorthand for an extension that only includes ``router`` under ``prefix``."""

    def install(app: FastAPI) -> None:
        app.include_router(router, prefix=prefix)

    register(name, install)


def _resolve(spec: str) -> Install:
    module, _, attr = spec.partition(":")
    install = getattr(importlib.import_module(module), attr)
    if not callable(install):
        raise TypeError(f"API extension {spec!r} is not callable")
    return install  # type: ignore[no-any-return]


def load_extensions(*, entry_point_plugins: bool = True) -> list[tuple[str, Install]]:
    """Built-ins, then entry points (``stormwatch.api``) not named like a built-in, then registrations."""
    specs = dict(DEFAULT_PLUGINS)
    if entry_point_plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            specs.setdefault(ep.name, ep.value)
    found = [(name, _resolve(spec)) for name, spec in specs.items()]
    found += [(name, install) for name, install in _registered.items() if name not in specs]
    return found
