"""The canonical records (stormwatch.events) and the analysis result (stormwatch.result): what they reject.

Every rejection names the field and says why; round trips keep what they were given.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from stormwatch.errors import InputError, RecordError
from stormwatch.events import Event, Rejected, normalize_ts, type_name, validate_account, validate_event
from stormwatch.result import (
    SCHEMA,
    AnalysisResult,
    Cluster,
    ClusterEvidence,
    Evidence,
    Judgement,
    LinkEdge,
)

BASE: dict[str, Any] = {"event_id": "e1", "ts": "2026-03-01T10:00:00Z", "account_id": "a1", "prompt": "hi"}


def bad_event(**over: Any) -> RecordError:
    obj = {**BASE, **over}
    obj = {k: v for k, v in obj.items() if v is not ...}
    with pytest.raises(RecordError) as info:
        validate_event(obj)
    return info.value


# --------------------------------------------------------------------------------------------
# events


@pytest.mark.parametrize(
    ("over", "field", "reason"),
    [
        ({"event_id": ...}, "event_id", "required field is missing"),
        ({"event_id": 5}, "event_id", "expected a string, got number"),
        ({"event_id": ""}, "event_id", "must not be empty"),
        ({"event_id": "x" * 300}, "event_id", "longer than 256 characters (300)"),
        ({"account_id": None}, "account_id", "required field is missing"),
        ({"ts": ...}, "ts", "required field is missing"),
        ({"ts": True}, "ts", "got boolean"),
        ({"ts": 1e20}, "ts", "epoch timestamp out of range"),
        ({"ts": "March 1st"}, "ts", "not an RFC 3339 date-time"),
        ({"ts": "2026-03-01T10:00:00"}, "ts", "has no offset or Z"),
        ({"ts": {"at": 1}}, "ts", "got object"),
        ({"prompt": ..., "messages": None}, "messages", "one of messages or prompt is required"),
        ({"prompt": 3}, "prompt", "expected a string, got number"),
        ({"messages": {"role": "user"}}, "messages", "expected an array, got object"),
        ({"messages": ["hi"]}, "messages[0]", "expected an object, got string"),
        ({"messages": [{"role": "admin", "content": "x"}]}, "messages[0].role", "role must be one of"),
        ({"messages": [{"role": "user", "content": None}]}, "messages[0].content", "got null"),
        ({"model": ["gpt"]}, "model", "expected a string, got array"),
        ({"refused": "yes"}, "refused", "expected a boolean, got string"),
        ({"attributes": [1]}, "attributes", "expected an object, got array"),
    ],
)
def test_validate_event_rejections_name_the_field(over: dict[str, Any], field: str, reason: str) -> None:
    err = bad_event(**over)
    assert err.field == field
    assert reason in err.reason
    assert field in str(err)


def test_validate_event_rejects_non_objects() -> None:
    with pytest.raises(RecordError, match="expected a JSON object, got array") as info:
        validate_event([BASE])
    assert info.value.field is None


def test_event_round_trip_keeps_unknown_fields_under_attributes() -> None:
    ev = validate_event(
        {
            **BASE,
            "prompt": None,
            "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u1", "name": "x"}],
            "ts": "2026-03-01T12:00:00+02:00",
            "refused": False,
            "model": "m",
            "attributes": {"k": 1},
            "vendor_extra": [1, 2],
        },
        source="test",
    )
    assert ev.ts == "2026-03-01T10:00:00.000000Z"
    assert ev.attributes == {"k": 1, "vendor_extra": [1, 2]}
    assert ev.source == "test"
    assert ev.text() == "u1"
    d = ev.to_dict()
    assert d["refused"] is False and d["model"] == "m" and "prompt" not in d
    again = validate_event(d)
    assert again.to_dict() == d
    assert Event(event_id="x", ts="t", account_id="a", prompt="p").to_dict() == {
        "event_id": "x",
        "ts": "t",
        "account_id": "a",
        "prompt": "p",
    }
    assert Event(event_id="x", ts="t", account_id="a").text() == ""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-01T10:00:00Z", "2026-03-01T10:00:00.000000Z"),
        ("2026-03-01T10:00:00.5Z", "2026-03-01T10:00:00.500000Z"),
        ("2026-03-01T10:00:00.1234567Z", "2026-03-01T10:00:00.123456Z"),
        ("2026-03-01T10:00:00-05:00", "2026-03-01T15:00:00.000000Z"),
        ("2026-03-01 10:00:00+00:00", "2026-03-01T10:00:00.000000Z"),
        (0, "1970-01-01T00:00:00.000000Z"),
        (1767225600.25, "2026-01-01T00:00:00.250000Z"),
    ],
)
def test_normalize_ts_accepts_rfc3339_and_epochs(value: Any, expected: str) -> None:
    assert normalize_ts(value) == expected


def test_type_name_uses_json_names() -> None:
    values: tuple[object, ...] = (None, True, 1, 1.5, "s", [], {})
    assert [type_name(v) for v in values] == [
        "null",
        "boolean",
        "number",
        "number",
        "string",
        "array",
        "object",
    ]
    assert type_name(b"x") == "bytes"


def test_validate_account_normalises_and_rejects() -> None:
    acct = validate_account(
        {
            "account_id": "a1",
            "email_domain": "Example.COM",
            "country": "DE",
            "status": "suspended",
            "created_at": 1767225600,
            "tier": "pro",
        }
    )
    assert acct.email_domain == "example.com"
    assert acct.created_at == "2026-01-01T00:00:00.000000Z"
    assert acct.attributes == {"tier": "pro"}
    cases: list[tuple[Any, str | None, str]] = [
        ("nope", None, "expected a JSON object"),
        ({"account_id": "a", "country": "Germany"}, "country", "ISO 3166-1"),
        ({"account_id": "a", "country": "de"}, "country", "ISO 3166-1"),
        ({"account_id": "a", "status": "banned"}, "status", "must be one of"),
        ({"account_id": "a", "phone_hash": 5}, "phone_hash", "expected a string"),
        ({"account_id": "a", "created_at": "soon"}, "created_at", "RFC 3339"),
        ({"account_id": ""}, "account_id", "must not be empty"),
    ]
    for obj, field, reason in cases:
        with pytest.raises(RecordError) as info:
            validate_account(obj)
        assert info.value.field == field, obj
        assert reason in info.value.reason


def test_rejected_location() -> None:
    assert Rejected("f.jsonl", 3, "bad").location() == "f.jsonl:3"
    assert Rejected("f.jsonl", None, "bad").location() == "f.jsonl"


# --------------------------------------------------------------------------------------------
# the analysis result


def judgement(**over: Any) -> dict[str, Any]:
    return {"account_id": "a1", "risk": 0.9, "level": "enforce", **over}


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ("not a mapping", "judgement must be an object"),
        (judgement(account_id=None), "account_id is required"),
        (judgement(account_id=""), "account_id must not be empty"),
        (judgement(account_id=7), "account_id must be a string"),
        (judgement(risk=None), "risk is required"),
        (judgement(risk="high"), "risk must be a number"),
        (judgement(risk=True), "risk must be a number"),
        (judgement(risk=1.5), "risk must be in 0..1"),
        (judgement(risk=math.nan), "risk must be in 0..1"),
        (judgement(confidence=-0.1), "confidence must be in 0..1"),
        (judgement(level="panic"), "level must be one of"),
        (judgement(flagged=False), "flagged contradicts level"),
        (judgement(ttps={"T1": "lots"}), "ttps must map TTP ids to shares"),
        (judgement(ttps=[1]), "ttps must be an object"),
        (judgement(evidence="x"), "must be a list"),
        (judgement(evidence=[{"kind": ""}]), "evidence kind must not be empty"),
        (judgement(evidence=[{"kind": "k", "text": 3}]), "evidence text must be a string"),
        (judgement(actor=5), "actor must be a string"),
    ],
)
def test_judgement_from_dict_rejections(d: Any, message: str) -> None:
    with pytest.raises(InputError, match=message):
        Judgement.from_dict(d)


def test_judgement_flagged_without_level_and_round_trip() -> None:
    j = Judgement.from_dict({"account_id": "a", "risk": 0.2, "flagged": True, "ttps": {"T1": 0.9, "T2": 0.01}})
    assert j.level == "enforce" and j.flagged
    assert j.ttp_ids() == ("T1",)
    assert Judgement.from_dict({"account_id": "a", "risk": 0}).level == "none"
    ev = Evidence.from_dict({"kind": "indicator_hit", "text": "t", "indicator_id": "i1"})
    assert ev.get("indicator_id") == "i1" and ev.get("missing", 3) == 3
    full = Judgement(account_id="a", risk=0.5, level="review", evidence=(ev,), confidence=0.4)
    assert Judgement.from_dict(full.to_dict()) == full
    with pytest.raises(InputError, match="must not repeat kind or text"):
        Evidence("k", "t", {"kind": "x"})


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"cluster_id": "c", "account_a": "a", "account_b": "b", "kind": "ip", "value": 5, "weight": 0.5}, "value"),
        ({"cluster_id": "c", "account_a": "", "account_b": "b", "kind": "ip", "value": "v", "weight": 0.5}, "empty"),
        ({"cluster_id": "c", "account_a": "a", "account_b": "b", "kind": "ip", "value": "v", "weight": 2}, "weight"),
    ],
)
def test_link_edge_rejections(d: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        LinkEdge.from_dict(d)


def test_cluster_from_dict_defaults_and_rejections() -> None:
    c = Cluster.from_dict({"cluster_id": "c1", "members": ["a", "b"], "evidence": {"link_kinds": {"ip": "2"}}})
    assert c.size == 2 and c.evidence.link_kinds == {"ip": 2}
    assert Cluster.from_dict(c.to_dict()) == c
    assert "members" not in c.to_dict(members=False)
    assert Cluster("c2", ("a",), size=-1).size == 1
    with pytest.raises(InputError, match="flagged_accounts must be >= 0"):
        Cluster("c3", (), flagged_accounts=-1)
    with pytest.raises(InputError, match="members must be a list"):
        Cluster.from_dict({"cluster_id": "c", "members": "ab"})
    with pytest.raises(InputError, match="cluster_id is required"):
        Cluster.from_dict({"members": []})
    with pytest.raises(InputError, match=r"confidence must be in 0\.\.1"):
        Cluster.from_dict({"cluster_id": "c", "confidence": 7})
    with pytest.raises(InputError, match="behaviour must be an object"):
        ClusterEvidence.from_dict({"behaviour": [1]})


def test_analysis_result_from_dict_rejections_and_counts() -> None:
    edge = {"cluster_id": "c1", "account_a": "a", "account_b": "b", "kind": "ip", "value": "1.2.3.4", "weight": 1}
    doc = {
        "schema": SCHEMA,
        "judgements": [judgement(account_id="a", actor="X"), judgement(account_id="b", level="review", risk=0.5)],
        "clusters": [{"cluster_id": "c1", "members": ["a", "b"]}],
        "links": [edge],
        "stats": {"intel_hit_accounts": "3"},
    }
    res = AnalysisResult.from_dict(doc)
    assert res.counts() == {
        "accounts": 2,
        "clusters": 1,
        "enforce": 1,
        "review": 1,
        "attributed": 1,
        "intel_hit_accounts": 3,
    }
    assert AnalysisResult.from_dict(res.to_dict()) == res
    for broken, message in [
        ({**doc, "schema": "v0"}, "unsupported analysis result schema"),
        ({**doc, "judgements": [judgement(account_id="a"), judgement(account_id="a")]}, "judged twice"),
        ({**doc, "clusters": [{"cluster_id": "c1"}, {"cluster_id": "c1"}]}, "cluster id appears twice"),
        ({**doc, "links": [{**edge, "cluster_id": "zz"}]}, "unknown cluster 'zz'"),
        ({**doc, "judgements": {"a": 1}}, "judgements must be a list"),
        ({**doc, "stats": [1]}, "stats must be an object"),
        ([doc], "analysis result must be an object"),
    ]:
        with pytest.raises(InputError, match=message):
            AnalysisResult.from_dict(broken)
