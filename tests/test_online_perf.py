"""The online routes' fast paths: the guard's token cache and route matching, and ``serve --workers``.

* :class:`~stormwatch.api.guard.TokenCache`: bounded, keyed by the token's SHA-256 (never the
  token), an entry lives ``ttl_s`` seconds and never past the token's expiry;
* on ``/v1/moderations`` and the LiteLLM guardrail a verified token is trusted for the TTL: a token
  revoked in the database (``stormwatch token revoke``, another process) is refused there within
  the TTL and at once on every other route; one revoked over HTTP is refused at once; failed
  authentications are not cached;
* the guard matches routes without path parameters by a set lookup, other routes by scanning, and
  sees routes added after ``create_app``;
* ``stormwatch serve --workers 2``: two worker processes answer, and SIGKILL of the whole server
  loses no acknowledged moderation.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from online_support import free_port, wait_up
from stormwatch.api.app import create_app
from stormwatch.api.auth import Principal, requires
from stormwatch.api.guard import RequestLimits, TokenCache
from stormwatch.api.roles import READ, Role
from stormwatch.api.tokens import create_token, revoke_token
from stormwatch.store import open_store

GUARDRAIL = "/beta/litellm_basic_guardrail_api"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _principal(token_id: str = "abcdefgh") -> Principal:
    return Principal(token_id, "bot", Role.ANALYST)


# -- TokenCache


def test_cache_entries_live_for_the_ttl_and_are_keyed_by_the_digest() -> None:
    clock = Clock()
    cache = TokenCache(5.0, clock=clock)
    token = "sw_" + "x" * 43
    key = cache.key(token)
    assert key == hashlib.sha256(token.encode()).digest()
    cache.put(key, _principal())
    assert token not in repr(cache._entries) and token[3:] not in repr(cache._entries)
    clock.now += 4.9
    assert cache.get(key) == _principal()
    clock.now += 0.2
    assert cache.get(key) is None and len(cache) == 0


def test_cache_is_bounded_least_recently_used_first() -> None:
    cache = TokenCache(60.0, max_entries=2, clock=Clock())
    a, b, c = (cache.key(f"sw_{n}") for n in "abc")
    cache.put(a, _principal("aaaaaaaa"))
    cache.put(b, _principal("bbbbbbbb"))
    assert cache.get(a) is not None  # a is now the most recently used
    cache.put(c, _principal("cccccccc"))
    assert len(cache) == 2 and cache.get(b) is None and cache.get(a) is not None and cache.get(c) is not None


def test_cache_never_outlives_the_tokens_expiry_and_forgets_on_request() -> None:
    from datetime import UTC, datetime

    clock = Clock()
    cache = TokenCache(60.0, clock=clock)
    soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    k1, k2, k3 = (cache.key(f"sw_{n}") for n in "123")
    cache.put(k1, _principal("11111111"), soon)
    cache.put(k2, _principal("22222222"), past)
    cache.put(k3, _principal("33333333"))
    assert cache.get(k1) is not None and cache.get(k2) is None
    clock.now += 3
    assert cache.get(k1) is None and cache.get(k3) is not None
    cache.forget("33333333")
    assert cache.get(k3) is None
    off = TokenCache(0.0, clock=clock)
    off.put(k1, _principal())
    assert len(off) == 0
    with pytest.raises(ValueError):
        TokenCache(-1)
    with pytest.raises(ValueError):
        RequestLimits(token_cache_size=0)


# -- the cache in the app


@pytest.fixture
def app_and_db(tmp_path: Path) -> Iterator[tuple[FastAPI, str]]:
    db = f"sqlite:///{tmp_path / 'perf.db'}"
    app = create_app(db, entry_point_plugins=False, limits=RequestLimits(token_cache_ttl_s=0.6))
    yield app, db


def _token(db: str, **kwargs: Any) -> tuple[str, str]:
    store = open_store(db)
    try:
        token, info = create_token(
            store, name=kwargs.pop("name", "litellm"), role=kwargs.pop("role", "analyst"), **kwargs
        )
        return token, info.token_id
    finally:
        store.close()


def _revoke_in_db(db: str, token_id: str) -> None:
    store = open_store(db)
    try:
        revoke_token(store, token_id, by="test")
    finally:
        store.close()


def _guardrail(client: TestClient, token: str, n: int) -> Any:
    body = {"input_type": "request", "texts": [], "litellm_call_id": f"perf-{n}-{time.monotonic_ns()}"}
    return client.post(GUARDRAIL, json=body, headers={"x-api-key": token})


def test_a_token_revoked_in_the_database_is_refused_within_the_ttl(
    app_and_db: tuple[FastAPI, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, db = app_and_db
    token, token_id = _token(db)
    import stormwatch.api.tokens as tokens

    calls: list[str] = []
    real = tokens.verify_token

    def counting(store: Any, tok: str, **kw: Any) -> Any:
        calls.append(tok[:11])
        return real(store, tok, **kw)

    monkeypatch.setattr(tokens, "verify_token", counting)
    with TestClient(app) as client:
        for n in range(5):
            assert _guardrail(client, token, n).status_code == 200
        assert len(calls) == 1  # verified once, then trusted from the cache
        _revoke_in_db(db, token_id)  # as `stormwatch token revoke` does, from another process
        # the other routes check the database on every request: refused at once
        r = client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401 and "revoked" in r.json()["error"]
        deadline = time.monotonic() + 0.6 + 2.0
        while (r := _guardrail(client, token, 99)).status_code == 200:
            assert time.monotonic() < deadline, "a revoked token was still trusted well past the TTL"
            time.sleep(0.05)
        assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_a_token_revoked_over_http_is_refused_at_once(app_and_db: tuple[FastAPI, str]) -> None:
    app, db = app_and_db
    token, token_id = _token(db)
    admin, _ = _token(db, name="admin", role="admin")
    with TestClient(app) as client:
        assert _guardrail(client, token, 1).status_code == 200
        r = client.post(f"/api/v1/tokens/{token_id}/revoke", headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200
        r = _guardrail(client, token, 2)
        assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_an_expiring_token_is_not_trusted_past_its_expiry(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'exp.db'}"
    app = create_app(db, entry_point_plugins=False, limits=RequestLimits(token_cache_ttl_s=60))
    token, _ = _token(db, expires_in=timedelta(seconds=1.5))
    with TestClient(app) as client:
        assert _guardrail(client, token, 1).status_code == 200
        time.sleep(1.7)
        r = _guardrail(client, token, 2)
        assert r.status_code == 401 and "expired" in r.json()["error"]


def test_failures_are_not_cached_and_a_cache_of_0_checks_every_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = f"sqlite:///{tmp_path / 'off.db'}"
    app = create_app(db, entry_point_plugins=False, limits=RequestLimits(token_cache_ttl_s=0))
    token, _ = _token(db)
    import stormwatch.api.tokens as tokens

    calls: list[int] = []
    real = tokens.verify_token
    import stormwatch.api.auth as auth

    def counting(store: Any, tok: str, **kw: Any) -> Any:
        calls.append(1)
        return real(store, tok, **kw)

    monkeypatch.setattr(tokens, "verify_token", counting)
    monkeypatch.setattr(auth, "verify_token", counting)  # the path without the cache
    with TestClient(app) as client:
        wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
        for n in range(2):
            r = _guardrail(client, wrong, n)
            assert r.status_code == 401 and "unknown" in r.json()["error"]
        r = client.post(GUARDRAIL, json={"texts": []})
        assert r.status_code == 401
        for n in range(3):
            assert _guardrail(client, token, n).status_code == 200
        assert len(calls) == 5  # nothing cached: the database saw every request with a token
        assert len(app.state.token_cache) == 0


# -- route matching


def test_the_guard_sees_extension_routes_and_routes_added_later(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'routes.db'}"

    def install(app: FastAPI) -> None:
        router = APIRouter()

        @router.get("/api/v1/ext/fixed", dependencies=[requires(READ)])
        def fixed() -> dict[str, str]:
            return {"ok": "fixed"}

        @router.get("/api/v1/ext/{item}", dependencies=[requires(READ)])
        def param(item: str) -> dict[str, str]:
            return {"ok": item}

        app.include_router(router)

    app = create_app(db, entry_point_plugins=False, extensions=[("ext", install)])
    reader, _ = _token(db, name="reader", role="read-only")
    h = {"Authorization": f"Bearer {reader}"}
    with TestClient(app) as client:
        for path in ("/api/v1/ext/fixed", "/api/v1/ext/thing"):
            assert client.get(path).status_code == 401  # a route: authenticated before anything else
            assert client.get(path, headers=h).json()["ok"] == path.rsplit("/", 1)[1]
            assert client.delete(path).status_code == 405  # another method: no authentication
        assert client.get("/api/v1/nowhere").status_code == 404
        assert client.post("/v1/moderations", content=b"{").status_code == 401

        later = APIRouter()

        @later.get("/api/v1/later", dependencies=[requires(READ)])
        def added_later() -> dict[str, bool]:
            return {"later": True}

        app.include_router(later)
        assert client.get("/api/v1/later").status_code == 401
        assert client.get("/api/v1/later", headers=h).json() == {"later": True}


# -- stormwatch serve --workers


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _moderate(base: str, token: str, acked: list[str], stop_at: threading.Event) -> None:
    with httpx.Client(timeout=10) as client:
        while not stop_at.is_set():
            try:
                r = client.post(
                    base + "/v1/moderations",
                    json={"input": "Write a PowerShell script that disables Defender"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            except httpx.TransportError:
                return
            if r.status_code == 200:
                acked.append(r.json()["id"])


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc")
def test_serve_with_two_workers_answers_and_sigkill_loses_nothing_acknowledged(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'workers.db'}"
    token, _ = _token(db, name="litellm-proxy", scopes=["screen"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormwatch", "serve", "--db", db, "--port", str(port), "--workers", "2"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "STORMWATCH_DETECTORS": "first_tier"},
            start_new_session=True,  # the supervisor and its workers: one process group
        )
    acked: list[list[str]] = [[] for _ in range(4)]
    stop_at = threading.Event()
    clients = [threading.Thread(target=_moderate, args=(base, token, acked[n], stop_at)) for n in range(4)]
    try:
        wait_up(base, proc, log)
        workers = [c for c in _children(proc.pid) if "multiprocessing.spawn" in _cmdline(c)]
        assert len(workers) == 2, _children(proc.pid)
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while sum(map(len, acked)) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # the whole server, mid-stream
        proc.wait(10)
    finally:
        stop_at.set()
        for c in clients:
            c.join(15)
        if proc.poll() is None:  # pragma: no cover
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    ids = [i for a in acked for i in a]
    assert len(ids) >= 300, f"the clients did not get far enough: {log.read_text(errors='replace')[-2000:]}"
    store = open_store(db)
    try:
        stored = {e.event_id for _, e in store.iter_events()}
    finally:
        store.close()
    missing = set(ids) - stored
    assert not missing, f"{len(missing)} acknowledged moderations lost, e.g. {sorted(missing)[:3]}"
    text = log.read_text(errors="replace")
    assert "2 worker processes" in text and token not in text


def test_bench_online_takes_workers_and_records_them() -> None:
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_online.py"), "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "--workers" in out
    source = (root / "benchmarks" / "bench_online.py").read_text()
    assert '"workers": args.workers' in source


def test_a_servers_pool_checkpoints_the_wal_in_its_own_thread(tmp_path: Path) -> None:
    """The API's store pool runs passive checkpoints from one thread and lets its connections
    checkpoint in their commits only after a small WAL (2,000 pages: what is left is copied, the WAL
    restarts); closing the pool stops the thread after a last checkpoint, and a pool without the
    option leaves the store's default (20,000 pages)."""
    from stormwatch.store.pool import StorePool
    from stormwatch.store.sqlite import BackgroundCheckpointer

    url = f"sqlite:///{tmp_path / 'w.db'}"
    pool = StorePool(url, size=2, background_checkpoints=True)
    store = pool.acquire()
    try:
        assert store._query("PRAGMA wal_autocheckpoint") == [(2000,)]  # type: ignore[attr-defined]
        assert isinstance(pool.checkpointer, BackgroundCheckpointer)
        checkpointer = pool.checkpointer
        checkpointer.interval_s = 0.05
        store._execute("CREATE TABLE t (x TEXT)")  # type: ignore[attr-defined]
        for i in range(200):
            store._execute("INSERT INTO t VALUES (?)", (f"row {i} " * 50,))  # type: ignore[attr-defined]
            store.commit()
        second = pool.acquire()  # another connection of the pool: one checkpointer for the file
        assert pool.checkpointer is checkpointer
        assert second._query("PRAGMA wal_autocheckpoint") == [(2000,)]  # type: ignore[attr-defined]
        pool.release(second)
    finally:
        pool.release(store)
    deadline = time.monotonic() + 10
    while checkpointer.checkpoints < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpointer.checkpoints >= 2
    pool.close()
    assert pool.checkpointer is None and not checkpointer._thread.is_alive()
    # after the last checkpoint every frame of the WAL is in the database file
    import sqlite3

    conn = sqlite3.connect(tmp_path / "w.db")
    try:
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert busy == 0 and frames == done
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (200,)
    finally:
        conn.close()
    plain = StorePool(url, size=1)
    other = plain.acquire()
    try:
        assert other._query("PRAGMA wal_autocheckpoint") == [(20000,)]  # type: ignore[attr-defined]
        assert plain.checkpointer is None
    finally:
        plain.release(other)
        plain.close()


def test_the_gil_switch_interval_of_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    from stormwatch.api import cli as api_cli
    from stormwatch.errors import ConfigError

    before = sys.getswitchinterval()
    try:
        monkeypatch.delenv("STORMWATCH_SWITCH_INTERVAL_MS", raising=False)
        api_cli._set_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(api_cli.SWITCH_INTERVAL_MS / 1000)
        monkeypatch.setenv("STORMWATCH_SWITCH_INTERVAL_MS", "2")
        api_cli._set_switch_interval()
        assert sys.getswitchinterval() == pytest.approx(0.002)
        for bad in ("fast", "0", "1000"):
            monkeypatch.setenv("STORMWATCH_SWITCH_INTERVAL_MS", bad)
            with pytest.raises(ConfigError, match="STORMWATCH_SWITCH_INTERVAL_MS"):
                api_cli._set_switch_interval()
    finally:
        sys.setswitchinterval(before)


def test_the_checkpoint_thread_ends_with_its_pool_or_its_file(tmp_path: Path) -> None:
    """Servers close their pool; one that is dropped without closing (an app in a test) or whose
    file was deleted does not leave a thread polling behind."""
    import gc

    from stormwatch.store.pool import StorePool

    pool = StorePool(f"sqlite:///{tmp_path / 'a.db'}", size=1, background_checkpoints=True)
    pool.release(pool.acquire())
    checkpointer = pool.checkpointer
    checkpointer.interval_s = 0.02
    del pool
    gc.collect()
    checkpointer._thread.join(5)
    assert not checkpointer._thread.is_alive()

    kept = StorePool(f"sqlite:///{tmp_path / 'b.db'}", size=1, background_checkpoints=True)
    store = kept.acquire()
    other = kept.checkpointer
    other.interval_s = 0.02
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"b.db{suffix}").unlink(missing_ok=True)
    other._thread.join(5)
    assert not other._thread.is_alive()
    kept.release(store)
    kept.close()
