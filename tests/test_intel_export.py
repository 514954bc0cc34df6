"""STIX export: validity (stix2-validator, zero errors), mapping, stable ids, and the redaction policy
(property-based: arbitrary secrets in findings never reach a bundle unless the policy allows them)."""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stix2validator import ValidationOptions, validate_instance

from stormwatch.cli import main
from stormwatch.errors import ConfigError
from stormwatch.intel.findings import AccountFinding, ClusterFinding, Findings, Infra
from stormwatch.intel.ids import MemoryRegistry
from stormwatch.intel.sharing_policy import SharingPolicy, policy_from_dict
from stormwatch.intel.stix_export import RedactionError, build_bundle, check_leaks
from stormwatch.intel.taxii import server as taxii_server
from stormwatch.intel.tlp import TLP2_IDS, Tlp
from stormwatch.store import open_store

NOW = datetime(2024, 2, 14, 12, tzinfo=UTC)
PERMISSIVE = {
    "trust_groups": {"isac": {"key": "k-isac"}},
    "recipients": {
        "partner-a": {
            "principals": ["partner-a"],
            "trust_group": "isac",
            "max_tlp": "red",
            "red": True,
            "fields": {"account_id": "hash", "email": "allow", "prompt_text": "allow", "analyst_notes": "allow"},
        },
        "cert": {"principals": ["cert"], "max_tlp": "green"},
    },
}


def sample() -> Findings:
    acct = AccountFinding(
        "acct_7f3a9c2e",
        risk=0.9,
        ttps={"LLMT-01": 5, "LLMT-02": 2},
        emails=["research.desk@sat-techreview.org"],
        end_user_ids=["enduser-4411"],
        prompts=["Summarise satellite protocol docs for target X"],
        responses=["Here is a summary"],
        first_seen="2024-01-01T00:00:00Z",
        last_seen="2024-02-01T00:00:00Z",
        events=41,
    )
    red = ClusterFinding(
        "c-red",
        actor="Emerald Sleet",
        confidence=0.6,
        tlp=Tlp.RED,
        accounts=[AccountFinding("acct_red_000001", ttps={"LLMT-04": 3}, events=5)],
        infrastructure=[Infra("domain", "eastbrook-univ.org")],
    )
    return Findings(
        [
            ClusterFinding(
                "c1",
                actor="Forest Blizzard",
                confidence=0.8,
                accounts=[acct],
                infrastructure=[
                    Infra("ipv4", "203.0.113.45", "2024-01-02T00:00:00Z", "2024-01-30T00:00:00Z", 12),
                    Infra("domain", "sat-techreview.org"),
                    Infra("email", "research.desk@sat-techreview.org"),
                ],
                notes=["Attribution rests on partner infrastructure overlap"],
            ),
            ClusterFinding(
                "c2",
                confidence=0.4,
                tlp=Tlp.GREEN,
                accounts=[AccountFinding("acct_x1", ttps={"LLMT-07": 1})],
                infrastructure=[Infra("ipv4", "198.51.100.7")],
            ),
            red,
        ]
    )


def validate(bundle: dict[str, Any]) -> None:
    res = validate_instance(bundle, ValidationOptions(version="2.1"))
    errors = [e.message for r in [res] for e in r.errors] + [
        e.message for o in getattr(res, "object_results", []) for e in o.errors
    ]
    assert res.is_valid and not errors, errors


def test_bundle_is_valid_stix_and_maps_the_domain() -> None:
    for pol, rcpt in ((SharingPolicy(), None), (policy_from_dict(PERMISSIVE), "partner-a")):
        res = build_bundle(sample(), pol, recipient=rcpt, now=NOW)
        validate(res.bundle)
        objs = res.bundle["objects"]
        by_type = {o["type"] for o in objs}
        assert by_type >= {
            "identity",
            "intrusion-set",
            "threat-actor",
            "attack-pattern",
            "indicator",
            "sighting",
            "relationship",
            "report",
            "marking-definition",
            "extension-definition",
            "grouping",
        }
        for o in objs:
            if o["type"] != "marking-definition":
                assert o["object_marking_refs"] and o["object_marking_refs"][0] in TLP2_IDS.values(), o["id"]
        iset = next(o for o in objs if o["type"] == "intrusion-set" and o["name"] == "Forest Blizzard")
        assert "APT28" in iset["aliases"] and iset["external_references"][0]["external_id"] == "G0007"
        ap = next(o for o in objs if o["type"] == "attack-pattern" and o["name"] == "LLM-informed reconnaissance")
        ext_ids = {(r["source_name"], r["external_id"]) for r in ap["external_references"]}
        assert ("mitre-attack", "T1588.007") in ext_ids and ("mitre-atlas", "AML.T0016.002") in ext_ids
        ind = next(o for o in objs if o["type"] == "indicator" and "203.0.113.45" in o["pattern"])
        assert ind["valid_until"] > ind["valid_from"]
        rels = {o["relationship_type"] for o in objs if o["type"] == "relationship"}
        assert rels >= {"uses", "indicates", "attributed-to"}
        for o in objs:  # custom properties only through the extension-definition
            assert not any(k.startswith("x_") for k in o), o
    red_names = {
        o.get("name")
        for o in build_bundle(sample(), policy_from_dict(PERMISSIVE), recipient="partner-a", now=NOW).bundle["objects"]
    }
    assert "Emerald Sleet" in red_names


def test_default_policy_redacts_and_red_needs_a_named_recipient() -> None:
    text = json.dumps(build_bundle(sample(), SharingPolicy(), now=NOW).bundle)
    for secret in (
        "acct_7f3a9c2e",
        "enduser-4411",
        "research.desk@sat-techreview.org",
        "Summarise satellite",
        "Here is a summary",
        "Attribution rests",
        "Emerald Sleet",
        "eastbrook-univ.org",
        "acct_red",
    ):
        assert secret not in text, secret
    assert "203.0.113.45" in text and "hmac-sha256:public:" in text
    cert = json.dumps(build_bundle(sample(), policy_from_dict(PERMISSIVE), recipient="cert", now=NOW).bundle)
    assert "Emerald Sleet" not in cert and "Forest Blizzard" not in cert  # AMBER > cert's max GREEN
    a = json.dumps(build_bundle(sample(), policy_from_dict(PERMISSIVE), recipient="partner-a", now=NOW).bundle)
    assert "research.desk@sat-techreview.org" in a and "Attribution rests" in a
    assert "acct_7f3a9c2e" not in a and "hmac-sha256:isac:" in a
    assert "Summarise satellite" not in a  # prompt text needs AMBER+STRICT or RED, whatever the file says


def test_policy_file_errors_are_config_errors(tmp_path: Path) -> None:
    for bad in (
        {"levels": {"purple": {}}},
        {"recipients": {"x": {"trust_group": "nope"}}},
        {"recipients": {"x": {"fields": {"ssn": "allow"}}}},
        {"unknown": 1},
    ):
        with pytest.raises(ConfigError):
            policy_from_dict(bad)


def test_ids_are_stable_and_updates_get_a_later_modified(db_url: str) -> None:
    from stormwatch.intel.service import export_bundle

    store = open_store(db_url)
    try:
        f = sample()
        one = {o["id"]: o for o in export_bundle(store, SharingPolicy(), findings=f, now=NOW).bundle["objects"]}
        two = {
            o["id"]: o
            for o in export_bundle(store, SharingPolicy(), findings=f, now=NOW + timedelta(hours=1)).bundle["objects"]
        }
        sdo = [i for i in one if not i.startswith(("marking-definition", "user-account"))]
        assert all(one[i].get("modified") == two[i].get("modified") for i in sdo if i in two)
        assert set(sdo) <= set(two)
        f.clusters[0].confidence = 0.95
        three = {
            o["id"]: o
            for o in export_bundle(store, SharingPolicy(), findings=f, now=NOW + timedelta(hours=2)).bundle["objects"]
        }
        iset = next(i for i, o in three.items() if o.get("name") == "Forest Blizzard")
        assert iset in one and three[iset]["modified"] > one[iset]["modified"]
        assert three[iset]["created"] == one[iset]["created"]
    finally:
        store.close()


# -- property-based: redaction holds for arbitrary inputs ------------------------------------------
secret_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=10, max_size=60).filter(
    lambda s: len(set(s)) >= 4 and s.strip() == s
)
emails = st.builds(
    lambda u, d: f"{u}@{d}.example",
    st.text(string.ascii_letters + string.digits + "._-", min_size=6, max_size=20),
    st.text(string.ascii_lowercase, min_size=4, max_size=12),
)


@st.composite
def findings_with_secrets(draw: st.DrawFn) -> Findings:
    clusters = []
    for ci in range(draw(st.integers(1, 3))):
        accounts = [
            AccountFinding(
                account_id=draw(secret_text),
                ttps={
                    t: 1 for t in draw(st.lists(st.sampled_from([f"LLMT-{i:02d}" for i in range(1, 15)]), max_size=3))
                },
                emails=draw(st.lists(emails, max_size=2)),
                end_user_ids=draw(st.lists(secret_text, max_size=2)),
                prompts=draw(st.lists(secret_text, max_size=2)),
                responses=draw(st.lists(secret_text, max_size=1)),
                events=draw(st.integers(0, 50)),
            )
            for _ in range(draw(st.integers(1, 3)))
        ]
        infra = [Infra("ipv4", f"198.51.100.{draw(st.integers(1, 254))}")]
        clusters.append(
            ClusterFinding(
                f"c{ci}",
                actor=draw(st.sampled_from([None, "Forest Blizzard", "Charcoal Typhoon"])),
                tlp=draw(st.sampled_from(list(Tlp))),
                accounts=accounts,
                infrastructure=infra,
                notes=draw(st.lists(secret_text, max_size=1)),
            )
        )
    return Findings(clusters)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(findings_with_secrets(), st.sampled_from([None, "partner-a", "cert"]))
def test_no_secret_leaves_unless_policy_allows(f: Findings, recipient: str | None) -> None:
    policy = policy_from_dict(PERMISSIVE) if recipient else SharingPolicy()
    bundle = build_bundle(f, policy, recipient=recipient, now=NOW, registry=MemoryRegistry()).bundle
    text = json.dumps(bundle, ensure_ascii=False)
    strings = text + json.dumps(bundle)
    # the same findings with every secret replaced: what occurs there is vocabulary, not a leak
    vocab_bundle = build_bundle(_stripped(f), policy, recipient=recipient, now=NOW, registry=MemoryRegistry()).bundle
    vocab = json.dumps(vocab_bundle, ensure_ascii=False) + json.dumps(vocab_bundle)
    secrets = f.secrets()
    named = recipient == "partner-a"
    allowed: set[str] = set()  # what PERMISSIVE lets partner-a have, at the levels the floors allow
    if named:
        for field_name, floor in (
            ("email", Tlp.AMBER),
            ("analyst_notes", Tlp.GREEN),
            ("prompt_text", Tlp.AMBER_STRICT),
        ):
            for c in f.clusters:  # clusters of one actor are exported as one group at their highest level
                level = max(x.tlp or Tlp.CLEAR for x in f.clusters if x is c or (c.actor and x.actor == c.actor))
                if level >= floor:
                    allowed |= _field_values(c, field_name)
    for field_name, values in secrets.items():
        for v in values:
            inside_allowed = any(v in a for a in allowed)  # visible only as part of a value that may leave
            if v not in allowed and not inside_allowed and v not in vocab and json.dumps(v)[1:-1] not in vocab:
                assert v not in strings, (field_name, v)
                assert json.dumps(v)[1:-1] not in strings, (field_name, v)
    red_objects = [o for o in bundle["objects"] if TLP2_IDS[Tlp.RED] in o.get("object_marking_refs", [])]
    if not named:
        assert red_objects == []


def _typhoon_note(note: str) -> Findings:
    acct = AccountFinding("acct-0001", ttps={"LLMT-01": 1}, events=3)
    infra = [Infra("ipv4", "198.51.100.7")]
    return Findings(
        [ClusterFinding("c0", actor="Charcoal Typhoon", accounts=[acct], infrastructure=infra, notes=[note])]
    )


def test_a_secret_that_is_part_of_the_public_vocabulary_is_not_a_leak() -> None:
    # Hypothesis found it: an analyst note reading "Charcoal Typ" (12 characters, so searched as a
    # substring) on a cluster attributed to Charcoal Typhoon; the actor's name legitimately leaves.
    result = build_bundle(_typhoon_note("Charcoal Typ"), SharingPolicy(), now=NOW, registry=MemoryRegistry())
    text = json.dumps(result.bundle)
    assert "Charcoal Typhoon" in text
    assert text.count("Charcoal Typ") == text.count("Charcoal Typhoon")  # only inside the name
    validate(result.bundle)


def test_a_secret_that_also_leaves_beside_the_vocabulary_is_refused() -> None:
    f = _typhoon_note("Charcoal Typ")
    policy = SharingPolicy()
    built = build_bundle(f, policy, now=NOW, registry=MemoryRegistry(), check=False)
    bundle = json.loads(json.dumps(built.bundle))
    report = next(o for o in bundle["objects"] if o["type"] == "report")
    report["description"] += " Analyst: Charcoal Typ"  # one occurrence more than the name explains
    twin = f.without_secrets("t", keep=set())

    def vocabulary() -> dict[str, Any]:
        return build_bundle(twin, policy, now=NOW, registry=MemoryRegistry(), check=False).bundle

    with pytest.raises(RedactionError, match="analyst notes value would have left"):
        check_leaks(bundle, f, policy, None, set(), vocabulary=vocabulary)
    # without the twin the plain substring rule refuses the untouched bundle too (the old false refusal)
    with pytest.raises(RedactionError):
        check_leaks(built.bundle, f, policy, None, set())
    check_leaks(built.bundle, f, policy, None, set(), vocabulary=vocabulary)


def test_the_twin_replaces_every_secret_and_keeps_what_the_policy_allows() -> None:
    f = sample()
    keep = {"research.desk@sat-techreview.org"}
    twin = f.without_secrets("s1", keep=keep)
    before, after = f.secrets(), twin.secrets()
    for field_name, values in before.items():
        for v in values - keep:
            assert all(v not in w for w in after[field_name]), (field_name, v)
    assert keep <= after["email"]
    other = [e for e in after["email"] if e not in keep]
    assert all(e.startswith("redacted-s1-") and "@" in e for e in other)  # domains kept, so same paths
    assert [c.actor for c in twin.clusters] == [c.actor for c in f.clusters]


def _stripped(f: Findings) -> Findings:
    return Findings(
        [
            ClusterFinding(
                c.cluster_id,
                actor=c.actor,
                tlp=c.tlp,
                infrastructure=c.infrastructure,
                accounts=[AccountFinding(f"acct-{i}", ttps=a.ttps, events=a.events) for i, a in enumerate(c.accounts)],
            )
            for c in f.clusters
        ]
    )


def _field_values(c: ClusterFinding, field_name: str) -> set[str]:
    if field_name == "email":
        return {e for a in c.accounts for e in a.emails}
    if field_name == "analyst_notes":
        return set(c.notes)
    if field_name == "prompt_text":
        return {p for a in c.accounts for p in a.prompts}
    return set()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(st.sampled_from(list(Tlp)), st.sampled_from(["partner-a", "cert", None])), min_size=1, max_size=6
    ),
    st.sampled_from(["partner-a", "cert", "stranger"]),
)
def test_red_never_readable_by_an_unnamed_principal(
    sqlite_url: str, publishes: list[tuple[Tlp, str | None]], reader: str
) -> None:
    """Publish findings at random levels for random recipients; read the collection as anyone."""
    from stormwatch.intel.service import publish

    store = open_store(sqlite_url)
    try:
        cid = taxii_server.create_collection(store, "shared")
        taxii_server.grant(store, cid, "*", read=True)
        policy = policy_from_dict(PERMISSIVE)
        for i, (level, rcpt) in enumerate(publishes):
            f = Findings(
                [
                    ClusterFinding(
                        f"c{i}",
                        actor="Forest Blizzard" if i % 2 else None,
                        tlp=level,
                        accounts=[AccountFinding(f"acct-{i}-secret")],
                        infrastructure=[Infra("ipv4", f"203.0.113.{i + 1}")],
                    )
                ]
            )
            publish(store, policy, cid, recipient=rcpt, findings=f)
        q = taxii_server.Query(limit=1000, versions=["all"])
        rows = taxii_server.page(store, cid, taxii_server.Caller(reader), q, scope="t").rows
        for r in rows:
            obj = json.loads(r.body)
            if TLP2_IDS[Tlp.RED] in obj.get("object_marking_refs", []):
                assert reader == "partner-a", obj["id"]
    finally:
        store.execute("DELETE FROM taxii_objects")
        store.execute("DELETE FROM taxii_collections")
        store.execute("DELETE FROM taxii_permissions")
        store.commit()
        store.close()


def test_cli_export_writes_a_valid_bundle_and_feed(tmp_path: Path) -> None:
    findings = tmp_path / "findings.json"
    findings.write_text(
        json.dumps(
            {
                "clusters": [
                    {
                        "cluster_id": "c1",
                        "actor": "Forest Blizzard",
                        "accounts": [{"account_id": "acct_1", "ttps": {"LLMT-01": 2}}],
                        "infrastructure": [{"kind": "ipv4", "value": "203.0.113.9"}],
                    }
                ]
            }
        )
    )
    db = f"sqlite:///{tmp_path / 'sw.db'}"
    out = tmp_path / "out.json"
    assert main(["--db", db, "intel", "export", "-o", str(out), "--findings", str(findings)]) == 0
    validate(json.loads(out.read_text()))
    assert (
        main(
            [
                "--db",
                db,
                "intel",
                "export",
                "--format",
                "misp-feed",
                "--out",
                str(tmp_path / "feed"),
                "--findings",
                str(findings),
            ]
        )
        == 0
    )
    assert (tmp_path / "feed" / "manifest.json").exists()
    assert main(["--db", db, "intel", "export", "-o", str(out), "--recipient", "nobody"]) == 3
    with pytest.raises(ConfigError):
        SharingPolicy().recipient("nobody")


def test_share_is_a_deprecated_alias_of_intel(tmp_path: Path) -> None:
    """``stormwatch share ...`` keeps working for one release, warns, and is not listed in the help."""
    db = f"sqlite:///{tmp_path / 'a.db'}"
    env = {**os.environ, "STORMWATCH_DB": db}
    old = subprocess.run([sys.executable, "-m", "stormwatch", "share", "taxii", "add-collection", "c", "--id", "c1"],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert old.returncode == 0 and old.stdout.strip() == "c1"
    assert "deprecated; use `stormwatch intel`" in old.stderr
    new = subprocess.run([sys.executable, "-m", "stormwatch", "intel", "taxii", "add-collection", "d", "--id", "d1"],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert new.returncode == 0 and new.stderr == ""
    listed = subprocess.run([sys.executable, "-m", "stormwatch", "--help"], capture_output=True, text=True, timeout=60)
    assert " intel " in listed.stdout and " share " not in listed.stdout
