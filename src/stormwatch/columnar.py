"""The canonical usage event as an Arrow schema: the one columnar layout (Parquet, Spark).

:func:`event_schema` is the single definition. Field for field it is the canonical event of
``../shared/spec/usage-events.md`` (:class:`~stormwatch.events.Event`): ``ts`` is a UTC timestamp
with microseconds; ``messages`` and ``attributes`` are kept as their JSON text, exactly as the store
keeps them (a message may carry fields beyond role and content, and ``attributes`` is free-form),
so a Parquet round trip gives back the same event. Two columns are added: ``seq`` (the order the
store received the event; null when ingest writes Parquet directly) and ``day`` (``YYYY-MM-DD`` of
``ts``), the Hive partition key of a dataset directory (``DIR/day=2026-11-01/part-....parquet``).

pyarrow is optional (``stormwatch[parquet]`` / ``stormwatch[spark]``): it is imported inside the
functions, never at module import.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import InputError
from stormwatch.events import EVENT_COLUMNS, Event

__all__ = [
    "EVENT_FIELDS",
    "event_schema",
    "events_to_table",
    "read_events",
    "require_pyarrow",
    "table_to_events",
    "write_events",
]

#: column order of the layout: the canonical event's columns (:data:`stormwatch.events.EVENT_COLUMNS`),
#: with the store's ``seq`` first and ``day`` last (it is the partition key)
EVENT_FIELDS = ("seq", *EVENT_COLUMNS, "day")
_STR = ("org_id", "end_user_id", "api_key_id", "ip", "user_agent", "model", "conversation_id", "prompt", "response")
ROW_GROUP = 100_000


def require_pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise InputError(
            "the Parquet layout needs pyarrow", hint="pip install 'stormwatch[parquet]' (or 'stormwatch[spark]')"
        ) from exc
    return pyarrow


def event_schema() -> Any:
    """The Arrow schema of the canonical event (``pyarrow.Schema``)."""
    pa = require_pyarrow()
    string = pa.string()
    types = dict.fromkeys(EVENT_FIELDS, string)  # the rest is text; messages and attributes as their JSON
    types.update(seq=pa.int64(), ts=pa.timestamp("us", tz="UTC"), refused=pa.bool_())
    required = {"event_id", "ts", "account_id", "day"}
    return pa.schema(
        [pa.field(name, types[name], nullable=name not in required) for name in EVENT_FIELDS],
        metadata={b"stormwatch.schema": b"stormwatch.usage-event/1"},
    )


def _ts_value(ts: str) -> datetime:
    return datetime.fromisoformat(ts[:-1] if ts.endswith("Z") else ts).replace(tzinfo=UTC)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def events_to_table(events: Sequence[Event], seqs: Sequence[int | None] | None = None) -> Any:
    """``events`` (with their store ``seqs``, or none) as a ``pyarrow.Table`` of :func:`event_schema`."""
    pa = require_pyarrow()
    cols: dict[str, list[Any]] = {name: [] for name in EVENT_FIELDS}
    cols["seq"] = list(seqs) if seqs is not None else [None] * len(events)
    for e in events:
        cols["event_id"].append(e.event_id)
        cols["ts"].append(_ts_value(e.ts))
        cols["account_id"].append(e.account_id)
        for name in _STR:
            cols[name].append(getattr(e, name))
        cols["refused"].append(e.refused)
        cols["messages"].append(_json(e.messages))
        cols["attributes"].append(_json(e.attributes or None))
        cols["source"].append(e.source)
        cols["day"].append(e.ts[:10])
    return pa.Table.from_pydict(cols, schema=event_schema())


def _ts_text(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    raise InputError(f"ts must be a timestamp, got {type(value).__name__}")


def table_to_events(table: Any) -> Iterator[tuple[int | None, Event]]:
    """(seq, event) for each row of a table of :func:`event_schema` (the inverse of :func:`events_to_table`)."""
    names = set(table.schema.names)
    missing = [f for f in ("event_id", "ts", "account_id") if f not in names]
    if missing:
        raise InputError(f"not a stormwatch event table: missing column(s) {', '.join(missing)}")
    rows = table.to_pylist()
    for i, r in enumerate(rows):
        try:
            messages = orjson.loads(r["messages"]) if r.get("messages") is not None else None
            attributes = orjson.loads(r["attributes"]) if r.get("attributes") is not None else None
        except orjson.JSONDecodeError as exc:
            raise InputError(f"row {i} (event {r.get('event_id')!r}): bad JSON in messages/attributes: {exc}") from None
        yield (
            r.get("seq"),
            Event(
                event_id=r["event_id"],
                ts=_ts_text(r["ts"]),
                account_id=r["account_id"],
                messages=messages,
                refused=r.get("refused"),
                attributes=attributes,
                source=r.get("source") or "canonical",
                **{name: r.get(name) for name in _STR},
            ),
        )


def write_events(
    out_dir: Path, batches: Iterable[tuple[Sequence[Event], Sequence[int | None] | None]], *, name: str | None = None
) -> dict[str, int]:
    """Append batches of events to the dataset ``out_dir``, partitioned by ``day``, zstd-compressed.

    One file per day touched by this call (``day=YYYY-MM-DD/<name>-<n>.parquet``), so a second
    export or ingest run adds files beside the first and never overwrites them. Returns events per day.
    """
    require_pyarrow()
    import pyarrow.parquet as pq

    name = name or "part-" + uuid.uuid4().hex[:12]
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Any] = {}
    counts: dict[str, int] = {}
    schema = event_schema()
    try:
        for events, seqs in batches:
            if not events:
                continue
            table = events_to_table(events, seqs)
            days = table.column("day").to_pylist()
            for day in sorted(set(days)):
                part = table.filter(_mask(days, day))
                w = writers.get(day)
                if w is None:
                    folder = out_dir / f"day={day}"
                    folder.mkdir(exist_ok=True)
                    w = writers[day] = pq.ParquetWriter(
                        str(folder / f"{name}.parquet"), schema, compression="zstd", use_dictionary=True
                    )
                w.write_table(part, row_group_size=ROW_GROUP)
                counts[day] = counts.get(day, 0) + part.num_rows
    finally:
        for w in writers.values():
            w.close()
    return counts


def _mask(days: list[str], day: str) -> Any:
    pa = require_pyarrow()
    return pa.array([d == day for d in days])


def read_events(path: Path) -> Iterator[tuple[int | None, Event]]:
    """Every (seq, event) of a dataset directory (or one file) written by :func:`write_events`."""
    require_pyarrow()
    import pyarrow.dataset as ds

    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    dataset = ds.dataset(str(path), format="parquet", partitioning="hive", schema=event_schema())
    for batch in dataset.to_batches(batch_size=ROW_GROUP):
        import pyarrow as pa

        yield from table_to_events(pa.Table.from_batches([batch]))
