"""A reference webhook receiver: what a platform's account system does with stormwatch actions.

Run ``python -m stormwatch.disrupt.receiver --port 8787 --ledger applied.jsonl`` with the signing
secret in ``STORMWATCH_WEBHOOK_SECRET``. It checks the signature and timestamp, applies each
``webhook-id`` at most once (the ledger is fsynced *before* the 2xx, so a crash between the two
makes the sender retry and the retry is recognised as a duplicate), and answers 2xx for
duplicates too. ``--die-after N`` kills the process while handling the N-th new action, after
applying it and before answering (the test suite's crash). Stdlib only; not a production server.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import orjson

from stormwatch.disrupt.sinks import verify_signature


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.applied: set[str] = set()
        if path.exists():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    self.applied.add(str(orjson.loads(line)["id"]))

    def apply(self, msg_id: str, payload: dict[str, object]) -> None:
        with open(self.path, "ab") as fh:
            fh.write(orjson.dumps({"id": msg_id, "type": payload.get("type"), "pid": os.getpid()}) + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.applied.add(msg_id)


def make_handler(ledger: Ledger, secret: str, log: Path | None, die_after: int, delay: float) -> type:
    state = {"new": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = orjson.dumps(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the sender gave up; it retries
                self.wfile.write(data)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not verify_signature(secret, dict(self.headers.items()), body):
                self._answer(401, {"error": "bad signature"})
                return
            msg_id = self.headers["webhook-id"]
            if log is not None:
                with open(log, "ab") as fh:
                    fh.write(msg_id.encode() + b"\n")
            if delay:
                time.sleep(delay)
            if msg_id in ledger.applied:
                self._answer(200, {"id": msg_id, "duplicate": True})
                return
            ledger.apply(msg_id, orjson.loads(body))
            state["new"] += 1
            if die_after and state["new"] >= die_after:
                os._exit(17)  # crash after applying, before answering
            self._answer(200, {"id": msg_id, "applied": True})

    return Handler


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ledger", type=Path, required=True, help="JSONL of applied ids (the dedupe store)")
    ap.add_argument("--log", type=Path, help="append every received webhook-id here (duplicates included)")
    ap.add_argument("--secret-env", default="STORMWATCH_WEBHOOK_SECRET")
    ap.add_argument("--die-after", type=int, default=0)
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to wait per request")
    args = ap.parse_args(argv)
    secret = os.environ[args.secret_env]
    handler = make_handler(Ledger(args.ledger), secret, args.log, args.die_after, args.delay)
    server = HTTPServer((args.host, args.port), handler)
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":  # pragma: no cover
    main()
