"""``stormwatch serve`` and ``stormwatch token`` as a user runs them: a real server process on a
free loopback port, a real HTTP client, tokens made with the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from stormwatch.api.cli import is_loopback
from stormwatch.cli import main
from stormwatch.errors import EXIT_CONFIG, EXIT_INPUT, EXIT_OK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_token(db: str, role: str, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, object]:
    assert main(["--db", db, "token", "create", "--name", f"{role}-bot", "--role", role, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


@dataclass
class Server:
    db: str
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> str:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); return everything it printed."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.proc.kill()
                self.proc.wait()
        return self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    port = free_port()
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormwatch", "serve", "--db", db, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    srv = Server(db, f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(srv.base + "/api/v1/health", timeout=2)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{srv.stop()}") from None
                time.sleep(0.1)
        yield srv
    finally:
        srv.stop()


def test_a_real_server_authenticates_and_never_logs_tokens(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    db, base = server.db, server.base
    admin = make_token(db, "admin", capsys)
    reader = make_token(db, "read-only", capsys, "--expires", "1")
    assert reader["expires_at"]
    with httpx.Client(base_url=base, timeout=10) as client:
        r = client.get("/api/v1/health")
        assert r.status_code == 401 and r.json()["status"] == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = client.get("/api/v1/health", headers={"Authorization": f"Bearer {reader['token']}"})
        assert r.status_code == 200 and r.json()["ok"] is True
        assert "server" not in r.headers
        r = client.get("/api/v1/tokens", headers={"Authorization": f"Bearer {reader['token']}"})
        assert r.status_code == 403
        r = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {admin['token']}"})
        assert r.status_code == 200 and "/api/v1/accounts" in r.json()["paths"]
        # revoked with the CLI while the server runs: refused on the next request
        assert main(["--db", db, "token", "revoke", str(admin["token_id"])]) == EXIT_OK
        r = client.get("/api/v1/health", headers={"Authorization": f"Bearer {admin['token']}"})
        assert r.status_code == 401 and "revoked" in r.json()["error"]
    out = server.stop()
    assert "GET /api/v1/health 200" in out and f"token={reader['token_id']}" in out, out
    for t in (admin["token"], reader["token"]):
        assert str(t) not in out and str(t)[11:] not in out
    assert "Bearer" not in out


def test_token_cli_lists_without_secrets_and_revokes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    assert main(["--db", db, "token", "list"]) == EXIT_OK
    assert "no tokens" in capsys.readouterr().out
    assert main(["--db", db, "token", "create", "--name", "ops", "--role", "analyst"]) == EXIT_OK
    captured = capsys.readouterr()
    token = captured.out.strip()
    assert token.startswith("sw_") and "not shown again" in captured.err
    assert main(["--db", db, "token", "list", "--json"]) == EXIT_OK
    listed = json.loads(capsys.readouterr().out)["items"]
    assert [(t["name"], t["role"], t["status"]) for t in listed] == [("ops", "analyst", "active")]
    assert token not in json.dumps(listed)
    assert main(["--db", db, "token", "revoke", listed[0]["token_id"]]) == EXIT_OK
    assert main(["--db", db, "token", "list"]) == EXIT_OK
    assert "revoked" in capsys.readouterr().out
    assert main(["--db", db, "token", "revoke", "nosuchid"]) == EXIT_INPUT
    assert main(["--db", db, "token", "create", "--name", "x", "--role", "root"]) == 2


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.org"])
def test_serve_refuses_a_non_loopback_host_without_allow_remote(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", f"sqlite:///{tmp_path / 'x.db'}", "serve", "--host", host]) == EXIT_CONFIG
    assert "--allow-remote" in capsys.readouterr().err


def test_loopback_names() -> None:
    assert all(is_loopback(h) for h in ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"])
    assert not any(is_loopback(h) for h in ["0.0.0.0", "::", "10.0.0.1", "example.org", ""])


def test_a_token_id_never_starts_with_a_dash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An id like ``-cllFDh7`` reads as an option (`token revoke -cllFDh7` failed in CI): redrawn."""
    import secrets

    from stormwatch.api import tokens
    from stormwatch.store import open_store

    drawn = iter(["-cllFDh7" + "A" * 40, "bcllFDh7" + "A" * 40])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _n: next(drawn))
    with open_store(f"sqlite:///{tmp_path / 't.db'}") as store:
        token, info = tokens.create_token(store, name="ops", role="analyst")
    assert info.token_id == "bcllFDh7"[: len(info.token_id)] and token.startswith(tokens.PREFIX + "bcll")
