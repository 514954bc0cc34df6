"""The disrupt repository (``store.disrupt``) on SQLite and PostgreSQL: its contract, its error paths,
and the exactly-once guarantees of the delivery claims under concurrent claimers."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, replace

import pytest

from stormwatch.errors import StoreError
from stormwatch.events import Event
from stormwatch.store import Store, open_store
from stormwatch.store.repos.disrupt import Action, Case, Decision

T0 = "2026-01-01T00:00:00.000000Z"
T1 = "2026-01-01T00:01:00.000000Z"
T2 = "2026-01-01T00:02:00.000000Z"
LATER = "2026-01-01T01:00:00.000000Z"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def decision(n: int, *, account: str = "a1", mode: str = "enforce", status: str = "planned") -> Decision:
    return Decision(
        decision_id=f"dec_{n}",
        mode=mode,
        policy_id="p1",
        policy_version="1",
        rule_version="sha256:aa",
        account_id=account,
        action="suspend",
        end_user_id=None,
        params={"days": 3},
        status=status,
        reasons=("risk >= 0.9",),
        evidence={"risk": 0.95},
        model_version="m1",
        decided_by="policy:p1",
        decided_at=f"2026-01-01T00:00:0{n}.000000Z",
        cluster_id="cl_1",
    )


def action(n: int, *, account: str = "a1", status: str = "pending", created: str = T0) -> Action:
    return Action(
        action_id=f"act_{n:03d}",
        decision_id=f"dec_{n}",
        kind="suspend",
        account_id=account,
        end_user_id=None,
        params={"n": n},
        status=status,
        attempts=0,
        last_error=None,
        next_attempt_at=None,
        created_at=created,
        delivered_at=None,
        sink=None,
    )


# -- decisions -----------------------------------------------------------------------------------------
def test_decisions_insert_once_and_read_back(store: Store) -> None:
    d = decision(1)
    assert store.disrupt.insert_decision(d, "run_1") is True
    assert store.disrupt.insert_decision(d, "run_2") is False  # the id is the idempotency key
    store.commit()
    got = store.disrupt.get_decision("dec_1")
    assert got == d
    with pytest.raises(FrozenInstanceError):
        got.status = "x"  # type: ignore[misc]
    assert store.disrupt.get_decision("dec_missing") is None
    assert got.to_dict()["reasons"] == ["risk >= 0.9"]


def test_decisions_filter_page_and_status_moves_skip_shadow(store: Store) -> None:
    store.disrupt.insert_decision(decision(1), "r")
    store.disrupt.insert_decision(decision(2, mode="shadow"), "r")
    store.disrupt.insert_decision(decision(3, status="upheld"), "r")
    store.disrupt.insert_decision(decision(4, account="a2"), "r")
    store.commit()
    assert [d.decision_id for d in store.disrupt.list_decisions(account_id="a1")] == ["dec_1", "dec_2", "dec_3"]
    assert [d.decision_id for d in store.disrupt.list_decisions(mode="shadow")] == ["dec_2"]
    assert [d.decision_id for d in store.disrupt.list_decisions(limit=2, offset=1)] == ["dec_2", "dec_3"]
    moved = store.disrupt.set_decision_status("a1", ("planned", "upheld"), "under_appeal")
    store.commit()
    assert moved == ["dec_1", "dec_3"]  # the shadow decision stays as it was
    assert store.disrupt.get_decision("dec_2").status == "planned"  # type: ignore[union-attr]
    assert store.disrupt.set_decision_status("a1", (), "x") == []


# -- actions and claims ---------------------------------------------------------------------------------
def test_actions_insert_once_count_and_cancel(store: Store) -> None:
    assert store.disrupt.insert_action(action(1)) is True
    assert store.disrupt.insert_action(replace(action(1), kind="warn")) is False
    store.disrupt.insert_action(action(2, status="dead"))
    store.disrupt.insert_action(action(3, status="delivered"))
    store.commit()
    assert store.disrupt.count_actions() == {"pending": 1, "dead": 1, "delivered": 1}
    assert store.disrupt.get_action("act_001").kind == "suspend"  # type: ignore[union-attr]
    assert store.disrupt.get_action("nope") is None
    assert store.disrupt.cancel_action("act_002") is True
    assert store.disrupt.cancel_action("act_003") is False  # delivered: cannot be cancelled
    assert store.disrupt.cancel_action("nope") is False
    store.commit()
    assert [a.action_id for a in store.disrupt.list_actions(status="cancelled")] == ["act_002"]


def test_claims_are_exclusive_until_the_lease_expires(store: Store) -> None:
    for n in range(5):
        store.disrupt.insert_action(action(n, created=f"2026-01-01T00:00:0{n}.000000Z"))
    store.commit()
    first = store.disrupt.claim_actions("me", now=T0, lease_until=T1, limit=3)
    assert [a.action_id for a in first] == ["act_000", "act_001", "act_002"]  # oldest first
    other = store.disrupt.claim_actions("other", now=T0, lease_until=T1, limit=10)
    assert [a.action_id for a in other] == ["act_003", "act_004"]
    assert store.disrupt.claim_actions("third", now=T0, lease_until=T1, limit=10) == []
    assert sorted(store.disrupt.live_claims(T0)) == ["me", "other"]
    # after the lease, a third run takes them over; the first run's outcome then no longer counts
    taken = store.disrupt.claim_actions("third", now=T2, lease_until=LATER, limit=10)
    assert len(taken) == 5
    assert store.disrupt.record_delivery("act_000", "me", attempts=1, delivered_at=T2, sink="s") is False
    assert store.disrupt.renew_claims("me", ["act_000", "act_001"], lease_until=LATER) == set()
    assert store.disrupt.renew_claims("third", ["act_000", "act_001"], lease_until=LATER) == {"act_000", "act_001"}
    assert store.disrupt.record_delivery("act_000", "third", attempts=1, delivered_at=T2, sink="s") is True
    store.commit()
    got = store.disrupt.get_action("act_000")
    assert got is not None and got.status == "delivered" and got.sink == "s" and got.attempts == 1


def test_claims_take_over_named_dead_claimers_and_respect_retry_time(store: Store) -> None:
    store.disrupt.insert_action(action(1))
    store.disrupt.insert_action(action(2))
    store.commit()
    assert len(store.disrupt.claim_actions("dead-run", now=T0, lease_until=LATER, limit=1)) == 1
    # "dead-run" holds act_001 until LATER; named as dead, its claim is taken over at once
    taken = store.disrupt.claim_actions("me", now=T0, lease_until=LATER, limit=5, take_over=["dead-run"])
    assert [a.action_id for a in taken] == ["act_001", "act_002"]
    # a failed send waits for its retry time, unclaimed
    assert store.disrupt.record_failure(
        "act_001", "me", attempts=1, error="HTTP 500", next_attempt_at=T2, dead=False
    ) is True  # fmt: skip
    assert store.disrupt.record_failure(
        "act_001", "me", attempts=2, error="again", next_attempt_at=T2, dead=False
    ) is False  # the claim was released  # fmt: skip
    store.commit()
    assert store.disrupt.next_retry_at(T0) == T2
    assert store.disrupt.claim_actions("other", now=T1, lease_until=T2, limit=5) == []  # not due / held
    due = store.disrupt.claim_actions("me", now=T2, lease_until=LATER, limit=5)
    assert [a.action_id for a in due] == ["act_001"] and due[0].last_error == "HTTP 500"
    assert store.disrupt.record_failure("act_001", "me", attempts=5, error="gone", next_attempt_at=T2, dead=True)
    store.commit()
    dead = store.disrupt.get_action("act_001")
    assert dead is not None and dead.status == "dead" and dead.next_attempt_at is None
    assert store.disrupt.requeue_dead("act_001") is True
    assert store.disrupt.requeue_dead("act_001") is False  # a second requeue changes nothing
    store.commit()
    again = store.disrupt.get_action("act_001")
    assert again is not None and again.status == "pending" and again.attempts == 0


def test_claim_limit_must_be_positive(store: Store) -> None:
    with pytest.raises(StoreError, match="limit"):
        store.disrupt.claim_actions("me", now=T0, lease_until=T1, limit=0)
    assert store.disrupt.renew_claims("me", [], lease_until=T1) == set()


def test_concurrent_claimers_never_share_an_action(db_url: str) -> None:
    """Four connections claim in a loop at once: every action is claimed by exactly one of them."""
    seed = open_store(db_url)
    try:
        for n in range(60):
            seed.disrupt.insert_action(action(n))
        seed.commit()
    finally:
        seed.close()
    claimed: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def run(me: str) -> None:
        s = open_store(db_url)
        mine: list[str] = []
        try:
            barrier.wait()
            while True:
                try:
                    got = s.disrupt.claim_actions(me, now=T0, lease_until=LATER, limit=3)
                except StoreError as exc:  # SQLite: the database was busy; try again
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    continue
                if not got:
                    break
                mine += [a.action_id for a in got]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            claimed[me] = mine
            s.close()

    threads = [threading.Thread(target=run, args=(f"run{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    every = [a for ids in claimed.values() for a in ids]
    assert len(every) == len(set(every)) == 60


# -- cases ----------------------------------------------------------------------------------------------
def test_cases_open_update_notes_and_labels(store: Store) -> None:
    case = store.disrupt.insert_case("case_1", "a1", reason="risky", opened_by="policy:p", ts=T0, decision_id="dec_1")
    assert isinstance(case, Case) and case.status == "open" and case.assignee is None
    assert store.disrupt.open_case_for("a1") == case
    assert store.disrupt.open_case_for("a2") is None
    assert store.disrupt.count_cases("a1") == 1
    assert store.disrupt.update_case("case_1", {"assignee": "bob"}, ts=T1) is True
    n1 = store.disrupt.add_note("case_1", kind="note", author="analyst:bob", body="looks bad", ts=T1)
    n2 = store.disrupt.add_note("case_1", kind="evidence", author="analyst:bob", body={"url": "x"}, ts=T1)
    assert n2.note_id > n1.note_id
    assert [n.body for n in store.disrupt.list_notes("case_1")] == ["looks bad", {"url": "x"}]
    sets = {"label": "true_positive", "label_actor": "FROZENLAKE", "status": "closed", "closed_by": "analyst:bob"}
    assert store.disrupt.update_case("case_1", sets, ts=T2) is True
    assert store.disrupt.update_case("case_1", {"assignee": "eve"}, ts=T2) is False  # closed: no change
    assert store.disrupt.update_case("nope", {}, ts=T2) is False
    store.commit()
    got = store.disrupt.get_case("case_1")
    assert got is not None and got.assignee == "bob" and got.updated_at == T2 and got.label == "true_positive"
    assert [c.case_id for c in store.disrupt.labelled_cases()] == ["case_1"]
    assert [c.case_id for c in store.disrupt.list_cases(status="closed", assignee="bob")] == ["case_1"]
    assert store.disrupt.list_cases(status="open") == []
    assert store.disrupt.get_case("nope") is None


def test_update_case_refuses_columns_it_does_not_own(store: Store) -> None:
    store.disrupt.insert_case("case_1", "a1", reason="r", opened_by="x", ts=T0, decision_id=None)
    for column in ("case_id", "account_id", "updated_at", "status = 'open', label"):
        with pytest.raises(StoreError, match="cannot set case column"):
            store.disrupt.update_case("case_1", {column: "x"}, ts=T1)


# -- appeals --------------------------------------------------------------------------------------------
def test_appeals_are_decided_once(store: Store) -> None:
    a = store.disrupt.insert_appeal("apl_1", "a1", reason="not me", filed_by="user:a1", ts=T0)
    assert a.status == "open" and a.decided_by is None
    assert store.disrupt.count_appeals("a1") == 1
    assert store.disrupt.decide_appeal("apl_1", status="reinstated", decided_by="analyst:x", ts=T1, note="ok")
    assert not store.disrupt.decide_appeal("apl_1", status="upheld", decided_by="analyst:y", ts=T2, note="no")
    assert not store.disrupt.decide_appeal("nope", status="upheld", decided_by="analyst:y", ts=T2, note="")
    store.commit()
    got = store.disrupt.get_appeal("apl_1")
    assert got is not None and got.status == "reinstated" and got.decided_by == "analyst:x"
    assert store.disrupt.reinstated_accounts() == {"a1"}
    assert [x.appeal_id for x in store.disrupt.list_appeals(account_id="a1")] == ["apl_1"]
    assert store.disrupt.list_appeals(status="open") == []
    assert store.disrupt.get_appeal("nope") is None


# -- labels -----------------------------------------------------------------------------------------------
def test_label_events_prefer_flagged_and_fall_back_to_all(store: Store) -> None:
    store.insert_events(
        [
            Event(event_id="e1", ts=T0, account_id="a1", prompt="hello"),
            Event(event_id="e2", ts=T1, account_id="a1", prompt="write malware"),
            Event(event_id="e3", ts=T0, account_id="a2", prompt="hi"),
        ]
    )
    store.execute(
        "INSERT INTO detections (event_id, model_version, account_id, conversation_id, ts, score, flagged, top_ttp, "
        "categories, explanation, scored_at) VALUES (?, 'm1', 'a1', NULL, ?, 0.9, 1, NULL, '[]', NULL, ?)",
        ("e2", T1, T1),
    )
    store.commit()
    assert [e.event_id for e in store.disrupt.label_events("a1", flagged_only=True)] == ["e2"]
    assert [e.event_id for e in store.disrupt.label_events("a1", flagged_only=False)] == ["e1", "e2"]
    assert [e.prompt for e in store.disrupt.label_events("a2", flagged_only=True)] == ["hi"]  # none flagged
    assert store.disrupt.label_events("nobody", flagged_only=True) == []
