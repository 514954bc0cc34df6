"""The columnar event layout: one Arrow schema, Parquet partitioned by day (zstd), round trips of the
canonical event, `stormwatch export --parquet` and `stormwatch ingest --parquet`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from stormwatch.columnar import EVENT_FIELDS, event_schema, read_events, write_events  # noqa: E402
from stormwatch.errors import InputError  # noqa: E402
from stormwatch.events import Event, validate_event  # noqa: E402
from stormwatch.store import open_store  # noqa: E402

RECORDS = [
    {
        "event_id": "e1",
        "ts": "2026-03-01T23:59:59.5Z",
        "account_id": "acct_1",
        "ip": "2001:db8::1",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": 'привет 你好 \u2028 "quoted"'},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "t1", "type": "function"}]},
        ],
        "refused": True,
        "attributes": {"accept_language": "ru-RU", "nested": {"x": [1, 2.5, None]}},
        "org_id": "org_9",
    },
    {"event_id": "e2", "ts": "2026-03-02T00:00:00+02:00", "account_id": "acct_2", "prompt": "plain", "refused": False},
    {"event_id": "e3", "ts": 1772409600, "account_id": "acct_1", "prompt": "epoch", "model": "m", "unknown_field": 7},
]


def _run(args: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> str:
    res = subprocess.run([sys.executable, "-m", "stormwatch", *args], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode in ok, res.stderr[-2000:]
    return res.stdout


def test_the_schema_is_the_canonical_event_plus_seq_and_day() -> None:
    fields = {f.name for f in dataclasses.fields(Event)}
    assert set(EVENT_FIELDS) == fields | {"seq", "day"}
    schema = event_schema()
    assert schema.names == list(EVENT_FIELDS)
    assert schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("event_id").nullable and schema.field("org_id").nullable


def test_canonical_events_round_trip_through_parquet_partitioned_by_day(tmp_path: Path) -> None:
    events = [validate_event(r) for r in RECORDS]
    out = tmp_path / "events"
    days = write_events(out, [(events[:2], [10, 11]), (events[2:], [12])])
    assert days == {"2026-03-01": 2, "2026-03-02": 1}  # e2 is 2026-03-01T22:00Z in UTC
    files = sorted(out.rglob("*.parquet"))
    assert [f.parent.name for f in files] == ["day=2026-03-01", "day=2026-03-02"]
    meta = pq.ParquetFile(files[0]).metadata
    assert meta.row_group(0).column(0).compression == "ZSTD"
    back = sorted(read_events(out), key=lambda x: x[0] or 0)
    assert [s for s, _ in back] == [10, 11, 12]
    assert [e for _, e in back] == events  # every field, messages' extra keys and attributes included
    # a second write adds files beside the first (nothing overwritten)
    write_events(out, [(events[:1], None)])
    assert len(list(out.rglob("*.parquet"))) == 3
    assert sum(1 for _ in read_events(out)) == 4


def test_read_events_names_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_events(tmp_path / "nope"))


def test_export_and_ingest_parquet_give_the_stored_events(tmp_path: Path) -> None:
    src = tmp_path / "events.jsonl"
    lines = [json.dumps(r) for r in RECORDS] + ["{not json", json.dumps({"event_id": "x", "account_id": "a"})]
    src.write_text("\n".join(lines) + "\n")
    db = f"sqlite:///{tmp_path / 'a.db'}"
    env = {**os.environ, "STORMWATCH_DB": db}
    _run(["ingest", str(src), "-q"], env, ok=(10,))  # two bad lines quarantined
    summary = json.loads(_run(["export", "--parquet", str(tmp_path / "export"), "--json"], env))
    assert summary["events"] == 3 and summary["bytes"] > 0
    store = open_store(db)
    try:
        stored = {e.event_id: (seq, e) for seq, e in store.iter_events()}
    finally:
        store.close()
    exported = {e.event_id: (seq, e) for seq, e in read_events(tmp_path / "export")}
    assert exported == stored
    # ingest straight to Parquet: same events, no seq; the bad lines are quarantined in the store
    env2 = {**os.environ, "STORMWATCH_DB": f"sqlite:///{tmp_path / 'b.db'}"}
    out = _run(["ingest", str(src), "--parquet", str(tmp_path / "direct"), "--json"], env2, ok=(10,))
    s = json.loads(out)
    assert s["events"] == 3 and s["quarantined"] == 2
    direct = {e.event_id: (seq, e) for seq, e in read_events(tmp_path / "direct")}
    assert {k: e for k, (_, e) in direct.items()} == {k: e for k, (_, e) in stored.items()}
    assert all(seq is None for seq, _ in direct.values())
    b = open_store(env2["STORMWATCH_DB"])
    try:
        assert b.count_events() == 0 and b.count_quarantine() == 2
    finally:
        b.close()
