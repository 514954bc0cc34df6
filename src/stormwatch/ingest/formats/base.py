"""What every ingest format implements, and the line-reading helpers they share.

A format is a small object with a ``name``, a ``sniff`` that looks at the first bytes of a file,
and a ``parse`` that turns files into :class:`~stormwatch.events.Event` objects or
:class:`Rejected` records. Parsers never raise on a bad record: they yield ``Rejected`` with the
file, line, field and reason, and the runner quarantines it. Formats are registered through the
``stormwatch.parsers`` entry-point group; the built-ins are loaded the same way (see
:mod:`stormwatch.ingest.formats`).
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import orjson

from stormwatch.errors import InputError, RecordError
from stormwatch.events import Event

#: a record longer than this is quarantined whole rather than parsed (it is still kept).
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
SNIFF_BYTES = 64 * 1024


@dataclass(slots=True)
class Rejected:
    """A record that could not become an event: kept whole, with where and why."""

    source: str
    line: int | None
    reason: str
    field: str | None = None
    raw: bytes = b""

    def location(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


@dataclass(slots=True)
class FormatOptions:
    """Per-run options a format may use."""

    #: account to attribute records to when the format has none of its own (e.g. a Batch file's owner).
    default_account: str | None = None
    default_org: str | None = None
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    #: called with the number of bytes consumed, for progress bars.
    on_progress: Callable[[int], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


Parsed = Event | Rejected


@runtime_checkable
class Format(Protocol):
    """One ingest format. ``sniff`` returns a confidence in [0, 1] (0: not this format)."""

    name: str
    description: str

    def sniff(self, head: bytes, path: Path) -> float: ...

    def parse(self, paths: Sequence[Path], options: FormatOptions) -> Iterator[Parsed]: ...


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, transparently un-gzipping ``.gz`` or gzip-magic files."""
    try:
        fh: IO[bytes] = open(path, "rb")  # noqa: SIM115 - returned to the caller
    except OSError as exc:
        raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    magic = fh.peek(2)[:2] if isinstance(fh, io.BufferedReader) else b""
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


BOM = b"\xef\xbb\xbf"


def read_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first bytes of a file (decompressed), without a UTF-8 byte-order mark."""
    with open_binary(path) as fh:
        try:
            return fh.read(size).removeprefix(BOM)
        except (OSError, EOFError) as exc:
            raise InputError(f"{path}: cannot read: {exc}") from exc


def raw_position(fh: IO[bytes]) -> int:
    """Bytes consumed from the file on disk (compressed bytes for gzip), for progress."""
    inner = getattr(fh, "fileobj", None)
    target = inner if inner is not None else fh
    try:
        return int(target.tell())
    except (OSError, ValueError):
        return 0


def iter_lines(path: Path, options: FormatOptions) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_line)`` for every non-blank line, 1-based, newline stripped.

    Reports progress in bytes of the file on disk (compressed bytes for ``.gz``). A truncated
    gzip stream ends the iteration with an :class:`InputError` carrying the last good line.
    """
    report = options.on_progress
    with open_binary(path) as fh:
        last_pos = 0
        lineno = 0
        while True:
            try:
                raw = fh.readline()
            except (EOFError, OSError, gzip.BadGzipFile) as exc:
                raise InputError(f"{path}:{lineno + 1}: compressed stream is damaged or truncated: {exc}") from exc
            if not raw:
                break
            lineno += 1
            if lineno == 1:
                raw = raw.removeprefix(BOM)
            if report is not None and lineno % 2048 == 0:
                pos = raw_position(fh)
                report(pos - last_pos)
                last_pos = pos
            stripped = raw.rstrip(b"\r\n")
            if not stripped.strip():
                continue
            yield lineno, stripped
        if report is not None:
            pos = raw_position(fh)
            report(max(pos - last_pos, 0))


def load_json_line(raw: bytes, source: str, line: int | None, options: FormatOptions) -> Any | Rejected:
    """Parse one JSON record, or return the :class:`Rejected` that says why it is not one."""
    if len(raw) > options.max_record_bytes:
        return Rejected(
            source,
            line,
            f"record is {len(raw)} bytes, over the limit of "
            f"{options.max_record_bytes} (raise --max-record-bytes to accept it)",
            None,
            raw,
        )
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            return Rejected(source, line, f"invalid UTF-8 at byte {uexc.start}", None, raw)
        return Rejected(source, line, f"not valid JSON: {exc}", None, raw)


def rejected_from(exc: RecordError, source: str, line: int | None, raw: bytes) -> Rejected:
    return Rejected(source, line, exc.reason, exc.field, raw)


def dumps_raw(obj: Any) -> bytes:
    """Serialise a parsed object back to bytes for quarantine when its raw line is not at hand."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return repr(obj).encode("utf-8", "replace")
