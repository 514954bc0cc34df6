"""The stormwatch HTTP API: an ASGI app (FastAPI) over a stormwatch store.

Public surface: :func:`create_app` (the factory), the auth pieces other packages reuse
(:class:`Principal`, :func:`requires`, :func:`principal_from_authorization`, :class:`Role`,
:func:`register_permission`), the extension hooks (:func:`register`, :func:`register_router`,
entry-point group ``stormwatch.api``) and the error classes. See ``docs/api.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stormwatch.api.app import OPENAPI_PATH, RouteInfo, create_app, route_table
    from stormwatch.api.auth import Principal, Requires, principal_from_authorization, requires
    from stormwatch.api.errors import (
        ApiError,
        AuthenticationError,
        Conflict,
        NotFound,
        PermissionDenied,
        error_body,
    )
    from stormwatch.api.extensions import API_PREFIX, register, register_router
    from stormwatch.api.roles import ROLE_PERMISSIONS, Role, register_permission

# Imported on first use (PEP 562), so that importing ``stormwatch.api.plugin`` (the built-in plugin
# the plugin manager loads for `stormwatch --help`) does not import FastAPI.
_LAZY: dict[str, str] = {
    "OPENAPI_PATH": "app", "RouteInfo": "app", "create_app": "app", "route_table": "app",
    "Principal": "auth", "Requires": "auth", "principal_from_authorization": "auth", "requires": "auth",
    "ApiError": "errors", "AuthenticationError": "errors", "Conflict": "errors", "NotFound": "errors",
    "PermissionDenied": "errors", "error_body": "errors",
    "API_PREFIX": "extensions", "register": "extensions", "register_router": "extensions",
    "ROLE_PERMISSIONS": "roles", "Role": "roles", "register_permission": "roles",
}  # fmt: skip

__all__ = [
    "API_PREFIX",
    "OPENAPI_PATH",
    "ROLE_PERMISSIONS",
    "ApiError",
    "AuthenticationError",
    "Conflict",
    "NotFound",
    "PermissionDenied",
    "Principal",
    "Requires",
    "Role",
    "RouteInfo",
    "create_app",
    "error_body",
    "principal_from_authorization",
    "register",
    "register_permission",
    "register_router",
    "requires",
    "route_table",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"stormwatch.api.{module}"), name)
    globals()[name] = value
    return value
