"""The TAXII 2.1 server over a real loopback socket, driven by the real taxii2-client (and raw HTTP
for what the client hides), on both backends; plus the pull client against it.

Covers the checklist in shared/research/cti-conventions.md §4, including the cases the reference
server (medallion 3.0.0) gets wrong: a versionless Accept, objects carrying a ``version``
property, a ``next`` token used long after it was issued, a rejected POST leaving nothing behind.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from taxii2client.v21 import Server, as_pages

from stormwatch.intel.pull import checkpoint, pull
from stormwatch.intel.taxii import server as taxii_server
from stormwatch.intel.taxii.app import StorePool, create_taxii_app, static_authenticator
from stormwatch.store import open_store

TAXII = "application/taxii+json;version=2.1"
USERS = {"partner": "partner-pass", "reader": "reader-pass", "outsider": "outsider-pass"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    def __init__(self, app: Any) -> None:
        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def indicator(i: int, *, modified: str = "2024-02-14T12:00:00.000Z", **extra: Any) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.UUID(int=i + 1, version=4)}",
        "created": "2024-02-14T12:00:00.000Z",
        "modified": modified,
        "name": f"bench indicator {i}",
        "indicator_types": ["malicious-activity"],
        "pattern_type": "stix",
        "pattern": f"[ipv4-addr:value = '10.0.{i // 256}.{i % 256}']",
        "valid_from": "2024-02-14T12:00:00.000Z",
        **extra,
    }


@pytest.fixture
def taxii(db_url: str) -> Iterator[dict[str, Any]]:
    store = open_store(db_url)
    rw = taxii_server.create_collection(store, "ai-abuse-intel (read/write)")
    ro = taxii_server.create_collection(store, "transparency (read-only)")
    empty = taxii_server.create_collection(store, "probe-empty")
    for cid in (rw, empty):
        taxii_server.grant(store, cid, "partner", read=True, write=True)
    taxii_server.grant(store, rw, "reader", read=True)
    taxii_server.grant(store, ro, "*", read=True)
    store.close()
    pool = StorePool(db_url, size=2)
    app = Starlette(routes=[Mount("/taxii2", app=create_taxii_app(pool, static_authenticator(USERS)))])
    with Served(app) as srv:
        yield {"base": srv.base, "rw": rw, "ro": ro, "empty": empty, "db": db_url}
    pool.close()


def test_taxii2_client_round_trip_and_checklist(taxii: dict[str, Any]) -> None:
    base = taxii["base"]
    server = Server(base + "/taxii2/", user="partner", password="partner-pass")
    assert server.title and len(server.api_roots) == 1
    root = server.default
    assert TAXII in root.versions and root.max_content_length > 0
    cols = {c.id: c for c in root.collections}
    assert set(cols) == {taxii["rw"], taxii["ro"], taxii["empty"]}
    rw, ro = cols[taxii["rw"]], cols[taxii["ro"]]
    assert rw.can_write and not ro.can_write

    objs = [indicator(i) for i in range(23)]
    extdef = {  # carries its own `version` property: medallion 500s on every later GET
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": "extension-definition--3c5d1f0e-7b2a-4c8e-9f4d-6a1b2c3d4e5f",
        "created": "2024-01-01T00:00:00.000Z",
        "modified": "2024-01-01T00:00:00.000Z",
        "created_by_ref": "identity--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
        "name": "x",
        "schema": "https://example.net/s.json",
        "version": "1.0.0",
        "extension_types": ["property-extension"],
    }
    software = {
        "type": "software",
        "spec_version": "2.1",
        "id": f"software--{uuid.uuid4()}",
        "name": "t",
        "version": "1.2.3",
    }
    status = rw.add_objects({"objects": [*objs, extdef, software]}, wait_for_completion=True, poll_interval=0.1)
    assert status.status == "complete" and status.success_count == 25 and status.failure_count == 0
    assert root.get_status(status.id).id == status.id
    again = rw.add_objects({"objects": objs[:3]})  # same id + version: idempotent success, no new rows
    assert again.success_count == 3

    got, pages = [], 0
    for env in as_pages(rw.get_objects, per_request=5):
        pages += 1
        got.extend(env.get("objects", []))
    assert pages == 5 and len(got) == 25 and len({o["id"] for o in got}) == 25
    assert {o["type"] for o in got} >= {"extension-definition", "software"}

    ind = objs[7]
    assert [o["id"] for o in rw.get_objects(type="indicator", id=ind["id"])["objects"]] == [ind["id"]]
    assert len(rw.get_objects(type=["indicator", "software"])["objects"]) == 24
    assert rw.get_object(ind["id"])["objects"][0]["pattern"] == ind["pattern"]
    assert rw.object_versions(ind["id"])["versions"] == [ind["modified"]]
    man = rw.get_manifest(limit=3)
    assert man["more"] is True and len(man["objects"]) == 3
    assert set(man["objects"][0]) == {"id", "date_added", "version", "media_type"}
    assert rw.get_objects(added_after="2999-01-01T00:00:00Z") == {}

    ind2 = dict(ind, modified="2024-02-15T00:00:00.000Z", confidence=80)
    rw.add_objects({"objects": [ind2]})
    assert rw.object_versions(ind["id"])["versions"] == [ind["modified"], ind2["modified"]]
    assert [o["modified"] for o in rw.get_object(ind["id"])["objects"]] == [ind2["modified"]]
    assert len(rw.get_object(ind["id"], version="all")["objects"]) == 2
    assert rw.get_object(ind["id"], version="first")["objects"][0]["modified"] == ind["modified"]
    assert rw.get_object(ind["id"], version=ind["modified"])["objects"][0]["modified"] == ind["modified"]
    assert len(rw.get_objects()["objects"]) == 25  # latest versions only

    # raw HTTP: headers, media types, errors
    auth = ("partner", "partner-pass")
    url = rw.url + "objects/"
    r = requests.get(url, params={"limit": 3}, auth=auth, headers={"Accept": TAXII})
    assert r.headers["Content-Type"] == TAXII
    assert r.headers["X-TAXII-Date-Added-First"] <= r.headers["X-TAXII-Date-Added-Last"]
    assert r.json()["more"] is True and r.json()["next"]
    r = requests.get(url, auth=auth, headers={"Accept": "application/taxii+json"})
    assert r.status_code == 200, "versionless Accept must be served"
    for bad in ("application/json", "application/taxii+json;version=2.0"):
        r = requests.get(url, auth=auth, headers={"Accept": bad})
        assert r.status_code == 406 and r.json()["http_status"] == "406"
    r = requests.post(url, auth=auth, headers={"Accept": TAXII, "Content-Type": "application/json"}, data="{}")
    assert r.status_code == 415 and r.json()["title"]
    r = requests.get(url, headers={"Accept": TAXII})
    assert r.status_code == 401 and "Basic" in r.headers["WWW-Authenticate"]
    assert r.headers["Content-Type"] == TAXII and r.json()["title"] == "Unauthorized"
    r = requests.post(
        ro.url + "objects/",
        auth=auth,
        headers={"Accept": TAXII, "Content-Type": TAXII},
        data=json.dumps({"objects": objs[:1]}),
    )
    assert r.status_code == 403
    r = requests.get(url + f"indicator--{uuid.uuid4()}/", auth=auth, headers={"Accept": TAXII})
    assert r.status_code == 404 and set(r.json()) >= {"title", "http_status"}
    for params in ({"limit": 0}, {"limit": "x"}, {"next": "garbage"}, {"added_after": "yesterday"}):
        assert requests.get(url, params=params, auth=auth, headers={"Accept": TAXII}).status_code == 400
    r = requests.get(url, params={"limit": 100000}, auth=auth, headers={"Accept": TAXII})
    assert r.status_code == 200 and len(r.json()["objects"]) == 25
    r = requests.get(url, auth=("outsider", "outsider-pass"), headers={"Accept": TAXII})
    assert r.status_code == 404  # a collection you may not see does not exist for you
    r = requests.get(url, auth=("reader", "reader-pass"), headers={"Accept": TAXII})
    assert r.status_code == 200


def test_next_token_is_durable_and_bound_to_its_query(taxii: dict[str, Any]) -> None:
    base, cid = taxii["base"], taxii["rw"]
    auth, h = ("partner", "partner-pass"), {"Accept": TAXII, "Content-Type": TAXII}
    url = f"{base}/taxii2/api1/collections/{cid}/objects/"
    requests.post(url, auth=auth, headers=h, data=json.dumps({"objects": [indicator(i) for i in range(10)]}))
    first = requests.get(url, params={"limit": 4}, auth=auth, headers=h).json()
    # "minutes later": the token is a position, not session state; simulate a restart with a new pool
    store = open_store(taxii["db"])
    page = taxii_server.page(
        store,
        cid,
        taxii_server.Caller("partner"),
        taxii_server.parse_query(
            {"limit": ["4"], "next": [first["next"]]}, allowed={"limit", "next"}, scope=f"objects:{cid}"
        ),
        scope=f"objects:{cid}",
    )
    store.close()
    assert len(page.rows) == 4
    r = requests.get(url, params={"limit": 4, "next": first["next"]}, auth=auth, headers=h)
    assert r.status_code == 200 and len(r.json()["objects"]) == 4
    ids = {o["id"] for o in first["objects"]} | {o["id"] for o in r.json()["objects"]}
    assert len(ids) == 8
    r = requests.get(url, params={"limit": 4, "next": first["next"], "match[type]": "report"}, auth=auth, headers=h)
    assert r.status_code == 400  # the token belongs to another query


def test_rejected_post_leaves_nothing_behind(taxii: dict[str, Any]) -> None:
    base, cid = taxii["base"], taxii["empty"]
    auth, h = ("partner", "partner-pass"), {"Accept": TAXII, "Content-Type": TAXII}
    url = f"{base}/taxii2/api1/collections/{cid}/objects/"
    no_id = {"type": "indicator", "spec_version": "2.1", "pattern": "[x:y = 'z']"}
    r = requests.post(url, auth=auth, headers=h, data=json.dumps({"objects": [indicator(1), no_id]}))
    assert r.status_code == 422 and r.json()["details"]["failures"]
    assert requests.get(url, auth=auth, headers=h).json() == {}
    for body in ("not json", json.dumps({"type": "bundle"})):
        assert requests.post(url, auth=auth, headers=h, data=body).status_code in (400, 422)
    r = requests.post(url, auth=auth, headers=h, data=json.dumps({"objects": [indicator(2)]}))
    assert r.status_code == 202 and r.json()["success_count"] == 1
    assert len(requests.get(url, auth=auth, headers=h).json()["objects"]) == 1


def test_red_objects_only_for_named_principals(taxii: dict[str, Any]) -> None:
    base, cid = taxii["base"], taxii["rw"]
    red = indicator(50, object_marking_refs=["marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1"])
    unknown = indicator(51, object_marking_refs=[f"marking-definition--{uuid.uuid4()}"])
    amber = indicator(52, object_marking_refs=["marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"])
    h = {"Accept": TAXII, "Content-Type": TAXII}
    url = f"{base}/taxii2/api1/collections/{cid}/objects/"
    r = requests.post(
        url, auth=("partner", "partner-pass"), headers=h, data=json.dumps({"objects": [red, unknown, amber]})
    )
    assert r.status_code == 202
    mine = {o["id"] for o in requests.get(url, auth=("partner", "partner-pass"), headers=h).json()["objects"]}
    theirs = {o["id"] for o in requests.get(url, auth=("reader", "reader-pass"), headers=h).json()["objects"]}
    assert mine == {red["id"], unknown["id"], amber["id"]}
    assert theirs == {amber["id"]}
    r = requests.get(url + red["id"] + "/", auth=("reader", "reader-pass"), headers=h)
    assert r.status_code == 404


def test_pull_is_checkpointed_resumable_and_imports(taxii: dict[str, Any], tmp_path: Any) -> None:
    base, cid = taxii["base"], taxii["rw"]
    auth, h = ("partner", "partner-pass"), {"Accept": TAXII, "Content-Type": TAXII}
    url = f"{base}/taxii2/api1/collections/{cid}/objects/"
    iset = {
        "type": "intrusion-set",
        "spec_version": "2.1",
        "id": f"intrusion-set--{uuid.uuid4()}",
        "created": "2024-01-01T00:00:00.000Z",
        "modified": "2024-01-01T00:00:00.000Z",
        "name": "Forest Blizzard",
    }
    inds = [indicator(i) for i in range(12)]
    rels = [
        {
            "type": "relationship",
            "spec_version": "2.1",
            "id": f"relationship--{uuid.uuid4()}",
            "created": "2024-01-01T00:00:00.000Z",
            "modified": "2024-01-01T00:00:00.000Z",
            "relationship_type": "indicates",
            "source_ref": i["id"],
            "target_ref": iset["id"],
        }
        for i in inds
    ]
    requests.post(url, auth=auth, headers=h, data=json.dumps({"objects": [iset, *inds, *rels]}))
    api_root = f"{base}/taxii2/api1/"
    local = open_store(f"sqlite:///{tmp_path / 'partner-side.db'}")
    try:
        s1 = pull(local, api_root, cid, user="partner", password="partner-pass", page_size=10, max_pages=1)
        assert s1.pages == 1 and s1.objects == 10
        assert checkpoint(local, api_root, cid)[1] is not None  # interrupted: next token saved
        s2 = pull(local, api_root, cid, user="partner", password="partner-pass", page_size=10)
        assert s2.resumed and s1.objects + s2.objects == 25
        n = local.query("SELECT COUNT(*) FROM intel_indicators")[0][0]
        assert n == 12
        sets = local.query("SELECT intrusion_sets FROM intel_indicators LIMIT 1")[0][0]
        assert iset["id"] in sets
        s3 = pull(local, api_root, cid, user="partner", password="partner-pass", page_size=10)
        assert s3.objects == 0  # nothing new since the checkpoint
        requests.post(url, auth=auth, headers=h, data=json.dumps({"objects": [indicator(99)]}))
        s4 = pull(local, api_root, cid, user="partner", password="partner-pass", page_size=10)
        assert s4.objects == 1 and s4.new == 1
    finally:
        local.close()
