"""``stormwatch ingest`` and ``stormwatch quarantine``: load usage logs, inspect what could not be loaded."""

from __future__ import annotations

from pathlib import Path

import click

from stormwatch.clitools import echo_json, json_items, json_option, open_ctx_store
from stormwatch.errors import EXIT_QUARANTINED


@click.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--accounts",
    "accounts",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Account records (JSONL, canonical account schema). Repeatable.",
)
@click.option(
    "--format",
    "format_name",
    metavar="NAME",
    help="Format of FILES; sniffed per file when left out. One of: canonical, openai_batch, openai_http_log, litellm.",
)
@click.option(
    "--account",
    "default_account",
    metavar="ID",
    help="Account to attribute records to when the format names none (Batch files: the batch owner).",
)
@click.option(
    "--batch-ts",
    metavar="TIME",
    help="OpenAI Batch files: the batch's created_at (RFC 3339 or epoch seconds), the time of requests "
    "whose output has none (failed, expired or missing outputs).",
)
@click.option("--batch-size", default=20000, show_default=True, help="Records per database transaction.")
@click.option(
    "--max-record-bytes",
    default=16 * 1024 * 1024,
    show_default=True,
    help="Longer records are quarantined whole instead of parsed.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes parsing canonical JSONL (default: cores, at most 2; 1 = no extra process).",
)
@click.option(
    "--parquet",
    "parquet_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Write the events to this Parquet dataset (partitioned by day, zstd) instead of the store's events"
    " table; quarantine and the run record still go to the store.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def ingest_command(
    ctx: click.Context,
    files: tuple[Path, ...],
    accounts: tuple[Path, ...],
    format_name: str | None,
    default_account: str | None,
    batch_ts: str | None,
    batch_size: int,
    max_record_bytes: int,
    workers: int | None,
    parquet_dir: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Load usage logs into the store, in any supported format.

    Idempotent on event_id: loading the same file twice stores nothing new. Records that cannot
    be loaded go to the quarantine (see `stormwatch quarantine list`) and the command exits 10.
    """
    from stormwatch.ingest.formats.base import FormatOptions
    from stormwatch.ingest.runner import batch_time, ingest

    extra = {} if batch_ts is None else {"batch_ts": batch_time(batch_ts)}
    if parquet_dir is not None:
        from stormwatch.ingest.parquet import ingest_parquet_command

        ingest_parquet_command(ctx, files, accounts, parquet_dir, format_name, default_account, extra, as_json)
        return
    with open_ctx_store(ctx) as store:
        summary = ingest(
            store,
            list(files),
            format_name=format_name,
            accounts_paths=list(accounts),
            options=FormatOptions(default_account=default_account, max_record_bytes=max_record_bytes, extra=extra),
            batch_size=batch_size,
            progress=not (quiet or as_json),
            workers=workers,
        )
    if as_json:
        echo_json(summary.to_dict())
    else:
        rate = summary.read / summary.seconds if summary.seconds else 0.0
        click.echo(
            f"ingest {summary.run_id}: read {summary.read:,}  stored {summary.stored:,}  "
            f"duplicates {summary.duplicates:,}  quarantined {summary.quarantined:,}  "
            f"({summary.seconds:.1f} s, {rate:,.0f} records/s)"
        )
        if accounts:
            click.echo(
                f"accounts: read {summary.accounts_read:,}  stored {summary.accounts_stored:,}  "
                f"quarantined {summary.accounts_quarantined:,}"
            )
        if summary.any_quarantined:
            click.echo("some records were quarantined: see `stormwatch quarantine list`", err=True)
    if summary.any_quarantined:
        ctx.exit(EXIT_QUARANTINED)


@click.group("quarantine")
def quarantine_group() -> None:
    """Inspect records that could not be loaded."""


@quarantine_group.command("list")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this ingest run.")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@json_option('One JSON document: {"items": [...] (raw record included), "total", "limit", "offset"}.')
@click.pass_context
def quarantine_list(ctx: click.Context, run_id: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List quarantined records: where they came from (file:line), the field and the reason."""
    with open_ctx_store(ctx) as store:
        rows = store.list_quarantine(run_id=run_id, limit=limit, offset=offset)
        total = store.count_quarantine(run_id)
    if as_json:
        items = [
            {
                "id": r.id,
                "run_id": r.run_id,
                "kind": r.kind,
                "source": r.source,
                "line": r.line,
                "field": r.field,
                "reason": r.reason,
                "raw": r.raw.decode("utf-8", "replace"),
                "created_at": r.created_at,
            }
            for r in rows
        ]
        json_items(items, total=total, limit=limit, offset=offset)
        return
    if not rows:
        click.echo("quarantine is empty" if total == 0 else f"no rows at offset {offset} (total {total})")
        return
    for r in rows:
        where = f"{r.source}:{r.line}" if r.line is not None else r.source
        field = f" [{r.field}]" if r.field else ""
        preview = r.raw[:80].decode("utf-8", "replace").replace("\n", " ")
        click.echo(f"#{r.id} {where}{field} {r.reason}\n    {preview}{'...' if len(r.raw) > 80 else ''}")
    click.echo(f"-- {len(rows)} of {total} shown")
