"""The Parquet event layout on both sides of the store: ``stormwatch export --parquet DIR`` writes the
stored events out (partitioned by day, zstd), ``stormwatch ingest --parquet DIR`` writes parsed logs
straight to it (no database rows for events; quarantine and the run record still go to the store).

The schema is :func:`stormwatch.columnar.event_schema`, the one definition.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import click

from stormwatch.columnar import write_events
from stormwatch.errors import InputError
from stormwatch.events import Event
from stormwatch.ingest.formats.base import FormatOptions, discard_stream_heads
from stormwatch.store.base import RunRow, Store
from stormwatch.store.records import now_iso

__all__ = ["ParquetSummary", "export_command", "export_parquet", "ingest_parquet"]

EXPORT_BATCH = 50_000


@dataclass(slots=True)
class ParquetSummary:
    out: str
    events: int = 0
    days: dict[str, int] = field(default_factory=dict)
    quarantined: int = 0
    bytes: int = 0
    seconds: float = 0.0
    run_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet"))


def export_parquet(store: Store, out: Path, *, after_seq: int = 0, batch: int = EXPORT_BATCH) -> ParquetSummary:
    """Write every stored event (after ``after_seq``) to the dataset ``out``, with its ``seq``."""
    started = time.perf_counter()
    summary = ParquetSummary(out=str(out))

    def batches() -> Iterator[tuple[list[Event], list[int | None]]]:
        events: list[Event] = []
        seqs: list[int | None] = []
        for seq, event in store.iter_events(after_seq=after_seq, batch_size=min(batch, 20_000)):
            events.append(event)
            seqs.append(seq)
            if len(events) >= batch:
                yield events, seqs
                events, seqs = [], []
        if events:
            yield events, seqs

    summary.days = write_events(out, batches(), name="export-" + uuid.uuid4().hex[:12])
    summary.events = sum(summary.days.values())
    summary.bytes = _size(out)
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def ingest_parquet(
    store: Store,
    paths: Sequence[Path],
    out: Path,
    *,
    format_name: str | None = None,
    options: FormatOptions | None = None,
    batch_size: int = 20_000,
) -> ParquetSummary:
    """Parse ``paths`` (any ingest format) and append the valid events to the dataset ``out``.

    Rejected records are quarantined in ``store`` under a run id, as a database ingest does. Events
    are not de-duplicated against earlier Parquet runs: readers drop repeated ``event_id`` (the
    spark engine does), as the store's ``ON CONFLICT DO NOTHING`` would.
    """
    from stormwatch.ingest.runner import _batches, _parse_safely, absolute_path, plan_formats

    options = options or FormatOptions()
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file")
    paths = [absolute_path(p) for p in paths]
    started = time.perf_counter()
    run_id = "run_" + uuid.uuid4().hex[:16]
    summary = ParquetSummary(out=str(out), run_id=run_id)
    store.start_run(run_id, [str(p) for p in paths])
    status = "failed"
    try:
        plan = plan_formats(paths, format_name)

        def batches() -> Iterator[tuple[list[Event], None]]:
            for fmt, fpaths in plan:
                for good, bad in _batches(_parse_safely(fmt, fpaths, options), batch_size):
                    if bad:
                        store.add_quarantine(bad, run_id)
                        store.commit()
                        summary.quarantined += len(bad)
                    yield good, None

        summary.days = write_events(out, batches(), name=run_id)
        status = "done"
    finally:
        discard_stream_heads()
        summary.events = sum(summary.days.values())
        summary.seconds = round(time.perf_counter() - started, 3)
        store.finish_run(
            RunRow(
                run_id=run_id,
                started_at="",
                finished_at=now_iso(),
                status=status,
                files=[str(p) for p in paths],
                read=summary.events + summary.quarantined,
                stored=summary.events,
                duplicates=0,
                quarantined=summary.quarantined,
                accounts=0,
            )
        )
    summary.bytes = _size(out)
    return summary


@click.command("export")
@click.option(
    "--parquet",
    "parquet_dir",
    required=True,
    type=click.Path(path_type=Path, file_okay=False),
    help="Dataset directory to write: DIR/day=YYYY-MM-DD/*.parquet (zstd). New files are added beside existing ones.",
)
@click.option("--after-seq", default=0, show_default=True, help="Only events stored after this sequence number.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def export_command(ctx: click.Context, parquet_dir: Path, after_seq: int, as_json: bool) -> None:
    """Export the stored usage events as Parquet, partitioned by day (the spark engine's input)."""
    from stormwatch.clitools import echo_json, open_ctx_store

    with open_ctx_store(ctx) as store:
        s = export_parquet(store, parquet_dir, after_seq=after_seq)
    if as_json:
        echo_json(s.to_dict())
        return
    click.echo(f"export: {s.events:,} events in {len(s.days)} day(s) to {s.out} ({s.bytes:,} bytes, {s.seconds:.1f} s)")


def ingest_parquet_command(
    ctx: click.Context,
    files: Sequence[Path],
    accounts: Sequence[Path],
    out: Path,
    format_name: str | None,
    default_account: str | None,
    extra: dict[str, Any],
    as_json: bool,
) -> None:
    """``stormwatch ingest --parquet DIR``: account records still go to the store (linking reads them)."""
    from stormwatch.clitools import echo_json, open_ctx_store
    from stormwatch.errors import EXIT_QUARANTINED
    from stormwatch.ingest.runner import ingest

    options = FormatOptions(default_account=default_account, extra=extra)
    with open_ctx_store(ctx) as store:
        if accounts:
            ingest(store, [], accounts_paths=list(accounts), options=options, progress=False)
        s = ingest_parquet(store, list(files), out, format_name=format_name, options=options)
    if as_json:
        echo_json(s.to_dict())
    else:
        click.echo(
            f"ingest {s.run_id}: {s.events:,} events to {s.out} in {len(s.days)} day(s), quarantined"
            f" {s.quarantined:,} ({s.bytes:,} bytes, {s.seconds:.1f} s)"
        )
    if s.quarantined:
        ctx.exit(EXIT_QUARANTINED)
