"""Analysis engines: where the event-sized work runs. ``local`` (the default: this process, the
store's own tables) and ``spark`` (Apache Spark, ``stormwatch[spark]``; ``docs/scale.md``). Both end
in the same attribution and judgement code and write the same result to the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stormwatch.analyze.settings import AnalyzeSettings
from stormwatch.errors import InputError
from stormwatch.store import Store

__all__ = ["ENGINES", "run_engine"]

ENGINES = ("local", "spark")


def run_engine(
    engine: str,
    store: Store,
    *,
    settings: AnalyzeSettings | None = None,
    progress: bool = True,
    full: bool = False,
    score: bool = True,
    master: str | None = None,
    events: str | Path | None = None,
    partitions: int | None = None,
    conf: dict[str, str] | None = None,
) -> Any:
    """Run ``stormwatch analyze`` with ``engine``; returns its ``AnalyzeSummary``.

    ``conf``: Spark settings for the session the spark engine starts (``--spark-conf``)."""
    if engine == "local":
        from stormwatch.analyze.engines.local import analyze_local

        return analyze_local(store, full=full, progress=progress, score=score, settings=settings)
    if engine == "spark":
        from stormwatch.analyze.engines.spark import analyze_spark

        return analyze_spark(
            store, master=master, events=events, partitions=partitions, settings=settings, progress=progress, conf=conf
        )
    raise InputError(f"unknown engine {engine!r}", hint=f"one of: {', '.join(ENGINES)}")
