"""Authentication (token -> :class:`Principal`) and authorisation (``requires(permission)``).

Every route of the app depends on ``requires(<permission>)``; :func:`stormwatch.api.app.create_app`
refuses to build an app with a route that does not, so no route can be left open by mistake.

For other packages (the TAXII server, say) the pieces are reusable on their own:

* :func:`principal_from_authorization` turns an ``Authorization`` header value into a principal
  (``Bearer <token>``; optionally HTTP Basic with the token as the password, which TAXII clients
  are required to support) or raises :class:`~stormwatch.api.errors.AuthenticationError`;
* :meth:`Principal.allows` / :meth:`Principal.allows_on` check a permission, optionally for one
  resource (``taxii:read`` on collection ``c1`` is allowed by the scope ``taxii:read:c1``);
* ``requires(permission)`` is the FastAPI dependency for routers added with
  :func:`stormwatch.api.extensions.register_router`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from stormwatch.api.deps import get_pool
from stormwatch.api.errors import AuthenticationError, PermissionDenied
from stormwatch.api.roles import Role, known_permissions, role_allows
from stormwatch.api.tokens import InvalidTokenError, TokenInfo, verify_token
from stormwatch.store import Store

__all__ = [
    "Principal",
    "Requires",
    "authenticate",
    "authenticate_request",
    "principal_from_authorization",
    "requires",
]

#: documents the scheme in the OpenAPI document; the header is parsed below, not by FastAPI
bearer_scheme = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer sw_...`")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's id, name, role and scopes (empty = everything the role allows)."""

    token_id: str
    name: str
    role: Role
    scopes: frozenset[str] = frozenset()

    @classmethod
    def from_token(cls, info: TokenInfo) -> Principal:
        return cls(info.token_id, info.name, info.role, frozenset(info.scopes))

    @property
    def actor(self) -> str:
        """How audit records and case notes name this caller."""
        return f"token:{self.token_id}:{self.name}"

    def allows(self, permission: str) -> bool:
        """The role allows ``permission`` and the scopes (if any) grant it on at least something."""
        if not role_allows(self.role, permission):
            return False
        return not self.scopes or any(s == permission or s.startswith(permission + ":") for s in self.scopes)

    def allows_on(self, permission: str, resource: str) -> bool:
        """The role allows ``permission`` and the scopes (if any) grant it on ``resource``."""
        if not role_allows(self.role, permission):
            return False
        return not self.scopes or permission in self.scopes or f"{permission}:{resource}" in self.scopes

    def to_dict(self) -> dict[str, Any]:
        return {
            "token_id": self.token_id,
            "name": self.name,
            "role": self.role.value,
            "scopes": sorted(self.scopes),
        }


def bearer_token(header: str | None, *, allow_basic: bool = False) -> str:
    """The token of an ``Authorization`` header value (Bearer, or Basic's password); 401 otherwise."""
    if not header:
        raise AuthenticationError("missing API token: send Authorization: Bearer <token>")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if allow_basic and scheme.lower() == "basic" and value:
        try:
            _user, sep, password = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep, password = "", ""
        if sep and password:
            return password
    raise AuthenticationError("unsupported Authorization header: send Bearer <token>", invalid_token=True)


def principal_from_authorization(store: Store, header: str | None, *, allow_basic: bool = False) -> Principal:
    """Authenticate an ``Authorization`` header value against the token table (401 if it fails)."""
    token = bearer_token(header, allow_basic=allow_basic)
    try:
        return Principal.from_token(verify_token(store, token))
    except InvalidTokenError as exc:
        raise AuthenticationError(str(exc), invalid_token=True) from None


def authenticate_request(request: Request) -> None:
    """Check the request's token and keep the caller on ``request.state.principal`` (or raise 401).

    The error handlers call it (:func:`stormwatch.api.errors.install_error_handlers`) before they
    answer 422 for a malformed body, so an unauthenticated caller only ever gets 401.
    """
    pool = get_pool(request)
    store = pool.acquire()
    try:
        request.state.principal = principal_from_authorization(store, request.headers.get("authorization"))
    finally:
        pool.release(store)


async def authenticate(request: Request, _scheme: Any = Depends(bearer_scheme)) -> Principal:
    """FastAPI dependency: the caller, or 401. Also stored on ``request.state.principal`` for the log.

    The app's guard (:mod:`stormwatch.api.guard`) has usually checked the token already, before
    the body was read; its principal is used then, on the event loop (no worker thread, no
    database connection: this runs on every request). Otherwise the token is checked on a worker
    thread.
    """
    checked = getattr(request.state, "principal", None)
    if isinstance(checked, Principal):
        return checked
    await run_in_threadpool(authenticate_request, request)
    principal: Principal = request.state.principal
    return principal


class Requires:
    """FastAPI dependency: the caller, if its role and scopes allow ``permission``; else 401/403."""

    def __init__(self, permission: str) -> None:
        if permission not in known_permissions():
            raise ValueError(f"unknown permission {permission!r}: register it in stormwatch.api.roles")
        self.permission = permission

    def __call__(self, principal: Principal = Depends(authenticate)) -> Principal:
        if not principal.allows(self.permission):
            raise PermissionDenied(
                f"role {principal.role.value!r} (token {principal.token_id}) may not {self.permission}"
            )
        return principal

    def __repr__(self) -> str:
        return f"Requires({self.permission!r})"


class _RequiresOnTheLoop(Requires):
    """:class:`Requires` as a coroutine, so FastAPI runs the check on the event loop instead of a
    worker thread (it runs on every request; it only compares sets). Calling :class:`Requires`
    directly stays synchronous."""

    async def __call__(self, principal: Principal = Depends(authenticate)) -> Principal:  # type: ignore[override]
        return Requires.__call__(self, principal)


def requires(permission: str) -> Any:
    """``Depends(Requires(permission))``: put it in a route's ``dependencies`` or as a parameter default."""
    return Depends(_RequiresOnTheLoop(permission))
