"""The TAXII app as a class over one shared store pool: versions paging, the API's pool reused, pool limits,
and the pull client (taxii2-client over the bounded transport) on peers that answer oddly."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from stormwatch.errors import StoreError
from stormwatch.intel import pull as pull_mod
from stormwatch.intel.taxii import server as taxii_server
from stormwatch.intel.taxii.app import TaxiiApp, create_taxii_app, static_authenticator
from stormwatch.store import open_store
from stormwatch.store.pool import StorePool

TAXII = "application/taxii+json;version=2.1"
H = {"Accept": TAXII, "Content-Type": TAXII}


def _indicator(i: int, modified: str) -> dict[str, Any]:
    return {
        "type": "indicator", "spec_version": "2.1", "id": f"indicator--00000000-0000-4000-8000-{i:012d}",
        "created": "2025-01-01T00:00:00.000Z", "modified": modified, "pattern": f"[ipv4-addr:value = '10.0.0.{i}']",
        "pattern_type": "stix", "valid_from": "2025-01-01T00:00:00Z",
    }  # fmt: skip


def test_versions_are_paged_with_a_next_token_that_works(db_url: str) -> None:
    with open_store(db_url) as store:
        cid = taxii_server.create_collection(store, "paged")
        taxii_server.grant(store, cid, "partner", read=True, write=True)
    pool = StorePool(db_url, size=2)
    app = Starlette(routes=[Mount("/taxii2", app=create_taxii_app(pool, static_authenticator({"partner": "pw"})))])
    try:
        with TestClient(app) as client:
            url = f"/taxii2/api1/collections/{cid}/objects/"
            versions = [f"2025-01-0{d}T00:00:00.000Z" for d in range(1, 6)]
            r = client.post(
                url, auth=("partner", "pw"), headers=H, json={"objects": [_indicator(1, v) for v in versions]}
            )
            assert r.status_code == 202 and r.json()["success_count"] == 5
            vurl = f"{url}{_indicator(1, versions[0])['id']}/versions/"
            got: list[str] = []
            params: dict[str, Any] = {"limit": 2}
            for _ in range(5):
                page = client.get(vurl, auth=("partner", "pw"), headers=H, params=params)
                assert page.status_code == 200, page.text
                body = page.json()
                got += body["versions"]
                if not body["more"]:
                    break
                params = {"limit": 2, "next": body["next"]}
            assert got == versions
            bad = client.get(vurl, auth=("partner", "pw"), headers=H, params={"limit": 2, "next": "garbage"})
            assert bad.status_code == 400 and bad.json()["title"] == "Bad next"
    finally:
        pool.close()


def test_the_api_mounts_taxii_on_its_own_pool(sqlite_url: str) -> None:
    from stormwatch.api import create_app

    app = create_app(sqlite_url)
    mounts = [r for r in app.router.routes if isinstance(r, Mount) and r.path == "/taxii2"]
    assert len(mounts) == 1
    sources = {id(route.endpoint.__self__.source) for route in mounts[0].routes if hasattr(route.endpoint, "__self__")}
    assert sources == {id(app.state.store_pool)}
    assert isinstance(app.state.store_pool, StorePool)


def test_taxii_app_routes_are_methods_of_one_object() -> None:
    app = TaxiiApp(StorePool("sqlite:///:memory:"), static_authenticator({"a": "b"}), title="t")
    paths = [r.path for r in app.routes()]
    assert "/{root}/collections/{cid}/objects/{oid}/versions/" in paths and len(paths) == 9


def test_store_pool_limits(sqlite_url: str) -> None:
    with pytest.raises(ValueError):
        StorePool(sqlite_url, size=0)
    pool = StorePool(sqlite_url, size=1)
    try:
        store = pool.acquire()
        with pytest.raises(StoreError, match="no database connection free"):
            pool.acquire(timeout=0.05)
        pool.release(store)
        assert pool.acquire(timeout=0.05) is store  # reused, not reopened
    finally:
        pool.close()


# -- the pull client against odd peers -------------------------------------------------------------
class _Peer(ThreadingHTTPServer):
    def __init__(self, behaviour: Callable[[BaseHTTPRequestHandler], None]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.behaviour = behaviour

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/taxii2/api1/"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Peer

    def do_GET(self) -> None:
        self.server.behaviour(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _peer(behaviour: Callable[[BaseHTTPRequestHandler], None]) -> Iterator[_Peer]:
    srv = _Peer(behaviour)
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(10)


def _send(h: BaseHTTPRequestHandler, raw: bytes, status: int = 200, ctype: str | None = TAXII) -> None:
    h.send_response(status)
    if ctype:
        h.send_header("Content-Type", ctype)
    h.send_header("Content-Length", str(len(raw)))
    h.end_headers()
    h.wfile.write(raw)


@pytest.mark.parametrize(
    ("status", "raw", "ctype", "want"),
    [
        (200, b'{"objects": []}', "text/html", "Content-Type"),  # not a TAXII 2.1 answer
        (200, b'{"objects": []}', None, "no Content-Type"),
        (200, b"<html>", TAXII, "not JSON"),
        (200, b"[1, 2]", TAXII, "not a TAXII envelope"),
        (500, b'{"title": "boom"}', TAXII, 'HTTP 500: {"title": "boom"}'),
        (404, b"{}", TAXII, "HTTP 404 (unknown API root or collection)"),
        (401, b"{}", TAXII, "HTTP 401 (check the credentials"),
    ],
)
def test_pull_names_what_the_peer_did_wrong(
    tmp_path: Path, status: int, raw: bytes, ctype: str | None, want: str
) -> None:
    with _peer(lambda h: _send(h, raw, status, ctype)) as p, open_store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        with pytest.raises(pull_mod.PullError) as err:
            pull_mod.pull(store, p.root, "c1", token="t")
        assert want in str(err.value) and p.root in str(err.value)
        assert pull_mod.checkpoint(store, p.root, "c1") == (None, None)


def test_pull_takes_an_empty_answer_as_an_empty_page(tmp_path: Path) -> None:
    with _peer(lambda h: _send(h, b"")) as p, open_store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        s = pull_mod.pull(store, p.root, "c1", token="t")
        assert s.pages == 1 and s.objects == 0 and s.stopped is None


def test_pull_sends_taxii_filters_and_keeps_the_date_header(tmp_path: Path) -> None:
    seen: list[str] = []

    def behaviour(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.path)
        body = json.dumps({"more": False, "objects": [_indicator(len(seen), "2025-01-02T00:00:00.000Z")]}).encode()
        h.send_response(200)
        h.send_header("Content-Type", TAXII)
        h.send_header("X-TAXII-Date-Added-Last", f"2025-03-0{len(seen)}T00:00:00.000Z")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    with _peer(behaviour) as p, open_store(f"sqlite:///{tmp_path / 'p.db'}") as store:
        pull_mod.pull(store, p.root, "c1", token="t", page_size=7)
        assert pull_mod.checkpoint(store, p.root, "c1") == ("2025-03-01T00:00:00.000Z", None)
        pull_mod.pull(store, p.root, "c1", token="t", page_size=7)
        assert seen[0] == "/taxii2/api1/collections/c1/objects/?limit=7"
        assert seen[1] == "/taxii2/api1/collections/c1/objects/?limit=7&added_after=2025-03-01T00%3A00%3A00.000Z"
        with pytest.raises(pull_mod.PullError, match="page_size"):
            pull_mod.pull(store, p.root, "c1", token="t", page_size=0)
