"""Durable once acknowledged, idempotent replays, and backpressure of the online receivers.

* a live ``stormwatch serve`` is killed with SIGKILL while clients stream OTLP exports into it:
  every span of every export it answered 200 is in the database afterwards, and replaying all of
  them into a fresh server stores nothing twice;
* when the writer is behind, requests get 503 with ``Retry-After`` at once (the queue is bounded).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from online_support import genai_spans, otlp_json, serve_process, stop
from stormwatch.api.app import create_app
from stormwatch.api.online import EventWriter, Overloaded
from stormwatch.api.tokens import create_token
from stormwatch.events import Event
from stormwatch.store import open_store

BATCH = 20


def _stream(base: str, headers: dict[str, str], client_no: int, acked: list[str], stop_at: threading.Event) -> None:
    with httpx.Client(timeout=5) as client:
        batch = 0
        while not stop_at.is_set():
            spans = genai_spans(client_no * 100_000 + batch, BATCH)
            body = json.dumps(otlp_json(spans)).encode()
            try:
                got = client.post(
                    base + "/v1/traces", content=body, headers={**headers, "content-type": "application/json"}
                )
            except httpx.TransportError:
                return  # the server is gone: this export was not acknowledged
            if got.status_code == 200:
                acked.extend(f"{s['traceId']}:{s['spanId']}" for s in spans)
            batch += 1


def test_sigkill_loses_nothing_acknowledged_and_replay_is_idempotent(tmp_path: Path) -> None:
    live = serve_process(tmp_path)
    assert live.proc is not None
    acked: list[list[str]] = [[], [], []]
    stop_at = threading.Event()
    clients = [
        threading.Thread(target=_stream, args=(live.base, live.bearer(), n, acked[n], stop_at)) for n in range(3)
    ]
    try:
        for c in clients:
            c.start()
        deadline = time.monotonic() + 20
        while sum(map(len, acked)) < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(live.proc.pid, signal.SIGKILL)  # mid-stream: clients are still sending
        live.proc.wait(10)
    finally:
        stop_at.set()
        for c in clients:
            c.join(10)
        stop(live)
    ids = [i for a in acked for i in a]
    assert len(ids) >= 1500, "the clients did not get far enough before the kill"
    store = open_store(live.db)
    try:
        stored = {e.event_id for _, e in store.iter_events()}
        quarantined = store.count_quarantine()
    finally:
        store.close()
    missing = set(ids) - stored
    assert not missing, f"{len(missing)} acknowledged spans lost, e.g. {sorted(missing)[:3]}"
    assert quarantined == 0
    assert len(stored) >= len(ids)  # spans committed but not yet answered may be there too

    # replay everything acknowledged (and more) into a restarted server: nothing is stored twice
    restarted = serve_process_at(live.db, tmp_path)
    try:
        with httpx.Client(timeout=10) as client:
            for n in range(3):
                for batch in range(len(acked[n]) // BATCH + 1):
                    spans = genai_spans(n * 100_000 + batch, BATCH)
                    got = client.post(
                        restarted.base + "/v1/traces",
                        content=json.dumps(otlp_json(spans)).encode(),
                        headers={**restarted.bearer(), "content-type": "application/json"},
                    )
                    assert got.status_code == 200
    finally:
        stop(restarted)
    store = open_store(live.db)
    try:
        count = store.count_events()
    finally:
        store.close()
    expected = sum((len(a) // BATCH + 1) * BATCH for a in acked)
    assert count == max(expected, len(stored))


def serve_process_at(db: str, tmp: Path) -> Any:
    """`stormwatch serve` again over an existing database (new tokens)."""
    import subprocess
    import sys

    from online_support import Live, free_port, make_tokens, wait_up

    tokens = make_tokens(db)
    port = free_port()
    log = tmp / "server2.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stormwatch", "serve", "--db", db, "--port", str(port), "--log-level", "warning"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    live = Live(f"http://127.0.0.1:{port}", db, tokens, proc, log)
    wait_up(live.base, proc, log)
    return live


class _SlowStore:
    """A real store whose event inserts wait until the test lets them go (a database that is behind)."""

    def __init__(self, store: Any, gate: threading.Event) -> None:
        self._store = store
        self._gate = gate

    def insert_events(self, events: list[Event], run_id: str | None = None) -> int:
        self._gate.wait(10)
        return int(self._store.insert_events(events, run_id))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class _Pool:
    def __init__(self, store: Any) -> None:
        self.store = store

    def acquire(self, timeout: float = 30.0) -> Any:
        return self.store

    def release(self, store: Any) -> None:
        store.rollback()


def test_backpressure_answers_503_with_retry_after(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'bp.db'}"
    store = open_store(db)
    token = create_token(store, name="exp", role="analyst", scopes=["ingest"])[0]
    store.close()
    app = create_app(db, entry_point_plugins=False)
    gate = threading.Event()
    writer_store = open_store(db)
    app.state.event_writer = EventWriter(_Pool(_SlowStore(writer_store, gate)), max_pending=2 * BATCH + 5, timeout_s=20)

    async def scenario() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:

            async def post(n: int) -> httpx.Response:
                body = json.dumps(otlp_json(genai_spans(900 + n, BATCH, prefix="9"))).encode()
                return await client.post(
                    "/v1/traces",
                    content=body,
                    headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
                )

            first = [asyncio.create_task(post(n)) for n in range(2)]
            await asyncio.sleep(0.5)  # both queued behind the stuck insert
            refused = await asyncio.wait_for(post(2), 5)  # answered at once, not queued
            gate.set()
            return [refused, *(await asyncio.gather(*first))]

    try:
        refused, *accepted = asyncio.run(scenario())
    finally:
        gate.set()
        app.state.event_writer.close()
        writer_store.close()
    assert refused.status_code == 503, refused.text
    assert int(refused.headers["Retry-After"]) >= 1 and "behind" in refused.json()["error"]
    assert [r.status_code for r in accepted] == [200, 200]
    check = open_store(db)
    try:
        assert check.count_events() == 2 * BATCH
    finally:
        check.close()


def test_writer_refuses_when_full_and_recovers() -> None:
    gate = threading.Event()

    class _Store:
        def __init__(self) -> None:
            self.n = 0

        def insert_events(self, events: list[Event], run_id: str | None = None) -> int:
            gate.wait(10)
            self.n += len(events)
            return len(events)

        def add_quarantine(self, items: Any, run_id: Any) -> None:
            return None

        def rollback(self) -> None:
            return None

    store = _Store()
    writer = EventWriter(_Pool(store), max_pending=3, max_batch=2)
    event = Event(event_id="e", ts="2026-01-01T00:00:00.000000Z", account_id="a", prompt="p")

    async def go() -> None:
        pending = [asyncio.create_task(writer.write([event], [], run_id="t")) for _ in range(3)]
        await asyncio.sleep(0.2)
        with pytest.raises(Overloaded):
            await writer.write([event], [], run_id="t")
        gate.set()
        await asyncio.gather(*pending)
        await writer.write([event], [], run_id="t")  # room again

    asyncio.run(go())
    writer.close()
    assert store.n == 4 and writer.pending == 0 and writer.stats["refused"] == 1


def test_bulk_requests_over_the_gate_get_503_before_their_body_is_read(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    from stormwatch.api.online import Gate

    db = f"sqlite:///{tmp_path / 'gate.db'}"
    store = open_store(db)
    token = create_token(store, name="exp", role="analyst", scopes=["ingest"])[0]
    store.close()
    app = create_app(db, entry_point_plugins=False)
    app.state.online_gate = gate = Gate(1)
    gate.busy = 1  # one export is being received
    headers = {"Authorization": f"Bearer {token}", "content-type": "application/json"}
    with TestClient(app) as client:
        for path in ("/v1/traces", "/v1/litellm/logs"):
            got = client.post(path, content=b"{}", headers=headers)
            assert got.status_code == 503 and got.headers["Retry-After"] == "1", got.text
        gate.busy = 0
        assert client.post("/v1/traces", content=b"{}", headers=headers).status_code == 200
        assert gate.busy == 0
