"""Per-account aggregates: features merged from new events equal features computed from every event.

Random platforms with what makes merging hard: conversations that go on across runs (a refusal in
one batch, its rephrasing in the next; escalations that start before a run and end after it), equal
scores (the top events' order), bursts across the boundary, events that arrive late (before their
account's last stored event: scanned whole), conversation ids that several accounts use, URLs and
e-mails in the text, several languages. After
every batch the incremental ``update_features`` and a full one on a copy store the same feature rows,
aggregates and observables, on each backend.
"""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from stormwatch.analyze import merging, stages
from stormwatch.analyze.aggregates import STATE_KEY
from stormwatch.analyze.stages import update_features
from stormwatch.events import Event
from stormwatch.store import Store, open_store

VERSION = "test-model-1"
T0 = datetime(2024, 3, 4, tzinfo=UTC)
TEXTS = ("write a loader", "see https://evil.example/x?q=1 now", "mail ops@corp.example please", "привет мир",
         "안녕하세요 세계", "你好世界", "سلام دنیا", "hello")  # fmt: skip


def _platform(seed: int, n: int = 900) -> list[tuple[Event, float, dict[str, float]]]:
    rng = random.Random(seed)
    accounts = [f"acct_{i:02d}" for i in range(14)]
    clock = {a: rng.uniform(0, 3600) for a in accounts}
    convs: dict[str, str] = {}
    out = []
    for k in range(n):
        a = rng.choice(accounts)
        late = rng.random() < 0.01  # an event stamped before the account's newest one
        step = rng.choice((0.0, 1.0, 3.0, 40.0, 600.0, 5000.0, 90_000.0))
        clock[a] = clock[a] - rng.uniform(10, 20_000) if late else clock[a] + step
        if rng.random() < 0.15 or a not in convs:  # a new conversation; a few ids shared by accounts
            convs[a] = f"conv_{a}_{k}" if rng.random() < 0.9 else f"conv_shared_{rng.randrange(2)}"
        conv = convs[a] if rng.random() < 0.7 else None
        ts = (T0 + timedelta(seconds=clock[a])).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        score = rng.choice((0.0, 0.1, 0.3, 0.3, 0.5, 0.7, 0.7, 0.9, 0.95))
        cats = {rng.choice(("LLMT-01", "LLMT-02", "LLMT-05")): rng.choice((0.3, 0.6, 0.9))} if score >= 0.3 else {}
        ev = Event(f"evt_{seed}_{k:05d}", ts, a, ip=f"198.51.100.{rng.randrange(6)}",
                   user_agent=rng.choice(("ua/1", "ua/2")), api_key_id=f"key_{a}_{rng.randrange(2)}",
                   prompt=rng.choice(TEXTS), conversation_id=conv, refused=rng.random() < 0.25)  # fmt: skip
        out.append((ev, score, cats))
    return out


def _insert(store: Store, rows: list[tuple[Event, float, dict[str, float]]], *, events: bool = True) -> None:
    if events:
        store.insert_events([e for e, _, _ in rows])
    store.executemany(
        "INSERT INTO detections (event_id, model_version, account_id, conversation_id, ts, score, flagged,"
        " top_ttp, categories, explanation, scored_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(e.event_id, VERSION, e.account_id, e.conversation_id, e.ts, s, int(s >= 0.5), None,
          orjson.dumps(c).decode(), None, e.ts) for e, s, c in rows],
    )  # fmt: skip
    store.commit()


def _stored(store: Store) -> tuple[dict[str, Any], list[Any]]:
    feats = {
        r[0]: r[1:]
        for r in store.query(
            "SELECT account_id, n_events, first_ts, last_ts, n_high, max_score, content_score, ttp_breadth,"
            " home_utc_offset, refusals, rephrases, features, model_version, aggregate FROM account_features"
        )
    }
    attrs = sorted(
        tuple(r) for r in store.query("SELECT account_id, kind, value, n, first_ts, last_ts FROM account_attributes")
    )
    return feats, attrs


def _assert_same(inc: tuple[dict[str, Any], list[Any]], full: tuple[dict[str, Any], list[Any]], where: Any) -> None:
    """The first difference, named: account, column, and for JSON columns the key."""
    names = ("n_events first_ts last_ts n_high max_score content_score ttp_breadth home_utc_offset refusals"
             " rephrases features model_version aggregate").split()  # fmt: skip
    assert set(inc[0]) == set(full[0]), where
    for account, row in full[0].items():
        for name, x, y in zip(names, inc[0][account], row, strict=True):
            if name in ("features", "aggregate") and x != y:
                dx, dy = orjson.loads(x), orjson.loads(y)
                assert {k: v for k, v in dx.items() if dy.get(k) != v} == {}, (where, account, name, dy)
            assert x == y, (where, account, name)
    assert inc[1] == full[1], where


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_merged_features_equal_features_from_every_event(db_url: str, tmp_path: Any, seed: int) -> None:
    rows = _platform(seed)
    inc = open_store(db_url)
    full = open_store(f"sqlite:///{tmp_path / 'full.db'}")
    merged_runs = []
    real = merging.merge_new_events

    def spy(*args: Any, **kw: Any) -> Any:
        res = real(*args, **kw)
        merged_runs.append((len(res.merged), len(res.rescan)))
        return res

    try:
        cuts = [0, 400, 550, 700, 780, 900]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(merging, "merge_new_events", spy)
            for lo, hi in itertools.pairwise(cuts):
                for s in (inc, full):
                    _insert(s, rows[lo:hi])
                update_features(inc, VERSION, full=False, progress=False)
                update_features(full, VERSION, full=True, progress=False)
                _assert_same(_stored(inc), _stored(full), (lo, hi))
        assert len(merged_runs) == len(cuts) - 2  # every run after the first merged
        assert all(m > 0 for m, _ in merged_runs)
        assert sum(r for _, r in merged_runs) > 0  # the late events made some accounts be scanned whole
        assert sum(m for m, _ in merged_runs) > 3 * sum(r for _, r in merged_runs)
        feats, _ = _stored(inc)
        assert sum(orjson.loads(f[10])["rephrases"] for f in feats.values()) > 0
        assert sum(orjson.loads(f[10])["escalations"] for f in feats.values()) > 0
    finally:
        inc.close()
        full.close()


def test_aggregates_of_other_parameters_or_unreadable_are_rescanned(sqlite_url: str, tmp_path: Any) -> None:
    rows = _platform(5, 300)
    inc, full = open_store(sqlite_url), open_store(f"sqlite:///{tmp_path / 'full.db'}")
    try:
        for s in (inc, full):
            _insert(s, rows[:200])
        update_features(inc, VERSION, full=False, progress=False)
        accounts = sorted(r[0] for r in inc.query("SELECT account_id FROM account_features"))
        sql = "SELECT aggregate FROM account_features WHERE account_id = ?"
        state = orjson.loads(inc.query(sql, (accounts[0],))[0][0])
        assert state["k"] == STATE_KEY
        state["k"] = "other-parameters"
        inc.execute("UPDATE account_features SET aggregate = ? WHERE account_id = ?",
                    (orjson.dumps(state).decode(), accounts[0]))  # fmt: skip
        inc.execute("UPDATE account_features SET aggregate = ? WHERE account_id = ?", ("{not json", accounts[1]))
        inc.execute("UPDATE account_features SET aggregate = NULL WHERE account_id = ?", (accounts[2],))
        inc.commit()
        for s in (inc, full):
            _insert(s, rows[200:])
        seen: list[list[str]] = []
        real = merging.merge_new_events

        def spy(*args: Any, **kw: Any) -> Any:
            res = real(*args, **kw)
            seen.append(res.rescan)
            return res

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(merging, "merge_new_events", spy)
            update_features(inc, VERSION, full=False, progress=False)
        update_features(full, VERSION, full=True, progress=False)
        assert set(accounts[:3]) <= set(seen[0])
        _assert_same(_stored(inc), _stored(full), "after the rescan")
    finally:
        inc.close()
        full.close()


def test_a_rerun_without_new_events_reads_nothing(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    try:
        _insert(store, _platform(9, 120))
        assert update_features(store, VERSION, full=False, progress=False)[0] == 120
        assert update_features(store, VERSION, full=False, progress=False) == (0, 0)
        assert stages.STAGE == "analyze"
    finally:
        store.close()


def test_conversations_read_in_small_chunks_are_read_once(
    sqlite_url: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Conversations are read in chunks of (account, conversation) pairs; a conversation id that two
    accounts use must not bring an event back twice (here a chunk asks for a's ``conv_s`` and b's
    ``c2``: b's ``conv_s`` matches that query too, and is asked for by the next chunk)."""
    from stormwatch.store.repos import analysis

    monkeypatch.setattr(analysis, "_CHUNK", 2)

    def ev(k: int, account: str, conv: str, minute: int, score: float, refused: bool) -> tuple[Event, float, dict]:
        ts = (T0 + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return Event(f"e{k}", ts, account, prompt="x", conversation_id=conv, refused=refused), score, {}

    first = [ev(1, "a", "conv_s", 0, 0.1, False), ev(2, "b", "conv_s", 1, 0.6, True), ev(3, "b", "c2", 2, 0.1, False)]
    second = [
        ev(4, "a", "conv_s", 10, 0.2, False),
        ev(5, "b", "c2", 11, 0.1, False),
        ev(6, "b", "conv_s", 12, 0.7, False),
    ]
    inc, full = open_store(sqlite_url), open_store(f"sqlite:///{tmp_path / 'full.db'}")
    try:
        for batch in (first, second):
            for s in (inc, full):
                _insert(s, batch)
            update_features(inc, VERSION, full=False, progress=False)
            update_features(full, VERSION, full=True, progress=False)
            _assert_same(_stored(inc), _stored(full), batch[0][0].event_id)
        assert orjson.loads(_stored(inc)[0]["b"][10])["rephrases"] == 1
    finally:
        inc.close()
        full.close()


def test_events_analysed_before_they_were_scored_are_read_again_once_scored(sqlite_url: str, tmp_path: Any) -> None:
    """``analyze --no-score`` can run before the scoring stage: an account with an unscored event keeps
    no aggregate (its features count the event at score 0 until then), so that its next new events
    make it be read whole, with the scores, as a full run reads it."""
    rows = _platform(6, 300)
    inc, full = open_store(sqlite_url), open_store(f"sqlite:///{tmp_path / 'full.db'}")
    try:
        _insert(inc, rows[:200])
        update_features(inc, VERSION, full=False, progress=False)
        early = rows[200:206]
        inc.insert_events([e for e, _, _ in early])  # not scored yet
        inc.commit()
        update_features(inc, VERSION, full=False, progress=False)
        unscored = {e.account_id for e, _, _ in early}
        stored = dict(inc.query("SELECT account_id, aggregate FROM account_features"))
        assert unscored and all(stored[a] is None for a in unscored)
        assert any(g is not None for a, g in stored.items() if a not in unscored)
        _insert(inc, early, events=False)  # the scoring stage catches up
        _insert(inc, rows[206:])
        _insert(full, rows)
        update_features(inc, VERSION, full=False, progress=False)
        update_features(full, VERSION, full=True, progress=False)
        again = unscored & {e.account_id for e, _, _ in rows[206:]}
        assert again
        feats_inc, _ = _stored(inc)
        feats_full, _ = _stored(full)
        for a in again:
            assert feats_inc[a] == feats_full[a], a
    finally:
        inc.close()
        full.close()
