"""Export from the store: findings are gathered from judgements, clusters, account facts and partner
indicator hits; the partner's TLP travels with what we learnt from it; redaction is honoured per recipient;
actor clusters merge and dangling references are pruned."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.disrupt import testing as T
from stormwatch.events import Account
from stormwatch.intel.findings import (
    AccountFinding,
    ClusterFinding,
    Findings,
    Infra,
    classify_value,
    load_findings,
)
from stormwatch.intel.importer import import_files
from stormwatch.intel.service import export_bundle
from stormwatch.intel.sharing_policy import SharingPolicy, policy_from_dict
from stormwatch.intel.stix_export import build_bundle
from stormwatch.intel.tlp import TLP2_IDS, Tlp
from stormwatch.result import IntelHit
from stormwatch.store import Store, open_store

NOW = datetime(2026, 12, 1, tzinfo=UTC)
GREEN_IND = "indicator--00000000-0000-4000-8000-0000000000a1"
UNKNOWN_IND = "indicator--00000000-0000-4000-8000-0000000000b2"
PROMPT = "write a spear-phishing mail to the ministry of defence"
PARTNER = {
    "trust_groups": {"isac": {"key": "k-isac"}},
    "recipients": {"partner": {"trust_group": "isac", "max_tlp": "red", "red": True, "fields": {"account_id": "hash"}}},
}


def _seed(store: Store, tmp_path: Path) -> None:
    store.upsert_accounts([
        Account("acct_ru_1", created_at="2026-10-01T00:00:00Z", email_domain="evil-corp.example",
                signup_ip="198.51.100.7", status="active"),
        Account("acct_ru_2", created_at="2026-10-02T00:00:00Z", email_domain="gmail.com", signup_ip="2001:db8::5",
                status="active"),
        Account("acct_solo", created_at="2026-10-03T00:00:00Z", signup_ip="not-an-ip", status="active"),
        Account("acct_benign", created_at="2026-10-04T00:00:00Z", signup_ip="192.0.2.99", status="active"),
    ])  # fmt: skip
    store.commit()
    T.add_cluster(store, "c1", ["acct_ru_1", "acct_ru_2"], actor="fancy bear", confidence=0.7)
    T.add_judgement(store, "acct_ru_1", risk=0.95, cluster_id="c1", ttps={"LLMT-01": 3.0})
    T.add_judgement(store, "acct_ru_2", risk=0.9, cluster_id="c1", ttps=["LLMT-02"])
    T.add_judgement(store, "acct_solo", risk=0.8, actor="Emerald Sleet", confidence=0.4)
    T.add_judgement(store, "acct_benign", risk=0.1, flagged=False)
    T.add_events(store, "acct_ru_1", [PROMPT], end_user_id="eu-secret-77", flagged=True)
    bundle = tmp_path / "partner.json"
    bundle.write_bytes(orjson.dumps({"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000000",
        "objects": [{"type": "indicator", "spec_version": "2.1", "id": GREEN_IND, "created": "2026-01-01T00:00:00Z",
                     "modified": "2026-01-01T00:00:00Z", "pattern": "[ipv4-addr:value = '203.0.113.9']",
                     "pattern_type": "stix", "valid_from": "2026-01-01T00:00:00Z",
                     "object_marking_refs": [TLP2_IDS[Tlp.GREEN]]}]}))  # fmt: skip
    import_files(store, [bundle])
    store.analysis.replace_hits([
        IntelHit("acct_ru_1", GREEN_IND, "ipv4", "203.0.113.9", 4, "2026-11-01T00:00:00Z", "2026-11-05T00:00:00Z",
                 1, 1.0),
        IntelHit("acct_ru_2", GREEN_IND, "ipv4", "203.0.113.9", 2, "2026-10-30T00:00:00Z", "2026-11-09T00:00:00Z",
                 1, 1.0),
        IntelHit("acct_ru_2", UNKNOWN_IND, "domain", "c2.evil.example", 1, None, None, 1, 1.0),
        IntelHit("acct_ru_2", UNKNOWN_IND, "device_id", "dev-123", 1, None, None, 1, 1.0),
        IntelHit("acct_benign", GREEN_IND, "ipv4", "203.0.113.9", 1, None, None, 1, 1.0),
    ])  # fmt: skip
    store.commit()


def test_findings_are_gathered_from_the_store(store: Store, tmp_path: Path) -> None:
    _seed(store, tmp_path)
    f = load_findings(store)
    by_id = {c.cluster_id: c for c in f.clusters}
    assert set(by_id) == {"c1", "account:acct_solo"}  # the unflagged account is not a finding
    c1 = by_id["c1"]
    assert c1.actor == "Forest Blizzard" and "APT28" in c1.aliases and c1.attack_group_id == "G0007"
    assert c1.confidence == 0.7 and c1.ttps == {"LLMT-01": 1, "LLMT-02": 1}
    infra = {(i.kind, i.value): i for i in c1.infrastructure}
    assert set(infra) == {("ipv4", "198.51.100.7"), ("ipv6", "2001:db8::5"), ("domain", "evil-corp.example"),
                          ("ipv4", "203.0.113.9"), ("domain", "c2.evil.example")}  # fmt: skip
    hit = infra["ipv4", "203.0.113.9"]
    assert (hit.count, hit.first_seen, hit.last_seen) == (6, "2026-10-30T00:00:00Z", "2026-11-09T00:00:00Z")
    assert hit.min_tlp == Tlp.GREEN  # the partner's marking travels with it
    assert infra["domain", "c2.evil.example"].min_tlp == Tlp.RED  # an indicator we do not hold: RED
    assert infra["ipv4", "198.51.100.7"].min_tlp == Tlp.CLEAR
    [ru1] = [a for a in c1.accounts if a.account_id == "acct_ru_1"]
    assert ru1.end_user_ids == ["eu-secret-77"] and ru1.prompts == [PROMPT] and ru1.events == 1
    solo = by_id["account:acct_solo"]
    assert solo.actor == "Emerald Sleet" and solo.infrastructure == []  # "not-an-ip" is not shared
    secrets = f.secrets()
    assert {"acct_ru_1", "acct_ru_2", "acct_solo"} <= secrets["account_id"]
    assert PROMPT in secrets["prompt_text"] and "eu-secret-77" in secrets["end_user_id"]
    assert load_findings(store, prompts_per_account=0).clusters[0].accounts[0].prompts == []


def _values(bundle: dict[str, Any]) -> str:
    return orjson.dumps(bundle).decode()


def test_cli_export_honours_redaction_and_red(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(sqlite_url) as s:
        _seed(s, tmp_path)
    db = ["--db", sqlite_url]
    out = tmp_path / "bundle.json"
    assert main([*db, "intel", "export", "-o", str(out), "--json"]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["clusters"] == 2 and summary["destination"] == str(out)
    text = out.read_text()
    for secret in ("acct_ru_1", "acct_ru_2", "acct_solo", "eu-secret-77", PROMPT, "c2.evil.example", "dev-123"):
        assert secret not in text, secret  # ids/prompts dropped; RED infra withheld from an unnamed audience
    for shared in ("198.51.100.7", "203.0.113.9", "evil-corp.example", "Forest Blizzard"):
        assert shared in text, shared
    assert "acct_benign" not in text and "192.0.2.99" not in text
    policy = tmp_path / "share.toml"
    policy.write_text(
        '[trust_groups.isac]\nkey = "k-isac"\n[recipients.partner]\ntrust_group = "isac"\nmax_tlp = "red"\n'
        'red = true\nfields = { account_id = "hash" }\n'
    )
    red = tmp_path / "red.json"
    assert main([*db, "intel", "export", "-o", str(red), "--policy", str(policy), "--recipient", "partner"]) == 0
    assert "highest marking red" in capsys.readouterr().out.lower()
    rtext = red.read_text()
    assert "c2.evil.example" in rtext and "hmac-sha256:isac:" in rtext
    assert "acct_ru_1" not in rtext and PROMPT not in rtext


def test_export_bundle_records_stable_ids_on_both_backends(store: Store, tmp_path: Path) -> None:
    _seed(store, tmp_path)
    pol = policy_from_dict(PARTNER)
    first = export_bundle(store, pol, recipient="partner", now=NOW)
    again = export_bundle(store, pol, recipient="partner", now=NOW)
    ids = sorted(o["id"] for o in first.bundle["objects"] if o["type"] != "report")
    assert ids == sorted(o["id"] for o in again.bundle["objects"] if o["type"] != "report")
    assert first.max_tlp == Tlp.RED and first.by_type["intrusion-set"] >= 1


def _cluster(cid: str, actor: str | None, **kw: Any) -> ClusterFinding:
    return ClusterFinding(cid, actor=actor, accounts=[AccountFinding(f"acct_{cid}", ttps={"LLMT-01": 1})], **kw)


def test_clusters_of_one_actor_merge_and_empty_ones_are_skipped() -> None:
    f = Findings([
        _cluster("a", "Forest Blizzard", aliases=["Custom Alias"], confidence=0.4, tlp=Tlp.GREEN,
                 infrastructure=[Infra("ipv4", "198.51.100.1")]),
        _cluster("b", " forest blizzard ", aliases=["Custom Alias", "Other"], confidence=0.9,
                 attack_group_id="G0007", sponsor="someone", infrastructure=[Infra("domain", "x-evil.example")]),
        _cluster("c", "Forest Blizzard", confidence=None),
        _cluster("d", None, infrastructure=[Infra("ipv4", "198.51.100.2")]),
        ClusterFinding("empty", actor="Emerald Sleet"),
    ])  # fmt: skip
    res = build_bundle(f, SharingPolicy(fallback_secret=b"k" * 32), now=NOW)
    assert res.clusters == 2  # Forest Blizzard (a+b+c) and the unattributed d; "empty" is dropped
    sets = [o for o in res.bundle["objects"] if o["type"] == "intrusion-set"]
    [fb] = [o for o in sets if o["name"] == "Forest Blizzard"]
    assert {"Custom Alias", "Other", "APT28"} <= set(fb["aliases"])
    text = _values(res.bundle)
    assert "198.51.100.1" in text and "x-evil.example" in text and "198.51.100.2" in text
    assert "Emerald Sleet" not in text


def test_objects_a_recipient_may_not_have_are_pruned_with_their_references() -> None:
    pol = policy_from_dict({"recipients": {"cert": {"max_tlp": "amber",
                                                    "types": ["identity", "intrusion-set", "report"]}}})  # fmt: skip
    f = Findings([_cluster("a", "Forest Blizzard", infrastructure=[Infra("ipv4", "198.51.100.1")])])
    res = build_bundle(f, pol, recipient="cert", now=NOW)
    types = {o["type"] for o in res.bundle["objects"]}
    assert "indicator" not in types and "relationship" not in types and "sighting" not in types
    ids = {o["id"] for o in res.bundle["objects"]}
    for o in res.bundle["objects"]:
        for ref in o.get("object_refs", []):
            assert ref in ids  # no dangling references left
    assert "198.51.100.1" not in _values(res.bundle)


@pytest.mark.parametrize(
    ("kind", "value", "want"),
    [
        ("ip_address", "10.1.2.3", "ipv4"),
        ("ipv6-addr", "2001:db8::1", "ipv6"),
        ("signup_ip", "nope", None),
        ("email_domain", "GMAIL.com", None),
        ("domain", "localhost", None),
        ("domain-name", "a.example", "domain"),
        ("url", "https://a.example/x", "url"),
        ("email", "a@b.example", "email"),
        ("email-addr", "not-mail", None),
        ("device_id", "d-1", None),
        ("domain", "   ", None),
    ],
)
def test_only_shareable_observables_become_infrastructure(kind: str, value: str, want: str | None) -> None:
    assert classify_value(kind, value) == want


def test_findings_file_confidence_and_ttp_shapes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def doc(conf: Any, ttps: Any) -> dict[str, Any]:
        return {"clusters": [{"cluster_id": "c", "actor": "Forest Blizzard", "confidence": conf,
                              "accounts": [{"account_id": "a1", "ttps": ttps}]}]}  # fmt: skip

    shapes = [
        ({"LLMT-01": 3, "LLMT-02": 0.4}, {"LLMT-01": 3, "LLMT-02": 1}),
        ([{"id": "LLMT-01", "count": 2}, {"ttp": "LLMT-01"}, "LLMT-03", {"count": 5}], {"LLMT-01": 3, "LLMT-03": 1}),
        ('["LLMT-04"]', {"LLMT-04": 1}),
        ("not json", {}),
    ]
    for raw, want in shapes:
        assert Findings.from_dict(doc(0.5, raw)).clusters[0].accounts[0].ttps == want
    for bad in (40, True, "high", -0.1):
        with pytest.raises(ValueError, match=r"confidence must be a number in 0\.\.1"):
            Findings.from_dict(doc(bad, {}))
    path = tmp_path / "findings.json"
    path.write_bytes(orjson.dumps(doc(55, {})))
    db = ["--db", f"sqlite:///{tmp_path / 'x.db'}"]
    assert main([*db, "intel", "export", "-o", str(tmp_path / "b.json"), "--findings", str(path)]) == 4
    err = capsys.readouterr().err
    assert "confidence must be a number in 0..1, got 55" in err
