"""The audit repository (``store.audit``) on SQLite and PostgreSQL: one writer of the hash chain for every
package, concurrent writers never fork it, and event text is never returned without its audit entry."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from stormwatch.disrupt.audit import verify
from stormwatch.errors import StoreError
from stormwatch.events import Event
from stormwatch.store import Store, open_store
from stormwatch.store.repos.audit import (
    EVENT_TEXT_READ,
    GENESIS,
    AuditEntry,
    AuditEvent,
    add_listener,
    entry_hash,
    remove_listener,
)

T0 = "2026-01-01T00:00:00.000000Z"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def test_append_chains_entries_and_reads_them_back(store: Store) -> None:
    assert store.audit.head() is None
    e1 = store.audit.append(AuditEvent("analyst:a", "case.opened", "case:c1", {"x": [1, None]}), T0)
    e2 = store.audit.append(AuditEvent("system", "token.create", "token:t1", None, policy_id="p1"))
    store.commit()
    assert (e1.seq, e1.prev_hash) == (1, GENESIS)
    assert (e2.seq, e2.prev_hash) == (2, e1.entry_hash)
    assert e1.entry_hash == entry_hash(GENESIS, T0, AuditEvent("analyst:a", "case.opened", "case:c1"), '{"x":[1,null]}')
    assert store.audit.entries() == [e1, e2]
    assert store.audit.entries(target="token:t1") == [e2]
    assert store.audit.entries(limit=1, offset=1) == [e2]
    head = store.audit.head()
    assert head is not None and (head.seq, head.entry_hash) == (2, e2.entry_hash)
    assert store.audit.count() == 2 and store.audit.count(action="case.opened") == 1
    links = store.audit.chain()
    assert [link.seq for link in links] == [1, 2] and links[0].evidence_json == '{"x":[1,null]}'
    assert verify(store).ok


def test_an_uncommitted_append_rolls_back_with_its_change(store: Store) -> None:
    store.audit.append(AuditEvent("a", "x", "t"))
    store.commit()
    store.audit.append(AuditEvent("a", "y", "t"))
    store.rollback()
    assert [e.action for e in store.audit.entries()] == ["x"]
    assert store.audit.append(AuditEvent("a", "z", "t")).seq == 2  # the rolled-back seq is reused: no gap
    store.commit()
    assert verify(store).ok


def test_listeners_hear_each_appended_entry(store: Store) -> None:
    heard: list[AuditEntry] = []
    add_listener(heard.append)
    try:
        entry = store.audit.append(AuditEvent("a", "x", "t"))
    finally:
        remove_listener(heard.append)
    store.audit.append(AuditEvent("a", "y", "t"))
    store.commit()
    assert heard == [entry]


def test_unserialisable_evidence_is_refused_before_anything_is_written(store: Store) -> None:
    with pytest.raises(TypeError):
        store.audit.append(AuditEvent("a", "x", "t", {"bad": object()}))
    store.rollback()
    assert store.audit.entries() == []


def test_concurrent_writers_never_fork_the_chain(db_url: str) -> None:
    """Four connections append at once: seqs 1..N, each entry chained to the one before."""
    open_store(db_url).close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(me: str) -> None:
        s = open_store(db_url)
        try:
            barrier.wait()
            for i in range(10):
                while True:
                    try:
                        s.audit.append(AuditEvent(me, "x", f"t:{i}"))
                        s.commit()
                        break
                    except StoreError:  # SQLite: another writer got there first; retry the transaction
                        s.rollback()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=run, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    s = open_store(db_url)
    try:
        result = verify(s)
        assert result.ok, result.message
        assert result.entries == 40
    finally:
        s.close()


def _seed_events(store: Store) -> None:
    store.insert_events(
        [
            Event(event_id="e1", ts=T0, account_id="a1", prompt="first"),
            Event(event_id="e2", ts="2026-01-02T00:00:00.000000Z", account_id="a1", prompt="second"),
            Event(event_id="e3", ts="2026-01-03T00:00:00.000000Z", account_id="a1", prompt="third"),
        ]
    )
    store.execute(
        "INSERT INTO account_judgements (account_id, risk, flagged, level, ttps, evidence, explanation, analyzed_at, "
        "model_version) VALUES ('a1', 0.9, 1, 'enforce', '[]', '[]', '{}', ?, 'm1')",
        (T0,),
    )
    for event_id, model, score in (("e1", "m1", 0.9), ("e2", "m1", 0.2), ("e3", "m0", 0.99)):
        store.execute(
            "INSERT INTO detections (event_id, model_version, account_id, conversation_id, ts, score, flagged, "
            "top_ttp, categories, explanation, scored_at) VALUES (?, ?, 'a1', NULL, ?, ?, ?, NULL, '[]', NULL, ?)",
            (event_id, model, T0, score, int(score > 0.5), T0),
        )
    store.commit()


def test_top_event_ids_rank_by_the_judging_model(store: Store) -> None:
    _seed_events(store)
    # m1 judged the account: its scores first; e3 (scored by m0 only) follows
    assert store.audit.top_event_ids("a1", limit=10) == ["e1", "e2", "e3"]
    assert store.audit.top_event_ids("a1", limit=1, offset=1) == ["e2"]
    assert store.audit.top_event_ids("nobody", limit=10) == []
    assert store.audit.account_has_events("a1") and not store.audit.account_has_events("nobody")
    assert store.audit.count() == 0  # choosing reads no text and audits nothing


def test_read_events_audits_each_read_before_returning_text(db_url: str) -> None:
    store = open_store(db_url)
    try:
        _seed_events(store)
        got = store.audit.read_events(["e3", "missing", "e1"], actor="token:t1:bob", via="api")
        assert got[1] is None
        assert got[0] is not None and got[0].text == "third"
        assert [d.model_version for d in got[0].detections] == ["m0"]
        assert got[2] is not None and got[2].to_dict()["detections"][0]["flagged"] is True
    finally:
        store.close()
    other = open_store(db_url)  # committed: another connection sees the entries
    try:
        reads = other.audit.entries()
        assert [(e.action, e.target, e.actor) for e in reads] == [
            (EVENT_TEXT_READ, "event:e3", "token:t1:bob"),
            (EVENT_TEXT_READ, "event:e1", "token:t1:bob"),
        ]
        assert reads[0].evidence == {"account_id": "a1", "via": "api"}
    finally:
        other.close()
