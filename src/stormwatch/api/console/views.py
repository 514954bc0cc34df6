"""The console's pages and forms: a Starlette app mounted at ``/console`` inside the API.

Every page authenticates through the session (:mod:`.session`) and then applies the API's own rule
for what it shows or does: the same permission constants and the same check
(:class:`stormwatch.api.auth.Requires`), the same service functions (:mod:`stormwatch.disrupt.service`,
:func:`stormwatch.api.event_text.read_events` for prompt text, audited). Nothing here decides who
may do what on its own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stormwatch.api.auth import Principal, Requires
from stormwatch.api.console import pages as pg
from stormwatch.api.console.session import (
    COOKIE,
    PRE_COOKIE,
    PRE_MAX_AGE_S,
    SESSION_MAX_AGE_S,
    SessionData,
    SessionKeeper,
)
from stormwatch.api.errors import ApiError, PermissionDenied
from stormwatch.api.guard import FailureLimiter
from stormwatch.api.roles import APPEALS_DECIDE, APPEALS_FILE, CASES_WRITE, EVENTS_TEXT, READ
from stormwatch.api.tokens import InvalidTokenError, get_token, verify_token
from stormwatch.disrupt import service
from stormwatch.errors import InputError
from stormwatch.store import Store
from stormwatch.store.pool import StorePool

__all__ = ["CSP", "MAX_FORM_BYTES", "Console"]

log = logging.getLogger("stormwatch.api.console")
HERE = Path(__file__).parent
#: the largest form body the console reads
MAX_FORM_BYTES = 64 * 1024
MAX_FIELDS = 40
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make browsers send `Origin: null`
    "Cache-Control": "no-store",
}
VIEWS = (
    ("queue", "Queue"),
    ("clusters", "Clusters"),
    ("cases", "Cases"),
    ("appeals", "Appeals"),
    ("policy", "Policy dry run"),
    ("audit", "Audit chain"),
    ("outbox", "Sharing outbox"),
    ("charts", "Charts"),
)


class NotSignedIn(Exception):
    """No valid session: the page redirects to the sign-in form."""


@dataclass
class Ctx:
    """One request: its store, caller, session and form."""

    request: Request
    store: Store
    principal: Principal
    session: SessionData
    csrf: str
    form: dict[str, str] = field(default_factory=dict)

    def require(self, permission: str) -> None:
        """The API's own check (401/403 exactly as a route with ``requires(permission)``)."""
        Requires(permission)(self.principal)

    def may(self, permission: str) -> bool:
        return self.principal.allows(permission)

    def arg(self, name: str, limit: int = 200) -> str | None:
        value = self.request.query_params.get(name)
        return value[:limit] if value else None

    def value(self, name: str, *, required: bool = True, limit: int = 20_000) -> str:
        value = self.form.get(name, "").strip()
        if required and not value:
            raise InputError(f"the form field {name!r} is required")
        if len(value) > limit:
            raise InputError(f"the form field {name!r} is longer than {limit} characters")
        return value


Handler = Callable[[Ctx], Response]


def _secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https" or os.environ.get("STORMWATCH_CONSOLE_SECURE_COOKIE") == "1"


class Console:
    """The console app over the API's store pool."""

    def __init__(self, pool: StorePool, keeper: SessionKeeper, *, prefix: str = "/console") -> None:
        self.pool = pool
        self.keeper = keeper
        self.prefix = prefix
        self.limiter = FailureLimiter(20, 60.0, 10_000)
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(prefix=prefix, views=VIEWS, quote=quote)
        self.env.filters["pct"] = lambda v: "-" if v is None else f"{100 * float(v):.0f}%"
        self.env.filters["num"] = lambda v: "-" if v is None else f"{float(v):.2f}"
        self.env.filters["short"] = lambda v: "-" if not v else str(v)[:19].replace("T", " ")

    # -- plumbing

    def url(self, path: str, **params: Any) -> str:
        query = urlencode({k: v for k, v in params.items() if v not in (None, "")})
        return f"{self.prefix}{path}" + (f"?{query}" if query else "")

    def render(self, name: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(name).render(**context)
        return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)

    def page(self, ctx: Ctx, name: str, title: str, active: str = "", code: int = 200, **context: Any) -> HTMLResponse:
        return self.render(
            name,
            code,
            title=title,
            active=active,
            principal=ctx.principal,
            csrf=ctx.csrf,
            may={
                "cases": ctx.may(CASES_WRITE),
                "appeal_file": ctx.may(APPEALS_FILE),
                "appeal_decide": ctx.may(APPEALS_DECIDE),
                "text": ctx.may(EVENTS_TEXT),
            },
            **context,
        )

    def redirect(self, path: str, request: Request) -> Response:
        headers = dict(SECURITY_HEADERS)
        if request.headers.get("hx-request"):
            headers["HX-Redirect"] = path
            return Response(status_code=204, headers=headers)
        return RedirectResponse(path, status_code=303, headers=headers)

    def _principal(self, store: Store, session: SessionData) -> Principal:
        info = get_token(store, session.token_id)
        if info is None or info.status() != "active":
            raise NotSignedIn()
        return Principal.from_token(info)

    def view(self, handler: Handler, *, post: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.keeper.read_session(request.cookies.get(COOKIE))
            if session is None:
                return self.redirect(self.url("/login", next=request.url.path), request)
            form: dict[str, str] = {}
            if post:
                bad = await self._read_form(request, form)
                if bad is not None:
                    return bad
                if not self.keeper.check_csrf(session, form.get("csrf")):
                    return self.render("error.html", 403, title="Refused", message="The form's CSRF token is "
                                       "missing or wrong: reload the page and try again.", principal=None)  # fmt: skip
            return await run_in_threadpool(self._run, handler, request, session, form)

        return endpoint

    async def _read_form(self, request: Request, form: dict[str, str]) -> Response | None:
        """Parse a bounded urlencoded body into ``form``; an answer if the request is refused."""
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return self.render("error.html", 403, title="Refused", message="Cross-origin form refused.", principal=None)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return self.render("error.html", 415, title="Refused", message="Forms are sent urlencoded.", principal=None)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return self.render("error.html", 413, title="Too large", message="The form is too large.",
                                   principal=None)  # fmt: skip
        try:
            parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
        except (UnicodeDecodeError, ValueError):
            return self.render("error.html", 400, title="Bad form", message="The form could not be read.",
                               principal=None)  # fmt: skip
        form.update({k: v[0] for k, v in parsed.items() if v})
        return None

    def _run(self, handler: Handler, request: Request, session: SessionData, form: dict[str, str]) -> Response:
        store = self.pool.acquire()
        try:
            try:
                principal = self._principal(store, session)
            except NotSignedIn:
                return self.redirect(self.url("/login", next=request.url.path), request)
            request.scope.setdefault("state", {})["principal"] = principal  # for the access log
            ctx = Ctx(request, store, principal, session, self.keeper.csrf_token(session), form)
            try:
                ctx.require(READ)
                return handler(ctx)
            except PermissionDenied as exc:
                return self.page(ctx, "error.html", "Not allowed", code=403, message=str(exc))
            except ApiError as exc:
                return self.page(ctx, "error.html", "Error", code=exc.status, message=str(exc))
            except service.NotFoundError as exc:
                return self.page(ctx, "error.html", "Not found", code=404, message=str(exc))
            except service.ConflictError as exc:
                return self.page(ctx, "error.html", "Conflict", code=409, message=str(exc))
            except InputError as exc:
                return self.page(ctx, "error.html", "Bad request", code=400, message=str(exc))
        finally:
            self.pool.release(store)

    # -- sign in and out

    async def login_form(self, request: Request) -> Response:
        pre = self.keeper.new_pre()
        return self._login_page(request, pre, "", 200)

    def _login_page(self, request: Request, pre: str, message: str, code: int) -> Response:
        nxt = request.query_params.get("next") or ""
        response = self.render(
            "login.html",
            code,
            title="Sign in",
            principal=None,
            csrf=self.keeper.pre_csrf(pre),
            message=message,
            next=nxt if nxt.startswith(self.prefix + "/") else "",
        )
        response.set_cookie(
            PRE_COOKIE, pre, max_age=PRE_MAX_AGE_S, path=self.prefix, httponly=True, samesite="strict",
            secure=_secure_cookies(request),
        )  # fmt: skip
        return response

    async def login(self, request: Request) -> Response:
        address = request.client.host if request.client else "unknown"
        wait = self.limiter.retry_after(address)
        if wait is not None:
            resp = self._login_page(request, self.keeper.new_pre(), f"Too many failed sign-ins: wait {wait} s.", 429)
            resp.headers["Retry-After"] = str(wait)
            return resp
        form: dict[str, str] = {}
        bad = await self._read_form(request, form)
        if bad is not None:
            return bad
        if not self.keeper.check_pre_csrf(request.cookies.get(PRE_COOKIE), form.get("csrf")):
            return self._login_page(request, self.keeper.new_pre(), "The form expired: sign in again.", 403)
        token = form.get("token", "").strip()

        def check() -> str | None:
            store = self.pool.acquire()
            try:
                return verify_token(store, token).token_id
            except InvalidTokenError:
                return None
            finally:
                self.pool.release(store)

        token_id = await run_in_threadpool(check) if token else None
        if token_id is None:
            self.limiter.failed(address)
            log.info("console sign-in refused from %s", address)
            return self._login_page(request, self.keeper.new_pre(), "That token is not valid.", 401)
        nxt = form.get("next", "")
        response = self.redirect(nxt if nxt.startswith(self.prefix + "/") else self.url("/queue"), request)
        response.set_cookie(
            COOKIE, self.keeper.new_session(token_id), max_age=SESSION_MAX_AGE_S, path=self.prefix, httponly=True,
            samesite="strict", secure=_secure_cookies(request),
        )  # fmt: skip
        response.delete_cookie(PRE_COOKIE, path=self.prefix, httponly=True, samesite="strict")
        log.info("console sign-in token=%s", token_id)
        return response

    async def logout(self, request: Request) -> Response:
        session = self.keeper.read_session(request.cookies.get(COOKIE))
        form: dict[str, str] = {}
        bad = await self._read_form(request, form)
        if bad is not None:
            return bad
        if session is not None:
            if not self.keeper.check_csrf(session, form.get("csrf")):
                return self.render("error.html", 403, title="Refused", message="CSRF token missing or wrong.",
                                   principal=None)  # fmt: skip
            self.keeper.sign_out(session)
        response = self.redirect(self.url("/login"), request)
        response.delete_cookie(COOKIE, path=self.prefix, httponly=True, samesite="strict")
        return response

    # -- the app

    def app(self) -> Starlette:
        v = self.view

        def p(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
            return self.view(handler, post=True)

        routes = [
            Route("/", v(lambda ctx: self.redirect(self.url("/queue"), ctx.request))),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/queue", v(lambda ctx: pg.queue(self, ctx))),
            Route("/accounts/{account_id}", v(lambda ctx: pg.account(self, ctx))),
            Route("/events/{event_id}/text", v(lambda ctx: pg.event_text(self, ctx))),
            Route("/clusters", v(lambda ctx: pg.clusters(self, ctx))),
            Route("/clusters/{cluster_id}", v(lambda ctx: pg.cluster(self, ctx))),
            Route("/cases", v(lambda ctx: pg.cases(self, ctx))),
            Route("/cases", p(lambda ctx: pg.case_open(self, ctx)), methods=["POST"]),
            Route("/cases/{case_id}", v(lambda ctx: pg.case(self, ctx))),
            Route("/cases/{case_id}/{op}", p(lambda ctx: pg.case_op(self, ctx)), methods=["POST"]),
            Route("/appeals", v(lambda ctx: pg.appeals(self, ctx))),
            Route("/appeals", p(lambda ctx: pg.appeal_file(self, ctx)), methods=["POST"]),
            Route("/appeals/{appeal_id}/decide", p(lambda ctx: pg.appeal_decide(self, ctx)), methods=["POST"]),
            Route("/policy", v(lambda ctx: pg.policy(self, ctx))),
            Route("/audit", v(lambda ctx: pg.audit(self, ctx))),
            Route("/outbox", v(lambda ctx: pg.outbox(self, ctx))),
            Route("/charts", v(lambda ctx: pg.charts(self, ctx))),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]
        return Starlette(routes=routes)
