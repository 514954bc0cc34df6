"""The app factory: ``create_app(db_url)`` builds a fresh ASGI app (no module-level app object).

``stormwatch serve`` runs it under uvicorn; tests drive it in-process through httpx's
``ASGITransport`` or Starlette's ``TestClient``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import fastapi.routing
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stormwatch import __version__
from stormwatch.api.auth import Principal, Requires, authenticate_request, requires
from stormwatch.api.console import install as install_console
from stormwatch.api.console import is_console_route
from stormwatch.api.deps import StorePool
from stormwatch.api.errors import install_error_handlers
from stormwatch.api.extensions import API_PREFIX, Install, load_extensions
from stormwatch.api.guard import GuardMiddleware, RequestLimits, TokenCache
from stormwatch.api.responses import JsonResponse
from stormwatch.api.roles import READ
from stormwatch.store import Store

if TYPE_CHECKING:
    from stormwatch.disrupt.sinks import Sink

__all__ = ["OPENAPI_PATH", "RouteInfo", "create_app", "route_table"]

OPENAPI_PATH = f"{API_PREFIX}/openapi.json"
access_log = logging.getLogger("stormwatch.api.access")


class AccessLogMiddleware:
    """One line per request: method, path (no query string), status, time, token id.

    It never logs headers, so neither the ``Authorization`` header nor a token reaches the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            principal = state.get("principal")
            who = principal.token_id if isinstance(principal, Principal) else "-"
            access_log.info(
                "%s %s %d %.1fms token=%s",
                scope["method"],
                scope["path"],
                status,
                (time.perf_counter() - start) * 1000,
                who,
            )


def _find_requires(dependant: Dependant | None) -> Requires | None:
    for dep in dependant.dependencies if dependant is not None else ():
        if isinstance(dep.call, Requires):
            return dep.call
        found = _find_requires(dep)
        if found is not None:
            return found
    return None


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """One method + path of the app, and the permission it requires (``None``: unguarded)."""

    method: str
    path: str
    permission: str | None
    name: str


def route_table(app: FastAPI) -> list[RouteInfo]:
    """Every (method, path) the app serves through FastAPI routes, with its permission.

    Mounted sub-apps are not listed (they guard themselves); any other kind of route raises.
    """
    iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.16x
    contexts: Iterable[Any] = iter_contexts(app.routes) if iter_contexts is not None else app.routes
    table: list[RouteInfo] = []
    for ctx in contexts:
        original = getattr(ctx, "original_route", ctx)
        if isinstance(original, APIRoute):
            found = _find_requires(ctx.dependant)
            for method in sorted(ctx.methods or ()):
                table.append(RouteInfo(method, ctx.path_format, None if found is None else found.permission, ctx.name))
        elif not isinstance(original, Mount):
            raise RuntimeError(f"route {original!r} is not an APIRoute or a mounted app: it cannot be guarded")
    return table


def _check_routes(app: FastAPI) -> dict[tuple[str, str], str]:
    """Every route must be guarded; return (method, path) -> permission."""
    permissions: dict[tuple[str, str], str] = {}
    for info in route_table(app):
        if info.permission is None:
            raise RuntimeError(
                f"route {info.method} {info.path} has no requires(...) dependency: "
                "every API route must be authenticated"
            )
        permissions[(info.method, info.path)] = info.permission
    return permissions


def _install_openapi_route(app: FastAPI) -> None:
    @app.get(OPENAPI_PATH, include_in_schema=False, dependencies=[requires(READ)])
    def openapi_document() -> dict[str, Any]:
        """The OpenAPI 3.1 document of this API (authenticated like every other route)."""
        return app.openapi()


ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "The one error shape of every error response.",
    "required": ["ok", "error", "errors", "status"],
    "properties": {
        "ok": {"type": "boolean", "const": False},
        "error": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "msg", "loc"],
                "properties": {
                    "type": {"type": "string"},
                    "msg": {"type": "string"},
                    "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                },
            },
        },
        "status": {"type": "integer"},
    },
}
ERROR_RESPONSES = {
    "400": "Bad request (a malformed cursor, an argument the service refuses)",
    "401": "Missing, unknown, expired or revoked token",
    "403": "The token's role or scopes do not allow this route",
    "413": "The request body is over the limit",
    "429": "Too many failed authentications from this address (see Retry-After)",
    "422": "The request does not validate",
}


def _document_permissions(app: FastAPI, permissions: dict[tuple[str, str], str]) -> None:
    """Name each operation's permission (``x-stormwatch-permission``) in the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        doc = build()
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = ERROR_SCHEMA
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                permission = permissions.get((method.upper(), path))
                if permission is None or not isinstance(op, dict):
                    continue
                op["x-stormwatch-permission"] = permission
                responses = op.setdefault("responses", {})
                for status, text in ERROR_RESPONSES.items():
                    if status != "422" or "422" in responses:
                        responses[status] = {
                            "description": text,
                            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                        }
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


class _GuardedRoutes:
    """The routes the guard matches (every route but the console's), computed once.

    The list is made again only if the router's route list changes (an extension adding a route
    after :func:`create_app`), so a request costs no listing. :meth:`exact` gives the
    ``(method, path)`` of every API route without path parameters, so the guard matches those
    with one set lookup instead of scanning the routes in order.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self._key: tuple[int, int] | None = None
        self._routes: list[BaseRoute] = []
        self._exact: frozenset[tuple[str, str]] = frozenset()

    def _refresh(self) -> None:
        routes = self.app.router.routes
        key = (id(routes), len(routes))
        if key == self._key:
            return
        guarded = [r for r in routes if not is_console_route(r)]
        exact: set[tuple[str, str]] = set()
        iter_contexts = getattr(fastapi.routing, "iter_route_contexts", None)  # FastAPI >= 0.16x
        try:
            contexts: Iterable[Any] = iter_contexts(guarded) if iter_contexts is not None else guarded
            for ctx in contexts:
                original = getattr(ctx, "original_route", ctx)
                if isinstance(original, APIRoute) and not getattr(ctx, "param_convertors", True):
                    exact.update((method, ctx.path_format) for method in ctx.methods or ())
        except Exception:  # pragma: no cover - an unknown route shape: scan every route instead
            exact = set()
        self._routes, self._exact, self._key = guarded, frozenset(exact), key

    def __call__(self) -> list[BaseRoute]:
        self._refresh()
        return self._routes

    def exact(self) -> frozenset[tuple[str, str]]:
        self._refresh()
        return self._exact


def create_app(
    db_url: str | None = None,
    *,
    store_factory: Callable[[], Store] | None = None,
    pool_size: int = 4,
    entry_point_plugins: bool = True,
    extensions: Sequence[tuple[str, Install]] = (),
    action_sink: Sink | None = None,
    limits: RequestLimits | None = None,
) -> FastAPI:
    """Build the stormwatch API.

    ``db_url`` as for :func:`stormwatch.store.open_store` (``--db`` / ``STORMWATCH_DB`` / default);
    ``store_factory`` replaces it (tests); ``extensions`` are installed after the registered ones;
    ``action_sink`` is where ``POST /actions/retry`` delivers (none: that route answers 503);
    ``limits`` are the guard's body limits and failed-authentication throttle
    (:class:`~stormwatch.api.guard.RequestLimits`; default: 8 MiB, 64 MiB under ``/taxii2``,
    20 failures a minute per address).
    """
    # the server answers after its commits: WAL checkpoints run in a thread of their own (pool.py)
    pool = StorePool(db_url, size=pool_size, factory=store_factory, background_checkpoints=True)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.close()

    app = FastAPI(
        title="stormwatch API",
        version=__version__,
        summary="Accounts, clusters, cases, enforcement actions, appeals and audit of a stormwatch store.",
        description="Every route needs `Authorization: Bearer <token>` (see `stormwatch token create`). "
        "Errors all have the shape `{ok, error, errors[], status}`.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        default_response_class=JsonResponse,
        lifespan=lifespan,
    )
    app.state.store_pool = pool
    app.state.action_sink = action_sink
    install_error_handlers(app, authenticate_first=authenticate_request)
    # The guard wraps every route and mounted app: token checked before any body byte is read,
    # bodies capped while they stream, failed authentications throttled per address. The access
    # log goes outside it, so its 401, 413 and 429 answers are logged too.
    # The console (/console) signs in with a token once and then uses its own session cookie, so
    # the guard leaves its mount alone; its body limit and sign-in throttle are its own.
    limits = limits or RequestLimits()
    # tokens verified on the screening routes, kept a few seconds (guard.TokenCache); the revoke
    # route forgets a token it revokes
    app.state.token_cache = TokenCache(limits.token_cache_ttl_s, limits.token_cache_size)
    guarded_routes = _GuardedRoutes(app)
    app.add_middleware(
        GuardMiddleware,
        routes=guarded_routes,
        exact_routes=guarded_routes.exact,
        store_pool=pool,
        limits=limits,
        token_cache=app.state.token_cache,
    )
    app.add_middleware(AccessLogMiddleware)
    for _name, install in [*load_extensions(entry_point_plugins=entry_point_plugins), *extensions]:
        install(app)
    install_console(app)
    _install_openapi_route(app)
    permissions = _check_routes(app)
    _document_permissions(app, permissions)
    return app
