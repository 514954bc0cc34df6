"""The ingest runner (stormwatch.ingest.runner): account files, file-level failures, a failing store
on the writer thread, and the run record it leaves; on both backends."""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from pathlib import Path

import orjson
import pytest

from stormwatch.errors import InputError, StoreError
from stormwatch.events import Event
from stormwatch.ingest.runner import ingest
from stormwatch.store import open_store


def event(i: int) -> bytes:
    return orjson.dumps({"event_id": f"e{i}", "ts": "2026-03-01T10:00:00Z", "account_id": "a", "prompt": f"p{i}"})


@pytest.fixture
def store(db_url: str) -> Iterator[object]:
    s = open_store(db_url)
    yield s
    s.close()


def test_accounts_files_good_bad_and_damaged(tmp_path: Path, store: object) -> None:
    accounts = tmp_path / "accounts.jsonl"
    rows = [orjson.dumps({"account_id": f"a{i}", "country": "DE"}) for i in range(5)]
    accounts.write_bytes(
        b"\n".join([*rows, b"{broken", orjson.dumps({"account_id": "x", "country": "Germany"})]) + b"\n"
    )
    cut = tmp_path / "cut_accounts.jsonl.gz"
    more = b"".join(orjson.dumps({"account_id": f"b{i}"}) + b"\n" for i in range(3000))
    cut.write_bytes(gzip.compress(more)[:-400])
    events = tmp_path / "events.jsonl"
    events.write_bytes(event(1) + b"\n")
    summary = ingest(store, [events], accounts_paths=[accounts, cut], batch_size=2, progress=False, workers=1)  # type: ignore[arg-type]
    assert summary.accounts_stored >= 5 + 2000
    assert summary.accounts_quarantined == 3
    assert summary.stored == 1
    rows_q = store.list_quarantine(limit=10)  # type: ignore[attr-defined]
    by_source = {(Path(r.source).name, r.line, r.field): r for r in rows_q}
    assert all(r.kind == "account" for r in rows_q)
    assert ("accounts.jsonl", 6, None) in by_source
    assert ("accounts.jsonl", 7, "country") in by_source
    [damaged] = [r for r in rows_q if Path(r.source).name == "cut_accounts.jsonl.gz"]
    assert "damaged or truncated" in damaged.reason
    run = store.get_run(summary.run_id)  # type: ignore[attr-defined]
    assert run is not None and run.status == "done"


def test_missing_inputs_are_refused_before_anything_is_read(tmp_path: Path, store: object) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(event(1) + b"\n")
    with pytest.raises(InputError, match="no such file \\(given with --accounts\\)"):
        ingest(store, [events], accounts_paths=[tmp_path / "nope.jsonl"], progress=False)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="no such file \\(given with --accounts\\)"):
        ingest(store, [events], accounts_paths=[tmp_path], progress=False)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="is a folder") as info:
        ingest(store, [tmp_path], progress=False)  # type: ignore[arg-type]
    assert info.value.hint is not None and "DIR/*.jsonl" in info.value.hint
    with pytest.raises(InputError, match="unknown format 'nope'"):
        ingest(store, [events], format_name="nope", progress=False)  # type: ignore[arg-type]
    assert store.count_events() == 0  # type: ignore[attr-defined]


def test_a_joined_format_failing_on_its_files_is_one_quarantined_record(tmp_path: Path, store: object) -> None:
    # a Batch input + output pair in which the input is not line-delimited: reading stops with a StreamError
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": []}})
        + b"\n"
    )
    out = tmp_path / "out.jsonl.gz"
    full = b"".join(
        orjson.dumps({"id": f"r{i}", "custom_id": f"c{i}", "response": {"body": {}}}) + b"\n" for i in range(3000)
    )
    out.write_bytes(gzip.compress(full)[:-300])
    summary = ingest(store, [inp, out], format_name="openai_batch", progress=False, workers=1)  # type: ignore[arg-type]
    assert summary.stored == 0
    rows = store.list_quarantine(limit=5)  # type: ignore[attr-defined]
    assert len(rows) == 1
    assert rows[0].source == str(out.resolve()) and "damaged or truncated" in rows[0].reason


class FailingStore:
    """Delegates to a real store but fails on the second batch of events."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.calls = 0
        self.run_id = ""

    def start_run(self, run_id: str, files: Sequence[str]) -> None:
        self.run_id = run_id
        self.inner.start_run(run_id, files)  # type: ignore[attr-defined]

    def insert_events(self, events: Sequence[Event], run_id: str | None = None) -> int:
        self.calls += 1
        if self.calls == 2:
            raise StoreError("disk full")
        return self.inner.insert_events(events, run_id)  # type: ignore[attr-defined,no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_store_failure_on_the_writer_thread_fails_the_run(tmp_path: Path, store: object) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"".join(event(i) + b"\n" for i in range(50)))
    failing = FailingStore(store)
    with pytest.raises(StoreError, match="disk full"):
        ingest(failing, [events], batch_size=5, progress=False, workers=1)  # type: ignore[arg-type]
    stored = store.count_events()  # type: ignore[attr-defined]
    assert 5 <= stored < 50  # the first batch went in, the rest did not
    run = store.get_run(failing.run_id)  # type: ignore[attr-defined]
    assert run is not None and run.status == "failed"
