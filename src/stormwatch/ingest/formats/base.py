"""What every ingest format implements, and the line-reading helpers they share.

A format is a small object with a ``name``, a ``sniff`` that looks at the first bytes of a file,
and a ``parse`` that turns files into :class:`~stormwatch.events.Event` objects or
:class:`Rejected` records. Parsers never raise on a bad record: they yield ``Rejected`` with the
file, line, field and reason, and the runner quarantines it. Formats are plugins (hook
``stormwatch_formats`` of :mod:`stormwatch.plugins`; the older ``stormwatch.parsers`` entry-point
group still works); the built-ins are loaded the same way (see :mod:`stormwatch.ingest.formats`).
"""

from __future__ import annotations

import gzip
import io
import os
import stat
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import orjson

from stormwatch.errors import InputError, RecordError
from stormwatch.events import Event
from stormwatch.events import Rejected as Rejected  # moved down to events (the store uses it); re-exported

#: a record longer than this is quarantined rather than parsed (its first this-many bytes are kept).
DEFAULT_MAX_RECORD_BYTES = 16 * 1024 * 1024
SNIFF_BYTES = 64 * 1024
#: a line that runs on for more than max(this, 16 x max_record_bytes) bytes stops its file: not line-delimited.
MIN_LINE_SKIP_BYTES = 256 * 1024 * 1024
#: at most this many compressed bytes are read to sniff a gzip file's first SNIFF_BYTES.
_HEAD_RAW_MAX = 1024 * 1024
#: how much of an over-long line is read at a time while skipping to its end.
_SKIP_CHUNK = 1024 * 1024


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


class OverlongLine(bytes):
    """The first ``max_record_bytes`` bytes of a line that was longer; ``size`` is the line's full length.

    :func:`iter_lines` yields one of these instead of holding an over-long line in memory;
    :func:`load_json_line` turns it into a :class:`Rejected` that says how long the line was.
    """

    size: int

    def __new__(cls, prefix: bytes, size: int) -> OverlongLine:
        obj = super().__new__(cls, prefix)
        obj.size = size
        return obj

    def __getnewargs__(self) -> tuple[bytes, int]:  # type: ignore[override]  # pickled to worker processes
        return bytes(self), self.size


class StreamError(InputError):
    """A file that cannot be read on from ``line`` (a damaged gzip stream, a file that is not line-delimited).

    The records before ``line`` have been yielded; the runner quarantines this as one record at
    ``path:line`` and goes on with the next file.
    """

    def __init__(self, path: Path | str, line: int, reason: str) -> None:
        super().__init__(f"{path}:{line}: {reason}")
        self.path = str(path)
        self.line = line
        self.reason = reason


def max_line_skip(options: FormatOptions) -> int:
    """How far :func:`iter_lines` reads through one over-long line before it gives up on the file."""
    return max(MIN_LINE_SKIP_BYTES, 16 * options.max_record_bytes)


@runtime_checkable
class Format(Protocol):
    """One ingest format. ``sniff`` returns a confidence in [0, 1] (0: not this format).

    Optional class attributes the runner reads: ``joins_files = True`` (all of a run's files of this
    format go to one ``parse`` call, e.g. Batch input + output files joined on ``custom_id``; otherwise
    each file is parsed on its own) and ``line_parallel = True`` (lines are independent records, parsed
    in worker processes).
    """

    name: str
    description: str

    def sniff(self, head: bytes, path: Path) -> float: ...

    def parse(self, paths: Sequence[Path], options: FormatOptions) -> Iterator[Parsed]: ...


def is_stream(path: Path) -> bool:
    """Whether ``path`` is something other than a regular file (a FIFO, ``/dev/stdin``, a device):
    it can be read only once, from the start."""
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


class _Prefixed(io.RawIOBase):
    """A raw stream that replays ``prefix`` and then reads on from ``fh`` (the rest of a pipe)."""

    def __init__(self, prefix: bytes, fh: io.FileIO) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._fh = fh

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if len(self._prefix):
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        return self._fh.readinto(buffer)

    def close(self) -> None:
        self._fh.close()
        super().close()


#: non-seekable inputs whose head has been read (to sniff them): path -> (raw bytes read, head, open file).
#: The next :func:`open_binary` of the path replays those bytes and reads on, so nothing is lost.
_STREAM_HEADS: dict[str, tuple[bytes, bytes, io.FileIO]] = {}


def _read_upto(read: Callable[[int], bytes], size: int) -> bytes:
    """``size`` bytes, or fewer at the end of the input (a pipe may return less than asked: read on)."""
    chunks: list[bytes] = []
    got = 0
    while got < size:
        chunk = read(size - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _head_of(read: Callable[[int], bytes]) -> tuple[bytes, bytes]:
    """``(raw bytes read, first SNIFF_BYTES decompressed bytes)`` of an input.

    A gzip stream is decompressed piece by piece, so a truncated or damaged one still gives the
    bytes before the damage (the parser then reports the damage at its line).
    """
    raw = _read_upto(read, SNIFF_BYTES)
    if raw[:2] != b"\x1f\x8b":
        return raw, raw
    inflate = zlib.decompressobj(wbits=31)
    out = bytearray()
    pos = 0
    while len(out) < SNIFF_BYTES and not inflate.eof:
        if pos >= len(raw):
            more = _read_upto(read, SNIFF_BYTES) if len(raw) < _HEAD_RAW_MAX else b""
            if not more:
                break
            raw += more
        piece = raw[pos : pos + 4096]
        pos += len(piece)
        try:
            out += inflate.decompress(piece, SNIFF_BYTES - len(out))
        except zlib.error:
            break
    return raw, bytes(out)


def _stream_head(path: Path) -> bytes:
    key = str(path)
    entry = _STREAM_HEADS.get(key)
    if entry is None:
        try:
            fh = io.FileIO(path, "rb")
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
        try:
            raw, head = _head_of(fh.read)
        except OSError as exc:
            fh.close()
            raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        entry = (raw, head.removeprefix(BOM), fh)
        _STREAM_HEADS[key] = entry
    return entry[1]


def discard_stream_heads() -> None:
    """Close inputs sniffed but never parsed (a run that stopped early)."""
    while _STREAM_HEADS:
        _, (_, _, fh) = _STREAM_HEADS.popitem()
        fh.close()


def open_binary(path: Path) -> IO[bytes]:
    """Open a file for reading bytes, transparently un-gzipping ``.gz`` or gzip-magic files.

    A non-seekable input (FIFO, ``/dev/stdin``) whose head was read by :func:`read_head` is
    continued from that head, so sniffing a pipe loses none of it.
    """
    entry = _STREAM_HEADS.pop(str(path), None)
    fh: IO[bytes]
    if entry is not None:
        fh = io.BufferedReader(_Prefixed(entry[0], entry[2]))
    else:
        try:
            fh = open(path, "rb")  # noqa: SIM115 - returned to the caller
        except OSError as exc:
            raise InputError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    magic = fh.peek(2)[:2] if isinstance(fh, io.BufferedReader) else b""
    if magic == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    return fh


BOM = b"\xef\xbb\xbf"


def read_head(path: Path, size: int = SNIFF_BYTES) -> bytes:
    """The first bytes of a file (decompressed, at most :data:`SNIFF_BYTES`), without a UTF-8 byte-order mark.

    A non-seekable input is read once: its head is kept for the parser (see :func:`open_binary`).
    """
    if is_stream(path):
        return _stream_head(path)[:size]
    try:
        with open(path, "rb") as fh:
            _, head = _head_of(fh.read)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return head.removeprefix(BOM)[:size]


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

    Memory is bounded: a line is read at most ``max_record_bytes + 1`` bytes at a time. A longer
    line is yielded as an :class:`OverlongLine` (its first ``max_record_bytes`` bytes and its full
    size) and the rest of it is skipped without being kept. A line with no newline after
    :func:`max_line_skip` bytes ends the file with a :class:`StreamError` (the input is not
    line-delimited: ``/dev/zero``, a binary file). So does a truncated or damaged gzip stream,
    carrying the line where it broke. Reports progress in bytes of the file on disk (compressed
    bytes for ``.gz``).
    """
    report = options.on_progress
    limit = options.max_record_bytes
    with open_binary(path) as fh:
        readline = fh.readline
        last_pos = 0
        lineno = 0
        while True:
            try:
                raw = readline(limit + 1)
            except (EOFError, OSError, zlib.error) as exc:
                raise StreamError(path, lineno + 1, f"compressed stream is damaged or truncated: {exc}") from exc
            if not raw:
                break
            lineno += 1
            cut = len(raw) > limit and raw[-1:] != b"\n"
            if lineno == 1:
                raw = raw.removeprefix(BOM)
            if report is not None and lineno % 2048 == 0:
                pos = raw_position(fh)
                report(pos - last_pos)
                last_pos = pos
            raw = _rest_of_long_line(fh, path, lineno, raw, options) if cut else raw.rstrip(b"\r\n")
            if not raw.strip():
                continue
            yield lineno, raw
        if report is not None:
            pos = raw_position(fh)
            report(max(pos - last_pos, 0))


def _rest_of_long_line(fh: IO[bytes], path: Path, lineno: int, head: bytes, options: FormatOptions) -> bytes:
    """Skip to the end of a line whose first ``max_record_bytes + 1`` bytes are ``head``; keep none of the rest."""
    limit = options.max_record_bytes
    cap = max_line_skip(options)
    size = len(head)
    tail = head[-2:]
    while True:
        try:
            chunk = fh.readline(_SKIP_CHUNK)
        except (EOFError, OSError, zlib.error) as exc:
            raise StreamError(path, lineno, f"compressed stream is damaged or truncated: {exc}") from exc
        if not chunk:
            break
        size += len(chunk)
        tail = (tail + chunk)[-2:]
        if chunk[-1:] == b"\n":
            break
        if size > cap:
            raise StreamError(
                path,
                lineno,
                f"no end of line in the first {size:,} bytes of this line: the file is not line-delimited "
                "(reading of this file stopped here)",
            )
    size -= 2 if tail == b"\r\n" else 1 if tail[-1:] == b"\n" else 0
    if size <= limit:  # only the line ending was past the limit (CRLF): a line like any other
        return head.rstrip(b"\r\n")
    return OverlongLine(head[:limit], size)


def load_json_line(raw: bytes, source: str, line: int | None, options: FormatOptions) -> Any | Rejected:
    """Parse one JSON record, or return the :class:`Rejected` that says why it is not one."""
    if isinstance(raw, OverlongLine):
        return Rejected(
            source,
            line,
            f"record is {raw.size} bytes, over the limit of {options.max_record_bytes} "
            f"(raise --max-record-bytes to accept it); its first {len(raw)} bytes are kept",
            None,
            bytes(raw),
        )
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
