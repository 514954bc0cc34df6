"""Reading JSON for the ingest formats: a BOM-aware line reader and a streaming splitter for top-level
JSON values (a pretty-printed object, a JSON array, or several of either back to back)."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from stormwatch.ingest.formats._fields import (
    JSON,
)
from stormwatch.ingest.formats.base import (
    FormatOptions,
    StreamError,
    iter_lines,
    open_binary,
    raw_position,
)

BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------------
# reading files


def iter_json_lines(path: Path, options: FormatOptions) -> Iterator[tuple[int, bytes]]:
    """:func:`base.iter_lines` with a UTF-8 byte-order mark at the start of the file dropped (only
    there: a BOM on a later line, after blank lines, is data and is quarantined like any bad line)."""
    for lineno, raw in iter_lines(path, options):
        if lineno == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
            if not raw.strip():
                continue
        yield lineno, raw


def first_line(head: bytes) -> bytes:
    """The first non-blank line of a sniffed head, BOM and surrounding whitespace removed."""
    if head.startswith(BOM):
        head = head[len(BOM) :]
    return head.lstrip().split(b"\n", 1)[0].strip()


def sniff_object(head: bytes) -> tuple[JSON | None, bytes]:
    """The first line parsed as an object (the first element when it is an array), and the line itself."""
    line = first_line(head)
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, line
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    return (obj if isinstance(obj, dict) else None), line


_WS = frozenset(b" \t\r\n")
_IN_STRING = re.compile(rb'["\\\n]')
_IN_CONTAINER = re.compile(rb'["{}\[\]\n]')
# JSON's whitespace only (RFC 8259: space, tab, CR, LF), as ``_WS``: a bytes ``\s`` also matches form feed
# and vertical tab, which ``_WS`` does not skip, so a scalar starting with one ended where it began and
# the splitter emitted empty pieces forever (found by the property test in test_formats.py)
_SCALAR_END = re.compile(rb"[ \t\r\n,\]]")


@dataclass(slots=True)
class Piece:
    """One top-level JSON value (or element of a top-level array) cut from a stream."""

    line: int
    raw: bytes
    error: str | None = None


class JsonValueSplitter:
    """Cut a byte stream into top-level JSON values without parsing them.

    A top-level array is opened and its elements are cut one by one, so a file may be one object
    (pretty-printed or not), one array, or several of either back to back. The splitter tracks only
    string/escape state and bracket depth; validating each piece is left to ``orjson``. A piece longer
    than ``max_bytes`` is cut short (its first ``max_bytes`` bytes are kept) and marked with an error.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.line = 1
        self.in_array = False
        self.in_elem = False
        self.scalar = False
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.buf = bytearray()
        self.size = 0
        self.start = 0

    def _append(self, data: bytes) -> None:
        self.size += len(data)
        room = self.max_bytes - len(self.buf)
        if room > 0:
            self.buf += data[:room]

    def _emit(self, error: str | None = None) -> Piece:
        if error is None and self.size > self.max_bytes:
            error = (
                f"record is {self.size} bytes, over the limit of {self.max_bytes} "
                "(raise --max-record-bytes to accept it)"
            )
        piece = Piece(self.start, bytes(self.buf), error)
        self.buf = bytearray()
        self.size = 0
        self.in_elem = False
        self.depth = 0
        self.in_str = False
        self.esc = False
        return piece

    def feed(self, chunk: bytes) -> Iterator[Piece]:
        i = 0
        n = len(chunk)
        while i < n:
            if not self.in_elem:
                c = chunk[i]
                if c in _WS:
                    if c == 0x0A:
                        self.line += 1
                    i += 1
                    continue
                if self.in_array and c == 0x2C:  # ,
                    i += 1
                    continue
                if self.in_array and c == 0x5D:  # ]
                    self.in_array = False
                    i += 1
                    continue
                if not self.in_array and c == 0x5B:  # [
                    self.in_array = True
                    i += 1
                    continue
                self.in_elem = True
                self.start = self.line
                if c in (0x7D, 0x5D) or (c == 0x2C and not self.in_array):  # stray } ] ,
                    self._append(chunk[i : i + 1])
                    i += 1
                    yield self._emit("unexpected character outside any record")
                    continue
                self.scalar = c not in (0x7B, 0x5B)
                self.depth = 0
                continue
            if self.esc:
                self._append(chunk[i : i + 1])
                self.esc = False
                i += 1
                continue
            if self.in_str:
                m = _IN_STRING.search(chunk, i)
                if m is None:
                    self._append(chunk[i:])
                    break
                j = m.start()
                self._append(chunk[i : j + 1])
                c = chunk[j]
                i = j + 1
                if c == 0x5C:  # backslash
                    self.esc = True
                elif c == 0x22:
                    self.in_str = False
                else:
                    self.line += 1
                continue
            if self.scalar:
                m = _SCALAR_END.search(chunk, i)
                if m is None:
                    self._append(chunk[i:])
                    break
                self._append(chunk[i : m.start()])
                i = m.start()
                yield self._emit()
                continue
            m = _IN_CONTAINER.search(chunk, i)
            if m is None:
                self._append(chunk[i:])
                break
            j = m.start()
            self._append(chunk[i : j + 1])
            c = chunk[j]
            i = j + 1
            if c == 0x22:
                self.in_str = True
            elif c in (0x7B, 0x5B):
                self.depth += 1
            elif c in (0x7D, 0x5D):
                self.depth -= 1
                if self.depth <= 0:
                    yield self._emit()
            else:
                self.line += 1

    def finish(self) -> Iterator[Piece]:
        if self.in_elem:
            if self.scalar and not self.in_str:
                yield self._emit()
            else:
                yield self._emit("truncated: the file ends inside this record")
        elif self.in_array:
            self.start = self.line
            self.in_array = False
            yield self._emit("truncated: the file ends inside a JSON array (missing ']')")


def iter_json_values(path: Path, options: FormatOptions, chunk_size: int = 1 << 20) -> Iterator[Piece]:
    """Stream the top-level JSON values (array elements expanded) of ``path`` with their start lines."""
    splitter = JsonValueSplitter(options.max_record_bytes)
    report: Callable[[int], None] | None = options.on_progress
    last = 0
    with open_binary(path) as fh:
        first = True
        while True:
            try:
                chunk = fh.read(chunk_size)
            except (EOFError, OSError, zlib.error) as exc:
                raise StreamError(path, splitter.line, f"compressed stream is damaged or truncated: {exc}") from exc
            if not chunk:
                break
            if first:
                first = False
                if chunk.startswith(BOM):
                    chunk = chunk[len(BOM) :]
            yield from splitter.feed(chunk)
            if report is not None:
                pos = raw_position(fh)
                report(max(pos - last, 0))
                last = pos
    yield from splitter.finish()


def iter_values_of_lines(lines: Iterable[tuple[int, bytes]]) -> Iterator[Piece]:
    """Lines as pieces (used by NDJSON readers so both paths share the per-record code)."""
    for lineno, raw in lines:
        yield Piece(lineno, raw)
