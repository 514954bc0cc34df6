"""Hardening of the sharing side: the TAXII server against hostile writers and tampered input, the
pull client against hostile peers. Real servers on 127.0.0.1 only (uvicorn for our TAXII app,
http.server for fake peers), real databases (SQLite file and PostgreSQL), real subprocesses.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount
from taxii2client.v21 import Server

from stormwatch.disrupt.audit import list_entries
from stormwatch.intel import pull as pull_mod
from stormwatch.intel.taxii import server as taxii_server
from stormwatch.intel.taxii.app import StorePool, create_taxii_app, static_authenticator
from stormwatch.store import open_store

TAXII = "application/taxii+json;version=2.1"
USERS = {"partner": "partner-pass", "reader": "reader-pass"}
H = {"Accept": TAXII, "Content-Type": TAXII}
PARTNER = ("partner", "partner-pass")
STORMWATCH = [sys.executable, "-m", "stormwatch"]
WAIT = 10.0  # seconds any single network wait in this file may take


# -- servers ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_taxii(db_url: str) -> Iterator[str]:
    """Our TAXII app alone (as `stormwatch share taxii serve` runs it) on a loopback port; yields the base URL."""
    pool = StorePool(db_url, size=2)
    app = Starlette(routes=[Mount("/taxii2", app=create_taxii_app(pool, static_authenticator(USERS)))])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("TAXII server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT)
        pool.close()


def indicator(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{uuid.UUID(int=i + 1, version=4)}",
        "created": "2024-02-14T12:00:00.000Z",
        "modified": "2024-02-14T12:00:00.000Z",
        "pattern_type": "stix",
        "pattern": f"[ipv4-addr:value = '10.0.{i // 256}.{i % 256}']",
        "valid_from": "2024-02-14T12:00:00.000Z",
        **extra,
    }


def _collection(db_url: str, *, root: str = taxii_server.DEFAULT_ROOT, max_content_length: int | None = None) -> str:
    store = open_store(db_url)
    try:
        if max_content_length is not None:
            taxii_server.ensure_root(store, root, max_content_length=max_content_length)
        cid = taxii_server.create_collection(store, "intel", root=root)
        taxii_server.grant(store, cid, "partner", read=True, write=True)
        taxii_server.grant(store, cid, "reader", read=True)
        return cid
    finally:
        store.close()


def _raw_http(port: int, head: str, body_parts: list[bytes]) -> tuple[int, dict[str, str], bytes]:
    """Send a request head and some body bytes over a raw socket; read the response (bounded by WAIT)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in body_parts:
            s.sendall(part)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head_raw, _, rest = data.partition(b"\r\n\r\n")
        lines = head_raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        want = int(headers.get("content-length", "0"))
        while len(rest) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return status, headers, rest


def _basic(user: str, pw: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()


# -- 1. the TAXII app reads no body before authentication, and never more than its limit -----------------


def test_post_answers_401_and_403_before_reading_the_body(sqlite_url: str) -> None:
    cid = _collection(sqlite_url)
    with serve_taxii(sqlite_url) as base:
        port = int(base.rsplit(":", 1)[1])
        path = f"/taxii2/api1/collections/{cid}/objects/"
        # 10 MB announced, not a byte sent: the answer must come without waiting for the body
        head = f"POST {path} HTTP/1.1\nHost: x\nAccept: {TAXII}\nContent-Type: {TAXII}\nContent-Length: 10000000\n"
        t0 = time.monotonic()
        status, _, body = _raw_http(port, head, [])
        assert status == 401 and json.loads(body)["http_status"] == "401"
        status, _, body = _raw_http(port, head + f"Authorization: {_basic('partner', 'wrong')}\n", [])
        assert status == 401
        # reader may read but not write: 403, body still unread
        status, _, body = _raw_http(port, head + f"Authorization: {_basic('reader', 'reader-pass')}\n", [])
        assert status == 403 and json.loads(body)["title"] == "Forbidden"
        assert time.monotonic() - t0 < WAIT


def test_post_body_is_capped_while_streaming(sqlite_url: str) -> None:
    limit = 4096
    cid = _collection(sqlite_url, root="small", max_content_length=limit)
    with serve_taxii(sqlite_url) as base:
        port = int(base.rsplit(":", 1)[1])
        path = f"/taxii2/small/collections/{cid}/objects/"
        head = f"POST {path} HTTP/1.1\nHost: x\nAccept: {TAXII}\nContent-Type: {TAXII}\n"
        head += f"Authorization: {_basic('partner', 'partner-pass')}\n"
        # a declared length over the limit: refused unread
        status, _, body = _raw_http(port, head + f"Content-Length: {limit + 1}\n", [])
        assert status == 413 and str(limit) in json.loads(body)["description"]
        # chunked, no length: 5 KiB sent and the stream left open -> 413 arrives without the rest
        chunk = b"x" * 5120
        status, _, body = _raw_http(port, head + "Transfer-Encoding: chunked\n", [b"1400\r\n" + chunk + b"\r\n"])
        assert status == 413 and json.loads(body)["http_status"] == "413"
        # a body within the limit still works
        r = requests.post(
            base + path, auth=PARTNER, headers=H, data=json.dumps({"objects": [indicator(1)]}), timeout=WAIT
        )
        assert r.status_code == 202 and r.json()["success_count"] == 1
        assert len(json.dumps({"objects": [indicator(1)]})) < limit


# -- 2. the default API root exists from the start ----------------------------------------------------------


def test_default_api_root_is_listed_on_a_fresh_database(db_url: str) -> None:
    with serve_taxii(db_url) as base:
        server = Server(base + "/taxii2/", user="partner", password="partner-pass")
        assert [r.url for r in server.api_roots] == [base + "/taxii2/api1/"]
        assert server.default is not None and server.default.url == base + "/taxii2/api1/"
        assert server.default.collections == []
        r = requests.get(base + "/taxii2/api1/", auth=PARTNER, headers={"Accept": TAXII}, timeout=WAIT)
        assert r.status_code == 200 and r.json()["max_content_length"] == taxii_server.DEFAULT_MAX_CONTENT_LENGTH
    # a collection made later lands in the same root; still one root
    _collection(db_url)
    store = open_store(db_url)
    try:
        assert taxii_server.list_roots(store) == ["api1"]
    finally:
        store.close()


# -- 3. tampered next tokens are 400s with the TAXII error shape -------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _tampered(token: str) -> dict[str, str]:
    date_added, seq, dig = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert isinstance(seq, int)
    d = json.dumps(date_added)
    return {
        "seq 2^63": _b64(orjson.dumps([date_added, 2**63, dig])),
        "seq 2^64-1": _b64(orjson.dumps([date_added, 2**64 - 1, dig])),
        "seq 2^64": _b64(f'[{d}, 18446744073709551616, "{dig}"]'.encode()),
        "seq negative": _b64(orjson.dumps([date_added, -1, dig])),
        "seq -2^63-1": _b64(f'[{d}, -9223372036854775809, "{dig}"]'.encode()),
        "seq bool": _b64(orjson.dumps([date_added, True, dig])),
        "seq float": _b64(orjson.dumps([date_added, 1.5, dig])),
        "seq string": _b64(orjson.dumps([date_added, "1", dig])),
        "seq object": _b64(orjson.dumps([date_added, {"seq": 1}, dig])),
        "date object": _b64(orjson.dumps([{"d": date_added}, seq, dig])),
        "date overflow": _b64(orjson.dumps(["0001-01-01T00:00:00+01:00", seq, dig])),
        "whole object": _b64(orjson.dumps({"date_added": date_added, "seq": seq, "digest": dig})),
        "three keys": _b64(orjson.dumps({"a": 1, "b": 2, "c": 3})),
        "two items": _b64(orjson.dumps([date_added, seq])),
        "not utf-8": _b64(b"\xff\xfe\x00"),
        "huge": "A" * 100_000,
        "nul": token + "\x00",
    }


def test_tampered_next_tokens_answer_400(db_url: str) -> None:
    cid = _collection(db_url)
    with serve_taxii(db_url) as base:
        url = f"{base}/taxii2/api1/collections/{cid}/"
        r = requests.post(
            url + "objects/",
            auth=PARTNER,
            headers=H,
            data=json.dumps({"objects": [indicator(i) for i in range(5)]}),
            timeout=WAIT,
        )
        assert r.status_code == 202
        for endpoint in ("objects/", "manifest/"):
            first = requests.get(url + endpoint, params={"limit": 2}, auth=PARTNER, headers=H, timeout=WAIT).json()
            assert first["more"] is True
            for name, token in _tampered(first["next"]).items():
                r = requests.get(
                    url + endpoint, params={"limit": "2", "next": token}, auth=PARTNER, headers=H, timeout=WAIT
                )
                assert r.status_code == 400, (endpoint, name, r.status_code, r.text[:200])
                if name == "huge" and r.headers["Content-Type"].startswith("text/plain"):
                    # uvicorn's httptools parser (the `api` extra) refuses a 100 kB request line itself,
                    # before the application sees it: still a 400, without a TAXII body
                    assert "Invalid HTTP request" in r.text
                    continue
                assert r.headers["Content-Type"] == TAXII, (name, r.text[:300])
                body = r.json()
                assert body["http_status"] == "400" and body["title"], (endpoint, name, body)
            # the genuine token still works
            r = requests.get(
                url + endpoint, params={"limit": 2, "next": first["next"]}, auth=PARTNER, headers=H, timeout=WAIT
            )
            assert r.status_code == 200 and len(r.json()["objects"]) == 2
        for bad in ("0001-01-01T00:00:00+01:00", "2024-01-01T00:00:00\x00"):
            r = requests.get(url + "objects/", params={"added_after": bad}, auth=PARTNER, headers=H, timeout=WAIT)
            assert r.status_code == 400 and r.json()["http_status"] == "400"


# -- 4a. indicators need a valid pattern ---------------------------------------------------------------------


def test_indicators_without_a_valid_pattern_are_rejected(db_url: str) -> None:
    cid = _collection(db_url)
    bad = {
        "no pattern": {k: v for k, v in indicator(10).items() if k != "pattern"},
        "garbage pattern": indicator(11, pattern="this is not a pattern"),
        "unbalanced": indicator(12, pattern="[ipv4-addr:value = '10.0.0.1'"),
        "empty pattern": indicator(13, pattern=""),
        "no pattern_type": {k: v for k, v in indicator(14).items() if k != "pattern_type"},
        "no valid_from": {k: v for k, v in indicator(15).items() if k != "valid_from"},
        "pattern not a string": indicator(16, pattern=["[ipv4-addr:value = '10.0.0.1']"]),
    }
    with serve_taxii(db_url) as base:
        url = f"{base}/taxii2/api1/collections/{cid}/objects/"
        for name, obj in bad.items():
            r = requests.post(
                url, auth=PARTNER, headers=H, data=json.dumps({"objects": [indicator(1), obj]}), timeout=WAIT
            )
            assert r.status_code == 422, (name, r.status_code, r.text[:300])
            failures = r.json()["details"]["failures"]
            assert [f["id"] for f in failures] == [obj["id"]], name
            assert obj["id"] in failures[0]["message"]
        assert requests.get(url, auth=PARTNER, headers=H, timeout=WAIT).json() == {}  # nothing stored
        # other pattern languages are taken as they are; a valid STIX pattern too
        sigma = indicator(20, pattern_type="sigma", pattern="title: x\ndetection: {}")
        r = requests.post(
            url, auth=PARTNER, headers=H, data=json.dumps({"objects": [indicator(1), sigma]}), timeout=WAIT
        )
        assert r.status_code == 202 and r.json()["success_count"] == 2


# -- 4b. nobody but the exporter (or an admin) speaks for our identity -----------------------------------------


def _publish_ours(db_url: str, cid: str) -> list[dict[str, Any]]:
    from stormwatch.intel.findings import AccountFinding, ClusterFinding, Findings, Infra
    from stormwatch.intel.service import publish
    from stormwatch.intel.sharing_policy import SharingPolicy

    findings = Findings(
        [
            ClusterFinding(
                "c1",
                actor="Forest Blizzard",
                confidence=0.8,
                accounts=[AccountFinding("acct_1", ttps={"LLMT-01": 3}, events=7)],
                infrastructure=[Infra("ipv4", "203.0.113.45")],
            )
        ]
    )
    store = open_store(db_url)
    try:
        p = publish(store, SharingPolicy(), cid, findings=findings)
        assert p.status["success_count"] > 0
        rows = store.query("SELECT body FROM taxii_objects WHERE collection_id = ?", (cid,))
        return [orjson.loads(r[0]) for r in rows]
    finally:
        store.close()


def test_writers_cannot_publish_as_us(db_url: str) -> None:
    cid = _collection(db_url)
    published = _publish_ours(db_url, cid)
    ident = next(o for o in published if o["type"] == "identity")
    iset = next(o for o in published if o["type"] == "intrusion-set")
    assert iset["created_by_ref"] == ident["id"]
    forged_version = dict(iset, modified="2099-01-01T00:00:00.000Z", name="Not Forest Blizzard")
    forged_new = indicator(30, created_by_ref=ident["id"])
    forged_ident = dict(ident, modified="2099-01-01T00:00:00.000Z", name="Someone else")
    with serve_taxii(db_url) as base:
        url = f"{base}/taxii2/api1/collections/{cid}/objects/"
        for forged in (forged_version, forged_new, forged_ident):
            env = {"objects": [indicator(31), forged]}
            r = requests.post(url, auth=PARTNER, headers=H, data=json.dumps(env), timeout=WAIT)
            assert r.status_code == 403, (forged["id"], r.text[:300])
            assert r.json()["http_status"] == "403"
            assert [f["id"] for f in r.json()["details"]["failures"]] == [forged["id"]]
        got = requests.get(url + iset["id"] + "/", auth=PARTNER, headers=H, timeout=WAIT).json()["objects"]
        assert [o["name"] for o in got] == ["Forest Blizzard"]  # ours is still the latest version
        r = requests.get(url, params={"match[id]": indicator(31)["id"]}, auth=PARTNER, headers=H, timeout=WAIT)
        assert r.json() == {}  # the honest object in a refused envelope was not stored either
        # the partner may still publish its own objects, citing ours
        own = indicator(32, created_by_ref=f"identity--{uuid.uuid4()}")
        r = requests.post(url, auth=PARTNER, headers=H, data=json.dumps({"objects": [own]}), timeout=WAIT)
        assert r.status_code == 202
    store = open_store(db_url)
    try:
        refused = [e for e in list_entries(store, limit=1000) if e.action == "taxii.objects.refused"]
        assert len(refused) == 3 and all(e.actor == "taxii:partner" for e in refused)
        assert refused[0].target == f"taxii-collection:{cid}" and refused[0].evidence["ids"] == [forged_version["id"]]
    finally:
        store.close()


def test_in_the_api_only_admin_tokens_may_publish_as_us(sqlite_url: str) -> None:
    from stormwatch.api import create_app
    from stormwatch.api.taxii import install
    from stormwatch.api.tokens import create_token

    cid = _collection(sqlite_url)
    published = _publish_ours(sqlite_url, cid)
    iset = next(o for o in published if o["type"] == "intrusion-set")
    store = open_store(sqlite_url)
    taxii_server.grant(store, cid, "ops", read=True, write=True)
    analyst, _ = create_token(store, name="partner", role="analyst")
    admin, _ = create_token(store, name="ops", role="admin")
    store.commit()
    store.close()
    app = create_app(sqlite_url, entry_point_plugins=False, extensions=[("taxii", install)])
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + WAIT
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        url = f"http://127.0.0.1:{port}/taxii2/api1/collections/{cid}/objects/"
        newer = {"objects": [dict(iset, modified="2099-01-01T00:00:00.000Z", description="revised")]}
        r = requests.post(url, headers={**H, "Authorization": f"Bearer {analyst}"}, json=newer, timeout=WAIT)
        assert r.status_code == 403
        r = requests.post(url, headers={**H, "Authorization": f"Bearer {admin}"}, json=newer, timeout=WAIT)
        assert r.status_code == 202 and r.json()["success_count"] == 1
    finally:
        server.should_exit = True
        thread.join(WAIT)
    store = open_store(sqlite_url)
    try:
        added = [e for e in list_entries(store, limit=1000) if e.action == "taxii.objects.added"]
        assert added[-1].actor.startswith("token:") and added[-1].actor.endswith(":ops")
        assert added[-1].evidence["ids"] == [iset["id"]]
    finally:
        store.close()


# -- 4c. TAXII writes and deletes are in the audit chain ------------------------------------------------------


def test_taxii_adds_and_deletes_are_audited_and_the_chain_verifies(db_url: str) -> None:
    cid = _collection(db_url)
    objs = [indicator(i) for i in range(3)]
    with serve_taxii(db_url) as base:
        url = f"{base}/taxii2/api1/collections/{cid}/objects/"
        r = requests.post(url, auth=PARTNER, headers=H, data=json.dumps({"objects": objs}), timeout=WAIT)
        assert r.status_code == 202
        status_id = r.json()["id"]
        r = requests.post(url, auth=PARTNER, headers=H, data=json.dumps({"objects": objs[:1]}), timeout=WAIT)
        assert r.status_code == 202  # idempotent re-post: audited, nothing new stored
        r = requests.delete(url + objs[1]["id"] + "/", auth=PARTNER, headers=H, timeout=WAIT)
        assert r.status_code == 200
        r = requests.delete(url + objs[1]["id"] + "/", auth=PARTNER, headers=H, timeout=WAIT)
        assert r.status_code == 404  # nothing deleted: nothing audited
    store = open_store(db_url)
    try:
        entries = [e for e in list_entries(store, limit=1000) if e.action.startswith("taxii.")]
    finally:
        store.close()
    assert [e.action for e in entries] == ["taxii.objects.added", "taxii.objects.added", "taxii.object.deleted"]
    first, again, deleted = entries
    assert first.actor == "taxii:partner" and first.target == f"taxii-collection:{cid}"
    assert first.evidence["status_id"] == status_id and first.evidence["root"] == "api1"
    assert first.evidence["ids"] == [o["id"] for o in objs] and first.evidence["stored"] == 3
    assert again.evidence["objects"] == 1 and again.evidence["stored"] == 0 and again.evidence["ids"] == []
    assert deleted.evidence["ids"] == [objs[1]["id"]] and deleted.evidence["deleted"] == 1
    env = {**os.environ, "STORMWATCH_DB": db_url}
    done = subprocess.run(
        [*STORMWATCH, "audit", "verify"], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "chain intact" in done.stdout


# -- 5. the pull client against hostile peers --------------------------------------------------------------------


class Peer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, behaviour: Callable[[BaseHTTPRequestHandler, Peer], None]) -> None:
        super().__init__(("127.0.0.1", 0), _PeerHandler)
        self.behaviour = behaviour
        self.hits: list[str] = []
        self.sent = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    @property
    def root(self) -> str:
        return self.base + "/taxii2/api1/"


class _PeerHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Peer

    def do_GET(self) -> None:
        self.server.hits.append(self.path)
        self.server.behaviour(self, self.server)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def peer(behaviour: Callable[[BaseHTTPRequestHandler, Peer], None]) -> Iterator[Peer]:
    srv = Peer(behaviour)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(WAIT)


def send_json(h: BaseHTTPRequestHandler, obj: Any, status: int = 200, **headers: str) -> None:
    raw = json.dumps(obj).encode()
    h.send_response(status)
    h.send_header("Content-Type", TAXII)
    h.send_header("Content-Length", str(len(raw)))
    for k, v in headers.items():
        h.send_header(k.replace("_", "-"), v)
    h.end_headers()
    h.wfile.write(raw)


def _query(h: BaseHTTPRequestHandler) -> dict[str, list[str]]:
    from urllib.parse import parse_qs, urlsplit

    return parse_qs(urlsplit(h.path).query)


def _local(tmp_path: Path) -> Any:
    return open_store(f"sqlite:///{tmp_path / 'puller.db'}")


def _count(store: Any, table: str) -> int:
    return int(store.query(f"SELECT COUNT(*) FROM {table}")[0][0])


def test_pull_refuses_redirects_to_another_host_unless_allowed(tmp_path: Path) -> None:
    def admin(h: BaseHTTPRequestHandler, p: Peer) -> None:  # "a loopback admin URL"
        send_json(h, {"more": False, "objects": [indicator(1)]})

    with peer(admin) as target:

        def redirect(h: BaseHTTPRequestHandler, p: Peer) -> None:
            h.send_response(302)
            h.send_header("Location", target.base + "/admin/export.json")
            h.send_header("Content-Length", "0")
            h.end_headers()

        with peer(redirect) as origin:
            store = _local(tmp_path)
            try:
                with pytest.raises(pull_mod.PullError) as err:
                    pull_mod.pull(store, origin.root, "c1", token="t")
                msg = str(err.value)
                assert origin.base in msg and target.base + "/admin/export.json" in msg
                assert "--allow-redirect-host" in msg
                assert target.hits == [] and _count(store, "share_pulled_objects") == 0
                assert _count(store, "intel_indicators") == 0

                # the same through the `intel pull` command: an error exit naming both URLs
                env = {**os.environ, "STORMWATCH_DB": f"sqlite:///{tmp_path / 'puller.db'}"}
                done = subprocess.run(
                    [*STORMWATCH, "intel", "pull", "--taxii", origin.root, "--collection", "c1", "--token", "t"],
                    env=env, capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
                assert done.returncode == 1, done.stderr
                assert "redirect" in done.stderr and target.base in done.stderr
                assert target.hits == []

                # explicitly allowed: followed
                limits = pull_mod.PullLimits(allow_redirect_hosts=(f"127.0.0.1:{target.server_address[1]}",))
                s = pull_mod.pull(store, origin.root, "c1", token="t", limits=limits)
                assert s.objects == 1 and len(target.hits) == 1
                assert _count(store, "intel_indicators") == 1
            finally:
                store.close()


def test_pull_follows_redirects_within_the_same_origin(tmp_path: Path) -> None:
    def behaviour(h: BaseHTTPRequestHandler, p: Peer) -> None:
        if h.path.startswith("/old/"):
            h.send_response(301)
            h.send_header("Location", h.path.replace("/old/", "/taxii2/", 1))
            h.send_header("Content-Length", "0")
            h.end_headers()
        else:
            send_json(h, {"more": False, "objects": [indicator(2)]})

    with peer(behaviour) as p:
        store = _local(tmp_path)
        try:
            s = pull_mod.pull(store, p.base + "/old/api1/", "c1", token="t")
            assert s.objects == 1 and p.hits[0].startswith("/old/") and p.hits[1].startswith("/taxii2/")
        finally:
            store.close()


def test_pull_refuses_oversize_bodies_while_streaming_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    cap = 1024 * 1024

    def behaviour(h: BaseHTTPRequestHandler, p: Peer) -> None:
        q = _query(h)
        if "next" not in q:  # page 1: fine
            send_json(h, {"more": True, "next": "page-2", "objects": [indicator(3)]})
            return
        if q["next"] == ["page-2"]:  # page 2: no length, streams 3 MiB of envelope until the client hangs up
            h.send_response(200)
            h.send_header("Content-Type", TAXII)
            h.send_header("Connection", "close")
            h.end_headers()
            filler = json.dumps(indicator(4)).encode() + b","
            try:
                h.wfile.write(b'{"more": false, "objects": [')
                while p.sent < 3 * cap:
                    h.wfile.write(filler * 64)
                    p.sent += len(filler) * 64
                h.wfile.write(json.dumps(indicator(5)).encode() + b"]}")
            except OSError:  # the puller hangs up once over its cap: what this peer is for
                pass
            h.close_connection = True

    with peer(behaviour) as p:
        store = _local(tmp_path)
        try:
            limits = pull_mod.PullLimits(max_response_bytes=cap)
            with pytest.raises(pull_mod.PullError) as err:
                pull_mod.pull(store, p.root, "c1", token="t", limits=limits)
            assert p.root in str(err.value) and "limit" in str(err.value) and str(cap) in str(err.value)
            assert pull_mod.checkpoint(store, p.root, "c1") == (None, "page-2")  # resumable at page 2
            assert _count(store, "share_pulled_objects") == 1  # page 1 kept, nothing of page 2
        finally:
            store.close()


def test_pull_refuses_a_declared_oversize_body_without_reading_it(tmp_path: Path) -> None:
    def behaviour(h: BaseHTTPRequestHandler, p: Peer) -> None:  # claims 800 MB, sends while the client reads
        h.send_response(200)
        h.send_header("Content-Type", TAXII)
        h.send_header("Content-Length", str(800 * 1024 * 1024))
        h.end_headers()
        try:
            while p.sent < 64 * 1024 * 1024:
                h.wfile.write(b" " * 65536)
                p.sent += 65536
        except OSError:  # the puller hangs up once over its cap: what this peer is for
            pass
        h.close_connection = True

    with peer(behaviour) as p:
        store = _local(tmp_path)
        try:
            t0 = time.monotonic()
            with pytest.raises(pull_mod.PullError) as err:
                pull_mod.pull(store, p.root, "c1", token="t")
            assert "838860800 bytes" in str(err.value) and p.root in str(err.value)
            assert time.monotonic() - t0 < WAIT
        finally:
            store.close()
    assert p.sent < 64 * 1024 * 1024  # the client hung up long before the server ran out


def test_pull_stops_when_the_peer_repeats_its_next_token(tmp_path: Path) -> None:
    def behaviour(h: BaseHTTPRequestHandler, p: Peer) -> None:
        send_json(h, {"more": True, "next": "same", "objects": [indicator(len(p.hits))]})

    with peer(behaviour) as p:
        store = _local(tmp_path)
        try:
            with pytest.raises(pull_mod.PullError) as err:
                pull_mod.pull(store, p.root, "c1", token="t")
            assert p.root in str(err.value) and "already gave" in str(err.value)
            assert len(p.hits) == 2
            assert pull_mod.checkpoint(store, p.root, "c1") == (None, "same")  # the last good page
        finally:
            store.close()


def test_pull_stops_when_added_after_does_not_advance(tmp_path: Path) -> None:
    def behaviour(h: BaseHTTPRequestHandler, p: Peer) -> None:  # more=true, no next, the same date forever
        send_json(h, {"more": True, "objects": [indicator(1)]}, X_TAXII_Date_Added_Last="2024-01-01T00:00:00.000Z")

    with peer(behaviour) as p:
        store = _local(tmp_path)
        try:
            with pytest.raises(pull_mod.PullError) as err:
                pull_mod.pull(store, p.root, "c1", token="t")
            assert "X-TAXII-Date-Added-Last" in str(err.value)
            assert len(p.hits) == 2
        finally:
            store.close()


def test_pull_of_an_endless_collection_stops_at_the_page_and_time_limits(tmp_path: Path) -> None:
    def behaviour(h: BaseHTTPRequestHandler, p: Peer) -> None:
        n = len(p.hits)
        send_json(h, {"more": True, "next": f"page-{n + 1}", "objects": [indicator(n)]})

    with peer(behaviour) as p:
        store = _local(tmp_path)
        try:
            s = pull_mod.pull(store, p.root, "c1", token="t", limits=pull_mod.PullLimits(max_pages=7))
            assert s.pages == 7 and s.stopped is not None and "page limit" in s.stopped
            assert pull_mod.checkpoint(store, p.root, "c1") == (None, "page-8")
            s2 = pull_mod.pull(store, p.root, "c1", token="t", limits=pull_mod.PullLimits(max_pages=3))
            assert s2.resumed and s2.pages == 3 and p.hits[7].endswith("next=page-8")
            t0 = time.monotonic()
            s3 = pull_mod.pull(store, p.root, "c1", token="t", limits=pull_mod.PullLimits(max_seconds=0.5))
            assert s3.stopped is not None and "time limit" in s3.stopped and time.monotonic() - t0 < WAIT
            assert s3.pages > 0
            assert pull_mod.PullLimits().max_pages == 10_000  # the default cap when none is given
        finally:
            store.close()
        # the command: stops at --max-pages, says so, exits 0, and the checkpoint resumes
        env = {**os.environ, "STORMWATCH_DB": f"sqlite:///{tmp_path / 'cli.db'}"}
        hits = len(p.hits)
        done = subprocess.run(
            [*STORMWATCH, "intel", "pull", "--taxii", p.root, "--collection", "c1", "--token", "t",
             "--max-pages", "4", "--no-import"],
            env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "page limit" in done.stderr and p.root in done.stderr
        assert len(p.hits) - hits == 4


def test_pull_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        pull_mod.PullLimits(max_pages=0)
    with pytest.raises(ValueError):
        pull_mod.PullLimits(max_response_bytes=0)
    with pytest.raises(ValueError):
        pull_mod.PullLimits(max_seconds=0)
    with pytest.raises(ValueError):
        pull_mod.PullLimits(allow_redirect_hosts=("http://evil/path",))
