"""The watch loop: score -> analyze -> enforce -> notify -> intel sync, as events arrive or on a schedule.

One *cycle* runs the stages in that order on the watcher's database connection:

* ``score``: :func:`stormwatch.score.scoring.score_new_events` (the active model and its shadows);
* ``analyze``: :func:`stormwatch.analyze.pipeline.analyze` without scoring (incremental); skipped
  when scoring failed, so no event is analysed before it is scored;
* ``enforce``: :func:`stormwatch.disrupt.enforce.enforce` with the policies (re-read every cycle)
  in the configured mode; each policy still acts only in its own mode (``effective_mode``).
  Delivery retries are left to the next cycle, never waited for in the loop;
* ``notify``: new ``enforce``/``review`` decisions to every channel (:mod:`stormwatch.watch.notify`);
* ``intel``: pull each configured partner TAXII collection, at most every ``intel_interval``.

A cycle starts when polling (``poll`` seconds; ``MAX(seq)`` of the event log, an index lookup)
finds new events and ``min_interval`` has passed since the last cycle, or when ``interval`` has
passed. A stage that raises is counted (``stormwatch_errors_total{stage}``), logged without its
secrets and retried after a backoff (1 s doubling to 5 minutes) while the loop goes on.

SIGTERM or SIGINT lets the running stage finish, then the watcher releases its lease and exits 0;
a second signal aborts at once. Only the watcher holding the lease (:mod:`stormwatch.watch.lease`)
runs cycles; another one waits on standby.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from stormwatch import __version__
from stormwatch.disrupt.sinks import Sink
from stormwatch.errors import EXIT_ERROR, EXIT_OK, StormwatchError
from stormwatch.store import Store, open_store
from stormwatch.watch.lease import LeaseKeeper
from stormwatch.watch.metrics import WatchMetrics
from stormwatch.watch.notify import Channel, notify_channel
from stormwatch.watch.settings import WatchSettings

__all__ = ["StageFailed", "Watcher"]

log = logging.getLogger("stormwatch.watch")
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0
MAX_ARRIVALS = 1000  # (seq, first seen) pairs kept for the lag
_USERINFO = re.compile(r"(?<=://)[^/@\s]*@")


class StageFailed(StormwatchError):
    """A stage finished its work but part of it failed (a channel, a partner): counted as an error."""


def _safe(exc: BaseException) -> str:
    """An error message for the log: credentials in URLs (``user:pass@``) removed, bounded length."""
    return _USERINFO.sub("***@", str(exc))[:500]


@dataclass
class _StageState:
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class Watcher:
    db_url: str | None
    settings: WatchSettings
    metrics: WatchMetrics
    channels: Sequence[Channel] = ()
    sink: Sink | None = None
    retry: Any = None  # stormwatch.disrupt.enforce.RetryPolicy (wait=False)
    policy_paths: Sequence[Path] = ()
    analyze_settings: Any = None
    progress: bool = False
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.lease = LeaseKeeper(self.db_url, self.settings.lease_seconds)
        self.store: Store | None = None
        self.seen_seq = 0
        self.processed_seq = 0
        self._arrivals: deque[tuple[int, float]] = deque()
        self._stages: dict[str, _StageState] = {}
        self.failed: set[str] = set()
        self.cycles = 0
        self.last_cycle_at: float | None = None
        self.last_progress = time.time()
        self._intel_due = 0.0
        self._last_end = float("-inf")
        self.metrics.lag_from(self.lag_seconds)

    # -- what /healthz and /metrics read (from the server's threads) -----------------------------
    def lag_seconds(self) -> float:
        for seq, at in list(self._arrivals):
            if seq > self.processed_seq:
                return max(0.0, time.time() - at)
        return 0.0

    def health(self) -> tuple[int, dict[str, Any]]:
        now = time.time()
        idle = now - self.last_progress
        stall = max(3600.0, 3 * self.settings.interval)
        failing = sorted(n for n, s in list(self._stages.items()) if s.failures)
        doc: dict[str, Any] = {
            "version": __version__,
            "leader": self.lease.held,
            "cycles": self.cycles,
            "last_cycle_at": None
            if self.last_cycle_at is None
            else datetime.fromtimestamp(self.last_cycle_at, UTC).isoformat().replace("+00:00", "Z"),
            "seconds_since_progress": round(idle, 1),
            "lag_seconds": round(self.lag_seconds(), 1),
            "failing_stages": failing,
        }
        if self.stop.is_set():
            return 503, {**doc, "status": "stopping"}
        if idle > stall:
            return 503, {**doc, "status": "stalled"}
        if not self.lease.held:
            return 200, {**doc, "status": "standby"}
        return 200, {**doc, "status": "degraded" if failing else "ok"}

    # -- the loop ------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stop.is_set():
            raise KeyboardInterrupt  # a second signal: stop now
        log.info("%s: finishing the current stage, then exiting", signal.Signals(signum).name)
        self.stop.set()

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for s, h in old.items():
                signal.signal(s, h)

        return restore

    def _conn(self) -> Store:
        if self.store is None:
            self.store = open_store(self.db_url)
        return self.store

    def _drop_conn(self) -> None:
        if self.store is not None:
            try:
                self.store.rollback()
            except Exception:
                with contextlib.suppress(Exception):  # the connection is gone either way
                    self.store.close()
                self.store = None

    def run(self, *, once: bool = False) -> int:
        """Run until stopped (or one cycle with ``once``); the exit code."""
        restore = self._install_signals()
        try:
            store = self._conn()
            self.processed_seq = self.seen_seq = store.stages.get("analyze")
            store.commit()
            while not self.stop.is_set():
                if not self.lease.held and not self._acquire(once):
                    if once:
                        return EXIT_ERROR if self.failed else EXIT_OK
                    self.stop.wait(min(self.settings.lease_seconds / 3, 5.0))
                    continue
                self._cycle(once)
                if once:
                    break
                self._wait_next()
        finally:
            self.lease.release()
            self.metrics.leader.set(0)
            if self.store is not None:
                self.store.close()
                self.store = None
            restore()
        log.info("watch stopped after %d cycle(s)", self.cycles)
        return EXIT_ERROR if once and self.failed else EXIT_OK

    def _acquire(self, once: bool) -> bool:
        try:
            got = self.lease.try_acquire()
        except Exception as exc:
            self.metrics.errors.labels("poll").inc()
            self.failed.add("poll")
            log.error("cannot take the lease (%s: %s)", type(exc).__name__, _safe(exc))
            return False
        self.metrics.leader.set(1 if got else 0)
        self.last_progress = time.time()
        if not got:
            try:
                who = self.lease.holder_info()
            except Exception:
                who = "unknown"
            if once:
                log.warning("another watcher is active (%s): nothing to do", who)
            elif not getattr(self, "_standby_logged", False):
                log.info("standby: another watcher is active (%s)", who)
                self._standby_logged = True
        else:
            self._standby_logged = False
        return got

    def _wait_next(self) -> None:
        s = self.settings
        while not self.stop.is_set() and self.lease.held:
            now = time.monotonic()
            due = self._last_end + s.interval
            if self.seen_seq > self.processed_seq:
                due = min(due, self._last_end + s.min_interval)
            if now >= due:
                return
            if self.stop.wait(min(s.poll, due - now)):
                return
            self._stage("poll", self._poll, backoff=False)
        if not self.lease.held:
            self.metrics.leader.set(0)

    def _poll(self) -> None:
        store = self._conn()
        try:
            hw = store.events.max_seq()
            if hw > self.seen_seq:
                self.metrics.events_in.inc(store.events.count_after(self.seen_seq))
                if len(self._arrivals) < MAX_ARRIVALS:
                    self._arrivals.append((hw, time.time()))
                else:  # analysis is far behind: the newest entry covers the newer events too (its time is older)
                    self._arrivals[-1] = (hw, self._arrivals[-1][1])
                self.seen_seq = hw
            pending = store.events.count_after(self.processed_seq) if hw > self.processed_seq else 0
        finally:
            store.commit()  # end the read transaction: the next poll sees new rows
        self.metrics.events_pending.set(pending)
        self.last_progress = time.time()

    def _cycle(self, once: bool) -> None:
        self.failed.clear()
        self._stage("poll", self._poll, backoff=False)
        target = self.seen_seq
        log.info("cycle %d: %d event(s) to analyse", self.cycles + 1, max(0, target - self.processed_seq))
        if self._stage("score", self._score, once=once) and self._stage("analyze", self._analyze, once=once):
            self.processed_seq = max(self.processed_seq, target)
            while self._arrivals and self._arrivals[0][0] <= self.processed_seq:
                self._arrivals.popleft()
            self.metrics.events_pending.set(max(0, self.seen_seq - self.processed_seq))
        if self.policy_paths:
            self._stage("enforce", self._enforce, once=once)
        if self.channels:
            self._stage("notify", self._notify, once=once)
        if self.settings.intel and (once or time.monotonic() >= self._intel_due):
            self._stage("intel", self._intel, once=once)
            self._intel_due = time.monotonic() + self.settings.intel_interval
        self.cycles += 1
        self.last_cycle_at = time.time()
        self._last_end = time.monotonic()
        self.metrics.cycles.inc()
        self.metrics.last_cycle.set(self.last_cycle_at)

    def _stage(self, name: str, fn: Callable[[], None], *, once: bool = False, backoff: bool = True) -> bool:
        if self.stop.is_set() and name != "poll":
            return False  # a stop was asked for: the stage that ran has finished, start no other
        if not self.lease.held:
            return False
        state = self._stages.setdefault(name, _StageState())
        if not once and time.monotonic() < state.retry_at:
            log.debug("stage %s: backing off", name)
            return False
        self.last_progress = time.time()
        t0 = time.perf_counter()
        try:
            fn()
        except Exception as exc:
            self._drop_conn()
            self.metrics.errors.labels(name).inc()
            self.failed.add(name)
            state.failures += 1
            delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (state.failures - 1)) if backoff else 0.0
            state.retry_at = time.monotonic() + delay
            log.error(
                "stage %s failed (%s: %s); %s",
                name,
                type(exc).__name__,
                _safe(exc),
                f"retrying in {delay:.0f} s" if delay else "retrying at the next poll",
            )
            return False
        else:
            if state.failures:
                log.info("stage %s recovered after %d failure(s)", name, state.failures)
            state.failures, state.retry_at = 0, 0.0
            return True
        finally:
            self.metrics.stage_seconds.labels(name).observe(time.perf_counter() - t0)
            self.last_progress = time.time()

    # -- the stages ----------------------------------------------------------------------------------
    def _score(self) -> None:
        from stormwatch.score.scoring import score_new_events

        s = score_new_events(self._conn(), progress=self.progress, workers=self.settings.workers)
        if s.scored:
            log.info("score: %d event(s) scored in %.1f s", s.scored, s.seconds)

    def _analyze(self) -> None:
        from stormwatch.analyze.pipeline import analyze
        from stormwatch.score.scoring import active_model_version

        store = self._conn()
        s = analyze(
            store, score=False, version=active_model_version(store), progress=self.progress,
            settings=self.analyze_settings,
        )  # fmt: skip
        log.info(
            "analyze: %d event(s) scanned, %d account(s) recomputed; enforce %d, review %d (%.1f s)",
            s.events_scanned, s.accounts_recomputed, s.enforce, s.review, s.seconds.get("total", 0.0),
        )  # fmt: skip

    def _enforce(self) -> None:
        from stormwatch.disrupt.enforce import enforce
        from stormwatch.disrupt.policy import load_policy_set

        pset = load_policy_set(self.policy_paths)
        rep = enforce(self._conn(), pset, self.sink, mode=self.settings.mode, retry=self.retry)
        for d in rep.run.decisions:
            self.metrics.policy_decisions.labels(d.mode).inc()
        if rep.run.decisions_new:
            log.info(
                "enforce (%s): %d new decision(s), %d action(s) queued, %d case(s) opened",
                rep.run.mode, rep.run.decisions_new, rep.run.actions_queued, rep.run.cases_opened,
            )  # fmt: skip
        if rep.delivery is not None:
            self.metrics.actions_delivered.inc(rep.delivery.delivered)
            if rep.delivery.delivered:
                log.info("enforce: %d action(s) delivered through %s", rep.delivery.delivered, rep.delivery.sink)
            if rep.delivery.dead_lettered or rep.delivery.retried:
                raise StageFailed(
                    f"delivery through {rep.delivery.sink}: {rep.delivery.retried} to retry, "
                    f"{rep.delivery.dead_lettered} dead-lettered; last: {'; '.join(rep.delivery.errors[-2:])}"
                )

    def _notify(self) -> None:
        store = self._conn()
        problems = []
        for ch in self.channels:
            try:
                r = notify_channel(store, ch)
            except StormwatchError as exc:
                problems.append(f"{ch.name}: {exc}")
                continue
            if r.sent:
                self.metrics.notifications.labels(ch.name, "sent").inc(r.sent)
                if ch.name != "log":
                    log.info("notify %s: %d sent", ch.name, r.sent)
            if r.failed:
                self.metrics.notifications.labels(ch.name, "failed").inc(r.failed)
                problems.append(f"{ch.name}: {r.failed} failed ({'; '.join(r.errors[-2:])})")
        if problems:
            raise StageFailed("; ".join(problems))

    def _intel(self) -> None:
        from stormwatch.intel.pull import PullLimits, pull

        store = self._conn()
        problems = []
        for src in self.settings.intel:
            try:
                password, token = src.credentials()
                s = pull(
                    store, src.taxii, src.collection, user=src.user, password=password, token=token,
                    page_size=src.page_size, timeout=30.0,
                    limits=PullLimits(max_seconds=src.max_seconds, allow_redirect_hosts=src.allow_redirect_hosts),
                )  # fmt: skip
            except Exception as exc:
                self._drop_conn()
                store = self._conn()
                problems.append(f"{src.taxii} {src.collection}: {type(exc).__name__}: {_safe(exc)}")
                continue
            log.info("intel: %s %s: %d new object(s), %d imported", src.taxii, src.collection, s.new, s.imported)
            if s.import_error:
                problems.append(f"{src.taxii} {src.collection}: import failed: {s.import_error}")
        if problems:
            raise StageFailed("; ".join(problems))
