"""The ``--engine`` options of ``stormwatch analyze`` (imports nothing heavy)."""

from __future__ import annotations

from typing import Any

import click

__all__ = ["engine_options"]


def _spark_conf(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    conf: dict[str, str] = {}
    for item in value:
        key, sep, val = item.partition("=")
        if not sep or not key.strip().startswith("spark.") or not val.strip():
            raise click.BadParameter(f"{item!r}: expected spark.KEY=VALUE, e.g. spark.driver.memory=8g", ctx, param)
        conf[key.strip()] = val.strip()
    return conf


def engine_options(fn: Any) -> Any:
    fn = click.option(
        "--spark-conf",
        "spark_conf",
        metavar="KEY=VALUE",
        multiple=True,
        callback=_spark_conf,
        help="spark: a Spark setting for the session this command starts (repeatable), e.g."
        " spark.driver.memory=8g; in local mode the driver JVM holds the executors too, so its"
        " memory is the one that matters (1g by default).",
    )(fn)
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
