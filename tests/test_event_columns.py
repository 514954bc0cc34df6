"""The canonical event's columns are defined once (``stormwatch.events.EVENT_COLUMNS``, issue 15):
the store's ``events`` table and the Arrow/Parquet layout both derive their column order from it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stormwatch import columnar, events
from stormwatch.store import open_store
from stormwatch.store import sql as store_sql


def test_the_event_columns_are_the_event_fields() -> None:
    assert len(set(events.EVENT_COLUMNS)) == len(events.EVENT_COLUMNS)
    assert set(events.EVENT_COLUMNS) == {f.name for f in dataclasses.fields(events.Event)}


def test_the_store_columns_are_the_event_columns_then_the_run() -> None:
    assert (*events.EVENT_COLUMNS, "run_id") == store_sql.EVENT_COLUMNS
    # event_row writes its values in EVENT_COLUMNS order
    strings: dict[str, Any] = {name: name for name in events.OPTIONAL_STR}
    e = events.Event(
        event_id="e1", ts="2026-03-01T00:00:00.000000Z", account_id="a1", prompt="p", refused=True, **strings
    )
    row = dict(zip(store_sql.EVENT_COLUMNS, store_sql.event_row(e, "run-1"), strict=True))
    assert row["run_id"] == "run-1"
    for name in events.EVENT_COLUMNS:
        if name not in ("messages", "attributes"):  # stored as JSON text
            assert row[name] == getattr(e, name), name


def test_the_store_table_has_the_event_columns(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'sw.db'}")
    try:
        table = [r[1] for r in store._query("PRAGMA table_info(events)")]  # type: ignore[attr-defined]
    finally:
        store.close()
    assert set(store_sql.EVENT_COLUMNS) <= set(table)


def test_the_arrow_schema_is_seq_then_the_event_columns_then_day() -> None:
    names = columnar.event_schema().names
    assert names == list(columnar.EVENT_FIELDS)
    assert names[0] == "seq" and names[-1] == "day"
    assert tuple(names[1:-1]) == events.EVENT_COLUMNS == store_sql.EVENT_COLUMNS[:-1]
