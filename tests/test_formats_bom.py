"""A UTF-8 byte-order mark is dropped only at the very start of a file; one on a later line (after a
blank first line) is a bad record and is quarantined, never silently dropped (found by the property
test in test_formats.py: lines [b'', b'\\xef\\xbb\\xbf'])."""

from __future__ import annotations

from pathlib import Path

import pytest

from stormwatch.ingest.formats import get_format
from stormwatch.ingest.formats.base import FormatOptions


@pytest.mark.parametrize("fmt", ["openai_http_log", "litellm", "openai_batch"])
def test_a_bom_after_a_blank_first_line_is_quarantined(fmt: str, tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\n\xef\xbb\xbf\n")
    results = list(get_format(fmt).parse([path], FormatOptions(default_account="a", extra={"batch_ts": 0})))
    assert len(results) == 1, results


def test_a_bom_at_the_start_of_the_file_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n")
    assert list(get_format("openai_http_log").parse([path], FormatOptions(default_account="a"))) == []
