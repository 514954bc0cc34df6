"""The TAXII 2.1 routes as an ASGI (Starlette) app, with pluggable authentication.

:class:`TaxiiApp` holds the routes (one method per endpoint) for a store source and an
authenticator; :func:`create_taxii_app` makes the Starlette app of it. Mounted at
``/taxii2`` inside the stormwatch API (:mod:`stormwatch.api.taxii`) it authenticates with
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
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from stormwatch.intel import STIX_MEDIA_TYPE, TAXII_MEDIA_TYPE
from stormwatch.intel.taxii import server
from stormwatch.intel.taxii.server import Caller, Page, TaxiiError
from stormwatch.store import Store
from stormwatch.store.pool import StorePool, StoreSource

__all__ = ["Authenticator", "StorePool", "StoreSource", "TaxiiApp", "create_taxii_app", "static_authenticator"]

log = logging.getLogger("stormwatch.intel.taxii")

Authenticator = Callable[[Request, Store], Caller]

_TAXII_TYPES = ("application/taxii+json",)
_OBJ_PARAMS = {"limit", "next", "added_after", "match[id]", "match[type]", "match[version]", "match[spec_version]"}
_ONE_PARAMS = {"limit", "next", "added_after", "match[version]", "match[spec_version]"}
_VERSIONS_PARAMS = {"limit", "next", "added_after", "match[spec_version]"}
_DELETE_PARAMS = {"match[version]", "match[spec_version]"}


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


def _page_headers(pg: Page) -> dict[str, str]:
    if not pg.rows:
        return {}
    return {"X-TAXII-Date-Added-First": str(pg.first_added), "X-TAXII-Date-Added-Last": str(pg.last_added)}


def _envelope(pg: Page) -> bytes:
    """The objects envelope, the stored bodies spliced in as they are (never parsed again)."""
    if not pg.rows:
        return b"{}"
    head = b'{"more":true,"next":' + orjson.dumps(pg.next) + b"," if pg.more else b'{"more":false,'
    return head + b'"objects":[' + ",".join(r.body for r in pg.rows).encode() + b"]}"


def _readable(store: Store, root: str, cid: str, caller: Caller) -> server.Collection:
    col = server.get_collection(store, root, cid, caller)
    if not col.can_read:
        raise TaxiiError(403, "Forbidden", "you may not read this collection")
    return col


def _unknown_object(oid: str) -> TaxiiError:
    return TaxiiError(404, "Unknown object", f"no object {oid!r} in this collection")


class TaxiiApp:
    """The TAXII 2.1 endpoints over a store source, one method per route.

    Every handler runs its store work through :meth:`_run` (content negotiation, then
    authentication and the work in a worker thread with a pooled store; errors become TAXII error
    resources). A POST is the exception: :meth:`_add_objects` admits the caller first, then reads
    the capped body, then stores it.
    """

    def __init__(
        self,
        source: StoreSource,
        authenticate: Authenticator,
        *,
        title: str = "stormwatch TAXII 2.1 server",
        description: str | None = "Threat intelligence about misuse of AI services, shared by stormwatch.",
        contact: str | None = None,
    ) -> None:
        self.source = source
        self.authenticate = authenticate
        self.title = title
        self.description = description
        self.contact = contact

    def routes(self) -> list[Route]:
        return [
            Route("/", self.discovery, methods=["GET"]),
            Route("/{root}/", self.api_root, methods=["GET"]),
            Route("/{root}/status/{status_id}/", self.status, methods=["GET"]),
            Route("/{root}/collections/", self.collections, methods=["GET"]),
            Route("/{root}/collections/{cid}/", self.collection, methods=["GET"]),
            Route("/{root}/collections/{cid}/manifest/", self.manifest, methods=["GET"]),
            Route("/{root}/collections/{cid}/objects/", self.objects, methods=["GET", "POST"]),
            Route("/{root}/collections/{cid}/objects/{oid}/", self.one_object, methods=["GET", "DELETE"]),
            Route("/{root}/collections/{cid}/objects/{oid}/versions/", self.versions, methods=["GET"]),
        ]

    def starlette(self) -> Starlette:
        return Starlette(routes=self.routes(), exception_handlers={404: _not_found, 405: _not_found})

    # -- plumbing ------------------------------------------------------------------------------
    @staticmethod
    def _precheck(request: Request) -> Response | None:
        if not _media_ok(request.headers.get("accept"), allow_any=True):
            return _error(TaxiiError(406, "Not acceptable", "this server speaks application/taxii+json;version=2.1"))
        if any("\x00" in str(v) for v in request.path_params.values()):
            return _error(TaxiiError(400, "Bad request", "the path contains a NUL character"))
        return None

    async def _in_store(self, request: Request, fn: Callable[[Store], Response]) -> Response:
        """Run ``fn`` with a store in a worker thread; errors become TAXII error resources."""

        def work() -> Response:
            store = self.source.acquire()
            try:
                return fn(store)
            finally:
                self.source.release(store)

        try:
            return await run_in_threadpool(work)
        except TaxiiError as exc:
            return _error(exc)
        except Exception:  # a TAXII error body for 500 too, never a stack trace or HTML
            log.exception("TAXII request failed: %s %s", request.method, request.url.path)
            return _error(TaxiiError(500, "Internal error", "the server could not complete the request"))

    async def _run(self, request: Request, fn: Callable[[Store, Caller], Response]) -> Response:
        early = self._precheck(request)
        if early is not None:
            return early
        return await self._in_store(request, lambda store: fn(store, self.authenticate(request, store)))

    # -- discovery, roots, status, collections --------------------------------------------------
    async def discovery(self, request: Request) -> Response:
        root_path = request.scope.get("root_path", "")
        base = f"{request.url.scheme}://{request.url.netloc}{root_path}"

        def fn(store: Store, caller: Caller) -> Response:
            roots = [f"{base}/{r}/" for r in server.list_roots(store)]
            out: dict[str, Any] = {"title": self.title, "api_roots": roots}
            if self.description:
                out["description"] = self.description
            if self.contact:
                out["contact"] = self.contact
            if roots:
                out["default"] = roots[0]
            return _response(out)

        return await self._run(request, fn)

    async def api_root(self, request: Request) -> Response:
        root = request.path_params["root"]
        return await self._run(request, lambda store, caller: _response(server.get_root(store, root)))

    async def status(self, request: Request) -> Response:
        root, sid = request.path_params["root"], request.path_params["status_id"]

        def fn(store: Store, caller: Caller) -> Response:
            server.get_root(store, root)
            return _response(server.get_status(store, root, sid, caller))

        return await self._run(request, fn)

    async def collections(self, request: Request) -> Response:
        root = request.path_params["root"]

        def fn(store: Store, caller: Caller) -> Response:
            cols = server.list_collections(store, root, caller)
            return _response({"collections": [c.resource() for c in cols]} if cols else {})

        return await self._run(request, fn)

    async def collection(self, request: Request) -> Response:
        root, cid = request.path_params["root"], request.path_params["cid"]
        return await self._run(
            request, lambda store, caller: _response(server.get_collection(store, root, cid, caller).resource())
        )

    # -- objects -------------------------------------------------------------------------------
    async def objects(self, request: Request) -> Response:
        root, cid = request.path_params["root"], request.path_params["cid"]
        if request.method == "POST":
            return await self._add_objects(request, root, cid)

        def fn(store: Store, caller: Caller) -> Response:
            _readable(store, root, cid, caller)
            scope = f"objects:{cid}"
            q = server.parse_query(_params(request), allowed=_OBJ_PARAMS, scope=scope)
            pg = server.page(store, cid, caller, q, scope=scope)
            return _response(_envelope(pg), headers=_page_headers(pg))

        return await self._run(request, fn)

    async def _add_objects(self, request: Request, root: str, cid: str) -> Response:
        # 1. who is it, may they write here, how much may they send: all before reading the body
        early = self._precheck(request)
        if early is not None:
            return early
        admitted: list[tuple[Caller, int]] = []

        def admit(store: Store) -> Response:
            caller = self.authenticate(request, store)
            info = server.get_root(store, root)
            col = server.get_collection(store, root, cid, caller)
            if not col.can_write:
                raise TaxiiError(403, "Forbidden", "you may not write to this collection")
            admitted.append((caller, int(info["max_content_length"])))
            return Response(status_code=204)

        answer = await self._in_store(request, admit)
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
            return _response(server.add_objects(store, root, cid, caller, env["objects"]), 202)

        return await self._in_store(request, store_it)

    async def manifest(self, request: Request) -> Response:
        root, cid = request.path_params["root"], request.path_params["cid"]

        def fn(store: Store, caller: Caller) -> Response:
            _readable(store, root, cid, caller)
            scope = f"manifest:{cid}"
            q = server.parse_query(_params(request), allowed=_OBJ_PARAMS, scope=scope)
            pg = server.page(store, cid, caller, q, scope=scope)
            if not pg.rows:
                return _response({})
            out: dict[str, Any] = {"more": pg.more}
            if pg.next:
                out["next"] = pg.next
            out["objects"] = [
                {"id": r.stix_id, "date_added": r.date_added, "version": r.version, "media_type": STIX_MEDIA_TYPE}
                for r in pg.rows
            ]
            return _response(out, headers=_page_headers(pg))

        return await self._run(request, fn)

    async def one_object(self, request: Request) -> Response:
        root, cid, oid = request.path_params["root"], request.path_params["cid"], request.path_params["oid"]

        def fn(store: Store, caller: Caller) -> Response:
            if request.method == "DELETE":
                return self._delete(store, caller, request, root, cid, oid)
            _readable(store, root, cid, caller)
            scope = f"object:{cid}:{oid}"
            q = server.parse_query(_params(request), allowed=_ONE_PARAMS, scope=scope)
            pg = server.page(store, cid, caller, q, scope=scope, object_id=oid)
            if not pg.rows and not server.object_exists(store, cid, oid, caller):
                raise _unknown_object(oid)
            return _response(_envelope(pg), headers=_page_headers(pg))

        return await self._run(request, fn)

    @staticmethod
    def _delete(store: Store, caller: Caller, request: Request, root: str, cid: str, oid: str) -> Response:
        col = server.get_collection(store, root, cid, caller)
        if not (col.can_read and col.can_write):
            raise TaxiiError(403, "Forbidden", "deleting needs read and write access")
        params = _params(request)
        q = server.parse_query(params, allowed=_DELETE_PARAMS, scope="delete")
        if "match[version]" not in params:
            q.versions = ["all"]
        if (
            not server.object_exists(store, cid, oid, caller)
            or server.delete_object(store, cid, oid, q, caller=caller, root=root) == 0
        ):
            raise _unknown_object(oid)
        return _response({})

    async def versions(self, request: Request) -> Response:
        root, cid, oid = request.path_params["root"], request.path_params["cid"], request.path_params["oid"]

        def fn(store: Store, caller: Caller) -> Response:
            _readable(store, root, cid, caller)
            scope = f"versions:{cid}:{oid}"
            q = server.parse_query(_params(request), allowed=_VERSIONS_PARAMS, scope=scope, versions=["all"])
            pg = server.page(store, cid, caller, q, scope=scope, object_id=oid)
            if not pg.rows and not server.object_exists(store, cid, oid, caller):
                raise _unknown_object(oid)
            out: dict[str, Any] = {"more": pg.more}
            if pg.next:
                out["next"] = pg.next
            out["versions"] = [r.version for r in pg.rows]
            return _response(out, headers=_page_headers(pg))

        return await self._run(request, fn)


def create_taxii_app(
    source: StoreSource,
    authenticate: Authenticator,
    *,
    title: str = "stormwatch TAXII 2.1 server",
    description: str | None = "Threat intelligence about misuse of AI services, shared by stormwatch.",
    contact: str | None = None,
) -> Starlette:
    """The TAXII 2.1 app. Discovery is at ``/``, API roots at ``/{root}/`` (relative to the mount)."""
    return TaxiiApp(source, authenticate, title=title, description=description, contact=contact).starlette()


async def _not_found(request: Request, exc: Exception) -> Response:
    code = int(getattr(exc, "status_code", 404))
    titles = {404: "Not found", 405: "Method not allowed"}
    return _error(TaxiiError(code, titles.get(code, "Error"), str(getattr(exc, "detail", "")) or ""))


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
