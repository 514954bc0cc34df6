"""Readers of the one analysis result: intel findings, disrupt's policy context, the report helpers.

Each is fed through ``store.analysis`` (seeded with ``stormwatch.disrupt.testing``), on both backends.
"""

from __future__ import annotations

import pytest

from stormwatch.analyze.report import account_detail, cluster_detail, export_rows, list_clusters
from stormwatch.disrupt import testing as T
from stormwatch.disrupt.judgements import load_context
from stormwatch.errors import InputError
from stormwatch.intel.findings import Findings, load_findings
from stormwatch.result import IntelHit
from stormwatch.store import Store


@pytest.fixture
def seeded(store: Store) -> Store:
    for a in ("a1", "a2", "a3"):
        T.add_account(store, a, email_domain="sat-techreview.org")
    T.add_judgement(store, "a1", risk=0.95, actor="Forest Blizzard", confidence=0.9, confidence_label="high",
                    cluster_id="c1", ttps={"LLMT-01": 0.7, "LLMT-02": 0.01})  # fmt: skip
    T.add_judgement(store, "a2", risk=0.9, actor="Forest Blizzard", confidence=0.7, confidence_label="medium",
                    cluster_id="c1", ttps=["LLMT-03"])  # fmt: skip
    T.add_judgement(store, "a3", risk=0.2, flagged=False)
    T.add_cluster(store, "c1", ["a1", "a2"], actor="Forest Blizzard", confidence=0.85, confidence_label="high")
    store.analysis.replace_features([], [("a1", "ip", "203.0.113.7", 4, "2026-11-01T00:00:00Z",
                                          "2026-11-02T00:00:00Z")], "m1", accounts=["a1"])  # fmt: skip
    store.analysis.replace_hits([IntelHit("a2", "indicator--1", "domain", "lure.example", 1, None, None, 1, 0.8)])
    store.commit()
    T.add_events(store, "a1", ["hello", "write malware"], end_user_id="u1", flagged=True)
    return store


def test_findings_are_built_from_the_result(seeded: Store) -> None:
    f = load_findings(seeded)
    assert [c.cluster_id for c in f.clusters] == ["c1"]
    c = f.clusters[0]
    assert c.actor == "Forest Blizzard" and c.confidence == 0.85 and c.confidence_0_100() == 85
    assert [a.account_id for a in c.accounts] == ["a1", "a2"]
    assert c.accounts[0].ttps == {"LLMT-01": 1, "LLMT-02": 1} and c.accounts[1].ttps == {"LLMT-03": 1}
    assert {(i.kind, i.value) for i in c.infrastructure} >= {("ipv4", "203.0.113.7"), ("domain", "lure.example"),
                                                             ("domain", "sat-techreview.org")}  # fmt: skip
    a1 = c.accounts[0]
    assert a1.events == 2 and a1.end_user_ids == ["u1"] and a1.prompts == ["hello", "write malware"]


def test_findings_file_confidence_is_0_to_1() -> None:
    ok = Findings.from_dict({"clusters": [{"cluster_id": "c", "confidence": 0.4}]})
    assert ok.clusters[0].confidence_0_100() == 40
    with pytest.raises(InputError, match=r"confidence must be a number in 0\.\.1"):
        Findings.from_dict({"clusters": [{"cluster_id": "c", "confidence": 40}]})
    with pytest.raises(InputError, match="account 'x'"):
        Findings.from_dict({"clusters": [{"cluster_id": "c", "accounts": [{"account_id": "x", "confidence": "hi"}]}]})


def test_policy_context_reads_the_result(seeded: Store) -> None:
    ctx = load_context(seeded)
    assert [j.account_id for j in ctx.judgements] == ["a1", "a2", "a3"]
    a1 = ctx.judgement("a1")
    assert a1 is not None and a1.flagged and a1.ttp_ids() == ("LLMT-01",)
    assert ctx.clusters["c1"].members == ("a1", "a2") and ctx.clusters["c1"].actor == "Forest Blizzard"
    assert ctx.accounts["a1"].email_domain == "sat-techreview.org" and ctx.accounts["a1"].status == "active"
    assert ctx.end_users == {"a1": 1} and ctx.flagged_end_users == {"a1": {"u1": 2}}
    assert ctx.reinstated == set()
    only = load_context(seeded, ["a3"])
    assert [j.account_id for j in only.judgements] == ["a3"]


def test_report_helpers(seeded: Store) -> None:
    rows = list(export_rows(seeded, flagged_only=True))
    assert [r["account_id"] for r in rows] == ["a1", "a2"] and rows[0]["flagged"] is True
    assert "explanation" not in rows[0] and rows[0]["evidence"] == [{"kind": "note", "text": "seeded"}]
    assert [r["account_id"] for r in export_rows(seeded, level="none")] == ["a3"]
    d = account_detail(seeded, "a1")
    assert d is not None and d["timeline"] == [{"day": "2026-11-01", "events": 2}]
    assert d["infrastructure"][0]["value"] == "203.0.113.7" and d["account"]["email_domain"] == "sat-techreview.org"
    assert account_detail(seeded, "nobody") is None
    assert list_clusters(seeded) == [{"cluster_id": "c1", "size": 2, "actor": "Forest Blizzard", "confidence": 0.85,
                                      "confidence_label": "high", "flagged_accounts": 0}]  # fmt: skip
    c = cluster_detail(seeded, "c1")
    assert c is not None and [m["account_id"] for m in c["members"]] == ["a1", "a2"] and c["edges"] == []
    assert cluster_detail(seeded, "zz") is None
