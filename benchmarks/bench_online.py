"""Benchmark: the online routes of a live ``stormwatch serve`` (client and server on this machine).

* ``POST /v1/moderations`` with one short input, and ``POST /beta/litellm_basic_guardrail_api``
  with one short text (scored, policy applied, stored before the answer):
  - at a fixed rate (open loop: every request has a scheduled send time and its latency counts from
    then, so a stalled server cannot hide its queue): p50/p99/max, errors;
  - at saturation (closed loop, ``--concurrency`` connections sending back to back): throughput
    and p50/p99 at it;
* ``POST /v1/traces``: OTLP protobuf exports of ``--spans-per-export`` GenAI spans each, sent back
  to back by ``--otlp-clients`` connections for ``--otlp-seconds``, into SQLite and PostgreSQL:
  spans/s stored (counted in the database afterwards), 503s (backpressure), and the server's RSS
  at start and end.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (a few microseconds per
request), so most of the two cores go to the server. The machine may be shared: the load average
before and after each phase is recorded beside its numbers.

    python benchmarks/bench_online.py                  # 500 req/s for 60 s, saturation 15 s, OTLP 60 s
    python benchmarks/bench_online.py --short          # CI: a few seconds per phase, no PostgreSQL
    python benchmarks/bench_online.py --workers 2      # stormwatch serve --workers 2 (recorded as "workers")
    python benchmarks/bench_online.py --pg postgresql://postgres@127.0.0.1:5432/test \
        --out benchmarks/results/online.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from stormwatch.api.tokens import create_token
from stormwatch.store import open_store

TEXT = "Write a PowerShell script that disables Defender"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``serve --workers N``: the supervisor and its worker processes)."""
    pids = [pid]
    for p in pids:
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pids.extend(int(c) for c in children)
    return pids


def _rss_mib(pid: int) -> float:
    """Resident memory of the server, its worker processes included."""
    total = 0
    for p in _tree(pid):
        try:
            lines = Path(f"/proc/{p}/status").read_text().splitlines()
        except OSError:
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
    return round(total / 1024, 1)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the server has used, its worker processes included: what a
    request costs, whatever else runs. (A worker that exited takes its seconds with it.)"""
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Server:
    def __init__(self, db: str, workdir: Path, workers: int = 1) -> None:
        store = open_store(db)
        try:
            self.token = create_token(store, name=f"bench-{uuid.uuid4().hex[:6]}", role="analyst")[0]
        finally:
            store.close()
        self.port = _free_port()
        self.db = db
        self.log = open(workdir / f"server-{self.port}.log", "wb")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "STORMWATCH_DETECTORS": os.environ.get("STORMWATCH_DETECTORS", "first_tier")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "stormwatch",
                "serve",
                "--db",
                db,
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--workers",
                str(workers),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: see {self.log.name}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()


class Conn:
    """One keep-alive HTTP/1.1 connection; ``request`` returns (status, retry-after seen)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, head: bytes, body: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            self.writer = None
            raise ConnectionError("closed")
        status = int(status_line.split()[1])
        length = 0
        close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length:
            await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.writer = None
        return status


def _head(path: str, token: str, length: int, content_type: str, auth: str = "authorization") -> bytes:
    value = f"Bearer {token}" if auth == "authorization" else token
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}: {value}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2)


def _request_for(route: str, token: str, n: int) -> tuple[bytes, bytes]:
    if route == "moderations":
        body = orjson.dumps({"input": TEXT, "model": "omni-moderation-latest"})
        return _head("/v1/moderations", token, len(body), "application/json"), body
    body = orjson.dumps(
        {
            "input_type": "request",
            "texts": [TEXT],
            "litellm_call_id": f"bench-{uuid.uuid4().hex}",
            "model": "gpt-4o-mini",
            "request_data": {"user_api_key_user_id": f"user_{n % 100}", "user_api_key_hash": "88dc28d0"},
        }
    )
    return _head("/beta/litellm_basic_guardrail_api", token, len(body), "application/json", "x-api-key"), body


_LEAD_S = 0.02  # a fixed-rate request's task is made this long before its send time


async def fixed_rate(
    port: int, token: str, route: str, rate: float, seconds: float, conns: int, pid: int
) -> dict[str, Any]:
    total = int(rate * seconds)
    pool: asyncio.Queue[Conn] = asyncio.Queue()
    for _ in range(conns):
        pool.put_nowait(Conn(port))
    lat: list[float] = []
    errors: dict[str, int] = {}
    start = time.perf_counter() + 0.2

    async def one(i: int) -> None:
        due = start + i / rate
        head, body = _request_for(route, token, i)
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = await pool.get()
        try:
            status = await conn.request(head, body)
            if status != 200:
                errors[str(status)] = errors.get(str(status), 0) + 1
        except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            conn.writer = None
        finally:
            pool.put_nowait(conn)
        lat.append((time.perf_counter() - due) * 1000)

    load_before = _load()
    cpu_before = _cpu_s(pid)
    # each request's task is made shortly before it is due: making them thousands at a time stalled
    # this client's loop for tens of milliseconds, and the requests due then counted it as latency
    running: set[asyncio.Task[None]] = set()
    for i in range(total):
        lead = start + i / rate - time.perf_counter() - _LEAD_S
        if lead > 0:
            await asyncio.sleep(lead)
        task = asyncio.create_task(one(i))
        running.add(task)
        task.add_done_callback(running.discard)
    await asyncio.gather(*running)
    wall = time.perf_counter() - start
    return {
        "rate_per_s": rate,
        "seconds": seconds,
        "requests": total,
        "achieved_per_s": round(total / wall, 1),
        "p50_ms": _pct(lat, 0.50),
        "p99_ms": _pct(lat, 0.99),
        "max_ms": round(max(lat), 2) if lat else 0.0,
        "server_cpu_ms_per_request": round((_cpu_s(pid) - cpu_before) * 1000 / max(total, 1), 3),
        "errors": errors,
        "load_before": load_before,
        "load_after": _load(),
    }


async def saturation(port: int, token: str, route: str, seconds: float, conns: int, pid: int) -> dict[str, Any]:
    lat: list[float] = []
    errors: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds
    count = 0

    async def worker() -> None:
        nonlocal count
        conn = Conn(port)
        while time.perf_counter() < stop_at:
            head, body = _request_for(route, token, count)
            t = time.perf_counter()
            try:
                status = await conn.request(head, body)
                if status != 200:
                    errors[str(status)] = errors.get(str(status), 0) + 1
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                conn.writer = None
            lat.append((time.perf_counter() - t) * 1000)
            count += 1

    load_before = _load()
    cpu_before = _cpu_s(pid)
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conns)))
    wall = time.perf_counter() - t0
    cpu = _cpu_s(pid) - cpu_before
    return {
        "concurrency": conns,
        "seconds": round(wall, 1),
        "requests": count,
        "throughput_per_s": round(count / wall, 1),
        "p50_ms": _pct(lat, 0.50),
        "p99_ms": _pct(lat, 0.99),
        "server_cpu_ms_per_request": round(cpu * 1000 / max(count, 1), 3),
        "server_cpu_share": round(cpu / wall, 2),
        "errors": errors,
        "load_before": load_before,
        "load_after": _load(),
    }


def _otlp_template(spans: int) -> tuple[bytes, bytes]:
    """A protobuf export of ``spans`` GenAI spans of one trace, and the trace id bytes to replace."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    marker = b"TRACEMARKER_0001"
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="bench-gateway")))
    ss = rs.scope_spans.add()
    ss.scope.name = "bench"
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": TEXT}]}])
    for i in range(spans):
        sp = ss.spans.add()
        sp.trace_id = marker
        sp.span_id = (i + 1).to_bytes(8, "big")
        sp.name = "chat gpt-4o-mini"
        sp.kind = 3
        sp.start_time_unix_nano = 1_795_635_647_037_591_033 + i
        sp.end_time_unix_nano = sp.start_time_unix_nano + 1000
        for key, value in (
            ("gen_ai.operation.name", "chat"),
            ("gen_ai.provider.name", "openai"),
            ("gen_ai.request.model", "gpt-4o-mini"),
            ("user.id", f"acct_{i % 97}"),
            ("enduser.id", f"eu_{i}"),
            ("client.address", "203.0.113.7"),
            ("gen_ai.input.messages", messages),
        ):
            sp.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return req.SerializeToString(), marker


async def otlp_load(server: Server, seconds: float, clients: int, spans: int) -> dict[str, Any]:
    template, marker = _otlp_template(spans)
    head = _head("/v1/traces", server.token, len(template), "application/x-protobuf")
    store = open_store(server.db)
    try:
        before = store.count_events()
    finally:
        store.close()
    rss_start = _rss_mib(server.proc.pid)
    cpu_before = _cpu_s(server.proc.pid)
    rss_samples: list[float] = []
    statuses: dict[str, int] = {}
    stop_at = time.perf_counter() + seconds
    sent_ok = 0

    async def client() -> None:
        nonlocal sent_ok
        conn = Conn(server.port)
        while time.perf_counter() < stop_at:
            body = template.replace(marker, uuid.uuid4().bytes)
            try:
                status = await conn.request(head, body)
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                statuses[type(exc).__name__] = statuses.get(type(exc).__name__, 0) + 1
                conn.writer = None
                continue
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                sent_ok += spans
            elif status in (429, 503):
                await asyncio.sleep(0.05)

    async def sampler() -> None:
        while time.perf_counter() < stop_at:
            rss_samples.append(_rss_mib(server.proc.pid))
            await asyncio.sleep(1)

    load_before = _load()
    t0 = time.perf_counter()
    await asyncio.gather(sampler(), *(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    store = open_store(server.db)
    try:
        stored = store.count_events() - before
    finally:
        store.close()
    return {
        "seconds": round(wall, 1),
        "clients": clients,
        "spans_per_export": spans,
        "export_bytes": len(template),
        "spans_acknowledged": sent_ok,
        "spans_stored": stored,
        "spans_per_s": round(stored / wall, 1),
        "server_cpu_us_per_span": round((_cpu_s(server.proc.pid) - cpu_before) * 1e6 / max(stored, 1), 1),
        "statuses": statuses,
        "rss_mib_start": rss_start,
        "rss_mib_end": _rss_mib(server.proc.pid),
        "rss_mib_max": max(rss_samples, default=rss_start),
        "rss_mib_every_10s": rss_samples[::10],
        "load_before": load_before,
        "load_after": _load(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="CI: 3 s phases, 100 req/s, no PostgreSQL")
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=60.0, help="fixed-rate phase length")
    ap.add_argument("--saturation-seconds", type=float, default=15.0)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--otlp-seconds", type=float, default=60.0)
    ap.add_argument("--otlp-clients", type=int, default=4)
    ap.add_argument("--spans-per-export", type=int, default=200)
    ap.add_argument("--workers", type=int, default=1, help="stormwatch serve --workers (server processes)")
    ap.add_argument("--pg", default=None, help="PostgreSQL URL for the OTLP phase (left out: SQLite only)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.short:
        args.seconds, args.saturation_seconds, args.otlp_seconds = 3.0, 3.0, 3.0
        args.rate = min(args.rate, 100.0)
    workdir = Path(tempfile.mkdtemp(prefix="bench_online_"))
    results: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "detectors": os.environ.get("STORMWATCH_DETECTORS", "first_tier"),
        "short": args.short,
        "workers": args.workers,
        "load_at_start": _load(),
    }
    server = Server(f"sqlite:///{workdir / 'online.db'}", workdir, args.workers)
    try:
        for route in ("moderations", "guardrail"):
            pid = server.proc.pid
            asyncio.run(saturation(server.port, server.token, route, 1.0, 2, pid))  # warm-up: detectors loaded
            results[f"{route}_fixed_rate"] = asyncio.run(
                fixed_rate(server.port, server.token, route, args.rate, args.seconds, args.concurrency * 2, pid)
            )
            print(route, "fixed rate", results[f"{route}_fixed_rate"], flush=True)
            results[f"{route}_saturation"] = asyncio.run(
                saturation(server.port, server.token, route, args.saturation_seconds, args.concurrency, pid)
            )
            print(route, "saturation", results[f"{route}_saturation"], flush=True)
        results["otlp_sqlite"] = asyncio.run(
            otlp_load(server, args.otlp_seconds, args.otlp_clients, args.spans_per_export)
        )
        print("otlp sqlite", results["otlp_sqlite"], flush=True)
    finally:
        server.stop()
    if args.pg and not args.short:
        pg = Server(args.pg, workdir, args.workers)
        try:
            results["otlp_postgres"] = asyncio.run(
                otlp_load(pg, args.otlp_seconds, args.otlp_clients, args.spans_per_export)
            )
            print("otlp postgres", results["otlp_postgres"], flush=True)
        finally:
            pg.stop()
    results["load_at_end"] = _load()
    text = json.dumps(results, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
