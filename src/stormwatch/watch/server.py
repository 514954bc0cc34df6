"""The watcher's own small HTTP server: ``GET /healthz`` and ``GET /metrics``, token-authenticated.

Every request is authenticated before anything else (an unknown path answers 401 without a token,
404 with one): ``Authorization: Bearer <API token>``, a token made with ``stormwatch token create``
of any role whose scopes, if it has any, include ``metrics`` (``--scope metrics`` makes a token
good for this and nothing else: the API refuses it everywhere). A verified token is
remembered for :data:`TOKEN_CACHE_S` seconds, so a revocation takes effect within that time.
``--metrics-no-auth`` drops the check, and is refused unless the server listens on loopback only.

Requests are bounded: GET/HEAD only (no body is read), a 5-second socket timeout, and at most
:data:`AUTH_FAILURES_PER_MINUTE` failed authentications per client address per minute (then 429).
Nothing is logged of a request but its path, status and the token id.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from stormwatch.api.tokens import InvalidTokenError, TokenInfo, verify_token
from stormwatch.errors import ConfigError
from stormwatch.store import Store, open_store
from stormwatch.watch.metrics import CONTENT_TYPE, WatchMetrics

__all__ = ["PERMISSION", "WatchServer", "is_loopback", "parse_listen"]

log = logging.getLogger("stormwatch.watch")
PERMISSION = "metrics"
TOKEN_CACHE_S = 30.0
AUTH_FAILURES_PER_MINUTE = 20
LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9464")
    return host.strip("[]"), int(port)


def _allowed(info: TokenInfo) -> bool:
    """Every role may read the watcher's health and metrics; scopes, when a token has them, must name it."""
    return not info.scopes or PERMISSION in info.scopes


class _Auth:
    """Token checks on one database connection of their own, with a short cache of verified tokens."""

    def __init__(self, db_url: str | None) -> None:
        self.db_url = db_url
        self._store: Store | None = None
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, TokenInfo]] = {}
        self._failures: dict[str, list[float]] = {}

    def limited(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(client, []) if now - t < 60.0]
            self._failures[client] = recent
            return len(recent) >= AUTH_FAILURES_PER_MINUTE

    def failed(self, client: str) -> None:
        with self._lock:
            self._failures.setdefault(client, []).append(time.monotonic())
            if len(self._failures) > 10_000:  # bounded memory under a spray of addresses
                self._failures.clear()

    def check(self, header: str | None) -> tuple[int, str, TokenInfo | None]:
        """(status, message, token): 200 with the token, else 401/403 and why."""
        if not header:
            return 401, "missing token: send Authorization: Bearer <token>", None
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return 401, "unsupported Authorization header: send Bearer <token>", None
        key = hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < TOKEN_CACHE_S:
                info = hit[1]
            else:
                try:
                    if self._store is None:
                        self._store = open_store(self.db_url)
                    info = verify_token(self._store, token)
                except InvalidTokenError as exc:
                    return 401, str(exc), None
                except Exception as exc:  # the database: no answer either way
                    if self._store is not None:
                        self._store.close()
                    self._store = None
                    log.warning("token check failed: %s", type(exc).__name__)
                    return 503, "cannot check the token now", None
                if len(self._cache) > 1000:
                    self._cache.clear()
                self._cache[key] = (now, info)
        if not _allowed(info):
            return 403, f"token {info.token_id} may not read metrics (role and scopes must allow 'metrics')", info
        return 200, "", info

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


class WatchServer:
    def __init__(
        self,
        listen: str,
        *,
        db_url: str | None,
        metrics: WatchMetrics,
        health: Callable[[], tuple[int, dict[str, Any]]],
        no_auth: bool = False,
        allow_remote: bool = False,
    ) -> None:
        host, port = parse_listen(listen)
        if not is_loopback(host):
            if not allow_remote:
                raise ConfigError(
                    f"refusing to listen on {host}: it is not a loopback address",
                    hint="pass --allow-remote (tokens then cross the network: put TLS in front)",
                )
            if no_auth:
                raise ConfigError("--metrics-no-auth is only allowed on a loopback address")
        self.auth = None if no_auth else _Auth(db_url)
        handler = _handler(self.auth, metrics, health)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = host, int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="stormwatch-watch-http", daemon=True)

    def start(self) -> None:
        self._thread.start()
        log.info("health and metrics on http://%s:%d/healthz and /metrics", self.host, self.port)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.auth is not None:
            self.auth.close()


def _handler(
    auth: _Auth | None, metrics: WatchMetrics, health: Callable[[], tuple[int, dict[str, Any]]]
) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        timeout = 5
        server_version = "stormwatch-watch"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:  # the default logs the whole request line
            return

        def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        def _json(self, status: int, doc: dict[str, Any], extra: dict[str, str] | None = None) -> None:
            self._send(status, orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n", "application/json", extra)

        def _route(self, allowed: bool = True) -> None:
            path = self.path.split("?", 1)[0]
            who = "-"
            if auth is not None:
                client = self.client_address[0]
                if auth.limited(client):
                    self._json(429, {"error": "too many failed authentications; wait a minute"}, {"Retry-After": "60"})
                    return
                status, msg, info = auth.check(self.headers.get("Authorization"))
                if status != 200:
                    if status in (401, 403):
                        auth.failed(client)
                    hdr = {"WWW-Authenticate": 'Bearer realm="stormwatch-watch"'} if status == 401 else None
                    self._json(status, {"error": msg}, hdr)
                    log.info("%s %s -> %d", self.command, path, status)
                    return
                who = info.token_id if info else "-"
            if not allowed:
                self._json(405, {"error": "only GET"}, {"Allow": "GET, HEAD"})
            elif path == "/metrics":
                self._send(200, metrics.render(), CONTENT_TYPE)
            elif path == "/healthz":
                code, doc = health()
                self._json(code, doc)
            else:
                self._json(404, {"error": "not found: GET /healthz or /metrics"})
            log.debug("%s %s by token %s", self.command, path, who)

        def do_GET(self) -> None:
            self._route()

        def do_HEAD(self) -> None:
            self._route()

        def _not_allowed(self) -> None:  # authenticated first like every request; no body is read
            self.close_connection = True
            self._route(allowed=False)

        do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    return Handler
