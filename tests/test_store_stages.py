"""store.stages: the one writer of stage cursors, on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from stormwatch.errors import StoreError
from stormwatch.store import Store, open_store
from stormwatch.store.repos.stages import StageCursor


@pytest.fixture
def st(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def test_missing_cursor_reads_zero(st: Store) -> None:
    assert st.stages.get("score", "v1") == 0
    assert st.stages.get("analyze") == 0
    assert st.stages.cursors() == []


def test_set_is_an_upsert_per_stage_and_key(st: Store) -> None:
    st.stages.set("score", 10, key="v1")
    st.stages.set("score", 5, key="v2")
    st.stages.set("analyze", 7)
    st.commit()
    st.stages.set("score", 20, key="v1")
    st.commit()
    assert st.stages.get("score", "v1") == 20
    assert st.stages.get("score", "v2") == 5
    assert st.stages.get("analyze") == 7
    assert st.stages.get("analyze", "events") == 7
    got = st.stages.cursors()
    assert [(c.stage, c.key, c.last_seq) for c in got] == [
        ("analyze", "events", 7),
        ("score", "v1", 20),
        ("score", "v2", 5),
    ]
    assert all(isinstance(c, StageCursor) and c.updated_at for c in got)
    assert [c.key for c in st.stages.cursors("score")] == ["v1", "v2"]
    with pytest.raises(AttributeError):
        got[0].last_seq = 1  # type: ignore[misc]


def test_cursor_never_moves_back(st: Store) -> None:
    st.stages.set("score", 100, key="v1")
    st.commit()
    st.stages.set("score", 40, key="v1")
    st.commit()
    assert st.stages.get("score", "v1") == 100
    st.stages.set("score", 100, key="v1")  # the same value again: still fine
    st.commit()
    assert st.stages.get("score", "v1") == 100


def test_set_does_not_commit(st: Store, db_url: str) -> None:
    st.stages.set("analyze", 3)
    st.commit()
    st.stages.set("analyze", 9)
    st.rollback()  # the rows the cursor covered were rolled back: so is the cursor
    assert st.stages.get("analyze") == 3
    other = open_store(db_url, migrate=False)
    try:
        assert other.stages.get("analyze") == 3
    finally:
        other.close()


def test_reset_one_key_or_the_whole_stage(st: Store) -> None:
    st.stages.set("score", 10, key="v1")
    st.stages.set("score", 11, key="v2")
    st.stages.set("analyze", 12)
    st.commit()
    st.stages.reset("score", "v1")
    st.commit()
    assert st.stages.get("score", "v1") == 0
    assert st.stages.get("score", "v2") == 11
    st.stages.set("score", 3, key="v1")  # after a reset the cursor starts over
    st.commit()
    assert st.stages.get("score", "v1") == 3
    st.stages.reset("score")
    st.commit()
    assert [c.stage for c in st.stages.cursors()] == ["analyze"]


@pytest.mark.parametrize("stage,key,seq", [("", "k", 1), ("s", "", 1), ("s", "k", -1)])
def test_bad_input_is_refused(st: Store, stage: str, key: str, seq: int) -> None:
    with pytest.raises(StoreError):
        st.stages.set(stage, seq, key=key)


def test_concurrent_writers_leave_the_largest_value(db_url: str) -> None:
    """Several connections race to advance one cursor: it ends at the largest seq ever written,
    and a reader never sees it go backwards."""
    open_store(db_url).close()  # migrate once
    writers, per_writer = 4, 25
    errors: list[BaseException] = []
    seen: list[int] = []
    stop = threading.Event()
    start = threading.Barrier(writers + 1)

    def write(w: int) -> None:
        s = open_store(db_url, migrate=False)
        try:
            start.wait()
            # interleaved, out of order: writer w writes w, w+writers, ... in reverse halves
            seqs = [w + writers * i for i in range(per_writer)]
            for seq in seqs[per_writer // 2 :] + seqs[: per_writer // 2]:
                s.stages.set("score", seq, key="race")
                s.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            s.close()

    def read() -> None:
        s = open_store(db_url, migrate=False)
        try:
            start.wait()
            while not stop.is_set():
                seen.append(s.stages.get("score", "race"))
                s.commit()  # end the read transaction: see the newest value next time
        finally:
            s.close()

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    reader = threading.Thread(target=read)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    reader.join(60)
    assert not errors, errors
    s = open_store(db_url, migrate=False)
    try:
        assert s.stages.get("score", "race") == writers * per_writer - 1
        assert len(s.stages.cursors("score")) == 1
    finally:
        s.close()
    assert seen == sorted(seen), "a reader saw the cursor move back"
