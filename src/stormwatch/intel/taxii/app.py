"""The TAXII 2.1 routes as an ASGI (Starlette) app, with pluggable authentication.

:func:`create_taxii_app` builds the app for a store source and an authenticator. Mounted at
``/taxii2`` inside the stormwatch API (:mod:`stormwatch.intel.taxii.api`) it authenticates with
the API's tokens; standalone (tests, ``stormwatch intel serve``) it takes any authenticator.

Conformance notes (see ``docs/sharing.md``): ``Accept: application/taxii+json`` with or without
``;version=2.1`` (and ``*/*``) is served, anything else 406; POST bodies must be
``application/taxii+json`` (415 otherwise), at most ``max_content_length`` bytes (413); every
error is a TAXII error resource (``title``, ``description``, ``http_status``), 401 and 500 included.

A POST is authenticated and its write permission checked *before* a byte of the body is read
(401/403/404 answer at once); the body is then read as a stream and the read stops with 413 as
soon as it passes the API root's ``max_content_length`` (a larger ``Content-Length`` is refused
unread), so the app never buffers more than the limit, mounted in the API or served alone.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from stormwatch.intel import STIX_MEDIA_TYPE, TAXII_MEDIA_TYPE
from stormwatch.intel.taxii import repo
from stormwatch.intel.taxii.repo import Caller, TaxiiError
from stormwatch.store import Store, open_store

log = logging.getLogger("stormwatch.intel.taxii")


class StoreSource(Protocol):
    def acquire(self, timeout: float = 30.0) -> Store: ...

    def release(self, store: Store) -> None: ...


class SimplePool:
    """A few stores over one database URL, one per request at a time."""

    def __init__(self, url: str | None, size: int = 4) -> None:
        self.url = url
        self.size = size
        self._idle: queue.LifoQueue[Store] = queue.LifoQueue()
        self._all: list[Store] = []
        self._lock = threading.Lock()

    def acquire(self, timeout: float = 30.0) -> Store:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if len(self._all) < self.size:
                store = open_store(self.url, migrate=not self._all)
                self._all.append(store)
                return store
        return self._idle.get(timeout=timeout)

    def release(self, store: Store) -> None:
        store.rollback()
        self._idle.put(store)

    def close(self) -> None:
        with self._lock:
            for s in self._all:
                s.close()
            self._all.clear()


Authenticator = Callable[[Request, Store], Caller]

_TAXII_TYPES = ("application/taxii+json",)


def _media_ok(header: str | None, *, allow_any: bool) -> bool:
    """Does an Accept / Content-Type value name TAXII 2.1 (version parameter optional)?"""
    if header is None:
        return allow_any
    for part in header.split(","):
        tokens = [t.strip().lower() for t in part.split(";")]
        mtype = tokens[0]
        params = dict(t.split("=", 1) for t in tokens[1:] if "=" in t)
        if allow_any and mtype in ("*/*", "application/*"):
            return True
        if mtype in _TAXII_TYPES and params.get("version", "2.1").strip('"') == "2.1":
            return True
    return False


def _response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Response(raw, status_code=status, media_type=TAXII_MEDIA_TYPE, headers=headers)


def _error(exc: TaxiiError) -> Response:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="stormwatch TAXII", Bearer'
    return _response(exc.body(), exc.status, headers)


def _params(request: Request) -> dict[str, list[str]]:
    return parse_qs(request.url.query, keep_blank_values=True)


def create_taxii_app(
    source: StoreSource,
    authenticate: Authenticator,
    *,
    title: str = "stormwatch TAXII 2.1 server",
    description: str | None = "Threat intelligence about misuse of AI services, shared by stormwatch.",
    contact: str | None = None,
) -> Starlette:
    """The TAXII 2.1 app. Discovery is at ``/``, API roots at ``/{root}/`` (relative to the mount)."""

    def base_url(request: Request) -> str:
        root_path = request.scope.get("root_path", "")
        return f"{request.url.scheme}://{request.url.netloc}{root_path}"

    def precheck(request: Request) -> Response | None:
        if not _media_ok(request.headers.get("accept"), allow_any=True):
            return _error(TaxiiError(406, "Not acceptable", "this server speaks application/taxii+json;version=2.1"))
        if any("\x00" in str(v) for v in request.path_params.values()):
            return _error(TaxiiError(400, "Bad request", "the path contains a NUL character"))
        return None

    async def in_store(request: Request, fn: Callable[[Store], Response]) -> Response:
        """Run ``fn`` with a store in a worker thread; errors become TAXII error resources."""

        def work() -> Response:
            store = source.acquire()
            try:
                return fn(store)
            finally:
                source.release(store)

        try:
            return await run_in_threadpool(work)
        except TaxiiError as exc:
            return _error(exc)
        except Exception:  # a TAXII error body for 500 too, never a stack trace or HTML
            log.exception("TAXII request failed: %s %s", request.method, request.url.path)
            return _error(TaxiiError(500, "Internal error", "the server could not complete the request"))

    async def run(request: Request, fn: Callable[[Store, Caller], Response]) -> Response:
        early = precheck(request)
        if early is not None:
            return early
        return await in_store(request, lambda store: fn(store, authenticate(request, store)))

    async def discovery(request: Request) -> Response:
        def fn(store: Store, caller: Caller) -> Response:
            roots = [f"{base_url(request)}/{r}/" for r in repo.list_roots(store)]
            out: dict[str, Any] = {"title": title, "api_roots": roots}
            if description:
                out["description"] = description
            if contact:
                out["contact"] = contact
            if roots:
                out["default"] = roots[0]
            return _response(out)

        return await run(request, fn)

    async def api_root(request: Request) -> Response:
        root = request.path_params["root"]
        return await run(request, lambda store, caller: _response(repo.get_root(store, root)))

    async def status(request: Request) -> Response:
        root, sid = request.path_params["root"], request.path_params["status_id"]

        def fn(store: Store, caller: Caller) -> Response:
            repo.get_root(store, root)
            return _response(repo.get_status(store, root, sid, caller))

        return await run(request, fn)

    async def collections(request: Request) -> Response:
        root = request.path_params["root"]

        def fn(store: Store, caller: Caller) -> Response:
            cols = repo.list_collections(store, root, caller)
            return _response({"collections": [c.resource() for c in cols]} if cols else {})

        return await run(request, fn)

    async def collection(request: Request) -> Response:
        root, cid = request.path_params["root"], request.path_params["cid"]
        return await run(
            request, lambda store, caller: _response(repo.get_collection(store, root, cid, caller).resource())
        )

    def readable(store: Store, root: str, cid: str, caller: Caller) -> repo.Collection:
        col = repo.get_collection(store, root, cid, caller)
        if not col.can_read:
            raise TaxiiError(403, "Forbidden", "you may not read this collection")
        return col

    def headers_for(pg: repo.Page) -> dict[str, str]:
        if not pg.rows:
            return {}
        return {"X-TAXII-Date-Added-First": str(pg.first_added), "X-TAXII-Date-Added-Last": str(pg.last_added)}

    def envelope(pg: repo.Page) -> bytes:
        if not pg.rows:
            return b"{}"
        head = b'{"more":true,"next":' + orjson.dumps(pg.next) + b"," if pg.more else b'{"more":false,'
        return head + b'"objects":[' + ",".join(str(r[2]) for r in pg.rows).encode() + b"]}"

    _OBJ_PARAMS = {"limit", "next", "added_after", "match[id]", "match[type]", "match[version]", "match[spec_version]"}

    async def objects(request: Request) -> Response:
        root, cid = request.path_params["root"], request.path_params["cid"]
        if request.method == "POST":
            return await add_objects(request, root, cid)

        def fn(store: Store, caller: Caller) -> Response:
            readable(store, root, cid, caller)
            q = repo.parse_query(_params(request), allowed=_OBJ_PARAMS, scope=f"objects:{cid}")
            pg = repo.page(store, cid, caller, q, "body", scope=f"objects:{cid}")
            return _response(envelope(pg), headers=headers_for(pg))

        return await run(request, fn)

    async def add_objects(request: Request, root: str, cid: str) -> Response:
        # 1. who is it, may they write here, how much may they send: all before reading the body
        early = precheck(request)
        if early is not None:
            return early
        admitted: list[tuple[Caller, int]] = []

        def admit(store: Store) -> Response:
            caller = authenticate(request, store)
            info = repo.get_root(store, root)
            col = repo.get_collection(store, root, cid, caller)
            if not col.can_write:
                raise TaxiiError(403, "Forbidden", "you may not write to this collection")
            admitted.append((caller, int(info["max_content_length"])))
            return Response(status_code=204)

        answer = await in_store(request, admit)
        if not admitted:
            return answer
        caller, limit = admitted[0]
        if not _media_ok(request.headers.get("content-type"), allow_any=False):
            return _error(TaxiiError(415, "Unsupported media type", "POST an application/taxii+json envelope"))
        # 2. the body, streamed, never more than the limit in memory
        raw = await _read_capped(request, limit)
        if isinstance(raw, Response):
            return raw

        # 3. parse and store (a fresh store; the caller was authenticated above)
        def store_it(store: Store) -> Response:
            try:
                env = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise TaxiiError(400, "Bad request", f"the body is not JSON: {exc}") from None
            if not isinstance(env, dict) or not isinstance(env.get("objects"), list):
                raise TaxiiError(422, "Unprocessable envelope", 'POST an envelope: {"objects": [...]}')
            st = repo.add_objects(store, root, cid, caller, env["objects"])
            return _response(st, 202)

        return await in_store(request, store_it)

    async def manifest(request: Request) -> Response:
        root, cid = request.path_params["root"], request.path_params["cid"]

        def fn(store: Store, caller: Caller) -> Response:
            readable(store, root, cid, caller)
            q = repo.parse_query(_params(request), allowed=_OBJ_PARAMS, scope=f"manifest:{cid}")
            pg = repo.page(store, cid, caller, q, "stix_id, version", scope=f"manifest:{cid}")
            if not pg.rows:
                return _response({})
            out: dict[str, Any] = {"more": pg.more}
            if pg.next:
                out["next"] = pg.next
            out["objects"] = [
                {"id": r[2], "date_added": r[0], "version": r[3], "media_type": STIX_MEDIA_TYPE} for r in pg.rows
            ]
            return _response(out, headers=headers_for(pg))

        return await run(request, fn)

    _ONE_PARAMS = {"limit", "next", "added_after", "match[version]", "match[spec_version]"}

    async def one_object(request: Request) -> Response:
        root, cid, oid = request.path_params["root"], request.path_params["cid"], request.path_params["oid"]

        def fn(store: Store, caller: Caller) -> Response:
            col = repo.get_collection(store, root, cid, caller)
            if request.method == "DELETE":
                if not (col.can_read and col.can_write):
                    raise TaxiiError(403, "Forbidden", "deleting needs read and write access")
                params = _params(request)
                q = repo.parse_query(params, allowed={"match[version]", "match[spec_version]"}, scope="delete")
                if "match[version]" not in params:
                    q.versions = ["all"]
                if (
                    not repo.object_exists(store, cid, oid, caller)
                    or repo.delete_object(store, cid, oid, q, caller=caller, root=root) == 0
                ):
                    raise TaxiiError(404, "Unknown object", f"no object {oid!r} in this collection")
                return _response({})
            readable(store, root, cid, caller)
            q = repo.parse_query(_params(request), allowed=_ONE_PARAMS, scope=f"object:{cid}:{oid}")
            pg = repo.page(store, cid, caller, q, "body", scope=f"object:{cid}:{oid}", object_id=oid)
            if not pg.rows and not repo.object_exists(store, cid, oid, caller):
                raise TaxiiError(404, "Unknown object", f"no object {oid!r} in this collection")
            return _response(envelope(pg), headers=headers_for(pg))

        return await run(request, fn)

    async def versions(request: Request) -> Response:
        root, cid, oid = request.path_params["root"], request.path_params["cid"], request.path_params["oid"]

        def fn(store: Store, caller: Caller) -> Response:
            readable(store, root, cid, caller)
            q = repo.parse_query(
                _params(request), allowed={"limit", "next", "added_after", "match[spec_version]"},
                scope=f"versions:{cid}:{oid}",
            )  # fmt: skip
            q.versions = ["all"]
            pg = repo.page(store, cid, caller, q, "version", scope=f"versions:{cid}:{oid}", object_id=oid)
            if not pg.rows and not repo.object_exists(store, cid, oid, caller):
                raise TaxiiError(404, "Unknown object", f"no object {oid!r} in this collection")
            out: dict[str, Any] = {"more": pg.more}
            if pg.next:
                out["next"] = pg.next
            out["versions"] = [r[2] for r in pg.rows]
            return _response(out, headers=headers_for(pg))

        return await run(request, fn)

    routes = [
        Route("/", discovery, methods=["GET"]),
        Route("/{root}/", api_root, methods=["GET"]),
        Route("/{root}/status/{status_id}/", status, methods=["GET"]),
        Route("/{root}/collections/", collections, methods=["GET"]),
        Route("/{root}/collections/{cid}/", collection, methods=["GET"]),
        Route("/{root}/collections/{cid}/manifest/", manifest, methods=["GET"]),
        Route("/{root}/collections/{cid}/objects/", objects, methods=["GET", "POST"]),
        Route("/{root}/collections/{cid}/objects/{oid}/", one_object, methods=["GET", "DELETE"]),
        Route("/{root}/collections/{cid}/objects/{oid}/versions/", versions, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        code = int(getattr(exc, "status_code", 404))
        titles = {404: "Not found", 405: "Method not allowed"}
        return _error(TaxiiError(code, titles.get(code, "Error"), str(getattr(exc, "detail", "")) or ""))

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})


async def _read_capped(request: Request, limit: int) -> bytearray | Response:
    """The request body (not copied again), or a 413/400 error as soon as it is known to pass ``limit`` bytes."""
    too_large = TaxiiError(413, "Request too large", f"the limit is {limit} bytes (the API root's max_content_length)")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            return _error(TaxiiError(400, "Bad request", f"Content-Length {declared!r} is not a number"))
        if int(declared) > limit:
            return _error(too_large)
    buf = bytearray()
    try:
        async for chunk in request.stream():
            buf += chunk
            if len(buf) > limit:
                return _error(too_large)
    except ClientDisconnect:
        return _error(TaxiiError(400, "Bad request", "the client went away before sending the whole body"))
    return buf


def static_authenticator(users: dict[str, str]) -> Authenticator:
    """HTTP Basic (user/password) or ``Bearer``/``Token`` (the password) against a fixed table.

    For a standalone server and tests; inside the stormwatch API the API's tokens are used.
    """
    import base64
    import binascii
    import hmac

    by_secret = {pw: name for name, pw in users.items()}

    def authenticate(request: Request, store: Store) -> Caller:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "basic" and value:
            try:
                user, sep, pw = base64.b64decode(value, validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, sep, pw = "", "", ""
            want = users.get(user)
            if sep and want is not None and hmac.compare_digest(want.encode(), pw.encode()):
                return Caller(user)
        elif scheme.lower() in ("bearer", "token") and value:
            for secret, name in by_secret.items():
                if hmac.compare_digest(secret.encode(), value.encode()):
                    return Caller(name)
        raise TaxiiError(401, "Unauthorized", "send HTTP Basic credentials or a Bearer token")

    return authenticate
