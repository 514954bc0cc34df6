"""The ``--engine`` options of ``stormwatch analyze`` (imports nothing heavy)."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["engine_options"]


def engine_options(fn: Any) -> Any:
    fn = click.option(
        "--partitions",
        type=click.IntRange(min=1),
        default=None,
        help="spark: shuffle partitions (default: 4 in local mode, spark.sql.shuffle.partitions on a cluster).",
    )(fn)
    fn = click.option(
        "--events",
        metavar="DIR|URI",
        default=None,
        help="spark: the Parquet event dataset to read (stormwatch export --parquet / ingest --parquet);"
        " default: the store's events, exported to a temporary dataset first.",
    )(fn)
    fn = click.option(
        "--master",
        metavar="URL",
        default=None,
        help="spark: the Spark master, e.g. local[2]; default: what spark-submit set, else local[2].",
    )(fn)
    fn = click.option(
        "--engine",
        type=click.Choice(["local", "spark"]),
        default="local",
        show_default=True,
        help="Where the event-sized work runs: this process (local) or Apache Spark (spark, stormwatch[spark]).",
    )(fn)
    return fn
