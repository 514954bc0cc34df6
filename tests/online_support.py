"""Helpers of the tests/test_online_*.py files: a live `stormwatch serve`, tokens, fixtures, OTLP bodies."""

from __future__ import annotations

import base64
import gzip
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

from stormwatch.api.tokens import create_token
from stormwatch.store import open_store

#: real captures copied from ../shared/fixtures/wire (see tests/fixtures/wire/README.md)
WIRE = Path(__file__).resolve().parent / "fixtures" / "wire"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_tokens(db: str) -> dict[str, str]:
    """Tokens: ``ingest`` and ``screen`` (narrowed analysts), ``read`` (read-only)."""
    store = open_store(db)
    try:
        return {
            "ingest": create_token(store, name="otel-exporter", role="analyst", scopes=["ingest"])[0],
            "screen": create_token(store, name="litellm-proxy", role="analyst", scopes=["screen"])[0],
            "read": create_token(store, name="reader", role="read-only")[0],
        }
    finally:
        store.close()


@dataclass
class Live:
    base: str
    db: str
    tokens: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def bearer(self, kind: str = "ingest") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[kind]}"}


def wait_up(base: str, proc: subprocess.Popen[bytes] | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(base + "/api/v1/health", timeout=1)
            return
        except httpx.TransportError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"server exited: {log.read_text() if log else ''}") from None
            if time.monotonic() > deadline:
                raise AssertionError("server did not start") from None
            time.sleep(0.1)


def serve_process(tmp: Path, *args: str, env: dict[str, str] | None = None) -> Live:
    """A real `stormwatch serve` subprocess on a free loopback port (the caller stops it)."""
    db = f"sqlite:///{tmp / 'online.db'}"
    tokens = make_tokens(db)
    port = free_port()
    log = tmp / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stormwatch",
                "serve",
                "--db",
                db,
                "--port",
                str(port),
                "--log-level",
                "warning",
                *args,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "STORMWATCH_DETECTORS": "first_tier", **(env or {})},
        )
    live = Live(f"http://127.0.0.1:{port}", db, tokens, proc, log)
    wait_up(live.base, proc, log)
    return live


def stop(live: Live) -> None:
    if live.proc is not None and live.proc.poll() is None:
        live.proc.terminate()
        try:
            live.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            live.proc.kill()
            live.proc.wait()


def serve_thread(tmp: Path) -> Iterator[tuple[Live, Any]]:
    """The app under uvicorn in a thread of this process (so a test can change ``app.state``)."""
    import uvicorn

    from stormwatch.api.app import create_app

    db = f"sqlite:///{tmp / 'online.db'}"
    tokens = make_tokens(db)
    app = create_app(db, entry_point_plugins=False)
    for _attempt in range(3):
        # free_port() hands back a port another xdist worker may bind before this server does; uvicorn
        # then exits its thread, so a dead thread means: try another port (a live, silent one is a bug)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if server.started:
            break
        server.should_exit = True
        thread.join(10)
        if thread.is_alive():
            raise AssertionError(f"server on port {port} did not start in 60 s")
    else:
        raise AssertionError("server could not bind a free port in three tries")
    live = Live(f"http://127.0.0.1:{port}", db, tokens)
    wait_up(live.base)
    try:
        yield live, app
    finally:
        server.should_exit = True
        thread.join(10)


def wire(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (WIRE / name).read_text().splitlines() if line.strip()]


def wire_body(rec: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """A captured request's body and its content headers, exactly as the client sent them."""
    headers = {k.lower(): v for k, v in rec["headers"].items() if k.lower() in ("content-type", "content-encoding")}
    if "body_b64" in rec:
        return base64.b64decode(rec["body_b64"]), headers
    return json.dumps(rec["body_json"]).encode(), headers


def otlp_json(spans: list[dict[str, Any]], resource: dict[str, str] | None = None) -> dict[str, Any]:
    """An OTLP/JSON ExportTraceServiceRequest with these spans (attributes given as plain dicts)."""

    def attrs(d: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for k, v in d.items():
            if isinstance(v, bool):
                val: dict[str, Any] = {"boolValue": v}
            elif isinstance(v, int):
                val = {"intValue": str(v)}
            else:
                val = {"stringValue": str(v)}
            out.append({"key": k, "value": val})
        return out

    return {
        "resourceSpans": [
            {
                "resource": {"attributes": attrs(resource or {"service.name": "bench-app"})},
                "scopeSpans": [
                    {
                        "scope": {"name": "tests"},
                        "spans": [
                            {
                                "traceId": s["traceId"],
                                "spanId": s["spanId"],
                                "name": s.get("name", "chat"),
                                "kind": 3,
                                "startTimeUnixNano": str(s.get("start", 1_795_635_647_037_591_033)),
                                "endTimeUnixNano": str(s.get("start", 1_795_635_647_037_591_033) + 1000),
                                "attributes": attrs(s["attributes"]),
                            }
                            for s in spans
                        ],
                    }
                ],
            }
        ]
    }


def genai_spans(batch: int, count: int, *, prefix: str = "a") -> list[dict[str, Any]]:
    """``count`` distinct GenAI chat spans of batch number ``batch`` (ids derived from both)."""
    return [
        {
            "traceId": f"{prefix}{batch:015x}{i:016x}"[:32].ljust(32, "0"),
            "spanId": f"{batch % 65536:04x}{i:012x}",
            "attributes": {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "user.id": f"acct_{i % 50}",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": f"request {batch}-{i}"}]}]
                ),
            },
        }
        for i in range(count)
    ]


def gz(data: bytes) -> bytes:
    return gzip.compress(data)
