"""The stormwatch HTTP API: an ASGI app (FastAPI) over a stormwatch store.

Public surface: :func:`create_app` (the factory), the auth pieces other packages reuse
(:class:`Principal`, :func:`requires`, :func:`principal_from_authorization`, :class:`Role`,
:func:`register_permission`), the extension hooks (:func:`register`, :func:`register_router`,
entry-point group ``stormwatch.api``) and the error classes. See ``docs/api.md``.
"""

from __future__ import annotations

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
