"""The request guard: authenticate before any body is read, cap bodies, throttle failed logins.

:class:`GuardMiddleware` is pure ASGI and wraps the whole app (the API routes and any mounted
sub-app, the TAXII server included). For every HTTP request that matches a route it:

1. answers **429** (with ``Retry-After``) at once when the client address has had
   ``auth_failure_limit`` failed authentications within ``auth_failure_window_s`` seconds,
   without looking at the token;
2. checks the ``Authorization`` header against the token table **before any byte of the body is
   read**: a missing or invalid token gets **401** and the body is never read (the connection is
   closed after the answer). The principal is left in ``scope["state"]["principal"]``, where
   :func:`stormwatch.api.auth.authenticate` and the access log find it;
3. answers **413** at once when ``Content-Length`` is above the path's limit, and otherwise counts
   the body while the app reads it: once it passes the limit (a chunked or lying upload), the
   guard answers 413 itself and the app's ``receive()`` raises :class:`BodyTooLarge`; whatever the
   app sends afterwards is dropped.

A request that matches no route (404) or only with another method (405) is passed on without
authentication (no handler reads its body; its body is still capped). Paths under a
:class:`PathRule` prefix (``/taxii2``) get that rule's body limit, accept HTTP Basic with the
token as the password, and get their errors as TAXII error resources.

The failure table is bounded: at most ``max_tracked_addresses`` addresses, least recently failed
dropped first. Addresses are the TCP peer's (``stormwatch serve`` ignores ``X-Forwarded-For``), so
behind a reverse proxy every client shares the proxy's address: limit there, or raise the limit.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stormwatch.api.errors import ApiError, AuthenticationError, error_body

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "TAXII_MAX_BODY_BYTES",
    "BodyTooLarge",
    "FailureLimiter",
    "GuardMiddleware",
    "PathRule",
    "RequestLimits",
]

MiB = 1024 * 1024
#: API routes: the largest legitimate JSON body (a retry of 10,000 action ids) is well below this
DEFAULT_MAX_BODY_BYTES = 8 * MiB
#: TAXII envelopes: the default ``max_content_length`` of an API root (stormwatch.intel.taxii.server)
TAXII_MAX_BODY_BYTES = 64 * MiB
TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"


class BodyTooLarge(HTTPException):
    """Raised by ``receive()`` once a body passes its limit; the guard has already answered 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True, slots=True)
class PathRule:
    """Requests under ``prefix`` (``/taxii2``): their body limit, HTTP Basic or not, error style."""

    prefix: str
    max_body_bytes: int
    allow_basic: bool = False
    style: str = "api"  # "api": {ok, error, errors, status}; "taxii": a TAXII error resource
    #: accept ``x-api-key: <token>`` when there is no ``Authorization`` header (LiteLLM's guardrail)
    api_key_header: bool = False

    def covers(self, path: str) -> bool:
        return path == self.prefix or path.startswith(self.prefix.rstrip("/") + "/")


@dataclass(frozen=True, slots=True)
class RequestLimits:
    """What the guard enforces. ``auth_failure_limit = 0`` turns the failure throttle off."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    auth_failure_limit: int = 20
    auth_failure_window_s: float = 60.0
    max_tracked_addresses: int = 10_000
    rules: tuple[PathRule, ...] = field(
        default=(
            PathRule("/taxii2", TAXII_MAX_BODY_BYTES, allow_basic=True, style="taxii"),
            # LiteLLM's Generic Guardrail API authenticates with x-api-key; the Langfuse SDK with
            # HTTP Basic (public key : secret key, the secret being a stormwatch token)
            PathRule("/beta/litellm_basic_guardrail_api", DEFAULT_MAX_BODY_BYTES, api_key_header=True),
            PathRule("/api/public/otel", DEFAULT_MAX_BODY_BYTES, allow_basic=True),
        )
    )

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1 or any(r.max_body_bytes < 1 for r in self.rules):
            raise ValueError("a body limit must be at least 1 byte")
        if self.auth_failure_limit < 0 or self.auth_failure_window_s <= 0 or self.max_tracked_addresses < 1:
            raise ValueError("auth_failure_limit >= 0, auth_failure_window_s > 0, max_tracked_addresses >= 1")

    def rule_for(self, path: str) -> PathRule:
        for rule in self.rules:
            if rule.covers(path):
                return rule
        return PathRule("/", self.max_body_bytes)


class FailureLimiter:
    """Failed authentications per address in a sliding window, for at most ``max_addresses``.

    Used from the event loop only (no lock needed). ``clock`` is injectable for tests.
    """

    def __init__(
        self,
        limit: int,
        window_s: float,
        max_addresses: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self.clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or ``None`` if it is not throttled."""
        if self.limit == 0:
            return None
        times = self._failures.get(address)
        if times is None:
            return None
        now = self.clock()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if not times:
            del self._failures[address]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + self.window_s - now))

    def failed(self, address: str) -> None:
        if self.limit == 0:
            return
        times = self._failures.get(address)
        if times is None:
            times = self._failures[address] = deque(maxlen=self.limit)
        self._failures.move_to_end(address)
        times.append(self.clock())
        while len(self._failures) > self.max_addresses:
            self._failures.popitem(last=False)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


class GuardMiddleware:
    """See the module docstring. ``routes`` gives the app's routes (to tell 404/405 apart)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Callable[[], list[BaseRoute]],
        store_pool: Any,
        limits: RequestLimits,
        limiter: FailureLimiter | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.pool = store_pool
        self.limits = limits
        self.limiter = limiter or FailureLimiter(
            limits.auth_failure_limit, limits.auth_failure_window_s, limits.max_tracked_addresses
        )

    def _matches_a_route(self, scope: Scope) -> bool:
        for route in self.routes():
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return True
        return False

    def _authenticate(self, header: str | None, allow_basic: bool) -> Any:
        from stormwatch.api.auth import principal_from_authorization

        store = self.pool.acquire()
        try:
            return principal_from_authorization(store, header, allow_basic=allow_basic)
        finally:
            self.pool.release(store)

    async def _answer(
        self, send: Send, rule: PathRule, status: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        """Send an error in the path's style and close the connection (the body stays unread)."""
        if rule.style == "taxii":
            title = {401: "Unauthorized", 413: "Request too large", 429: "Too many requests"}.get(status, "Error")
            body = orjson.dumps({"title": title, "description": message, "http_status": str(status)})
            media = TAXII_MEDIA_TYPE
            if status == 401:
                headers = {**(headers or {}), "WWW-Authenticate": 'Basic realm="stormwatch TAXII", Bearer'}
        else:
            body = orjson.dumps(error_body(status, message))
            media = "application/json"
        raw_headers = [
            (b"content-type", media.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": raw_headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        root_path: str = scope.get("root_path", "")
        if root_path and path.startswith(root_path):
            path = path[len(root_path) :] or "/"
        rule = self.limits.rule_for(path)
        state: dict[str, Any] = scope.setdefault("state", {})
        if self._matches_a_route(scope):
            address = _client_address(scope)
            wait = self.limiter.retry_after(address)
            if wait is not None:
                await self._answer(
                    send,
                    rule,
                    429,
                    f"too many failed authentications from {address}: try again in {wait} s",
                    {"Retry-After": str(wait)},
                )
                return
            authorization = _header(scope, b"authorization")
            if authorization is None and rule.api_key_header:
                # LiteLLM's Generic Guardrail API sends its api_key as ``x-api-key: <token>``
                api_key = _header(scope, b"x-api-key")
                authorization = f"Bearer {api_key.strip()}" if api_key else None
            try:
                state["principal"] = await run_in_threadpool(self._authenticate, authorization, rule.allow_basic)
            except AuthenticationError as exc:
                self.limiter.failed(address)
                await self._answer(send, rule, exc.status, str(exc), dict(exc.headers or {}))
                return
            except ApiError as exc:  # pragma: no cover - the token table raises only 401s
                await self._answer(send, rule, exc.status, str(exc), dict(exc.headers or {}))
                return
        limit = rule.max_body_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > limit
            except ValueError:  # the server (h11) refuses these already
                too_big = False
            if too_big:
                await self._answer(send, rule, 413, f"request body of {declared} bytes is over the limit of {limit}")
                return
        await self._guarded(scope, receive, send, rule, limit)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, rule: PathRule, limit: int) -> None:
        seen = 0
        started = False  # the app began its response
        answered = False  # the guard sent 413 itself

        async def capped_receive() -> Message:
            nonlocal seen, answered
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    if not started and not answered:
                        answered = True
                        await self._answer(send, rule, 413, f"request body over the limit of {limit} bytes")
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if answered:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            # BodyTooLarge, or what the app made of it (a 400 "error parsing the body", a 500):
            # the client already has its 413
            if not answered:
                raise
