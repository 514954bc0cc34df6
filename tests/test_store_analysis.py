"""``store.analysis``: the analysis repository's contract, on SQLite and PostgreSQL.

Writing and reading :mod:`stormwatch.result` records, filters and keyset pagination, one-record
upserts, analyze's own tables (features, observables, intel hits, the scan), the account graph,
and what happens with bad input or damaged rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.analyze.judge import analyze_graph
from stormwatch.analyze.pipeline import analyze
from stormwatch.errors import InputError, StoreError
from stormwatch.events import Account, Event
from stormwatch.intel.importer import import_files
from stormwatch.result import (
    AccountGraph,
    AnalysisResult,
    Cluster,
    ClusterEvidence,
    Evidence,
    IntelHit,
    Judgement,
    LinkEdge,
)
from stormwatch.store import Store, open_store
from test_analyze import VERSION, build, intel_bundle

T = "2026-01-01T00:00:00.000000Z"


def _j(account: str, risk: float, level: str = "none", **kw: Any) -> Judgement:
    return Judgement(account, risk, level, model_version="m1", analyzed_at=T, **kw)


def sample() -> AnalysisResult:
    hit = Evidence("indicator_hit", "ip 203.0.113.7 matches", {"indicator_id": "indicator--1", "account_id": "a1"})
    js = (
        _j("a1", 0.95, "enforce", cluster_id="c1", actor="Forest Blizzard", actor_ref="intrusion-set--fb",
           confidence=0.9, confidence_label="high", ttps={"LLMT-01": 0.7}, evidence=(hit,),
           explanation={"reasons": ["intel"]}),
        _j("a2", 0.95, "enforce", cluster_id="c1", actor="Forest Blizzard", actor_ref="intrusion-set--fb",
           confidence=0.6, confidence_label="medium"),
        _j("a3", 0.6, "review", cluster_id="c2", actor="Emerald Sleet", confidence=0.3, confidence_label="low"),
        _j("a4", 0.6, "review", cluster_id="c2"),
        _j("a5", 0.1),
        _j("a6", 0.0, cluster_id="c3"),
    )  # fmt: skip
    cs = (
        Cluster("c1", ("a1", "a2"), actor="Forest Blizzard", actor_ref="intrusion-set--fb", confidence=0.9,
                confidence_label="high", flagged_accounts=2,
                evidence=ClusterEvidence({"device": 1}, (hit,), {"score": 0.6}, 1), updated_at=T),
        Cluster("c2", ("a3", "a4"), actor="Emerald Sleet", confidence=0.3, confidence_label="low", updated_at=T),
        Cluster("c3", ("a6",), updated_at=T),
    )  # fmt: skip
    edges = (
        LinkEdge("c1", "a1", "a2", "device", "dev_1", 0.9),
        LinkEdge("c1", "a1", "a2", "ip", "203.0.113.7", 0.5),
        LinkEdge("c2", "a3", "a4", "payment", "pf_1", 0.7),
    )
    return AnalysisResult(js, cs, edges, model_version="m1", analyzed_at=T)


@pytest.fixture
def written(store: Store) -> Store:
    store.analysis.write(sample())
    store.commit()
    return store


def test_write_then_read_gives_the_same_records(written: Store) -> None:
    r = sample()
    got = written.analysis.result()
    assert got.judgements == r.judgements
    assert [c.cluster_id for c in got.clusters] == ["c1", "c2", "c3"]
    assert got.clusters == r.clusters
    assert got.links == r.links
    assert got.model_version == "m1" and got.analyzed_at == T
    assert written.analysis.judgement("a1") == r.judgements[0]
    assert written.analysis.judgement("nobody") is None


def test_write_replaces_the_previous_result(written: Store) -> None:
    written.analysis.write(AnalysisResult((_j("z1", 0.5, "review"),)))
    written.commit()
    assert [j.account_id for j in written.analysis.judgements()] == ["z1"]
    assert written.analysis.clusters() == [] and written.analysis.links() == []
    assert written.analysis.cluster("c1") is None


def test_judgement_filters(written: Store) -> None:
    def ids(**kw: Any) -> list[str]:
        return [j.account_id for j in written.analysis.judgements(**kw)]

    assert ids() == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert ids(flagged=True) == ["a1", "a2"]
    assert ids(flagged=False) == ["a3", "a4", "a5", "a6"]
    assert ids(level="review") == ["a3", "a4"]
    assert ids(actor="Forest Blizzard") == ["a1", "a2"] == ids(actor="intrusion-set--fb")
    assert ids(cluster_id="c2") == ["a3", "a4"]
    assert ids(min_risk=0.6) == ["a1", "a2", "a3", "a4"]
    assert ids(order="risk") == ["a1", "a2", "a3", "a4", "a5", "a6"]
    assert ids(account_ids=["a5", "a1", "nobody", "a1"]) == ["a1", "a5"]
    assert ids(account_ids=["a5", "a1"], flagged=True) == ["a1"]
    assert ids(account_ids=[]) == []


def test_many_ids_are_read_in_chunks(store: Store) -> None:
    store.analysis.write(AnalysisResult(tuple(_j(f"acct_{i:04d}", (i % 100) / 100) for i in range(1200))))
    store.commit()
    wanted = [f"acct_{i:04d}" for i in range(0, 1200, 2)]
    got = store.analysis.judgements(account_ids=wanted, order="risk")
    assert len(got) == 600
    assert {j.account_id for j in got} == set(wanted)
    assert got == sorted(got, key=lambda j: (-j.risk, j.account_id))


@pytest.mark.parametrize("limit", [1, 2, 4, 10])
def test_judgements_keyset_pagination_riskiest_first(written: Store, limit: int) -> None:
    everyone = written.analysis.judgements(order="risk")
    seen: list[Judgement] = []
    after: tuple[float, str] | None = None
    for _ in range(20):
        page = written.analysis.judgements(order="risk", after=after, limit=limit)
        seen += page
        if len(page) < limit:
            break
        after = (page[-1].risk, page[-1].account_id)
    assert seen == everyone  # ties on risk (a1/a2, a3/a4) keep their order across pages


def test_judgements_pagination_by_account(written: Store) -> None:
    assert [j.account_id for j in written.analysis.judgements(after=("a3",), limit=2)] == ["a4", "a5"]


def test_cluster_filters_order_and_pagination(written: Store) -> None:
    def ids(**kw: Any) -> list[str]:
        return [c.cluster_id for c in written.analysis.clusters(**kw)]

    assert ids() == ["c1", "c2", "c3"]  # largest first, ties by id
    assert ids(min_size=2) == ["c1", "c2"]
    assert ids(actor="Emerald Sleet") == ["c2"]
    assert ids(actor="Emerald Sleet", min_confidence=0.5) == []
    assert ids(order="flagged", limit=1) == ["c1"]
    assert ids(after=(2, "c1")) == ["c2", "c3"]
    assert ids(after=(2, "c2"), limit=5) == ["c3"]
    assert written.analysis.clusters()[0].members == ()
    assert written.analysis.clusters(members=True)[0].members == ("a1", "a2")


def test_cluster_detail_with_members_and_strongest_edges_first(written: Store) -> None:
    c = written.analysis.cluster("c1")
    assert c is not None and c.members == ("a1", "a2") and c.size == 2
    assert [e.kind for e in c.edges] == ["device", "ip"]
    one = written.analysis.cluster("c1", max_edges=1)
    assert one is not None and [e.value for e in one.edges] == ["dev_1"]
    assert written.analysis.edges("c2") == [LinkEdge("c2", "a3", "a4", "payment", "pf_1", 0.7)]
    assert written.analysis.cluster("zz") is None


def test_put_judgement_and_cluster_replace_one_record(written: Store) -> None:
    written.analysis.put_judgement(_j("a5", 0.99, "enforce"))
    written.analysis.put_judgement(_j("new", 0.3))
    written.analysis.put_cluster(
        Cluster("c3", ("a5", "a6", "new"), updated_at=T), [LinkEdge("c3", "a5", "a6", "org", "o1", 0.5)]
    )
    written.commit()
    a5 = written.analysis.judgement("a5")
    assert a5 is not None and a5.flagged and a5.risk == 0.99
    c3 = written.analysis.cluster("c3")
    assert c3 is not None and c3.members == ("a5", "a6", "new") and len(c3.edges) == 1
    with pytest.raises(InputError, match="given with cluster"):
        written.analysis.put_cluster(Cluster("c9", ("a",)), [LinkEdge("c1", "a", "b", "ip", "v", 0.5)])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.analysis.judgements(order="size"), "unknown judgement order"),
        (lambda s: s.analysis.judgements(limit=-1), "limit must be >= 0"),
        (lambda s: s.analysis.judgements(min_risk=2.0), "min_risk must be in"),
        (lambda s: s.analysis.judgements(order="risk", after=("a1",)), "after must be"),
        (lambda s: s.analysis.clusters(order="risk"), "unknown cluster order"),
        (lambda s: s.analysis.clusters(order="flagged", after=(2, "c1")), "after must be"),
        (lambda s: s.analysis.clusters(limit=-5), "limit must be >= 0"),
        (lambda s: list(s.analysis.scan("m1", chunk=0)), "chunk must be >= 1"),
    ],
)
def test_bad_arguments_raise_input_error(store: Store, call: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        call(store)


def test_damaged_rows_raise_store_error_naming_the_record(store: Store) -> None:
    raw = store.execute  # tests may seed raw rows on the concrete store
    raw(
        "INSERT INTO account_judgements (account_id, risk, flagged, level, ttps, evidence, explanation, analyzed_at)"
        " VALUES ('bad', 0.5, 0, 'none', '{}', '{not json', '{}', ?)",
        (T,),
    )
    raw(
        "INSERT INTO account_judgements (account_id, risk, flagged, level, ttps, evidence, explanation, analyzed_at)"
        " VALUES ('odd', 0.5, 0, 'severe', '{}', '[]', '{}', ?)",
        (T,),
    )
    store.commit()
    with pytest.raises(StoreError, match=r"judgement of 'bad'.*malformed"):
        store.analysis.judgement("bad")
    with pytest.raises(StoreError, match=r"judgement of 'odd'.*level"):
        store.analysis.judgement("odd")


def test_legacy_ttp_lists_read_as_shares(store: Store) -> None:
    store.execute(
        "INSERT INTO account_judgements (account_id, risk, flagged, level, ttps, evidence, explanation, analyzed_at)"
        " VALUES ('x', 0.5, 0, 'none', ?, '[]', '{}', ?)",
        (orjson.dumps(["LLMT-02", {"id": "LLMT-01"}]).decode(), T),
    )
    store.commit()
    j = store.analysis.judgement("x")
    assert j is not None and j.ttp_ids() == ("LLMT-01", "LLMT-02")


# -- analyze's own tables ------------------------------------------------------------------------------


@dataclass
class Feat:
    account_id: str
    n_events: int = 2
    first_ts: str = T
    last_ts: str = T
    n_high: int = 1
    max_score: float = 0.9
    content_score: float = 0.8
    ttp_breadth: int = 1
    home_utc_offset: float | None = 3.0
    refusals: int = 0
    rephrases: int = 1
    features: dict[str, Any] = field(default_factory=lambda: {"content": {"score": 0.8}})


def test_features_attributes_and_hits(store: Store) -> None:
    repo = store.analysis
    attrs = [("a1", "ip", "203.0.113.7", 3, T, T), ("a2", "ip", "203.0.113.7", 1, T, T), ("a2", "url", "u", 1, T, T)]
    repo.replace_features([Feat("a1"), Feat("a2")], attrs, "m1")
    store.commit()
    assert repo.feature_state("m1").known == 2 and repo.feature_state("m1").stale == 0
    assert repo.feature_state("m2").stale == 2
    assert repo.features("a1") == {"content": {"score": 0.8}} and repo.features("zz") is None
    assert repo.crowded_values("ip", 2) == {"203.0.113.7"} and repo.crowded_values("ip", 3) == set()
    assert [a.kind for a in repo.attributes(account_ids=["a2"])] == ["ip", "url"]
    assert {a.account_id for a in repo.attributes(kinds=["ip"])} == {"a1", "a2"}
    # incremental: only a2's rows are replaced
    repo.replace_features([Feat("a2", n_events=9)], [("a2", "ip", "198.51.100.1", 1, T, T)], "m1", accounts=["a2"])
    store.commit()
    assert [a.value for a in repo.attributes(account_ids=["a2"])] == ["198.51.100.1"]
    assert [a.value for a in repo.attributes(account_ids=["a1"])] == ["203.0.113.7"]
    hit = IntelHit("a1", "indicator--1", "ip", "203.0.113.7", 3, T, T, 2, 0.7, ("intrusion-set--x",))
    repo.replace_hits([hit])
    store.commit()
    assert repo.hits() == [hit] == repo.hits(["a1"]) and repo.hits(["a2"]) == []
    repo.replace_hits([])
    store.commit()
    assert repo.hits() == []


def test_scan_reads_events_with_their_scores(store: Store) -> None:
    store.insert_events(
        [
            Event("e1", T, "a1", ip="203.0.113.7", prompt="x" * 3000 + "TAIL"),
            Event("e2", T, "a2", messages=[{"role": "user", "content": "hi"}]),
        ]
    )
    store.execute(
        "INSERT INTO detections (event_id, model_version, account_id, conversation_id, ts, score, flagged, top_ttp,"
        " categories, explanation, scored_at) VALUES ('e1', 'm1', 'a1', NULL, ?, 0.9, 1, NULL, '{}', NULL, ?)",
        (T, T),
    )
    store.commit()
    repo = store.analysis
    assert repo.max_event_seq() >= 2 and repo.accounts_with_events_after(0) == ["a1", "a2"]
    chunks = [c for c in repo.scan("m1", chunk=1) if len(c)]
    assert [c.event_id for c in chunks] == [("e1",), ("e2",)]
    assert chunks[0].score == (0.9,) and chunks[1].score == (None,)
    assert chunks[0].tail[0].endswith("TAIL") and len(chunks[0].tail[0]) == 1500
    by_account = list(repo.scan("m1", ["a2"]))
    assert [c.account_id for c in by_account] == [("a2",)]
    # by account (events, then their scores from the detections index): the same rows as the scan in order
    rows = {c.event_id[0]: tuple(getattr(c, f)[0] for f in c.__dataclass_fields__) for c in chunks}
    both = [c for c in repo.scan("m1", ["a1", "a2"]) if len(c)]
    got = [tuple(getattr(c, f)[k] for f in c.__dataclass_fields__) for c in both for k in range(len(c))]
    assert sorted(got) == sorted(rows.values()) and len(got) == 2
    assert repo.event_days("a1") == {"2026-01-01": 1}
    assert [r.event_id for r in repo.top_requests("a1", "m1", 5)] == ["e1"]
    assert repo.activity(["a1", "zz"])["a1"].events == 1 and "zz" not in repo.activity(["zz"])


# -- the pure algorithms fed from a file ---------------------------------------------------------------


def test_a_graph_from_a_file_gives_the_stored_result(db_url: str, tmp_path: Path) -> None:
    """analyze's algorithms read an in-memory graph: the graph written to JSON and read back gives the
    result the store-backed run wrote."""
    store = open_store(db_url)
    try:
        build(store)
        store.upsert_accounts([Account("acct_lonely")])
        import_files(store, [intel_bundle(tmp_path / "intel.json")])
        analyze(store, progress=False, score=False, version=VERSION)
        stored = store.analysis.result()
        graph = store.analysis.load_graph()
    finally:
        store.close()
    path = tmp_path / "graph.json"
    path.write_bytes(orjson.dumps(graph.to_dict()))
    again = analyze_graph(AccountGraph.from_dict(orjson.loads(path.read_bytes())), VERSION, now=stored.analyzed_at)
    assert again.judgements == stored.judgements
    assert sorted(again.clusters, key=lambda c: c.cluster_id) == list(stored.clusters)
    assert sorted(again.links, key=repr) == sorted(stored.links, key=repr)
    assert again.counts()["enforce"] == 5
