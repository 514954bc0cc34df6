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

On the online screening routes (``RequestLimits.token_cache_paths``: ``POST /v1/moderations`` and
the LiteLLM guardrail, called once per LLM request) a verified token is remembered for
``token_cache_ttl_s`` seconds (:class:`TokenCache`, keyed by the token's SHA-256, never the token;
at most ``token_cache_size`` entries), so those requests are authenticated on the event loop
without a database round trip. A token revoked with ``stormwatch token revoke`` (another process)
is refused there within that many seconds; one revoked through ``POST /api/v1/tokens/{id}/revoke``
is forgotten at once by the process that revoked it; an expiring token is never remembered past its
expiry. Every other route checks the token table on every request.

The failure table is bounded: at most ``max_tracked_addresses`` addresses, least recently failed
dropped first. Addresses are the TCP peer's (``stormwatch serve`` ignores ``X-Forwarded-For``), so
behind a reverse proxy every client shares the proxy's address: limit there, or raise the limit.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    "TokenCache",
]

MiB = 1024 * 1024
#: API routes: the largest legitimate JSON body (a retry of 10,000 action ids) is well below this
DEFAULT_MAX_BODY_BYTES = 8 * MiB
#: TAXII envelopes: the default ``max_content_length`` of an API root (stormwatch.intel.taxii.server)
TAXII_MAX_BODY_BYTES = 64 * MiB
TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
#: the online screening routes, called once per LLM request: their tokens are cached (TokenCache)
SCREENING_PATHS = ("/v1/moderations", "/beta/litellm_basic_guardrail_api")


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
    #: seconds a verified token is trusted without the database on ``token_cache_paths`` (0: never)
    token_cache_ttl_s: float = 5.0
    token_cache_size: int = 1024
    token_cache_paths: tuple[str, ...] = SCREENING_PATHS

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1 or any(r.max_body_bytes < 1 for r in self.rules):
            raise ValueError("a body limit must be at least 1 byte")
        if self.auth_failure_limit < 0 or self.auth_failure_window_s <= 0 or self.max_tracked_addresses < 1:
            raise ValueError("auth_failure_limit >= 0, auth_failure_window_s > 0, max_tracked_addresses >= 1")
        if self.token_cache_ttl_s < 0 or self.token_cache_size < 1:
            raise ValueError("token_cache_ttl_s >= 0, token_cache_size >= 1")

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


class TokenCache:
    """Tokens verified in the last ``ttl_s`` seconds: SHA-256 of the token -> (principal, deadline).

    Bounded (``max_entries``, least recently used dropped first); an entry never outlives the
    token's ``expires_at``. The key is the token's digest, so the token itself is never kept.
    Thread-safe (the guard uses it from the event loop; the revoke route from a worker thread).
    ``ttl_s = 0`` keeps nothing. ``clock`` is injectable for tests.
    """

    def __init__(self, ttl_s: float, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0 or max_entries < 1:
            raise ValueError("ttl_s >= 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[bytes, tuple[Any, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode("utf-8")).digest()

    def get(self, key: bytes) -> Any:
        """The principal remembered for ``key``, or ``None`` (unknown, or older than the TTL)."""
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                return None
            if found[1] <= self.clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return found[0]

    def put(self, key: bytes, principal: Any, expires_at: str | None = None) -> None:
        """Remember ``principal`` for ``ttl_s`` seconds, or until ``expires_at`` (ISO 8601) if sooner."""
        if self.ttl_s <= 0:
            return
        now = self.clock()
        deadline = now + self.ttl_s
        if expires_at is not None:
            try:
                left = (datetime.fromisoformat(expires_at.replace("Z", "+00:00")) - datetime.now(UTC)).total_seconds()
            except ValueError:
                return
            if left <= 0:
                return
            deadline = min(deadline, now + left)
        with self._lock:
            self._entries[key] = (principal, deadline)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, token_id: str) -> None:
        """Drop every entry of this token id (it was just revoked in this process)."""
        with self._lock:
            for key in [k for k, (p, _) in self._entries.items() if getattr(p, "token_id", None) == token_id]:
                del self._entries[key]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


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
    """See the module docstring. ``routes`` gives the app's routes (to tell 404/405 apart).

    ``exact_routes``, if given, gives the ``(method, path)`` pairs of routes without path
    parameters: a request with one of them matches a route without scanning them all (any other
    request is matched against ``routes()`` as before). ``token_cache``: see :class:`TokenCache`
    (default: one from ``limits``).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Callable[[], list[BaseRoute]],
        store_pool: Any,
        limits: RequestLimits,
        limiter: FailureLimiter | None = None,
        exact_routes: Callable[[], frozenset[tuple[str, str]]] | None = None,
        token_cache: TokenCache | None = None,
    ) -> None:
        self.app = app
        self.routes = routes
        self.exact_routes = exact_routes
        self.pool = store_pool
        self.limits = limits
        self.limiter = limiter or FailureLimiter(
            limits.auth_failure_limit, limits.auth_failure_window_s, limits.max_tracked_addresses
        )
        self.token_cache = (
            token_cache if token_cache is not None else TokenCache(limits.token_cache_ttl_s, limits.token_cache_size)
        )
        self._cached_paths = frozenset(limits.token_cache_paths) if self.token_cache.ttl_s > 0 else frozenset()

    def _matches_a_route(self, scope: Scope, path: str) -> bool:
        if self.exact_routes is not None and (scope["method"], path) in self.exact_routes():
            return True
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

    def _verify(self, token: str) -> tuple[Any, str | None]:
        """The token's principal and expiry, from the token table (on a worker thread)."""
        from stormwatch.api.auth import Principal
        from stormwatch.api.tokens import InvalidTokenError, verify_token

        store = self.pool.acquire()
        try:
            info = verify_token(store, token)
        except InvalidTokenError as exc:
            raise AuthenticationError(str(exc), invalid_token=True) from None
        finally:
            self.pool.release(store)
        return Principal.from_token(info), info.expires_at

    async def _principal(self, path: str, authorization: str | None, allow_basic: bool) -> Any:
        if path not in self._cached_paths:
            return await run_in_threadpool(self._authenticate, authorization, allow_basic)
        from stormwatch.api.auth import bearer_token

        token = bearer_token(authorization, allow_basic=allow_basic)  # 401 for a missing/odd header
        key = self.token_cache.key(token)
        principal = self.token_cache.get(key)
        if principal is None:
            principal, expires_at = await run_in_threadpool(self._verify, token)
            self.token_cache.put(key, principal, expires_at)
        return principal

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
        if self._matches_a_route(scope, path):
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
                state["principal"] = await self._principal(path, authorization, rule.allow_basic)
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
