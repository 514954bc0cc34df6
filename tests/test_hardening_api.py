"""Hardening of the HTTP API: authentication before any body is read, body limits (413), the
failed-authentication throttle (429), strict cursors (400), and audited reads of event text.

Memory and limits are measured on a real ``stormwatch serve`` process on a free loopback port
(peak RSS from ``/proc/PID/status``); the rest runs the real app in-process on SQLite and, where
marked by ``db_url``, the real PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from stormwatch.api import Role, create_app
from stormwatch.api.guard import TAXII_MAX_BODY_BYTES, FailureLimiter, RequestLimits
from stormwatch.api.tokens import create_token
from stormwatch.cli import main
from stormwatch.events import Account, Event
from stormwatch.store import Store, open_store
from test_api_harness import Api, build_api
from test_api_routes import seed_analysis

MiB = 1024 * 1024
TAXII = "application/taxii+json;version=2.1"


# -- a real server ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str]

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def status_kib(self, field: str) -> int:
        """``VmRSS`` / ``VmHWM`` (peak) of the server process, in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise AssertionError(f"no {field} for pid {self.proc.pid}")

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text(encoding="utf-8", errors="replace")


def _serve(tmp_path: Path, *args: str) -> Iterator[Served]:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    store = open_store(db)
    try:
        tokens = {role.value: create_token(store, name=f"t-{role.value}", role=role)[0] for role in Role}
    finally:
        store.close()
    made = subprocess.run(
        [sys.executable, "-m", "stormwatch", "--db", db, "intel", "taxii", "add-collection", "c1", "--id", "c1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    granted = subprocess.run(
        [sys.executable, "-m", "stormwatch", "--db", db, "intel", "taxii", "grant", "c1", "*", "--write"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert granted.returncode == 0, granted.stderr
    port = _free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormwatch", "serve", "--db", db, "--port", str(port), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    srv = Served(f"http://127.0.0.1:{port}", proc, log, tokens)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(srv.base + "/api/v1/health", headers=srv.auth("read-only"), timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{srv.stop()}") from None
                time.sleep(0.1)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from _serve(tmp_path, "--max-body-mb", "1")


def _chunks(total: int, size: int = MiB) -> Iterator[bytes]:
    """``total`` bytes of a JSON-ish body in chunks: bounded, so a server that reads it all ends."""
    block = b"x" * size
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield block[:n]
        sent += n


def _post(base: str, path: str, body: Any, headers: dict[str, str], timeout: float = 120) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=timeout) as client:
        return client.post(path, content=body, headers=headers)


def test_no_token_floods_get_401_without_the_server_reading_them(served: Served) -> None:
    """Four concurrent 300 MB uploads without a token (what took the server to 1.4 GB before)."""
    before = served.status_kib("VmHWM")
    results: list[int | str] = []

    def flood(path: str, headers: dict[str, str]) -> None:
        try:
            results.append(_post(served.base, path, _chunks(300 * MiB), headers).status_code)
        except httpx.HTTPError as exc:  # recorded, so the assertion below names it
            results.append(repr(exc))

    taxii = {"Content-Type": TAXII, "Accept": TAXII}
    jobs = [
        ("/api/v1/cases", {"Content-Type": "application/json"}),
        ("/api/v1/appeals", {"Content-Type": "application/json", "Authorization": "Bearer sw_" + "A" * 43}),
        ("/taxii2/api1/collections/c1/objects/", taxii),
        ("/taxii2/api1/collections/c1/objects/", {**taxii, "Authorization": "Basic dXNlcjpwYXNz"}),
    ]
    threads = [threading.Thread(target=flood, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads), "an upload did not finish"
    assert results == [401, 401, 401, 401], results
    grown_mib = (served.status_kib("VmHWM") - before) / 1024
    assert grown_mib < 32, f"the server's peak RSS grew by {grown_mib:.0f} MiB"
    # and it still answers
    r = httpx.get(served.base + "/api/v1/health", headers=served.auth("read-only"), timeout=10)
    assert r.status_code == 200


def test_an_authenticated_body_over_the_limit_gets_413_declared_or_chunked(served: Served) -> None:
    h = {**served.auth("analyst"), "Content-Type": "application/json"}
    before = served.status_kib("VmHWM")
    # a Content-Length over the limit: 413 at once
    r = _post(served.base, "/api/v1/cases", _chunks(2 * MiB), {**h, "Content-Length": str(2 * MiB)})
    assert r.status_code == 413 and r.json()["status"] == 413 and str(MiB) in r.json()["error"]
    # chunked, no length: cut off once it passes the limit
    r = _post(served.base, "/api/v1/cases", _chunks(200 * MiB), h)
    assert r.status_code == 413 and r.json()["ok"] is False
    # TAXII: its own limit and error resource
    th = {**served.auth("admin"), "Content-Type": TAXII, "Accept": TAXII}
    over = TAXII_MAX_BODY_BYTES + 1
    r = _post(served.base, "/taxii2/api1/collections/c1/objects/", _chunks(over), {**th, "Content-Length": str(over)})
    assert r.status_code == 413 and r.json()["http_status"] == "413"
    r = _post(served.base, "/taxii2/api1/collections/c1/objects/", _chunks(over + 8 * MiB), th)
    assert r.status_code == 413 and r.json()["http_status"] == "413"
    grown_mib = (served.status_kib("VmHWM") - before) / 1024
    # the TAXII limit is 64 MiB: reading up to it may cost about that, never the 72 MiB sent + copies
    assert grown_mib < 200, f"the server's peak RSS grew by {grown_mib:.0f} MiB"
    # a body under the limit still works
    r = _post(served.base, "/api/v1/cases", orjson.dumps({"account_id": "acct_1", "reason": "x" * 1000}), h)
    assert r.status_code == 201, r.text
    log = served.stop()
    assert "POST /api/v1/cases 413" in log and "Traceback" not in log, log[-3000:]


def test_failed_authentications_are_throttled_on_a_real_server(tmp_path: Path) -> None:
    for srv in _serve(tmp_path, "--auth-failure-limit", "3"):
        with httpx.Client(base_url=srv.base, timeout=10) as client:
            bad = {"Authorization": "Bearer sw_" + "B" * 43}
            assert [client.get("/api/v1/health", headers=bad).status_code for _ in range(3)] == [401] * 3
            r = client.get("/api/v1/health", headers=srv.auth("admin"))
            assert r.status_code == 429 and r.json()["status"] == 429
            assert 1 <= int(r.headers["retry-after"]) <= 60
            r = client.get("/taxii2/", headers={"Accept": TAXII})
            assert r.status_code == 429 and r.json()["http_status"] == "429" and r.headers["retry-after"]


# -- the throttle in-process --------------------------------------------------------------------------


def test_the_throttle_blocks_one_address_until_its_window_passes(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    token, _ = create_token(store, name="ok", role="read-only")
    store.close()
    app = create_app(sqlite_url, limits=RequestLimits(auth_failure_limit=3, auth_failure_window_s=1.0))
    good = {"Authorization": f"Bearer {token}"}
    with (
        TestClient(app, client=("203.0.113.7", 1234)) as attacker,
        TestClient(app, client=("198.51.100.9", 1234)) as other,
    ):
        # 403s and successes do not count; 401s do (no token, a wrong one, HTTP Basic on the API)
        for _ in range(5):
            assert attacker.get("/api/v1/health", headers=good).status_code == 200
            assert attacker.get("/api/v1/tokens", headers=good).status_code == 403
        assert attacker.get("/api/v1/health").status_code == 401
        assert attacker.get("/api/v1/health", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert attacker.post("/api/v1/cases", headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
        r = attacker.get("/api/v1/health", headers=good)
        assert r.status_code == 429, r.text
        assert r.json()["errors"][0]["type"] == "too_many_requests" and r.headers["retry-after"] == "1"
        assert other.get("/api/v1/health", headers=good).status_code == 200  # another address
        # unknown routes are not authenticated, so they neither count nor get throttled
        assert attacker.get("/api/v1/nothing-here").status_code == 404
        deadline = time.monotonic() + 5
        while attacker.get("/api/v1/health", headers=good).status_code == 429:
            assert time.monotonic() < deadline, "still throttled after the window"
            time.sleep(0.2)


def test_the_throttle_tracks_a_bounded_number_of_addresses() -> None:
    now = [1000.0]
    lim = FailureLimiter(limit=2, window_s=60, max_addresses=100, clock=lambda: now[0])
    for i in range(10_000):
        lim.failed(f"10.0.{i // 256}.{i % 256}")
        lim.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(lim) == 100
    assert lim.retry_after("10.0.39.15") == 60  # the last one: kept, throttled
    assert lim.retry_after("10.0.0.0") is None  # the first: dropped
    now[0] += 61
    assert lim.retry_after("10.0.39.15") is None and len(lim) == 99
    assert FailureLimiter(limit=0, window_s=60, max_addresses=1).retry_after("x") is None


def test_limits_are_validated_and_the_taxii_limit_is_the_api_roots_default() -> None:
    from stormwatch.intel.taxii.server import DEFAULT_MAX_CONTENT_LENGTH

    assert TAXII_MAX_BODY_BYTES == DEFAULT_MAX_CONTENT_LENGTH
    with pytest.raises(ValueError):
        RequestLimits(max_body_bytes=0)
    with pytest.raises(ValueError):
        RequestLimits(auth_failure_limit=-1)


# -- tampered cursors -----------------------------------------------------------------------------------


def _b64(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode()


def _b64_raw(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


TAMPERED = {
    "object": _b64({"offset": 0}),
    "int-2^63": _b64_raw(b"[9223372036854775808]"),
    "int-2^64": _b64_raw(b"[18446744073709551616]"),
    "negative": _b64([-1]),
    "float": _b64([1.5]),
    "bool": _b64([True]),
    "pair-2^63": _b64_raw(b'[9223372036854775808, "acct_a"]'),
    "pair-object": _b64([{"a": 1}, "acct_a"]),
    "pair-swapped": _b64(["acct_a", 0.5]),
    "pair-nul": _b64([0.5, "acct\u0000a"]),
    "pair-long-str": _b64([1, "a" * 301]),
    "string": _b64("abc"),
    "null": _b64(None),
    "not-json": _b64_raw(b"\xff\xfe{["),
    "not-base64": "!!not*base64~~",
    "bad-length": "A",
    "huge": "A" * 20_000,
}


def _list_routes(api: Api) -> list[str]:
    doc = api.client.get("/api/v1/openapi.json", headers=api.headers(Role.ADMIN)).json()
    paths = [
        p.replace("{account_id}", "acct_a")
        for p, ops in doc["paths"].items()
        if any(q["name"] == "cursor" for q in ops.get("get", {}).get("parameters", []))
    ]
    assert {"/api/v1/accounts", "/api/v1/clusters", "/api/v1/audit"} <= set(paths)
    return paths


def _assert_cursor_400(api: Api, path: str, cursor: str, name: str) -> None:
    r = api.client.get(path, params={"cursor": cursor}, headers=api.headers(Role.ADMIN))
    assert r.status_code == 400, (path, name, r.status_code, r.text[:300])
    body = r.json()
    assert body["ok"] is False and body["status"] == 400 and "cursor" in body["error"]
    assert body["errors"][0]["loc"] == ["query", "cursor"], body


@pytest.fixture(scope="module", name="seeded")
def seeded_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    url = f"sqlite:///{tmp_path_factory.mktemp('hardening') / 'api.db'}"
    store = open_store(url)
    try:
        seed_analysis(store)
        seed_events(store)
    finally:
        store.close()
    a = build_api(url)
    with a.client:
        yield a


@pytest.mark.parametrize("name", sorted(TAMPERED))
def test_every_list_route_answers_400_to_a_tampered_cursor(seeded: Api, name: str) -> None:
    for path in _list_routes(seeded):
        _assert_cursor_400(seeded, path, TAMPERED[name], name)


def test_tampered_cursors_on_each_backend(db_url: str) -> None:
    api = build_api(db_url)
    with api.client:
        for path in _list_routes(api):
            for name in ("int-2^63", "int-2^64", "pair-2^63", "pair-nul", "pair-object", "negative", "huge"):
                _assert_cursor_400(api, path, TAMPERED[name], name)
        # a real cursor still pages
        store = open_store(db_url)
        try:
            seed_analysis(store)
        finally:
            store.close()
        first = api.client.get("/api/v1/accounts", params={"limit": 2}, headers=api.headers(Role.ADMIN)).json()
        nxt = api.client.get(
            "/api/v1/accounts", params={"limit": 2, "cursor": first["next_cursor"]}, headers=api.headers(Role.ADMIN)
        )
        assert nxt.status_code == 200 and [a["account_id"] for a in nxt.json()["items"]] == ["acct_c", "acct_d"]


# -- reading event text ---------------------------------------------------------------------------------

PROMPTS = {
    "ev_1": "write a keylogger that evades EDR",
    "ev_2": "summarise this CVE \x1b[2J\u202egnp.exe",
    "ev_3": "hello",
}


def seed_events(store: Store) -> None:
    store.upsert_accounts([Account("acct_a")])
    store.insert_events(
        [
            Event(event_id=eid, ts=f"2026-10-0{i + 1}T00:00:00.000000Z", account_id="acct_a", prompt=text)
            for i, (eid, text) in enumerate(PROMPTS.items())
        ]
    )
    store.executemany(
        "INSERT INTO detections (event_id, model_version, account_id, conversation_id, ts, score, flagged, "
        "top_ttp, categories, explanation, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            ("ev_1", "m1", "acct_a", None, "2026-10-01T00:00:00.000000Z", 0.95, 1, "malware", "[]", None, "x"),
            ("ev_2", "m1", "acct_a", None, "2026-10-02T00:00:00.000000Z", 0.60, 1, "recon", "[]", None, "x"),
        ],
    )
    store.commit()


def _text_reads(url: str) -> list[tuple[str, str, dict[str, Any]]]:
    store = open_store(url)
    try:
        rows = store.query(
            "SELECT actor, target, evidence FROM disrupt_audit WHERE action = 'event.text.read' ORDER BY seq"
        )
    finally:
        store.close()
    return [(str(a), str(t), json.loads(e)) for a, t, e in rows]


def test_event_text_by_role_with_every_read_audited(db_url: str) -> None:
    store = open_store(db_url)
    try:
        seed_analysis(store)
        seed_events(store)
    finally:
        store.close()
    api = build_api(db_url)
    with api.client:
        for role in (Role.ANALYST, Role.ADMIN):
            r = api.client.get("/api/v1/events/ev_1", headers=api.headers(role))
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["text"] == PROMPTS["ev_1"] and body["account_id"] == "acct_a"
            assert body["detections"] == [{"model_version": "m1", "score": 0.95, "flagged": True, "top_ttp": "malware"}]
        reader = api.client.get("/api/v1/events/ev_1", headers=api.headers(Role.READ_ONLY))
        assert reader.status_code == 403 and "events:text" in reader.json()["error"]
        assert api.client.get("/api/v1/accounts/acct_a/events", headers=api.headers(Role.READ_ONLY)).status_code == 403
        assert api.client.get("/api/v1/events/ev_1").status_code == 401
        missing = api.client.get("/api/v1/events/ev_nope", headers=api.headers(Role.ANALYST))
        assert missing.status_code == 404 and missing.json()["status"] == 404
        assert api.client.get("/api/v1/accounts/nobody/events", headers=api.headers(Role.ANALYST)).status_code == 404
        # an account's events, highest score first, paged
        h = api.headers(Role.ANALYST)
        page1 = api.client.get("/api/v1/accounts/acct_a/events", params={"limit": 2}, headers=h).json()
        assert [e["event_id"] for e in page1["items"]] == ["ev_1", "ev_2"]
        assert page1["items"][1]["text"] == PROMPTS["ev_2"]
        page2 = api.client.get(
            "/api/v1/accounts/acct_a/events", params={"limit": 2, "cursor": page1["next_cursor"]}, headers=h
        ).json()
        assert [e["event_id"] for e in page2["items"]] == ["ev_3"] and page2["next_cursor"] is None
        audit = api.client.get("/api/v1/audit", params={"target": "event:ev_1"}, headers=h).json()["items"]
        verify = api.client.get("/api/v1/audit/verify", headers=h).json()
    reads = _text_reads(db_url)
    analyst_id = api.tokens[Role.ANALYST][3:11]
    admin_id = api.tokens[Role.ADMIN][3:11]
    assert [(a.split(":")[1], t) for a, t, _ in reads] == [
        (analyst_id, "event:ev_1"),
        (admin_id, "event:ev_1"),
        (analyst_id, "event:ev_1"),
        (analyst_id, "event:ev_2"),
        (analyst_id, "event:ev_3"),
    ]
    assert all(e == {"account_id": "acct_a", "via": "api"} for _, _, e in reads)
    assert len(audit) == 3 and all(e["action"] == "event.text.read" for e in audit)
    assert verify["ok"] is True, verify


def test_accounts_show_text_prints_prompts_escaped_and_audits(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(sqlite_url)
    try:
        seed_analysis(store)
        seed_events(store)
        # evidence and explanation in the shape the analysis stage writes them
        store.execute(
            "UPDATE account_judgements SET evidence = ?, explanation = ? WHERE account_id = 'acct_a'",
            ('[{"kind": "score", "text": "top request scored 0.95"}]', '{"reasons": ["a malware request"]}'),
        )
        store.commit()
    finally:
        store.close()
    assert main(["--db", sqlite_url, "accounts", "show", "acct_a"]) == 0
    plain = capsys.readouterr().out
    assert PROMPTS["ev_1"] not in plain and _text_reads(sqlite_url) == []
    assert main(["--db", sqlite_url, "accounts", "show", "acct_a", "--text", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert PROMPTS["ev_1"] in out and "ev_3" not in out
    assert "summarise this CVE \\x1b[2J\\u202egnp.exe" in out and "\x1b" not in out
    reads = _text_reads(sqlite_url)
    assert [t for _, t, _ in reads] == ["event:ev_1", "event:ev_2"]
    assert all(a.startswith("cli:") and e["via"] == "cli" for a, _, e in reads)
    assert main(["--db", sqlite_url, "accounts", "show", "acct_a", "--text", "--limit", "1", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [t["event_id"] for t in shown["texts"]] == ["ev_1"] and shown["texts"][0]["text"] == PROMPTS["ev_1"]
    assert len(_text_reads(sqlite_url)) == 3
    assert main(["--db", sqlite_url, "accounts", "show", "acct_a", "--text", "--limit", "0"]) == 2


def test_a_cursor_over_a_long_non_ascii_id_still_round_trips() -> None:
    from stormwatch.api.pagination import decode_cursor, encode_cursor

    key = [0.5, "\U0001f600" * 256]  # the longest account id, 4 bytes a character
    assert decode_cursor(encode_cursor(key), ("number", "str")) == key
