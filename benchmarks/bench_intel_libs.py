"""The cost of the maintained libraries the intel package now uses, against the hand-written code they replaced.

1. MISP feed writing: PyMISP (``MISPEvent.from_dict`` + ``to_feed(with_meta=True)``, what
   :func:`stormwatch.intel.misp.write_feed` does) vs the former hand-written writer (kept below as the
   baseline), for ``--events`` events of ``--attributes`` attributes and one user-account object each.
2. TAXII pull, fetch + parse of one page: taxii2-client's ``Collection.get_objects`` over the bounded
   transport (what :func:`stormwatch.intel.pull.pull` does) vs the former raw path (the bounded
   ``_fetch`` + ``orjson.loads``), against a loopback peer serving pages of ``--page-size`` indicators.

Usage::

    .venv/bin/python benchmarks/bench_intel_libs.py [--events 200] [--attributes 50] [--pages 200] [--page-size 500]

Results go to ``benchmarks/results/intel_libs.json`` (ratio = library time / hand-written time).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson

from stormwatch.intel import TAXII_MEDIA_TYPE
from stormwatch.intel.misp import USER_ACCOUNT_TEMPLATE, write_feed
from stormwatch.intel.pull import BoundedSession, PullLimits, _fetch

RESULTS = Path(__file__).parent / "results" / "intel_libs.json"


def handwritten_write_feed(events: Iterable[dict[str, Any]], out_dir: Path) -> dict[str, Any]:
    """The feed writer stormwatch had before PyMISP (the baseline)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {}
    hashes: list[tuple[str, str]] = []
    n = 0
    for wrapped in events:
        e = wrapped["Event"]
        (out_dir / f"{e['uuid']}.json").write_bytes(orjson.dumps(wrapped, option=orjson.OPT_INDENT_2))
        manifest[e["uuid"]] = {
            k: e[k] for k in ("Orgc", "Tag", "info", "date", "analysis", "threat_level_id", "timestamp")
        }
        values = [a["value"] for a in e["Attribute"]] + [a["value"] for o in e["Object"] for a in o["Attribute"]]
        hashes += [(hashlib.md5(v.encode()).hexdigest(), e["uuid"]) for v in values]
        n += 1
    (out_dir / "manifest.json").write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    with open(out_dir / "hashes.csv", "w", newline="") as f:
        csv.writer(f).writerows(hashes)
    return {"events": n, "hashes": len(hashes), "dir": str(out_dir)}


def synthetic_events(n: int, n_attr: int) -> list[dict[str, Any]]:
    events = []
    for i in range(n):
        ev_uuid = str(uuid.UUID(int=i + 1))
        attrs = [
            {"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}/{k}")), "type": "ip-src", "category": "Network activity",
             "value": f"10.{i % 250}.{k // 250}.{k % 250}", "to_ids": True, "comment": "", "timestamp": "1735689600",
             "Tag": [{"name": "tlp:amber"}]}
            for k in range(n_attr)
        ]  # fmt: skip
        obj = {
            "name": "user-account", "meta-category": "misc", "template_uuid": USER_ACCOUNT_TEMPLATE[0],
            "template_version": USER_ACCOUNT_TEMPLATE[1], "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}/acct")),
            "timestamp": "1735689600", "comment": "pseudonymous account",
            "Attribute": [{"uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{i}/uid")), "object_relation": "user-id",
                           "type": "text", "category": "Other", "value": f"hmac-sha256:g:{i:064x}", "to_ids": False,
                           "timestamp": "1735689600"}],
        }  # fmt: skip
        events.append(
            {"Event": {"uuid": ev_uuid, "info": f"cluster {i}", "date": "2025-01-01", "threat_level_id": "2",
                       "analysis": "2", "published": True, "timestamp": "1735689600",
                       "publish_timestamp": "1735689600", "Orgc": {"name": "stormwatch", "uuid": str(uuid.UUID(int=7))},
                       "Tag": [{"name": "tlp:amber"}, {"name": 'misp-galaxy:threat-actor="Sofacy"'}],
                       "Attribute": attrs, "Object": [obj]}}
        )  # fmt: skip
    return events


def bench_misp(n: int, n_attr: int, repeat: int) -> dict[str, Any]:
    events = synthetic_events(n, n_attr)
    out: dict[str, Any] = {"events": n, "attributes_per_event": n_attr}
    for name, fn in (("handwritten_s", handwritten_write_feed), ("pymisp_s", write_feed)):
        best = float("inf")
        for _ in range(repeat):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                fn(events, Path(tmp) / "feed")
                best = min(best, time.perf_counter() - t)
        out[name] = round(best, 4)
    out["ratio"] = round(out["pymisp_s"] / out["handwritten_s"], 2)
    return out


def _page(page_size: int) -> bytes:
    objs = [
        {"type": "indicator", "spec_version": "2.1", "id": f"indicator--{uuid.UUID(int=k)}",
         "created": "2025-01-01T00:00:00.000Z", "modified": "2025-01-01T00:00:00.000Z",
         "pattern": f"[ipv4-addr:value = '10.0.{k // 250}.{k % 250}']", "pattern_type": "stix",
         "valid_from": "2025-01-01T00:00:00Z", "name": "x" * 40}
        for k in range(page_size)
    ]  # fmt: skip
    return orjson.dumps({"more": False, "objects": objs})


def bench_pull(pages: int, page_size: int) -> dict[str, Any]:
    import requests
    from taxii2client.common import _HTTPConnection
    from taxii2client.v21 import Collection

    body = _page(page_size)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", TAXII_MEDIA_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/taxii2/api1/collections/c1/objects/"
    limits = PullLimits()
    out: dict[str, Any] = {"pages": pages, "page_size": page_size, "page_bytes": len(body)}
    try:
        s = requests.Session()
        t = time.perf_counter()
        for _ in range(pages):
            f = _fetch(
                s, url, {"limit": page_size}, limits=limits, deadline=time.monotonic() + 60, timeout=60, verify=True
            )
            assert len(orjson.loads(f.body)["objects"]) == page_size
        out["handwritten_s"] = round(time.perf_counter() - t, 4)
        transport = BoundedSession(
            requests.Session(), url, limits=limits, deadline=time.monotonic() + 600, timeout=60, verify=True
        )
        conn = _HTTPConnection(version="2.1")
        conn.session = transport
        col = Collection(url[: -len("objects/")], conn=conn,
                         collection_info={"id": "c1", "title": "c1", "can_read": True, "can_write": False})  # fmt: skip
        t = time.perf_counter()
        for _ in range(pages):
            assert len(col.get_objects(limit=page_size)["objects"]) == page_size
        out["taxii2client_s"] = round(time.perf_counter() - t, 4)
    finally:
        srv.shutdown()
        srv.server_close()
    out["ratio"] = round(out["taxii2client_s"] / out["handwritten_s"], 2)
    out["taxii2client_objects_per_s"] = round(pages * page_size / out["taxii2client_s"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--attributes", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pages", type=int, default=200)
    ap.add_argument("--page-size", type=int, default=500)
    args = ap.parse_args()
    result = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "misp_feed": bench_misp(args.events, args.attributes, args.repeat),
        "taxii_pull_page": bench_pull(args.pages, args.page_size),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
