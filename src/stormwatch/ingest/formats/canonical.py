"""Canonical JSONL (``../shared/spec/usage-events.md``), plain or gzip-compressed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from stormwatch.errors import RecordError
from stormwatch.events import validate_event
from stormwatch.ingest.formats._common import redact_raw
from stormwatch.ingest.formats.base import FormatOptions, Parsed, Rejected, iter_lines, load_json_line


class CanonicalFormat:
    name = "canonical"
    description = "stormwatch canonical usage events, one JSON object per line (.jsonl or .jsonl.gz)"

    def sniff(self, head: bytes, path: Path) -> float:
        first = head.lstrip().split(b"\n", 1)[0]
        if not first.startswith(b"{"):
            return 0.0
        score = 0.0
        for key in (b'"event_id"', b'"account_id"', b'"ts"'):
            if key in first:
                score += 0.3
        return score

    #: lines are independent records: the runner may parse chunks of them in parallel with parse_line
    line_parallel = True

    def parse(self, paths: Sequence[Path], options: FormatOptions) -> Iterator[Parsed]:
        for path in paths:
            source = str(path)
            for lineno, raw in iter_lines(path, options):
                yield parse_line(source, lineno, raw, options)


def parse_line(source: str, lineno: int, raw: bytes, options: FormatOptions) -> Parsed:
    """One canonical JSONL line as an event, or the rejection that says where and why."""
    obj = load_json_line(raw, source, lineno, options)
    if isinstance(obj, Rejected):
        obj.raw = redact_raw(obj.raw)
        return obj
    try:
        return validate_event(obj, source=CanonicalFormat.name)
    except RecordError as exc:
        return Rejected(source, lineno, exc.reason, exc.field, redact_raw(raw))
