"""TAXII server edges over HTTP: media types, permissions, malformed posts, NUL paths and internal errors all
answer a TAXII error resource with the right status, never a stack trace."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from stormwatch.intel.taxii import server as taxii_server
from stormwatch.intel.taxii.app import create_taxii_app, static_authenticator
from stormwatch.store import open_store
from stormwatch.store.pool import StorePool

TAXII = "application/taxii+json;version=2.1"
H = {"Accept": TAXII, "Content-Type": TAXII}
IND = {"type": "indicator", "spec_version": "2.1", "id": "indicator--00000000-0000-4000-8000-000000000001",
       "created": "2025-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z",
       "pattern": "[ipv4-addr:value = '10.0.0.1']", "pattern_type": "stix",
       "valid_from": "2025-01-01T00:00:00Z"}  # fmt: skip


@pytest.fixture
def taxii(sqlite_url: str) -> Iterator[tuple[TestClient, str, str]]:
    with open_store(sqlite_url) as store:
        cid = taxii_server.create_collection(store, "shared", description="d")
        closed = taxii_server.create_collection(store, "closed")
        taxii_server.grant(store, cid, "writer", read=True, write=True)
        taxii_server.grant(store, cid, "reader", read=True, write=False)
    pool = StorePool(sqlite_url, size=2)
    users = {"writer": "pw", "reader": "pw"}
    app = Starlette(routes=[Mount("/taxii2", app=create_taxii_app(pool, static_authenticator(users)))])
    try:
        with TestClient(app) as client:
            yield client, cid, closed
    finally:
        pool.close()


def _err(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/taxii+json")
    body: dict[str, Any] = r.json()
    assert "title" in body
    return body


@pytest.mark.parametrize(
    ("accept", "status"),
    [
        (None, 200),
        ("*/*", 200),
        ("application/*", 200),
        (TAXII, 200),
        ("application/taxii+json", 200),
        ('application/taxii+json; version="2.1"', 200),
        ("application/json", 406),
        ("application/taxii+json;version=2.0", 406),
    ],
)
def test_accept_header(taxii: tuple[TestClient, str, str], accept: str | None, status: int) -> None:
    client, _, _ = taxii
    headers = {"Accept": accept} if accept is not None else {}
    r = client.get("/taxii2/", auth=("reader", "pw"), headers=headers)
    if status == 200:
        assert r.status_code == 200 and r.json()["api_roots"]
    else:
        assert "taxii+json" in _err(r, 406)["description"]


def test_permissions_and_bad_posts(taxii: tuple[TestClient, str, str]) -> None:
    client, cid, closed = taxii
    objects = f"/taxii2/api1/collections/{cid}/objects/"
    _err(client.get(objects, headers=H), 401)
    _err(client.get(objects, auth=("reader", "wrong"), headers=H), 401)
    _err(client.post(objects, auth=("reader", "pw"), headers=H, json={"objects": [IND]}), 403)
    r = client.get(f"/taxii2/api1/collections/{closed}/objects/", auth=("reader", "pw"), headers=H)
    assert r.status_code in (403, 404)
    _err(client.post(objects, auth=("writer", "pw"), headers={**H, "Content-Type": "application/json"},
                     json={"objects": [IND]}), 415)  # fmt: skip
    bad = {**IND, "spec_version": "2.0"}
    body = _err(client.post(objects, auth=("writer", "pw"), headers=H, json={"objects": [IND, bad]}), 422)
    assert "nothing was stored" in body["description"]
    assert "spec_version must be '2.1'" in body["details"]["failures"][0]["message"]
    r = client.get(objects, auth=("reader", "pw"), headers=H)
    assert r.status_code == 200 and r.json() == {}  # one bad object rejects the whole envelope
    ok = client.post(objects, auth=("writer", "pw"), headers=H, json={"objects": [IND]})
    assert ok.status_code == 202 and ok.json()["success_count"] == 1
    got = client.get(f"{objects}{IND['id']}/", auth=("reader", "pw"), headers=H)
    assert got.status_code == 200 and got.json()["objects"][0]["id"] == IND["id"]
    _err(client.get(f"{objects}indicator--00000000-0000-4000-8000-00000000ffff/", auth=("reader", "pw"),
                    headers=H), 404)  # fmt: skip
    _err(client.get(objects, auth=("reader", "pw"), headers=H, params={"color": "red"}), 400)
