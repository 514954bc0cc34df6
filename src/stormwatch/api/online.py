"""Online ingest: what the receivers (OTLP, the LiteLLM guardrail) store, durable before they answer.

:class:`EventWriter` is one writer thread per app with a bounded queue in front of it:

* **durable once acknowledged**: a route awaits :meth:`EventWriter.write`, which returns only after
  the writer has committed the request's events and quarantined records; the route answers 2xx
  after that. A process killed with SIGKILL loses only requests it had not answered (their
  clients retry). SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed transaction
  survives the process being killed; surviving power loss as well needs ``synchronous=FULL``
  (PostgreSQL: its own ``synchronous_commit``).
* **idempotent**: events keep the ids the routes give them (OTLP: ``traceId:spanId``; the guardrail:
  ``litellm_call_id`` or a hash of the request), stored with ``ON CONFLICT DO NOTHING``; a
  quarantined record is stored once (the quarantine's own unique key).
* **group commit**: the writer takes every queued request at once (up to ``max_batch`` events) and
  writes them in one transaction, so throughput grows with load instead of one commit per request.
* **backpressure**: at most ``max_pending`` events wait. A request that would go past it is refused
  at once with **503** and ``Retry-After`` (:class:`Overloaded`): memory never grows without bound,
  and the client (the OTel exporter, LiteLLM) retries later. So is a request whose write has not
  finished after ``timeout_s`` (the database is stuck): it is answered 503 and not acknowledged.

The writer takes a store from the app's pool for each batch and gives it back after.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from stormwatch.api.errors import ApiError
from stormwatch.events import Event, Rejected
from stormwatch.store.pool import StoreSource

__all__ = [
    "DEFAULT_MAX_INFLIGHT",
    "MODERATIONS_RUN_ID",
    "EventWriter",
    "Gate",
    "Overloaded",
    "WriteResult",
    "gate_for",
    "moderation_event",
    "writer_for",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_PENDING = 20_000
DEFAULT_MAX_BATCH = 5_000
DEFAULT_TIMEOUT_S = 30.0
#: bulk requests (OTLP exports, LiteLLM log batches) read and decoded at once; more get 503 at once
DEFAULT_MAX_INFLIGHT = 8


class Overloaded(ApiError):
    """The writer is behind: come back later (503 with ``Retry-After``)."""

    status = 503
    type = "overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after)})


@dataclass(frozen=True, slots=True)
class WriteResult:
    events: int
    quarantined: int


@dataclass(slots=True)
class _Job:
    events: list[Event]
    rejected: list[Rejected]
    run_id: str
    loop: asyncio.AbstractEventLoop | None  # None: a caller on a worker thread waits on ``done``
    future: asyncio.Future[WriteResult] | concurrent.futures.Future[WriteResult]
    size: int = field(init=False)

    def __post_init__(self) -> None:
        self.size = max(1, len(self.events) + len(self.rejected))

    def settle(self, result: WriteResult | None, error: BaseException | None) -> None:
        if self.loop is None:
            assert isinstance(self.future, concurrent.futures.Future)
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]
            return
        assert isinstance(self.future, asyncio.Future)
        with contextlib.suppress(RuntimeError):  # the loop is closed (shutdown)
            self.loop.call_soon_threadsafe(_settle, self.future, result, error)


def _settle(future: asyncio.Future[WriteResult], result: WriteResult | None, error: BaseException | None) -> None:
    if future.done():  # the request gave up (timeout, client gone)
        return
    if error is not None:
        future.set_exception(error)
    else:
        assert result is not None
        future.set_result(result)


class EventWriter:
    """See the module docstring. Thread-safe; :meth:`write` is awaited from the event loop."""

    def __init__(
        self,
        pool: StoreSource,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_batch: int = DEFAULT_MAX_BATCH,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if max_pending < 1 or max_batch < 1:
            raise ValueError("max_pending and max_batch must be at least 1")
        self.pool = pool
        self.max_pending = max_pending
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._jobs: deque[_Job] = deque()
        self._pending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: counters for metrics and tests
        self.stats: dict[str, int] = {"requests": 0, "events": 0, "quarantined": 0, "refused": 0, "batches": 0}

    @property
    def pending(self) -> int:
        return self._pending

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stormwatch-online-writer", daemon=True)
            self._thread.start()

    def _enqueue(self, job: _Job) -> None:
        with self._cond:
            if self._closed:
                raise Overloaded("the server is shutting down", retry_after=5)
            if self._pending + job.size > self.max_pending and self._pending > 0:
                self.stats["refused"] += 1
                wait = max(1, round(self._pending / max(self.max_batch, 1)))
                raise Overloaded(
                    f"the event writer is behind ({self._pending} events waiting): retry in {wait} s", wait
                )
            self._start()
            self._jobs.append(job)
            self._pending += job.size
            self._cond.notify()

    async def write(self, events: Sequence[Event], rejected: Sequence[Rejected], *, run_id: str) -> WriteResult:
        """Store ``events`` and quarantine ``rejected``; return once committed (or raise 503)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[WriteResult] = loop.create_future()
        self._enqueue(_Job(list(events), list(rejected), run_id, loop, future))
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            raise Overloaded(f"the database did not commit within {self.timeout_s:.0f} s", retry_after=5) from None

    def write_blocking(self, events: Sequence[Event], rejected: Sequence[Rejected], *, run_id: str) -> WriteResult:
        """:meth:`write` for a route running on a worker thread (a ``def`` route)."""
        future: concurrent.futures.Future[WriteResult] = concurrent.futures.Future()
        self._enqueue(_Job(list(events), list(rejected), run_id, None, future))
        try:
            return future.result(self.timeout_s)
        except concurrent.futures.TimeoutError:
            raise Overloaded(f"the database did not commit within {self.timeout_s:.0f} s", retry_after=5) from None

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs and not self._closed:
                self._cond.wait()
            if not self._jobs:
                return None
            jobs = [self._jobs.popleft()]
            size = jobs[0].size
            while self._jobs and size + self._jobs[0].size <= self.max_batch:
                job = self._jobs.popleft()
                jobs.append(job)
                size += job.size
            return jobs

    def _write(self, jobs: list[_Job]) -> None:
        """One transaction per run id, on a store taken from the pool for this batch only (so the
        writer never keeps a connection the requests need, even with ``--pool-size 1``)."""
        by_run: dict[str, tuple[list[Event], list[Rejected]]] = {}
        for job in jobs:
            events, rejected = by_run.setdefault(job.run_id, ([], []))
            events.extend(job.events)
            rejected.extend(job.rejected)
        store = self.pool.acquire()
        try:
            for run_id, (events, rejected) in by_run.items():
                store.insert_events(events, run_id)
                store.add_quarantine(rejected, run_id)
        finally:
            self.pool.release(store)  # rolls back what a failure left open; drops a dead connection

    def _run(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                break
            error: BaseException | None = None
            try:
                self._write(jobs)
            except BaseException as exc:  # answered as 503/500 to each request of the batch
                log.error("online writer: %s", exc)
                error = exc
            with self._cond:
                for job in jobs:
                    self._pending -= job.size
                if error is None:
                    self.stats["batches"] += 1
                    self.stats["requests"] += len(jobs)
                    self.stats["events"] += sum(len(j.events) for j in jobs)
                    self.stats["quarantined"] += sum(len(j.rejected) for j in jobs)
            for job in jobs:
                job.settle(None if error is not None else WriteResult(len(job.events), len(job.rejected)), error)

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the queued jobs are written."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)


_create_lock = threading.Lock()


def writer_for(app_state: Any) -> EventWriter:
    """The app's writer (``app.state.event_writer``), made on first use over the app's store pool."""
    writer: EventWriter | None = getattr(app_state, "event_writer", None)
    if writer is None:
        with _create_lock:
            writer = getattr(app_state, "event_writer", None)
            if writer is None:
                writer = EventWriter(app_state.store_pool)
                app_state.event_writer = writer
    return writer


class Gate:
    """At most ``limit`` bulk requests in memory at once (their bodies are what would grow memory).

    Entered before the body is read; one over the limit is answered 503 with ``Retry-After`` and
    its body is never read. Used from the event loop only.
    """

    def __init__(self, limit: int = DEFAULT_MAX_INFLIGHT) -> None:
        if limit < 1:
            raise ValueError("the gate's limit must be at least 1")
        self.limit = limit
        self.busy = 0

    def enter(self, what: str) -> None:
        if self.busy >= self.limit:
            raise Overloaded(f"{self.busy} {what} are being received: retry in 1 s")
        self.busy += 1

    def leave(self) -> None:
        self.busy -= 1


def gate_for(app_state: Any) -> Gate:
    """The app's gate (``app.state.online_gate``), made on first use."""
    gate: Gate | None = getattr(app_state, "online_gate", None)
    if gate is None:
        gate = Gate()
        app_state.online_gate = gate
    return gate


MODERATIONS_SOURCE = "moderations"
MODERATIONS_RUN_ID = "online:moderations"


def _header_ip(headers: Any, client: Any) -> str | None:
    forwarded = headers.get("x-forwarded-for")
    if forwarded:
        return str(forwarded).split(",")[0].strip() or None
    return str(client.host) if client is not None else None


def moderation_event(
    request: Any, body: dict[str, Any], texts: list[str], results: list[dict[str, Any]], modr_id: str, model: str
) -> Event:
    """The usage event of one ``POST /v1/moderations`` call (``interfaces.md`` §6, Screening 1).

    The account is the caller's token (``token:<name>``); the end user ``safety_identifier``, then
    ``user`` (the SDK's ``extra_body``); the org the ``OpenAI-Organization`` (else
    ``OpenAI-Project``) header; the address the first ``X-Forwarded-For`` entry, else the peer;
    ``metadata.conversation_id`` the conversation.
    """
    from stormwatch.events import validate_event

    principal = getattr(request.state, "principal", None)
    name = getattr(principal, "name", "unknown")
    headers = request.headers

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) and value else None

    raw_metadata = body.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    return validate_event(
        {
            "event_id": modr_id,
            "ts": datetime.now(UTC).isoformat(),
            "account_id": f"token:{name}",
            "org_id": text(headers.get("openai-organization")) or text(headers.get("openai-project")),
            "end_user_id": text(body.get("safety_identifier")) or text(body.get("user")),
            "ip": _header_ip(headers, request.client),
            "user_agent": text(headers.get("user-agent")),
            "prompt": "\n".join(texts),
            "conversation_id": text(metadata.get("conversation_id")),
            "attributes": {
                "moderation": {
                    "model": model,
                    "requested_model": text(body.get("model")),
                    "flagged": [r["flagged"] for r in results],
                    "scores": [r["x_stormwatch"]["score"] for r in results],
                    "llmt_flagged": sorted({c for r in results for c in r["x_stormwatch"]["llmt_flagged"]}),
                },
                "screened_by": getattr(principal, "actor", None),
            },
        },
        source=MODERATIONS_SOURCE,
    )
