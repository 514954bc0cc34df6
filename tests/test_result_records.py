"""``stormwatch.result``: the one analysis result and the account graph, as records and as JSON."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from stormwatch.errors import InputError
from stormwatch.result import (
    SCHEMA,
    AccountFacts,
    AccountGraph,
    AccountState,
    AnalysisResult,
    Cluster,
    ClusterEvidence,
    Evidence,
    IntelHit,
    Judgement,
    LinkEdge,
    Observation,
)

HIT = {
    "kind": "indicator_hit",
    "indicator_id": "indicator--1",
    "indicator_name": "relay",
    "intrusion_sets": ["Forest Blizzard"],
    "account_id": "a1",
    "observable": {"kind": "ip", "value": "203.0.113.7"},
    "n": 3,
    "first_ts": None,
    "last_ts": None,
    "degree": 2,
    "strength": 0.8,
    "text": "ip 203.0.113.7 matches indicator relay",
}


def result() -> AnalysisResult:
    j1 = Judgement(
        "a1", 0.93, "enforce", cluster_id="cl_1", actor="Forest Blizzard", actor_ref="intrusion-set--fb",
        confidence=0.81, confidence_label="high", ttps={"LLMT-01": 0.6, "LLMT-02": 0.04},
        evidence=(Evidence.from_dict(HIT),), explanation={"reasons": ["intel"]}, model_version="m1",
        analyzed_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    j2 = Judgement("a2", 0.2, "none", cluster_id="cl_1", model_version="m1")
    j3 = Judgement("a3", 0.55, "review")
    c = Cluster(
        "cl_1", ("a1", "a2"), actor="Forest Blizzard", actor_ref="intrusion-set--fb", confidence=0.7,
        confidence_label="medium", flagged_accounts=1,
        evidence=ClusterEvidence({"device": 2}, (Evidence.from_dict(HIT),), {"score": 0.5}, 1),
    )  # fmt: skip
    edge = LinkEdge("cl_1", "a1", "a2", "device", "dev_9", 0.9)
    return AnalysisResult((j1, j2, j3), (c,), (edge,), model_version="m1", analyzed_at="2026-01-01T00:00:00Z",
                          stats={"intel_hit_accounts": 1})  # fmt: skip


def test_round_trip_through_json() -> None:
    r = result()
    doc = orjson.loads(orjson.dumps(r.to_dict()))
    assert doc["schema"] == SCHEMA
    back = AnalysisResult.from_dict(doc)
    assert back == r
    assert back.to_dict() == r.to_dict()


def test_flagged_is_enforce_and_counts() -> None:
    r = result()
    assert [j.flagged for j in r.judgements] == [True, False, False]
    assert r.counts() == {"accounts": 3, "clusters": 1, "enforce": 1, "review": 1, "attributed": 1,
                          "intel_hit_accounts": 1}  # fmt: skip
    assert r.judgements[0].to_dict()["flagged"] is True


def test_ttp_ids_keep_shares_of_at_least_five_percent_sorted() -> None:
    j = Judgement("a", 0.1, ttps={"LLMT-09": 0.5, "LLMT-01": 0.05, "LLMT-02": 0.049})
    assert j.ttp_ids() == ("LLMT-01", "LLMT-09")
    assert j.ttp_ids(0.0) == ("LLMT-01", "LLMT-02", "LLMT-09")


def test_evidence_item_keeps_its_fields_and_order() -> None:
    e = Evidence.from_dict(HIT)
    assert e.kind == "indicator_hit" and e.get("degree") == 2 and e.get("missing", "x") == "x"
    assert e.to_dict() == HIT
    keys = list(e.to_dict())
    assert keys[0] == "kind" and keys[-1] == "text"


def test_cluster_size_defaults_to_members_and_label() -> None:
    c = Cluster("c", ("a", "b", "c"), confidence_label="low")
    assert c.size == 3 and c.label == "low"
    assert "members" not in c.to_dict(members=False)
    assert Cluster.from_dict({"cluster_id": "c", "members": ["a"]}).size == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"risk": 1.5}, "risk must be in 0..1"),
        ({"risk": -0.1}, "risk must be in 0..1"),
        ({"risk": math.nan}, "risk must be in 0..1"),
        ({"risk": "high"}, "risk must be a number"),
        ({"risk": True}, "risk must be a number"),
        ({"confidence": 81}, "confidence must be in 0..1"),  # 0..100 is not accepted anywhere
        ({"level": "high"}, "level must be one of"),
        ({"account_id": ""}, "account_id must not be empty"),
        ({"ttps": {"LLMT-01": "lots"}}, "ttps must map"),
    ],
)
def test_judgement_rejects_bad_values(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"account_id": "a", "risk": 0.5, **kwargs}
    with pytest.raises(InputError, match=message):
        Judgement(**args)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"schema": "other/9"}, "unsupported analysis result schema"),
        ({"judgements": "a1"}, "judgements must be a list"),
        ({"judgements": [{"account_id": "a", "risk": 0.2}, {"account_id": "a", "risk": 0.3}]}, "judged twice"),
        ({"judgements": [{"account_id": "a", "risk": 0.2, "level": "none", "flagged": True}]}, "contradicts"),
        ({"judgements": [{"account_id": "a", "risk": 0.2, "evidence": {"n": 3}}]}, "evidence must be a list"),
        ({"judgements": [{"account_id": "a", "risk": 0.2, "evidence": [{"text": "no kind"}]}]}, "evidence kind"),
        ({"judgements": [{"risk": 0.2}]}, "account_id is required"),
        ({"judgements": [], "clusters": [{"cluster_id": "c"}, {"cluster_id": "c"}]}, "appears twice"),
        (
            {
                "judgements": [],
                "links": [
                    {"cluster_id": "x", "account_a": "a", "account_b": "b", "kind": "ip", "value": "v", "weight": 0.5}
                ],
            },
            "unknown cluster",
        ),
        ({"judgements": [], "clusters": [{"cluster_id": "c", "confidence": 70}]}, "confidence must be in 0..1"),
        ([1, 2], "analysis result must be an object"),
    ],
)
def test_from_dict_rejects_bad_documents(doc: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        AnalysisResult.from_dict(doc)


def test_judgement_from_dict_without_level_uses_flagged() -> None:
    assert Judgement.from_dict({"account_id": "a", "risk": 0.9, "flagged": True}).level == "enforce"
    assert Judgement.from_dict({"account_id": "a", "risk": 0.1}).level == "none"


def test_records_are_frozen() -> None:
    j = Judgement("a", 0.5)
    with pytest.raises(AttributeError):
        j.risk = 0.9  # type: ignore[misc]


def test_link_edge_checks_weight_and_names() -> None:
    with pytest.raises(InputError, match=r"weight must be in 0\.\.1"):
        LinkEdge("c", "a", "b", "ip", "v", 2.0)
    with pytest.raises(InputError, match="kind must not be empty"):
        LinkEdge("c", "a", "b", "", "v", 0.5)
    assert LinkEdge("c", "a", "b", "ip", "v", 0.5).to_dict(with_cluster=False) == {
        "account_a": "a", "account_b": "b", "kind": "ip", "value": "v", "weight": 0.5,
    }  # fmt: skip


def test_account_graph_round_trip_and_bad_input() -> None:
    g = AccountGraph(
        accounts=(AccountFacts("a1", "2026-01-01T00:00:00Z", device_id="d1"), AccountFacts("a2", device_id="d1")),
        observations=(Observation("a1", "ip", "203.0.113.7", "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"),),
        states=(AccountState("a3", 4, 0.5, 1, 0, {"content": {"score": 0.5}}),),
        hits=(IntelHit("a1", "indicator--1", "ip", "203.0.113.7", 2, None, None, 1, 0.7, ("intrusion-set--x",)),),
        intrusion_sets=({"type": "intrusion-set", "id": "intrusion-set--x", "name": "X"},),
        indicator_names={"indicator--1": "relay"},
    )
    assert g.account_ids() == ["a1", "a2", "a3"]
    back = AccountGraph.from_dict(orjson.loads(orjson.dumps(g.to_dict())))
    assert back == g
    with pytest.raises(InputError, match="bad AccountFacts"):
        AccountGraph.from_dict({"accounts": [{"account_id": "a", "shoe_size": 9}]})
    with pytest.raises(InputError, match="unsupported account graph schema"):
        AccountGraph.from_dict({"schema": "nope"})
    with pytest.raises(InputError, match="hits must be a list"):
        AccountGraph.from_dict({"hits": {"a": 1}})
