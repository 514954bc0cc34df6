"""The intel repository (``store.intel``) on both backends: imported objects, indicators, what accounts
were seen with, stable STIX ids, the secret, the export log, the poller's checkpoint and inbox."""

from __future__ import annotations

import orjson
import pytest

from stormwatch.events import Account
from stormwatch.store import open_store
from stormwatch.store.repos.intel import (
    PULLED_IMPORTED,
    PULLED_PENDING,
    PULLED_REJECTED,
    ExportRecord,
    IndicatorRow,
    IntelObject,
    StixId,
)


def _obj(oid: str, typ: str, modified: str = "2025-01-01T00:00:00.000Z", **extra: object) -> IntelObject:
    raw = orjson.dumps({"id": oid, "type": typ, "modified": modified, **extra}).decode()
    return IntelObject(oid, typ, "2.1", modified, modified, False, None, raw, "test", "2025-01-02T00:00:00Z")


def _ind(i: int, *, revoked: bool = False, reason: str | None = None) -> IndicatorRow:
    compiled = None if reason else orjson.dumps({"atoms": [i]}).decode()
    return IndicatorRow(
        f"indicator--{i}", f"ind {i}", f"[ipv4-addr:value = '10.0.0.{i}']", "stix", "2025-01-01T00:00:00Z", None,
        revoked, 80, ("malicious-activity",), ("intrusion-set--b", "intrusion-set--a"), reason, compiled, None,
    )  # fmt: skip


def test_objects_are_replaced_by_id_and_read_by_type(db_url: str) -> None:
    with open_store(db_url) as store:
        r = store.intel
        r.put_object(_obj("indicator--1", "indicator"))
        r.put_object(_obj("relationship--1", "relationship"))
        r.put_object(_obj("indicator--1", "indicator", "2025-02-01T00:00:00.000Z", name="newer"))
        store.commit()
        assert r.count_objects() == 2
        versions = r.object_versions()
        assert versions["indicator--1"].modified == "2025-02-01T00:00:00.000Z"
        assert orjson.loads(versions["indicator--1"].raw)["name"] == "newer"
        assert [o["id"] for o in r.objects_of_type("indicator", "relationship")] == ["indicator--1", "relationship--1"]
        assert r.objects_of_type() == [] and r.objects_of_type("campaign") == []
        assert set(r.raw_objects(["indicator--1", "nope--1"])) == {"indicator--1"}
        assert r.raw_objects([]) == {}


def test_rollback_discards_an_unfinished_import(db_url: str) -> None:
    with open_store(db_url) as store:
        store.intel.put_object(_obj("indicator--1", "indicator"))
        store.rollback()
        assert store.intel.count_objects() == 0


def test_indicators_are_replaced_whole_and_only_active_ones_match(db_url: str) -> None:
    with open_store(db_url) as store:
        r = store.intel
        r.replace_indicators([_ind(1), _ind(2, revoked=True), _ind(3, reason="unsupported operator")])
        store.commit()
        active = r.active_indicators()
        assert [a.id for a in active] == ["indicator--1"]
        assert active[0].compiled == {"atoms": [1]} and active[0].confidence == 80
        assert active[0].intrusion_sets == ("intrusion-set--a", "intrusion-set--b")  # stored sorted
        rows = {x.id: x for x in r.indicators()}
        assert not rows["indicator--3"].supported and rows["indicator--3"].unsupported_reason == "unsupported operator"
        assert rows["indicator--2"].revoked and rows["indicator--1"].supported
        cache = r.compiled_cache()
        assert (
            cache["indicator--1"].pattern == "[ipv4-addr:value = '10.0.0.1']" and cache["indicator--3"].compiled is None
        )
        r.replace_indicators([])
        store.commit()
        assert r.indicators() == [] and r.active_indicators() == []
        assert rows["indicator--1"].to_dict()["intrusion_sets"] == ["intrusion-set--a", "intrusion-set--b"]


def test_observations_come_from_attributes_and_account_records(db_url: str) -> None:
    with open_store(db_url) as store:
        store.upsert_accounts(
            [
                Account(account_id="a1", created_at="2025-01-01T00:00:00Z", signup_ip="10.0.0.1",
                        email_domain="example.org", attributes={"email": "X@example.org"}),
                Account(account_id="a2", email_hash="ABC", attributes={"other": 1}),
            ]
        )  # fmt: skip
        store.executemany(  # seeding the analysis' table directly (the analysis repository writes it)
            "INSERT INTO account_attributes (account_id, kind, value, n, first_ts, last_ts) VALUES (?, ?, ?, ?, ?, ?)",
            [("a1", "ip", "10.0.0.9", 3, "t1", "t2"), ("a1", "device", "d1", 1, None, None)],
        )
        store.commit()
        attrs = list(store.intel.attribute_observations())
        assert [(a.account_id, a.kind, a.value, a.n) for a in attrs] == [("a1", "ip", "10.0.0.9", 3)]  # no devices
        accounts = {a.account_id: a for a in store.intel.account_observations()}
        assert accounts["a1"].email == "X@example.org" and accounts["a1"].signup_ip == "10.0.0.1"
        assert accounts["a2"].email is None and accounts["a2"].email_hash == "ABC"


def test_stix_ids_round_trip_and_identify_ours(db_url: str) -> None:
    with open_store(db_url) as store:
        r = store.intel
        ids = {f"cluster:{i}": StixId(f"grouping--{i:04d}", "c", "m", "h") for i in range(1200)}
        ids["identity:producer:us"] = StixId("identity--us", "c", "m", "h")
        r.put_stix_ids(ids)
        store.commit()
        assert r.stix_ids() == ids
        r.put_stix_ids({"identity:producer:us": StixId("identity--us", "c", "m2", "h2")})
        store.commit()
        assert r.stix_ids()["identity:producer:us"].modified == "m2"
        assert r.producer_identity_ids() == {"identity--us"}
        asked = [f"grouping--{i:04d}" for i in range(0, 1200, 3)] + ["grouping--x"]
        assert r.minted(asked) == set(asked[:-1])  # more ids than one IN list holds
        assert r.minted([]) == set()


def test_the_secret_is_created_once(db_url: str) -> None:
    with open_store(db_url) as store:
        assert store.intel.secret("hmac") is None
        assert store.intel.add_secret("hmac", "aa", "now") == "aa"
        assert store.intel.add_secret("hmac", "bb", "later") == "aa"  # a racing second writer gets the first
    with open_store(db_url) as store:
        assert store.intel.secret("hmac") == "aa"


def test_exports_are_logged(db_url: str) -> None:
    with open_store(db_url) as store:
        rec = ExportRecord("e1", "stix", None, "/tmp/x.json", 12, "amber", "2025-01-01T00:00:00Z")
        store.intel.record_export(rec)
        store.commit()
        assert store.intel.exports() == [rec]


def test_checkpoint_and_pulled_objects(db_url: str) -> None:
    with open_store(db_url) as store:
        r = store.intel
        assert r.checkpoint("https://peer/api1/", "c1") is None
        r.save_checkpoint("https://peer/api1/", "c1", added_after=None, next_token="n1", new_objects=3, status="paging")
        cp = r.save_checkpoint(
            "https://peer/api1/", "c1", added_after="2025-01-01T00:00:00Z", next_token=None, new_objects=2,
            status="complete",
        )  # fmt: skip
        store.commit()
        got = r.checkpoint("https://peer/api1/", "c1")
        assert got == cp and got is not None and got.objects == 5 and got.next_token is None
        objs = [{"id": "indicator--1", "modified": "v1"}, {"id": "indicator--1", "modified": "v2"}, {"no": "id"}]
        assert r.add_pulled("taxii:x", objs) == 2
        assert r.add_pulled("taxii:x", objs) == 0  # the same versions again: kept once
        store.commit()
        pending = r.pending_pulled()
        assert [(p.stix_id, p.version) for p in pending] == [("indicator--1", "v1"), ("indicator--1", "v2")]
        r.mark_pulled(pending[:1], PULLED_IMPORTED)
        r.mark_pulled(pending[1:], PULLED_REJECTED)
        store.commit()
        assert r.pending_pulled() == [] and r.count_pulled() == 2
        assert r.count_pulled(PULLED_IMPORTED) == 1 and r.count_pulled(PULLED_PENDING) == 0
        with pytest.raises(ValueError):
            r.mark_pulled(pending, 7)
