"""The analyst console, server side (in-process, Starlette's TestClient) on a real store filled by the
real pipeline (`stormwatch demo` on a small simulated platform): sessions and their cookies, CSRF on
every form, the API's role rules (prompt text, cases, appeals) and the audit record of every view of
prompt text, the security headers, every view rendering."""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from stormwatch.api import create_app
from stormwatch.api.console import svg
from stormwatch.api.console.session import COOKIE, SessionKeeper
from stormwatch.api.tokens import create_token, revoke_token
from stormwatch.cli import main
from stormwatch.disrupt import service
from stormwatch.errors import ConfigError
from stormwatch.store import open_store

REPO = Path(__file__).resolve().parents[1]
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
VIEWS = ("queue", "clusters", "cases", "appeals", "policy", "audit", "outbox", "charts")


@dataclass
class Demo:
    db: str
    dir: Path
    tokens: dict[str, str]  # role -> token
    token_ids: dict[str, str]
    flagged: str  # an account at level enforce with events
    review: str  # an account at level review
    cluster: str
    appeal: str  # an open appeal
    printed: str  # what `stormwatch demo` printed


def build_demo(base: Path, monkeypatch: pytest.MonkeyPatch) -> Demo:
    """`stormwatch demo` on 150 accounts for 7 days (first-tier detectors), tokens, an open appeal."""
    monkeypatch.setenv("STORMWATCH_DETECTORS", "first_tier")
    monkeypatch.setenv("STORMWATCH_POLICIES", str(REPO / "policies"))
    monkeypatch.delenv("STORMWATCH_DB", raising=False)
    monkeypatch.delenv("STORMWATCH_SHARE_POLICY", raising=False)
    out = base / "demo"
    argv = ["demo", "--out", str(out), "--accounts", "150", "--days", "7", "--seed", "7", "-q"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*argv, "--policies", str(REPO / "policies")]) == 0
    db = f"sqlite:///{out / 'stormwatch.db'}"
    store = open_store(db)
    try:
        tokens, ids = {}, {}
        for name, role in (("alice", "analyst"), ("ada", "admin"), ("rob", "read-only")):
            tok, info = create_token(store, name=name, role=role, created_by="test")
            tokens[role], ids[role] = tok, info.token_id
        enforce = store.analysis.judgements(level="enforce", order="risk")
        review = store.analysis.judgements(level="review", order="risk")
        cases = {c.account_id for c in service.list_cases(store, status="open", limit=10_000)}
        flagged = next(j for j in enforce if store.audit.account_has_events(j.account_id))
        appealed = next(j.account_id for j in enforce if j.account_id != flagged.account_id and j.account_id in cases)
        # the account's case is closed first: an appeal opens a review case of its own
        for c in service.list_cases(store, status="open", account_id=appealed):
            service.close_case(store, c.case_id, by="analyst:setup", resolution="enforced")
        appeal = service.file_appeal(store, appealed, "we are a security research firm", by="user:owner")
        review_id = next(j.account_id for j in review if j.account_id not in cases)
        sizes = [(c.size, c.cluster_id) for c in store.analysis.clusters(order="size") if c.size >= 3]
        cluster = next((cid for n, cid in sizes if n <= 20), sizes[0][1])  # one that draws legibly
    finally:
        store.close()
    return Demo(db, out, tokens, ids, flagged.account_id, review_id, cluster, appeal.appeal_id, printed.getvalue())


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with pytest.MonkeyPatch.context() as mp:
        yield build_demo(tmp_path_factory.mktemp("console"), mp)


@pytest.fixture(scope="module")
def app(demo: Demo) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORMWATCH_POLICIES", str(REPO / "policies"))
        mp.delenv("STORMWATCH_SHARE_POLICY", raising=False)
        yield create_app(demo.db)


def client(app: Any, *, https: bool = False) -> TestClient:
    return TestClient(app, base_url="https://testserver" if https else "http://testserver")


def sign_in(c: TestClient, token: str) -> str:
    """Sign in through the form; return the session's CSRF token."""
    page = c.get("/console/login")
    assert page.status_code == 200
    r = c.post("/console/login", data={"token": token, "csrf": CSRF.findall(page.text)[0], "next": ""},
               follow_redirects=False)  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == "/console/queue", r.text
    return CSRF.findall(c.get("/console/queue").text)[0]


def audit_count(db: str, action: str, **evidence: str) -> int:
    store = open_store(db)
    try:
        n = 0
        for e in service.list_audit(store, limit=1_000_000):
            if e.action == action and all((e.evidence or {}).get(k) == v for k, v in evidence.items()):
                n += 1
        return n
    finally:
        store.close()


def first_event(db: str, account_id: str) -> str:
    store = open_store(db)
    try:
        return store.audit.top_event_ids(account_id, limit=1)[0]
    finally:
        store.close()


# -- sessions and cookies


def test_sign_in_sets_a_signed_http_only_strict_cookie_without_the_token(app: Any, demo: Demo) -> None:
    with client(app) as c:
        r = c.get("/console/queue", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next=")
        page = c.get("/console/login")
        pre = page.headers["set-cookie"]
        assert "HttpOnly" in pre and "SameSite=strict" in pre and "Path=/console" in pre
        token = demo.tokens["analyst"]
        r = c.post("/console/login", data={"token": token, "csrf": CSRF.findall(page.text)[0]}, follow_redirects=False)
        assert r.status_code == 303
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE + "="))
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain http on loopback
        assert token not in cookie and token[11:] not in cookie
        assert c.get("/console/queue").status_code == 200
    with client(app, https=True) as c:
        page = c.get("/console/login")
        r = c.post("/console/login", data={"token": token, "csrf": CSRF.findall(page.text)[0]}, follow_redirects=False)
        assert "Secure" in next(h for h in r.headers.get_list("set-cookie") if h.startswith(COOKIE + "="))


def test_a_bad_token_a_forged_cookie_or_a_missing_login_csrf_get_no_session(app: Any, demo: Demo) -> None:
    with client(app) as c:
        page = c.get("/console/login")
        csrf = CSRF.findall(page.text)[0]
        r = c.post("/console/login", data={"token": "sw_nope", "csrf": csrf}, follow_redirects=False)
        assert r.status_code == 401 and "not valid" in r.text and COOKIE + "=" not in r.headers.get("set-cookie", "")
        r = c.post("/console/login", data={"token": demo.tokens["admin"], "csrf": "x"}, follow_redirects=False)
        assert r.status_code == 403 and COOKIE + "=" not in r.headers.get("set-cookie", "")
        good = SessionKeeper(key=b"k" * 32).new_session(demo.token_ids["admin"])  # signed with another key
        c.cookies.set(COOKIE, good, path="/console")
        assert c.get("/console/queue", follow_redirects=False).status_code == 303


def test_sign_out_and_revocation_end_the_session(app: Any, demo: Demo) -> None:
    store = open_store(demo.db)
    try:
        tok, info = create_token(store, name="temp", role="analyst")
    finally:
        store.close()
    with client(app) as c:
        csrf = sign_in(c, tok)
        cookie = c.cookies.get(COOKIE)
        assert c.post("/console/logout", data={"csrf": csrf}, follow_redirects=False).status_code == 303
        c.cookies.set(COOKIE, str(cookie), path="/console")  # a copy of the old cookie replayed
        assert c.get("/console/queue", follow_redirects=False).status_code == 303
        sign_in(c, tok)
        store = open_store(demo.db)
        try:
            revoke_token(store, info.token_id, by="test")
        finally:
            store.close()
        r = c.get("/console/queue", follow_redirects=False)
        assert r.status_code == 303 and "/console/login" in r.headers["location"]


# -- CSRF on every form


def test_every_form_needs_the_session_csrf_token(app: Any, demo: Demo) -> None:
    with client(app) as c:
        csrf = sign_in(c, demo.tokens["analyst"])
        r = c.post("/console/cases", data={"account_id": demo.review, "reason": "x"}, follow_redirects=False)
        assert r.status_code == 403 and "CSRF" in r.text
        r = c.post("/console/cases", data={"account_id": demo.review, "reason": "x", "csrf": csrf + "x"})
        assert r.status_code == 403
        r = c.post("/console/cases", data={"account_id": demo.review, "reason": "x", "csrf": csrf},
                   headers={"Origin": "https://evil.example"})  # fmt: skip
        assert r.status_code == 403
        r = c.post("/console/logout", data={"csrf": ""}, follow_redirects=False)
        assert r.status_code == 403
        store = open_store(demo.db)
        try:
            assert not service.list_cases(store, status="open", account_id=demo.review)  # nothing was opened
        finally:
            store.close()
        big = {"csrf": csrf, "account_id": demo.review, "reason": "x" * 70_000}
        assert c.post("/console/cases", data=big).status_code == 413
        # every POST form on the pages carries the token
        for path in ("/console/queue", f"/console/accounts/{demo.flagged}", "/console/appeals"):
            html = c.get(path).text
            for form in re.findall(r"<form[^>]*method=\"post\".*?</form>", html, re.S):
                assert f'name="csrf" value="{csrf}"' in form, (path, form[:200])


# -- the API's role rules


def test_prompt_text_only_for_roles_that_may_read_it_and_every_view_audited(app: Any, demo: Demo) -> None:
    event = first_event(demo.db, demo.flagged)
    before = audit_count(demo.db, "event.text.read", via="console")
    with client(app) as c:
        sign_in(c, demo.tokens["read-only"])
        page = c.get(f"/console/accounts/{demo.flagged}")
        assert page.status_code == 200
        assert "Prompt text is hidden" in page.text and "/text" not in page.text and "Show text" not in page.text
        r = c.get(f"/console/events/{event}/text")
        assert r.status_code == 403 and "events:text" in r.text
    assert audit_count(demo.db, "event.text.read", via="console") == before
    store = open_store(demo.db)
    try:
        text = store.get_event(event).text()  # type: ignore[union-attr]
    finally:
        store.close()
    snippet = text.strip().splitlines()[0][:40]
    assert snippet and snippet not in page.text.replace("&#39;", "'").replace("&#34;", '"')
    with client(app) as c:
        sign_in(c, demo.tokens["analyst"])
        page = c.get(f"/console/accounts/{demo.flagged}")
        assert f"/console/events/{event}/text" in page.text and "Prompt text is hidden" not in page.text
        # nothing quoted from a request before the audited read, not even in the scorer's explanation
        assert snippet not in page.text.replace("&#39;", "'").replace("&#34;", '"')
        r = c.get(f"/console/events/{event}/text")
        assert r.status_code == 200 and "Read recorded in the audit chain" in r.text
        assert snippet in r.text.replace("&#39;", "'").replace("&#34;", '"')
    assert audit_count(demo.db, "event.text.read", via="console") == before + 1
    store = open_store(demo.db)
    try:
        last = service.list_audit(store, target=f"event:{event}", limit=1000)[-1]
    finally:
        store.close()
    assert last.actor == f"token:{demo.token_ids['analyst']}:alice"


def test_writes_follow_the_api_roles(app: Any, demo: Demo) -> None:
    with client(app) as c:
        csrf = sign_in(c, demo.tokens["read-only"])
        page = c.get(f"/console/accounts/{demo.review}")
        assert "Open case" not in page.text and "may not open cases" in page.text
        r = c.post("/console/cases", data={"account_id": demo.review, "reason": "x", "csrf": csrf})
        assert r.status_code == 403 and "cases:write" in r.text
    with client(app) as c:
        csrf = sign_in(c, demo.tokens["analyst"])
        assert 'name="decision"' not in c.get("/console/appeals").text
        r = c.post(f"/console/appeals/{demo.appeal}/decide", data={"decision": "reinstate", "csrf": csrf})
        assert r.status_code == 403 and "appeals:decide" in r.text
    store = open_store(demo.db)
    try:
        assert service.get_appeal(store, demo.appeal).status == "open"
    finally:
        store.close()


def test_a_case_from_open_to_closed_through_the_forms(app: Any, demo: Demo) -> None:
    store = open_store(demo.db)
    try:
        account = next(
            j.account_id
            for j in store.analysis.judgements(level="review", order="risk")
            if j.account_id != demo.review and not service.list_cases(store, account_id=j.account_id)
        )
    finally:
        store.close()
    with client(app) as c:
        csrf = sign_in(c, demo.tokens["analyst"])
        r = c.post(
            "/console/cases", data={"account_id": account, "reason": "odd", "csrf": csrf}, follow_redirects=False
        )
        assert r.status_code == 303
        case_url = r.headers["location"]
        case_id = case_url.rsplit("/", 1)[1]
        for op, form in (
            ("assign", {"assignee": "alice"}),
            ("note", {"text": "looks like <b>recon</b>"}),
            ("evidence", {"evidence": "https://example.net/ticket/1"}),
            ("label", {"label": "true_positive", "category": "LLMT-recon"}),
            ("close", {"resolution": "confirmed"}),
        ):
            r = c.post(f"{case_url}/{op}", data={**form, "csrf": csrf}, follow_redirects=False)
            assert r.status_code == 303, (op, r.text)
        page = c.get(case_url).text
        assert "looks like &lt;b&gt;recon&lt;/b&gt;" in page  # autoescaped
        assert 'id="case-status">closed<' in page
        r = c.post(f"{case_url}/note", data={"text": "late", "csrf": csrf})
        assert r.status_code == 409
        assert c.post(f"{case_url}/frobnicate", data={"csrf": csrf}).status_code == 404
    store = open_store(demo.db)
    try:
        d = service.get_case(store, case_id)
    finally:
        store.close()
    assert (d.case.status, d.case.assignee, d.case.label) == ("closed", "alice", "true_positive")
    assert d.case.closed_by == f"token:{demo.token_ids['analyst']}:alice"


# -- pages, headers, escaping


def test_every_view_renders_with_security_headers(app: Any, demo: Demo) -> None:
    with client(app) as c:
        sign_in(c, demo.tokens["admin"])
        for path in [*(f"/console/{v}" for v in VIEWS), f"/console/accounts/{demo.flagged}",
                     f"/console/clusters/{demo.cluster}", "/console/queue?level=all&ttp=LLMT-recon",
                     "/console/cases?status=open", "/console/audit?target=account:x"]:  # fmt: skip
            r = c.get(path)
            assert r.status_code == 200, (path, r.text[:500])
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe" not in csp
            assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
            assert "<script>" not in r.text and " style=" not in r.text  # nothing inline for the CSP to block
            assert 'href="#main"' in r.text  # the skip link
        charts = c.get("/console/charts").text
        assert charts.count("<svg") == 4
        audit = c.get("/console/audit").text
        assert "Intact:" in audit
        outbox = c.get("/console/outbox").text
        assert "TLP:" in outbox
        r = c.get("/console/accounts/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
        assert r.status_code == 404 and "&lt;img src=x" in r.text and "<img src=x" not in r.text
        static = c.get("/console/static/htmx.min.js")
        assert static.status_code == 200 and "htmx" in static.text[:200]


def test_the_cluster_graph_is_deterministic_and_marks_crowds(app: Any, demo: Demo) -> None:
    with client(app) as c:
        sign_in(c, demo.tokens["read-only"])
        a = c.get(f"/console/clusters/{demo.cluster}").text
        b = c.get(f"/console/clusters/{demo.cluster}").text
    svg_a = re.search(r"<svg.*?</svg>", a, re.S)
    svg_b = re.search(r"<svg.*?</svg>", b, re.S)
    assert svg_a and svg_b and svg_a.group(0) == svg_b.group(0)
    assert svg_a.group(0).count("<circle") >= 3 and "<line" in svg_a.group(0)
    nodes = [svg.GraphNode(x, x, "none") for x in ("a", "b", "c", "<d>")]
    edges = [svg.GraphEdge("a", "b", "ip: 10.0.0.1", 0.9, False), svg.GraphEdge("b", "<d>", "ip: 1.1.1.1", 0.5, True)]
    out = svg.graph_svg("t", nodes, edges)
    assert "&lt;d&gt;" in out and 'class="edge crowd"' in out and out == svg.graph_svg("t", nodes, edges)
    pos = svg.layout(["a", "b", "c"], [("a", "b", 1.0)])
    assert all(0.0 <= x <= 1.0 and 0.0 <= y <= 1.0 for x, y in pos.values())
    assert pos == svg.layout(["c", "b", "a"], [("a", "b", 1.0)])


def test_the_demo_prints_the_console_url(demo: Demo) -> None:
    assert "http://127.0.0.1:8000/console" in demo.printed
    assert f"stormwatch --db {demo.db} token create --name you --role analyst" in demo.printed


def test_the_api_itself_still_needs_its_bearer_token(app: Any, demo: Demo) -> None:
    with client(app) as c:
        sign_in(c, demo.tokens["admin"])  # a console session is no API credential
        assert c.get("/api/v1/health").status_code == 401
        assert c.get("/api/v1/health", headers={"Authorization": f"Bearer {demo.tokens['admin']}"}).status_code == 200


def test_the_signing_secret_is_private(tmp_path: Path) -> None:
    path = tmp_path / "console-secret"
    keeper = SessionKeeper(path)
    cookie = keeper.new_session("tok12345")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = SessionKeeper(path)
    session = again.read_session(cookie)
    assert session is not None and session.token_id == "tok12345"
    assert again.check_csrf(session, keeper.csrf_token(session)) and not again.check_csrf(session, "x")
    assert again.read_session(cookie[:-2] + "AA") is None
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        _ = SessionKeeper(path).key


def test_failed_sign_ins_are_throttled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(f"sqlite:///{tmp_path / 't.db'}")
    with client(app) as c:
        for _ in range(20):
            csrf = CSRF.findall(c.get("/console/login").text)[0]
            assert c.post("/console/login", data={"token": "sw_bad", "csrf": csrf}).status_code == 401
        csrf = CSRF.findall(c.get("/console/login").text)[0]
        r = c.post("/console/login", data={"token": "sw_bad", "csrf": csrf})
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0


def test_the_account_page_shows_the_account_models_contributions(app: Any, demo: Demo) -> None:
    store = open_store(demo.db)
    try:
        judged = store.analysis.judgement(demo.review)
    finally:
        store.close()
    model = (judged.explanation.get("account_model") or {}) if judged is not None else {}
    with client(app) as c:
        sign_in(c, demo.tokens["read-only"])
        page = c.get(f"/console/accounts/{demo.review}").text
    assert model.get("top_contributions"), "the shipped account model explains every account at review"
    assert "Feature contributions" in page
    assert all(tc["feature"] in page for tc in model["top_contributions"])


def test_the_queue_says_when_the_budget_is_smaller_than_its_likely_actors(
    demo: Demo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a budget of one account, the queue page names how many accounts beyond it the account
    model still puts at probability >= 0.5: the count `analyze --json` gives; with a budget that holds
    every account, no notice."""
    monkeypatch.setenv("STORMWATCH_POLICIES", str(REPO / "policies"))
    monkeypatch.delenv("STORMWATCH_SHARE_POLICY", raising=False)
    copy = tmp_path / "copy.db"
    copy.write_bytes(Path(demo.db.removeprefix("sqlite:///")).read_bytes())
    db = f"sqlite:///{copy}"
    for budget, expect_notice in (("1", True), ("100%", False)):
        capsys.readouterr()
        assert main(["--db", db, "analyze", "--no-score", "--full", "--json", "--review-budget", budget]) == 0
        beyond = orjson.loads(capsys.readouterr().out)["review_likely_beyond_budget"]
        assert (beyond >= 1) == expect_notice, beyond
        with client(create_app(db)) as c:
            sign_in(c, demo.tokens["read-only"])
            page = c.get("/console/queue").text
        notice = f"{beyond} account{'' if beyond == 1 else 's'} beyond the review budget still"
        assert (notice in page) == expect_notice and ('id="beyond-budget"' in page) == expect_notice
