"""API errors and the one JSON error shape every error response has.

Every error the API returns, whatever raised it, has this body::

    {"ok": false, "error": "<one-line message>", "errors": [<detail>, ...], "status": <HTTP status>}

``errors`` always holds at least one detail object ``{"type", "msg", "loc"}``: one per failed
field for a request that fails validation (422), one mirroring ``error`` otherwise. The API error
classes below subclass :class:`~stormwatch.errors.StormwatchError`, so the CLI and the API share
one hierarchy::

    StormwatchError
    └── ApiError                        status 500 unless a subclass says otherwise
        ├── BadRequest (InputError)     400  one parameter is wrong (``loc`` names it)
        ├── AuthenticationError         401  missing, unknown, expired or revoked token
        ├── PermissionDenied            403  the token's role or scopes do not allow the route
        ├── NotFound (InputError)       404  no such resource
        └── Conflict (InputError)       409  the resource is in a state that forbids the change

Errors raised by the layers below map as: ``InputError`` (``ValueError``) -> 400,
``StoreError`` -> 503 (the database message is logged, not returned), any other
``StormwatchError`` -> 500; an exception that is not ours -> 500 "internal server error".
A service layer's error classes get their own status with :func:`map_error` (the disrupt
package's ``NotFoundError`` -> 404, ``ConflictError`` -> 409).
``tests/test_api_error_shape.py`` asserts the shape for each kind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from stormwatch.api.responses import JsonResponse
from stormwatch.errors import InputError, StoreError, StormwatchError

log = logging.getLogger("stormwatch.api")

__all__ = [
    "ApiError",
    "AuthenticationError",
    "BadRequest",
    "Conflict",
    "NotFound",
    "PermissionDenied",
    "error_body",
    "error_response",
    "install_error_handlers",
    "map_error",
]


class ApiError(StormwatchError):
    """An error the API answers with a given HTTP status."""

    status = 500
    type = "error"
    headers: Mapping[str, str] | None = None
    #: where the error is, as in a validation error (``("query", "cursor")``); empty: the request
    loc: tuple[str | int, ...] = ()

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        headers: Mapping[str, str] | None = None,
        loc: tuple[str | int, ...] | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        if headers is not None:
            self.headers = headers
        if loc is not None:
            self.loc = loc


class AuthenticationError(ApiError):
    status = 401
    type = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        # RFC 6750 section 3: a challenge on every 401; error="invalid_token" when one was sent.
        challenge = 'Bearer realm="stormwatch"'
        if invalid_token:
            challenge += ', error="invalid_token"'
        super().__init__(message, headers={"WWW-Authenticate": challenge})


class BadRequest(ApiError, InputError):
    """400 for one parameter (``loc`` names it), e.g. a tampered cursor."""

    status = 400
    type = "bad_request"


class PermissionDenied(ApiError):
    status = 403
    type = "forbidden"


class NotFound(ApiError, InputError):
    status = 404
    type = "not_found"


class Conflict(ApiError, InputError):
    status = 409
    type = "conflict"


#: exception class -> HTTP status, for error classes of other packages (see :func:`map_error`)
_STATUS_BY_CLASS: dict[type[BaseException], int] = {}


def map_error(cls: type[BaseException], status: int) -> None:
    """Answer ``cls`` (and its subclasses) with ``status``: how a service layer's errors get 404/409."""
    if not 400 <= status < 600:
        raise ValueError(f"not an error status: {status}")
    _STATUS_BY_CLASS[cls] = status


def _type_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def error_body(status: int, message: str, errors: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The one error shape: ``{ok, error, errors[], status}``."""
    details = [dict(e) for e in errors] if errors else [{"type": _type_for(status), "msg": message, "loc": []}]
    return {"ok": False, "error": message, "errors": details, "status": status}


def error_response(
    status: int,
    message: str,
    errors: Sequence[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    return JsonResponse(error_body(status, message, errors), status_code=status, headers=headers)


def _from_exception(exc: Exception) -> tuple[int, str, str, Mapping[str, str] | None]:
    """(status, type, message, headers) for an exception raised by a route or a layer below it."""
    if isinstance(exc, ApiError):
        return exc.status, exc.type, str(exc), exc.headers
    for cls in type(exc).__mro__:
        if cls in _STATUS_BY_CLASS:
            status = _STATUS_BY_CLASS[cls]
            return status, _type_for(status), str(exc), None
    if isinstance(exc, InputError):
        return 400, "bad_request", str(exc), None
    if isinstance(exc, StoreError):
        log.error("database error: %s", exc)
        return 503, "database_unavailable", "the database refused the request or is unreachable", None
    if isinstance(exc, StormwatchError):
        log.error("error: %s", exc)
        return 500, "internal_server_error", str(exc), None
    log.exception("unhandled error", exc_info=exc)
    return 500, "internal_server_error", "internal server error", None


async def _handle_stormwatch(request: Request, exc: Exception) -> JsonResponse:
    status, kind, message, headers = _from_exception(exc)
    loc = list(exc.loc) if isinstance(exc, ApiError) else []
    return error_response(status, message, [{"type": kind, "msg": message, "loc": loc}], headers)


async def _handle_http(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, StarletteHTTPException)
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 404 and message == "Not Found":
        message = f"no route {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    return error_response(exc.status_code, message, None, exc.headers)


#: how the app checks a request's token before answering 422 (set by :func:`install_error_handlers`)
_AUTHENTICATE_FIRST = "stormwatch_authenticate_first"


async def _handle_validation(request: Request, exc: Exception) -> JsonResponse:
    assert isinstance(exc, RequestValidationError)
    # FastAPI parses a JSON body before it runs dependencies, so a malformed body would answer 422
    # before the token is checked: check it first, so an unauthenticated caller only ever gets 401.
    authenticate_first = getattr(request.app.state, _AUTHENTICATE_FIRST, None)
    if authenticate_first is not None and getattr(request.state, "principal", None) is None:
        try:
            await run_in_threadpool(authenticate_first, request)
        except ApiError as auth_error:
            return await _handle_stormwatch(request, auth_error)
    details = [
        {"type": str(e.get("type", "invalid")), "msg": str(e.get("msg", "")), "loc": list(e.get("loc", ()))}
        for e in exc.errors()
    ]
    first = details[0] if details else {"msg": "invalid request", "loc": []}
    where = ".".join(str(p) for p in first["loc"])
    message = f"invalid request: {where}: {first['msg']}" if where else f"invalid request: {first['msg']}"
    return error_response(422, message, details)


def install_error_handlers(app: FastAPI, *, authenticate_first: Callable[[Request], None] | None = None) -> None:
    """Route every error through the one shape (404, 405, 422, 401, 403, 500 and ours).

    ``authenticate_first(request)`` (the app passes :func:`stormwatch.api.auth.authenticate_request`)
    runs before a 422 is answered and raises :class:`AuthenticationError` for a bad token; this module
    does not import the authentication itself, so it stays below it.
    """
    setattr(app.state, _AUTHENTICATE_FIRST, authenticate_first)
    app.add_exception_handler(StarletteHTTPException, _handle_http)
    app.add_exception_handler(RequestValidationError, _handle_validation)
    app.add_exception_handler(StormwatchError, _handle_stormwatch)
    # Exception is handled by Starlette's ServerErrorMiddleware: the body is ours, the traceback logged.
    app.add_exception_handler(Exception, _handle_stormwatch)
