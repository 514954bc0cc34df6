"""The reference webhook receiver, in-process, and the webhook/outbox sinks' error paths.

``test_enforce.py`` runs the receiver as a subprocess and SIGKILLs it, so its coverage is never
saved; here the same handler runs in a thread against the real :class:`WebhookSink`: signatures are
checked, each ``webhook-id`` is applied once, a crash after applying makes the retry a duplicate.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.disrupt import receiver, sinks
from stormwatch.disrupt.models import Action
from stormwatch.errors import ConfigError

SECRET = "whsec_c2VjcmV0LXNpZ25pbmcta2V5LTEyMzQ="


def _action(action_id: str, kind: str = "suspend") -> Action:
    return Action(action_id, "dec_1", kind, "acct_1", None, {"days": 30}, "pending", 0, None, None,
                  "2026-12-01T00:00:00.000000Z", None, None)  # fmt: skip


class _Server:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = HTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve() -> Iterator[Any]:
    started: list[_Server] = []

    def start(handler: type[BaseHTTPRequestHandler]) -> _Server:
        s = _Server(handler)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


def _ledger_ids(path: Path) -> list[str]:
    return [orjson.loads(line)["id"] for line in path.read_bytes().splitlines() if line.strip()]


def test_receiver_applies_each_id_once_and_logs_duplicates(serve: Any, tmp_path: Path) -> None:
    ledger_path, log = tmp_path / "applied.jsonl", tmp_path / "seen.log"
    srv = serve(receiver.make_handler(receiver.Ledger(ledger_path), SECRET, log, 0, 0.001))
    sink = sinks.WebhookSink(srv.url, SECRET, timeout=5)
    sink.send(_action("act_1"))
    sink.send(_action("act_1"))  # the at-least-once retry: answered 2xx, not applied again
    sink.send(_action("act_2", "warn"))
    assert _ledger_ids(ledger_path) == ["act_1", "act_2"]
    assert log.read_text().split() == ["act_1", "act_1", "act_2"]
    rows = [orjson.loads(line) for line in ledger_path.read_bytes().splitlines()]
    assert [r["type"] for r in rows] == ["stormwatch.action.suspend", "stormwatch.action.warn"]
    assert {r["pid"] for r in rows} == {os.getpid()}


def test_receiver_restarted_on_its_ledger_treats_old_ids_as_duplicates(serve: Any, tmp_path: Path) -> None:
    ledger_path = tmp_path / "applied.jsonl"
    ledger_path.write_bytes(b'{"id": "act_old", "type": "x"}\n\n')  # a blank line is skipped
    ledger = receiver.Ledger(ledger_path)
    assert ledger.applied == {"act_old"}
    srv = serve(receiver.make_handler(ledger, SECRET, None, 0, 0.0))
    sinks.WebhookSink(srv.url, SECRET).send(_action("act_old"))
    assert _ledger_ids(ledger_path) == ["act_old"]  # not applied twice


def test_receiver_refuses_a_wrong_signature_with_401(serve: Any, tmp_path: Path) -> None:
    ledger_path = tmp_path / "applied.jsonl"
    srv = serve(receiver.make_handler(receiver.Ledger(ledger_path), SECRET, None, 0, 0.0))
    wrong = sinks.WebhookSink(srv.url, "whsec_b3RoZXItc2VjcmV0")
    with pytest.raises(sinks.DeliveryError, match="HTTP 401") as exc:
        wrong.send(_action("act_1"))
    assert exc.value.retryable is False
    assert not ledger_path.exists()  # nothing applied


def test_receiver_crash_after_apply_makes_the_retry_a_duplicate(
    serve: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashes: list[int] = []

    class Crash(Exception):
        pass

    def fake_exit(code: int) -> None:  # the request dies unanswered instead of the test process
        crashes.append(code)
        raise Crash(code)

    monkeypatch.setattr(receiver.os, "_exit", fake_exit)
    ledger_path = tmp_path / "applied.jsonl"
    srv = serve(receiver.make_handler(receiver.Ledger(ledger_path), SECRET, None, 1, 0.0))
    sink = sinks.WebhookSink(srv.url, SECRET, timeout=5)
    with pytest.raises(sinks.DeliveryError):
        sink.send(_action("act_1"))  # applied, then no answer
    assert crashes == [17]
    assert _ledger_ids(ledger_path) == ["act_1"]
    sink.send(_action("act_1"))  # the retry is recognised
    assert _ledger_ids(ledger_path) == ["act_1"]


def test_receiver_main_reads_the_secret_from_the_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    servers: list[HTTPServer] = []

    class Recorded(HTTPServer):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, **kw)
            servers.append(self)

    monkeypatch.setattr(receiver, "HTTPServer", Recorded)
    monkeypatch.setenv("MY_SECRET", SECRET)
    ledger_path = tmp_path / "applied.jsonl"
    argv = ["--port", "0", "--ledger", str(ledger_path), "--secret-env", "MY_SECRET"]
    t = threading.Thread(target=receiver.main, args=(argv,), daemon=True)
    t.start()
    for _ in range(200):
        if servers:
            break
        threading.Event().wait(0.01)
    srv = servers[0]
    try:
        port = srv.server_address[1]
        sinks.WebhookSink(f"http://127.0.0.1:{port}/", SECRET).send(_action("act_9"))
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)
    assert _ledger_ids(ledger_path) == ["act_9"]
    assert f"listening on 127.0.0.1:{port}" in capsys.readouterr().out


def test_receiver_main_without_the_secret_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET_VAR", raising=False)
    with pytest.raises(KeyError, match="NO_SUCH_SECRET_VAR"):
        receiver.main(["--port", "0", "--ledger", str(tmp_path / "l"), "--secret-env", "NO_SUCH_SECRET_VAR"])


def _redirecting(location: str | None, status: int) -> type[BaseHTTPRequestHandler]:
    class H(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(status)
            if location is not None:
                self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return H


@pytest.mark.parametrize(
    ("location", "status", "where", "retryable"),
    [
        (None, 302, "a redirect to no Location", True),
        ("http://u:pw@elsewhere.example:notaport/x?token=1", 307, "an unparsable Location", True),
        ("https://u:pw@elsewhere.example:8443/final?token=1", 308, "https://elsewhere.example:8443/final", False),
    ],
)
def test_redirect_is_a_failed_delivery_without_leaking_the_location(
    serve: Any, location: str | None, status: int, where: str, retryable: bool
) -> None:
    srv = serve(_redirecting(location, status))
    with pytest.raises(sinks.DeliveryError) as exc:
        sinks.WebhookSink(srv.url, "plain-secret").send(_action("act_1"))
    msg = str(exc.value)
    assert f"HTTP {status}" in msg and where in msg
    assert "pw" not in msg and "token" not in msg
    assert exc.value.retryable is retryable


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (503, True), (400, False), (404, False)])
def test_error_statuses_decide_retry(serve: Any, status: int, retryable: bool) -> None:
    srv = serve(_redirecting(None, status))
    with pytest.raises(sinks.DeliveryError, match=f"HTTP {status}") as exc:
        sinks.WebhookSink(srv.url, "plain-secret").send(_action("act_1"))
    assert exc.value.retryable is retryable


def test_unreachable_receiver_is_retryable() -> None:
    with pytest.raises(sinks.DeliveryError, match="cannot reach") as exc:
        sinks.WebhookSink("http://127.0.0.1:9/hook", "s", timeout=2).send(_action("act_1"))
    assert exc.value.retryable


@pytest.mark.parametrize(
    ("url", "secret", "message"),
    [
        ("ftp://example.com/hook", "s", "must be http"),
        ("https://example.com/hook", "", "secret is empty"),
        ("https://example.com/hook", "whsec_!!!not-base64!!!", "not valid"),
    ],
)
def test_webhook_sink_rejects_bad_config(url: str, secret: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        sinks.WebhookSink(url, secret)


def test_make_sink_errors_and_builtins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="unknown sink 'carrier-pigeon'") as exc:
        sinks.make_sink("carrier-pigeon")
    assert "outbox" in (exc.value.hint or "") and "webhook" in (exc.value.hint or "")
    with pytest.raises(ConfigError, match="needs --webhook-url"):
        sinks.make_sink("webhook")
    monkeypatch.delenv("C1_UNSET_SECRET", raising=False)
    with pytest.raises(ConfigError, match="C1_UNSET_SECRET is not set"):
        sinks.make_sink("webhook", webhook_url="https://example.com/h", secret_env="C1_UNSET_SECRET")
    with pytest.raises(ConfigError, match="needs --outbox"):
        sinks.make_sink("outbox")
    with pytest.raises(ConfigError, match="does not exist"):
        sinks.make_sink("outbox", outbox=tmp_path / "missing" / "out.jsonl")
    mem = sinks.make_sink("memory")
    assert isinstance(mem, sinks.MemorySink)
    monkeypatch.setenv("C1_SET_SECRET", SECRET)
    hook = sinks.make_sink("webhook", webhook_url="https://example.com/h", secret_env="C1_SET_SECRET", timeout=3)
    assert isinstance(hook, sinks.WebhookSink) and hook.timeout == 3 and SECRET not in repr(hook)


def test_outbox_skips_blank_lines_drops_a_cut_line_and_reports_write_errors(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "act_1"}\n\n{"id": "act_cut"')  # a blank line, then a line cut by a crash
    sink = sinks.OutboxSink(path)
    sink.send(_action("act_1"))  # already there: not written again
    sink.send(_action("act_2"))
    ids = [orjson.loads(line)["id"] for line in path.read_bytes().splitlines() if line.strip()]
    assert ids == ["act_1", "act_2"]
    folder = tmp_path / "a_folder.jsonl"
    folder.mkdir()
    with pytest.raises(sinks.DeliveryError, match="cannot write outbox"):
        sinks.OutboxSink(folder).send(_action("act_3"))


def test_signature_check_rejects_missing_stale_and_garbled_headers() -> None:
    body = b'{"a":1}'
    ts = int(__import__("time").time())
    good = {"webhook-id": "m1", "webhook-timestamp": str(ts), "webhook-signature": sinks.sign(SECRET, "m1", ts, body)}
    assert sinks.verify_signature(SECRET, good, body)
    assert not sinks.verify_signature(SECRET, {**good, "webhook-timestamp": "soon"}, body)
    assert not sinks.verify_signature(SECRET, {k: v for k, v in good.items() if k != "webhook-timestamp"}, body)
    old = ts - 3600
    stale = {**good, "webhook-timestamp": str(old), "webhook-signature": sinks.sign(SECRET, "m1", old, body)}
    assert not sinks.verify_signature(SECRET, stale, body)
    assert not sinks.verify_signature(SECRET, good, body + b" ")
    assert not sinks.verify_signature("whsec_", good, body)
