"""One contract, every backend: what the pipeline relies on from a store."""

from __future__ import annotations

import pytest

from stormwatch.errors import ConfigError, StoreError
from stormwatch.events import validate_account, validate_event
from stormwatch.ingest.formats.base import Rejected
from stormwatch.store import Store, open_store
from stormwatch.store.base import RunRow
from stormwatch.store.migrations import LATEST


def ev(i: int, **kw: object) -> object:
    base = {
        "event_id": f"e{i}",
        "ts": f"2026-01-01T00:00:{i % 60:02d}Z",
        "account_id": f"a{i % 3}",
        "messages": [{"role": "user", "content": f"hello {i}"}],
    }
    base.update(kw)
    return validate_event(base)


def test_migrations_are_versioned_and_idempotent(db_url: str) -> None:
    s = open_store(db_url, migrate=False)
    try:
        assert s.schema_version() == 0
        assert s.migrate() == list(range(1, LATEST + 1))
        assert s.schema_version() == LATEST
        assert s.migrate() == []
    finally:
        s.close()


def test_insert_is_idempotent_on_event_id(store: Store) -> None:
    events = [ev(i) for i in range(10)]
    assert store.insert_events(events) == 10
    assert store.insert_events(events) == 0
    # duplicates inside one batch count once
    assert store.insert_events([ev(20), ev(20), ev(21)]) == 2
    assert store.count_events() == 12


def test_events_round_trip_exactly(store: Store) -> None:
    original = validate_event(
        {
            "event_id": "x1",
            "ts": "2026-02-03T04:05:06.789+02:00",
            "account_id": "acct",
            "org_id": "org",
            "end_user_id": "eu",
            "api_key_id": "key",
            "ip": "2001:db8::1",
            "user_agent": "ua",
            "model": "m",
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "Привет 你好 🙂"}],
            "response": "r",
            "conversation_id": "c",
            "refused": True,
            "attributes": {"k": [1, 2]},
            "extra": "kept",
        }
    )
    store.insert_events([original])
    got = store.get_event("x1")  # type: ignore[attr-defined]
    assert got == original
    assert got.ts == "2026-02-03T02:05:06.789000Z"
    assert got.attributes == {"k": [1, 2], "extra": "kept"}


def test_huge_prompt_round_trips(store: Store) -> None:
    big = "A" * (1024 * 1024)
    store.insert_events([ev(1, messages=None, prompt=big)])
    assert store.get_event("e1").prompt == big  # type: ignore[attr-defined]


def test_nul_characters(store: Store) -> None:
    store.insert_events([ev(1, messages=None, prompt="a\x00b")])
    got = store.get_event("e1").prompt  # type: ignore[attr-defined]
    # PostgreSQL text cannot hold U+0000: documented replacement with U+FFFD
    assert got == ("a\x00b" if store.dialect == "sqlite" else "a\ufffdb")


def test_iter_events_is_ordered_and_incremental(store: Store) -> None:
    store.insert_events([ev(i) for i in range(25)])
    seen = list(store.iter_events(batch_size=7))
    assert [e.event_id for _, e in seen] == [f"e{i}" for i in range(25)]
    seqs = [s for s, _ in seen]
    assert seqs == sorted(seqs)
    rest = list(store.iter_events(after_seq=seqs[9]))
    assert [e.event_id for _, e in rest] == [f"e{i}" for i in range(10, 25)]


def test_accounts_upsert_replaces(store: Store) -> None:
    store.upsert_accounts([validate_account({"account_id": "a1", "email_domain": "Example.ORG", "country": "DE"})])
    store.upsert_accounts(
        [validate_account({"account_id": "a1", "email_domain": "example.org", "status": "suspended"})]
    )
    got = store.get_account("a1")
    assert got is not None
    assert got.status == "suspended"
    assert got.country is None
    assert got.email_domain == "example.org"
    assert store.count_accounts() == 1


def test_quarantine_keeps_raw_bytes_and_is_not_doubled(store: Store) -> None:
    bad = [
        Rejected("f.jsonl", 3, "not valid JSON", None, b"\xff\xfe{"),
        Rejected("f.jsonl", 4, "missing", "ts", b"{}"),
    ]
    store.add_quarantine(bad, "run1")
    store.add_quarantine(bad, "run2")  # the same lines read again
    rows = store.list_quarantine()
    assert [(r.source, r.line, r.field, r.raw) for r in rows] == [
        ("f.jsonl", 3, None, b"\xff\xfe{"),
        ("f.jsonl", 4, "ts", b"{}"),
    ]
    assert store.count_quarantine() == 2
    assert store.count_quarantine("run1") == 2
    assert store.list_quarantine(limit=1, offset=1)[0].line == 4


def test_runs_are_recorded(store: Store) -> None:
    store.start_run("r1", ["a.jsonl"])
    run = store.get_run("r1")
    assert run is not None and run.status == "running"
    store.finish_run(RunRow("r1", "", None, "done", ["a.jsonl"], 5, 3, 1, 1, 0))
    run = store.get_run("r1")
    assert run is not None
    assert (run.status, run.read, run.stored, run.duplicates, run.quarantined) == ("done", 5, 3, 1, 1)
    assert run.finished_at is not None


def test_unknown_scheme_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unsupported database URL"):
        open_store("mysql://x")


def test_missing_sqlite_folder_is_a_store_error(tmp_path: object) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        open_store("sqlite:////nonexistent-folder-xyz/db.sqlite")


def test_unreachable_postgres_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot connect"):
        open_store("postgresql://postgres@127.0.0.1:1/none")
