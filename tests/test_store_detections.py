"""store.detections (scores + model registry) and store.events (the event log's reads), both backends."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from stormwatch.errors import StoreError
from stormwatch.events import Event
from stormwatch.store import Store, open_store
from stormwatch.store.repos.detections import Detection, ModelComparison, ModelRecord
from stormwatch.store.repos.events import ScoringInput


@pytest.fixture
def st(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def _ev(i: int, account: str, **kw: object) -> Event:
    return Event(event_id=f"e{i}", ts=f"2025-01-01T00:00:{i:02d}Z", account_id=account, **kw)  # type: ignore[arg-type]


def _det(event: str, version: str, score: float, flagged: bool, ttp: str | None = None, **kw: object) -> Detection:
    fields: dict[str, object] = {
        "account_id": "a1",
        "conversation_id": None,
        "ts": "2025-01-01T00:00:00Z",
        "categories": "{}",
        "explanation": None,
        "scored_at": "2025-01-02T00:00:00Z",
        **kw,
    }
    return Detection(event, version, score=score, flagged=flagged, top_ttp=ttp, **fields)  # type: ignore[arg-type]


def test_insert_is_idempotent_and_reads_back_typed(st: Store) -> None:
    d = _det("e1", "v1", 0.91, True, "LLMT-03", explanation=orjson.dumps([{"why": "pretext"}]).decode())
    assert st.detections.insert([d, _det("e2", "v1", 0.1, False)]) == 2
    st.commit()
    st.detections.insert([_det("e1", "v1", 0.0, False)])  # the same (event, version): kept as first scored
    st.commit()
    got = st.detections.get("e1", "v1")
    assert got == d
    assert isinstance(got, Detection) and got.flagged is True
    assert st.detections.get("e1", "v2") is None
    assert st.detections.explanation("e1", "v1") == [{"why": "pretext"}]
    assert st.detections.explanation("e2", "v1") == []
    assert st.detections.explanation("nope", "v1") == []
    assert st.detections.insert([]) == 0


def test_insert_does_not_commit(st: Store) -> None:
    st.detections.insert([_det("e1", "v1", 0.5, False)])
    st.rollback()
    assert st.detections.get("e1", "v1") is None
    assert st.detections.counts_by_model() == {}


def test_counts_and_latest_version(st: Store) -> None:
    assert st.detections.latest_model_version() is None
    st.detections.insert(
        [
            _det("e1", "v1", 0.5, False, scored_at="2025-01-01T00:00:00Z"),
            _det("e2", "v1", 0.5, False, scored_at="2025-01-01T00:00:00Z"),
            _det("e1", "v2", 0.5, False, scored_at="2025-01-03T00:00:00Z"),
        ]
    )
    st.commit()
    assert st.detections.counts_by_model() == {"v1": 2, "v2": 1}
    assert st.detections.latest_model_version() == "v2"


def test_compare_two_versions(st: Store) -> None:
    rows = [
        # e1: both flag; e2: only a; e3: only b; e4: neither; e5: scored by a only (left out)
        _det("e1", "a", 0.9, True, "LLMT-01", account_id="x"),
        _det("e1", "b", 0.8, True, "LLMT-02", account_id="x"),
        _det("e2", "a", 0.7, True, "LLMT-01", account_id="y"),
        _det("e2", "b", 0.2, False, None, account_id="y"),
        _det("e3", "a", 0.1, False, None, account_id="z"),
        _det("e3", "b", 0.5, True, "LLMT-05", account_id="z"),
        _det("e4", "a", 0.1, False, None, account_id="z"),
        _det("e4", "b", 0.1, False, None, account_id="z"),
        _det("e5", "a", 0.99, True, "LLMT-01", account_id="w"),
    ]
    st.detections.insert(rows)
    st.commit()
    c = st.detections.compare("a", "b", top=2)
    assert isinstance(c, ModelComparison)
    assert (c.both_scored, c.both_flagged, c.only_a, c.only_b) == (4, 1, 1, 1)
    assert c.mean_abs_diff == pytest.approx((0.1 + 0.5 + 0.4 + 0.0) / 4)
    assert dict(c.top_ttp_changes) == {"LLMT-01 -> LLMT-02": 1, "LLMT-01 -> -": 1, "- -> LLMT-05": 1}
    assert sorted(c.accounts) == [("x", True, True), ("y", True, False), ("z", False, True)]
    assert [d.event_id for d in c.biggest_differences] == ["e2", "e3"]
    assert c.biggest_differences[0].a_flagged is True and c.biggest_differences[0].b_ttp is None
    empty = st.detections.compare("a", "nope")
    assert (empty.both_scored, empty.mean_abs_diff, empty.accounts, empty.biggest_differences) == (0, 0.0, (), ())


def test_model_registry_one_active(st: Store) -> None:
    assert st.detections.models() == []
    a = st.detections.register_model(name="first_tier", version="v1", kind="first_tier", status="active")
    assert isinstance(a, ModelRecord) and a.status == "active" and a.metadata == {}
    st.detections.register_model(name="first_tier", version="v2", kind="first_tier", status="candidate")
    b = st.detections.register_model(
        name="first_tier", version="v2", kind="first_tier", status="active", metadata={"path": "/m.json.gz"}
    )
    assert b.metadata == {"path": "/m.json.gz"}
    assert [(m.version, m.status) for m in st.detections.models()] == [("v1", "retired"), ("v2", "active")]
    assert [m.version for m in st.detections.models("active")] == ["v2"]
    assert st.detections.model("v1") is not None and st.detections.model("v3") is None
    # committed: another connection sees it
    st.rollback()
    assert [m.version for m in st.detections.models("active")] == ["v2"]


@pytest.mark.parametrize("name,version,status", [("m", "v", "shadow"), ("", "v", "active"), ("m", "", "candidate")])
def test_model_registry_refuses_bad_input(st: Store, name: str, version: str, status: str) -> None:
    with pytest.raises(StoreError):
        st.detections.register_model(name=name, version=version, kind="first_tier", status=status)
    assert st.detections.models() == []


def test_events_reads_after_a_cursor(st: Store) -> None:
    assert st.events.max_seq() == 0
    assert st.events.count_after(0) == 0
    assert list(st.events.scoring_batches(0, 10)) == []
    msgs = [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]
    st.insert_events(
        [
            _ev(1, "b", prompt="one"),
            _ev(2, "a", messages=msgs, refused=True, conversation_id="c1"),
            _ev(3, "b", prompt="three"),
        ]
    )
    top = st.events.max_seq()
    assert top >= 3
    assert st.events.count_after(0) == 3
    batches = list(st.events.scoring_batches(0, 2))
    assert [len(b) for b in batches] == [2, 1]
    flat = [r for b in batches for r in b]
    assert all(isinstance(r, ScoringInput) for r in flat)
    assert [r.event_id for r in flat] == ["e1", "e2", "e3"]
    assert [r.seq for r in flat] == sorted(r.seq for r in flat)
    assert flat[1].messages == msgs and flat[1].refused is True and flat[1].conversation_id == "c1"
    assert flat[0].prompt == "one" and flat[0].messages is None and flat[0].refused is None
    first = flat[0].seq
    assert st.events.count_after(first) == 2
    assert st.events.accounts_after(first) == ["a", "b"]
    assert st.events.accounts_after(flat[1].seq) == ["b"]
    assert st.events.accounts_after(top) == []
    assert [r.event_id for b in st.events.scoring_batches(flat[1].seq, 5) for r in b] == ["e3"]
    with pytest.raises(StoreError):
        next(st.events.scoring_batches(0, 0))
