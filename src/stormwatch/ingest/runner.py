"""Streaming ingest: files -> formats -> validated events -> the store, in batches.

Nothing is lost: every record read is either stored, recognised as a duplicate of a stored
``event_id``, or quarantined with its file, line, field and reason. A damaged file (say, a gzip
stream cut short) is quarantined at the line where it broke and the run goes on with the next one.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from stormwatch.errors import InputError, RecordError
from stormwatch.events import Account, Event, normalize_ts, validate_account
from stormwatch.ingest.formats import Format, get_format, sniff_format
from stormwatch.ingest.formats.base import (
    FormatOptions,
    Parsed,
    Rejected,
    StreamError,
    discard_stream_heads,
    iter_lines,
    load_json_line,
)
from stormwatch.procs import pool_options
from stormwatch.store.base import RunRow, Store
from stormwatch.store.records import now_iso
from stormwatch.store.sql import event_row

DEFAULT_BATCH = 20000


@dataclass(slots=True)
class IngestSummary:
    run_id: str
    files: list[str]
    formats: dict[str, str]
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    accounts_read: int = 0
    accounts_stored: int = 0
    accounts_quarantined: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def any_quarantined(self) -> bool:
        return bool(self.quarantined or self.accounts_quarantined)


def batch_time(value: str) -> str:
    """``--batch-ts`` (RFC 3339, or epoch seconds) as a canonical UTC time; a bad value is an :class:`InputError`."""
    text = value.strip()
    try:
        number: float | None = float(text)
    except ValueError:
        number = None
    try:
        return normalize_ts(number if number is not None else text, field="--batch-ts")
    except RecordError as exc:
        raise InputError(
            f"--batch-ts: {exc.reason}", hint="give the batch's created_at, e.g. 2026-11-25T18:06:40Z or 1795630000"
        ) from None


def absolute_path(path: Path) -> Path:
    """``path`` made absolute with symlinks resolved, so a file is recorded under one name whatever
    the working folder; a pipe (``/dev/stdin``, whose target is no path) is only made absolute."""
    resolved = path.resolve()
    return resolved if resolved.exists() else Path(os.path.abspath(path))


def plan_formats(paths: Sequence[Path], format_name: str | None) -> list[tuple[Format, list[Path]]]:
    """Group the files by format (named, or sniffed per file), keeping their order."""
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file")
        if p.is_dir():
            raise InputError(f"{p}: is a folder", hint="pass the files inside it (e.g. DIR/*.jsonl)")
    groups: dict[str, tuple[Format, list[Path]]] = {}
    for p in paths:
        fmt = get_format(format_name) if format_name else sniff_format(p)
        groups.setdefault(fmt.name, (fmt, []))[1].append(p)
    return list(groups.values())


def _file_rejected(exc: InputError, paths: Sequence[Path]) -> Rejected:
    """A file-level failure as one quarantine record: at ``file:line`` when the line is known."""
    if isinstance(exc, StreamError):
        return Rejected(exc.path, exc.line, exc.reason, None, b"")
    where = str(paths[0]) if len(paths) == 1 else ", ".join(map(str, paths))
    return Rejected(where, None, str(exc), None, b"")


def _parse_safely(fmt: Format, paths: list[Path], options: FormatOptions) -> Iterator[Parsed]:
    """Run a format's parser; a file-level failure becomes one quarantined record, not a crash."""
    units = [paths] if getattr(fmt, "joins_files", False) else [[p] for p in paths]
    for unit in units:
        try:
            yield from fmt.parse(unit, options)
        except InputError as exc:
            yield _file_rejected(exc, unit)


def _parse_chunk(
    source: str, lines: list[tuple[int, bytes]], run_id: str, max_record_bytes: int
) -> tuple[list[tuple[Any, ...]], list[Rejected]]:
    """Worker side of the parallel path: lines -> storage rows and rejections (all picklable)."""
    from stormwatch.ingest.formats.canonical import parse_line

    options = FormatOptions(max_record_bytes=max_record_bytes)
    rows: list[tuple[Any, ...]] = []
    bad: list[Rejected] = []
    for lineno, raw in lines:
        item = parse_line(source, lineno, raw, options)
        if isinstance(item, Event):
            rows.append(event_row(item, run_id))
        else:
            bad.append(item)
    return rows, bad


def _parallel_lines(
    paths: list[Path], options: FormatOptions, run_id: str, workers: int, chunk: int
) -> Iterator[tuple[list[tuple[Any, ...]], list[Rejected]]]:
    """Read lines here, parse them in ``workers`` processes, yield results in file order.

    At most ``2 * workers`` chunks are in flight, so memory stays flat. A damaged file is
    quarantined as one record after its good lines, as on the serial path.
    """
    pending: deque[Future[tuple[list[tuple[Any, ...]], list[Rejected]]]] = deque()
    with ProcessPoolExecutor(max_workers=workers, **pool_options(preload=(__name__,))) as pool:
        for path in paths:
            source = str(path)
            buf: list[tuple[int, bytes]] = []
            try:
                for item in iter_lines(path, options):
                    buf.append(item)
                    if len(buf) >= chunk:
                        pending.append(pool.submit(_parse_chunk, source, buf, run_id, options.max_record_bytes))
                        buf = []
                        while len(pending) > 2 * workers:
                            yield pending.popleft().result()
            except InputError as exc:
                if buf:
                    pending.append(pool.submit(_parse_chunk, source, buf, run_id, options.max_record_bytes))
                while pending:
                    yield pending.popleft().result()
                yield [], [_file_rejected(exc, [path])]
                continue
            if buf:
                pending.append(pool.submit(_parse_chunk, source, buf, run_id, options.max_record_bytes))
        while pending:
            yield pending.popleft().result()


def _batches(items: Iterable[Parsed], size: int) -> Iterator[tuple[list[Event], list[Rejected]]]:
    good: list[Event] = []
    bad: list[Rejected] = []
    for item in items:
        if isinstance(item, Event):
            good.append(item)
        else:
            bad.append(item)
        if len(good) >= size or len(bad) >= size:
            yield good, bad
            good, bad = [], []
    if good or bad:
        yield good, bad


class _Writer:
    """Writes batches on a second thread so parsing and the database overlap on two cores.

    The queue holds at most two batches, which keeps memory flat whatever the file size.
    An error in the writer is raised again in the caller at the next ``put`` or on exit.
    """

    def __init__(self, store: Store, run_id: str, summary: IngestSummary) -> None:
        self.store = store
        self.run_id = run_id
        self.summary = summary
        self.queue: queue.Queue[tuple[list[Event] | list[tuple[Any, ...]], list[Rejected]] | None] = queue.Queue(
            maxsize=2
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="stormwatch-ingest-writer", daemon=True)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is not None:
                continue  # drain without writing after a failure
            good, rejected = item
            try:
                if good and isinstance(good[0], Event):
                    stored = self.store.insert_events(good, self.run_id)
                else:
                    stored = self.store.insert_event_rows(good)  # type: ignore[arg-type]
                self.store.add_quarantine(rejected, self.run_id)
            except BaseException as exc:  # re-raised in the caller
                self.error = exc
                continue
            s = self.summary
            s.read += len(good) + len(rejected)
            s.stored += stored
            s.duplicates += len(good) - stored
            s.quarantined += len(rejected)

    def put(self, good: list[Event] | list[tuple[Any, ...]], rejected: list[Rejected]) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((good, rejected))

    def __exit__(self, *exc: object) -> None:
        self.queue.put(None)
        self.thread.join()
        if self.error is not None and exc[0] is None:
            raise self.error


def iter_accounts(path: Path, options: FormatOptions) -> Iterator[Account | Rejected]:
    source = str(path)
    try:
        for lineno, raw in iter_lines(path, options):
            obj = load_json_line(raw, source, lineno, options)
            if isinstance(obj, Rejected):
                yield obj
                continue
            try:
                yield validate_account(obj)
            except RecordError as exc:
                yield Rejected(source, lineno, exc.reason, exc.field, raw)
    except InputError as exc:  # damaged gzip, not line-delimited: quarantined like an event file's
        yield _file_rejected(exc, [path])


def ingest(
    store: Store,
    paths: Sequence[Path],
    *,
    format_name: str | None = None,
    accounts_paths: Sequence[Path] = (),
    options: FormatOptions | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = True,
    workers: int | None = None,
) -> IngestSummary:
    """Load usage logs (and account records) into ``store``; see the module docstring.

    ``workers`` > 1 parses line-oriented formats (canonical JSONL) in that many processes while
    this one reads and stores; the default is the number of cores, at most 2.
    """
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    options = options or FormatOptions()
    for p in accounts_paths:
        if not p.exists() or p.is_dir():
            raise InputError(f"{p}: no such file (given with --accounts)")
    for p in paths:
        if not p.exists():
            raise InputError(f"{p}: no such file")
    # one name per file (absolute, symlinks resolved) in the quarantine and the run record, whatever the cwd
    accounts_paths = [absolute_path(p) for p in accounts_paths]
    paths = [absolute_path(p) for p in paths]
    try:
        return _ingest(store, paths, format_name, accounts_paths, options, batch_size, progress, workers)
    finally:
        discard_stream_heads()  # inputs sniffed but never read (a run that failed early)


def _ingest(
    store: Store,
    paths: Sequence[Path],
    format_name: str | None,
    accounts_paths: Sequence[Path],
    options: FormatOptions,
    batch_size: int,
    progress: bool,
    workers: int,
) -> IngestSummary:
    plan = plan_formats(paths, format_name)
    run_id = "run_" + uuid.uuid4().hex[:16]
    all_files = [str(p) for p in (*accounts_paths, *paths)]
    summary = IngestSummary(run_id=run_id, files=all_files, formats={str(p): fmt.name for fmt, ps in plan for p in ps})
    started = time.perf_counter()
    store.start_run(run_id, all_files)
    total_bytes = sum(p.stat().st_size for p in (*accounts_paths, *paths))
    bar = tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        desc="ingest",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    options.on_progress = bar.update
    status = "failed"
    try:
        for path in accounts_paths:
            accounts: list[Account] = []
            bad: list[Rejected] = []
            for item in iter_accounts(path, options):
                summary.accounts_read += 1
                if isinstance(item, Rejected):
                    bad.append(item)
                else:
                    accounts.append(item)
                if len(accounts) >= batch_size:
                    summary.accounts_stored += store.upsert_accounts(accounts)
                    accounts = []
            summary.accounts_stored += store.upsert_accounts(accounts)
            store.add_quarantine(bad, run_id, kind="account")
            summary.accounts_quarantined += len(bad)
        with _Writer(store, run_id, summary) as writer:
            for fmt, fpaths in plan:
                batches: Iterable[tuple[Any, list[Rejected]]]
                if workers > 1 and getattr(fmt, "line_parallel", False):
                    batches = _parallel_lines(fpaths, options, run_id, workers, max(batch_size // 4, 500))
                else:
                    batches = _batches(_parse_safely(fmt, fpaths, options), batch_size)
                for good, rejected in batches:
                    writer.put(good, rejected)
                    bar.set_postfix(
                        stored=summary.stored, dup=summary.duplicates, quar=summary.quarantined, refresh=False
                    )
        status = "done"
    finally:
        bar.close()
        summary.seconds = round(time.perf_counter() - started, 3)
        store.finish_run(
            RunRow(
                run_id=run_id,
                started_at="",
                finished_at=now_iso(),
                status=status,
                files=all_files,
                read=summary.read,
                stored=summary.stored,
                duplicates=summary.duplicates,
                quarantined=summary.quarantined,
                accounts=summary.accounts_stored,
            )
        )
    return summary
