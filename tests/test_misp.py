"""MISP: the feed we write loads in PyMISP (manifest, events, hashes), carries only what the policy let
out, and MISP events (ours or a partner's, built with PyMISP) import into intel."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

from pymisp import MISPEvent, MISPObject

from stormwatch.intel.findings import AccountFinding, ClusterFinding, Findings, Infra
from stormwatch.intel.service import export_misp_feed, import_misp
from stormwatch.intel.sharing_policy import policy_from_dict
from stormwatch.intel.tlp import Tlp
from stormwatch.store import open_store

POLICY = policy_from_dict(
    {
        "trust_groups": {"isac": {"key": "k"}},
        "recipients": {"isac": {"trust_group": "isac", "max_tlp": "amber", "fields": {"account_id": "hash"}}},
    }
)


def findings() -> Findings:
    return Findings(
        [
            ClusterFinding(
                "c1",
                actor="Forest Blizzard",
                confidence=0.7,
                tlp=Tlp.AMBER,
                accounts=[
                    AccountFinding(
                        "acct_secret_1",
                        ttps={"LLMT-01": 3},
                        emails=["a.person@mail.example"],
                        prompts=["secret prompt text"],
                        events=9,
                    )
                ],
                infrastructure=[Infra("ipv4", "203.0.113.45"), Infra("domain", "sat-techreview.org")],
            )
        ]
    )


def test_feed_loads_in_pymisp_and_is_redacted(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'sw.db'}")
    try:
        res = export_misp_feed(store, POLICY, tmp_path / "feed", recipient="isac", findings=findings())
    finally:
        store.close()
    feed = tmp_path / "feed"
    manifest = json.loads((feed / "manifest.json").read_text())
    assert res["misp"]["events"] == 1 and len(manifest) == 1
    (uuid_,) = manifest
    ev = MISPEvent()
    ev.load_file(feed / f"{uuid_}.json")
    assert ev.uuid == uuid_ and "Forest Blizzard" in ev.info
    tags = {t.name for t in ev.tags}
    assert "tlp:amber" in tags and 'misp-galaxy:threat-actor="Sofacy"' in tags
    assert any(t.startswith("misp-galaxy:mitre-atlas-attack-pattern=") for t in tags)
    values = {a.type: a.value for a in ev.attributes}
    assert values["ip-src"] == "203.0.113.45" and values["domain"] == "sat-techreview.org"
    assert [o.name for o in ev.objects] == ["user-account"]
    assert ev.objects[0].get_attributes_by_relation("user-id")[0].value.startswith("hmac-sha256:isac:")
    MISPObject("user-account", strict=True)  # the template we fill exists offline
    text = "".join(p.read_text() for p in feed.iterdir())
    for secret in ("acct_secret_1", "a.person@mail.example", "secret prompt text"):
        assert secret not in text
    rows = list(csv.reader((feed / "hashes.csv").open()))
    assert [hashlib.md5(b"203.0.113.45").hexdigest(), uuid_] in rows


def test_misp_events_import_into_intel(tmp_path: Path) -> None:
    ev = MISPEvent()
    ev.info = "Partner: Forest Blizzard infrastructure"
    ev.add_tag("tlp:green")
    ev.add_tag('misp-galaxy:threat-actor="Sofacy"')
    ev.add_attribute("ip-src", "192.0.2.77", to_ids=True)
    ev.add_attribute("domain", "defence-logistics-forum.com", to_ids=True)
    ev.add_attribute("comment", "not an indicator")
    path = tmp_path / "event.json"
    path.write_text(ev.to_json())
    store = open_store(f"sqlite:///{tmp_path / 'sw.db'}")
    try:
        res = import_misp(store, [path])
        assert res["events"] == 1
        rows = store.query("SELECT pattern, intrusion_sets FROM intel_indicators ORDER BY pattern")
        assert len(rows) == 2 and all("intrusion-set--" in r[1] for r in rows)
        names = store.query("SELECT name FROM intel_objects WHERE type = 'intrusion-set'")
        assert names == [("Forest Blizzard",)]
        # our own feed round-trips too
        export_misp_feed(store, POLICY, tmp_path / "feed", recipient="isac", findings=findings())
        res2 = import_misp(store, [tmp_path / "feed"])
        assert res2["events"] == 1 and res2["import"]["indicators"]["supported"] >= 3
    finally:
        store.close()
