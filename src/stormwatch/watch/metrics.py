"""The watcher's Prometheus metrics (``prometheus-client``, extra ``watch``; imported only here).

Every metric is named ``stormwatch_...`` and lives in the watcher's own registry, so a test can run
two watchers in one process and the exposition holds nothing but these:

==========================================  =========  ===================================================
metric                                      type       meaning
==========================================  =========  ===================================================
``stormwatch_events_in_total``              counter    events stored since the watcher started (seen by polling)
``stormwatch_events_pending``               gauge      events stored but not yet analysed
``stormwatch_lag_seconds``                  gauge      how long the oldest unanalysed events have waited (0: caught up)
``stormwatch_decisions_total{level}``       counter    new account decisions (``enforce``, ``review``)
``stormwatch_policy_decisions_total{mode}`` counter    new policy decisions recorded by the enforce stage
``stormwatch_actions_delivered_total``      counter    actions the enforce stage delivered through the sink
``stormwatch_notifications_total{channel,result}``  counter  notifications sent / failed per channel
``stormwatch_errors_total{stage}``          counter    failed stages (``poll``, ``score``, ``analyze``, ...)
``stormwatch_stage_seconds{stage}``         histogram  how long each stage ran
``stormwatch_cycles_total``                 counter    cycles run
``stormwatch_leader``                       gauge      1 while this watcher holds the lease, else 0 (standby)
``stormwatch_last_cycle_timestamp_seconds`` gauge      Unix time the last cycle finished
==========================================  =========  ===================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["CONTENT_TYPE", "STAGES", "WatchMetrics"]

STAGES = ("poll", "score", "analyze", "enforce", "notify", "intel")
LEVELS = ("enforce", "review")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0)


class WatchMetrics:
    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        except ImportError as exc:  # pragma: no cover - the watch extra is not installed
            from stormwatch.errors import ConfigError

            raise ConfigError(
                "stormwatch watch needs prometheus-client", hint="pip install 'stormwatch[watch]'"
            ) from exc
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.events_in = Counter("stormwatch_events_in", "Events stored since the watcher started.", registry=r)
        self.events_pending = Gauge("stormwatch_events_pending", "Events stored but not yet analysed.", registry=r)
        self.lag = Gauge("stormwatch_lag_seconds", "How long the oldest unanalysed events have waited.", registry=r)
        self.decisions = Counter("stormwatch_decisions", "New account decisions by level.", ["level"], registry=r)
        self.policy_decisions = Counter(
            "stormwatch_policy_decisions", "New policy decisions recorded, by mode.", ["mode"], registry=r
        )
        self.actions_delivered = Counter(
            "stormwatch_actions_delivered", "Actions delivered through the sink.", registry=r
        )
        self.notifications = Counter(
            "stormwatch_notifications", "Notifications by channel and result.", ["channel", "result"], registry=r
        )
        self.errors = Counter("stormwatch_errors", "Failed stages.", ["stage"], registry=r)
        self.stage_seconds = Histogram(
            "stormwatch_stage_seconds", "Seconds each stage ran.", ["stage"], buckets=_BUCKETS, registry=r
        )
        self.cycles = Counter("stormwatch_cycles", "Cycles run.", registry=r)
        self.leader = Gauge("stormwatch_leader", "1 while this watcher holds the lease.", registry=r)
        self.last_cycle = Gauge(
            "stormwatch_last_cycle_timestamp_seconds", "Unix time the last cycle finished.", registry=r
        )
        for level in LEVELS:  # every series exists from the start, at 0
            self.decisions.labels(level)
        for stage in STAGES:
            self.errors.labels(stage)
            self.stage_seconds.labels(stage)

    def lag_from(self, fn: Callable[[], float]) -> None:
        """Compute the lag when scraped (it grows between cycles)."""
        self.lag.set_function(fn)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        out: Any = generate_latest(self.registry)
        return bytes(out)
