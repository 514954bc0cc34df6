"""The TAXII server mounted in the stormwatch API at /taxii2, authenticated with API tokens
(HTTP Basic with the token as the password, as taxii2-client sends it), with role and scope gates."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Any

import requests
import uvicorn
from taxii2client.v21 import Server

from stormwatch.api import create_app
from stormwatch.api.taxii import install
from stormwatch.api.tokens import create_token
from stormwatch.intel.taxii import server as taxii_server
from stormwatch.store import open_store

TAXII = "application/taxii+json;version=2.1"


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    t = threading.Thread(target=server.run, daemon=True)
    t.start()
    for _ in range(300):
        if server.started:
            break
        time.sleep(0.02)
    return server, t, port


def test_taxii_in_the_api_with_tokens(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    cid = taxii_server.create_collection(store, "shared with partners")
    other = taxii_server.create_collection(store, "other")
    for c in (cid, other):
        taxii_server.grant(store, c, "partner", read=True, write=True)
    analyst, _ = create_token(store, name="partner", role="analyst")
    scoped, _ = create_token(store, name="partner", role="analyst", scopes=[f"taxii:read:{cid}"])
    store.commit()
    store.close()
    app = create_app(sqlite_url, entry_point_plugins=False, extensions=[("taxii", install)])
    server, thread, port = _serve(app)
    try:
        base = f"http://127.0.0.1:{port}/taxii2/"
        srv = Server(base, user="partner", password=analyst)
        col = next(c for c in srv.default.collections if c.id == cid)
        obj = {
            "type": "indicator",
            "spec_version": "2.1",
            "id": f"indicator--{uuid.uuid4()}",
            "created": "2024-01-01T00:00:00.000Z",
            "modified": "2024-01-01T00:00:00.000Z",
            "pattern": "[ipv4-addr:value = '192.0.2.1']",
            "pattern_type": "stix",
            "valid_from": "2024-01-01T00:00:00.000Z",
        }
        assert col.add_objects({"objects": [obj]}).success_count == 1
        assert col.get_objects()["objects"][0]["id"] == obj["id"]
        r = requests.get(base, headers={"Accept": TAXII, "Authorization": f"Bearer {analyst}"})
        assert r.status_code == 200
        r = requests.get(base, headers={"Accept": TAXII})
        assert r.status_code == 401 and r.json()["http_status"] == "401"
        r = requests.get(base, headers={"Accept": TAXII, "Authorization": "Bearer sw_wrong"})
        assert r.status_code == 401
        # a token scoped to one collection sees only that one, read-only
        cols = Server(base, user="x", password=scoped).default.collections
        assert [(c.id, c.can_read, c.can_write) for c in cols] == [(cid, True, False)]
    finally:
        server.should_exit = True
        thread.join(10)
