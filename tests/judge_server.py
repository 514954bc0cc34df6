"""A local stand-in for a guard model served behind an OpenAI-compatible API (vLLM / Ollama).

Run: ``python tests/judge_server.py [--port 0]``; it prints ``PORT <n>`` on its first stdout line,
serves on 127.0.0.1 only, and stops by itself after ``--max-seconds`` (default 300) or on SIGTERM.

Endpoints:

* ``POST /v1/chat/completions``: answers like Llama Guard 3 with a deterministic keyword rule
  over the *last user turn* (``unsafe\\nS14`` for code-interpreter abuse words, ``unsafe\\nS2`` for
  other attack words, ``unsafe\\nS7`` for doxxing, else ``safe``). When the system prompt asks for
  JSON (the detector's ``generic-json`` format) it answers a JSON verdict instead. With
  ``"logprobs": true`` it returns first-token top logprobs (``unsafe`` 0.9 / ``safe`` 0.1 or the
  reverse). Responses are in the OpenAI chat-completion shape.
* ``POST /_control``: program faults, e.g. ``{"fail": 2, "status": 500}`` (the next 2 completions
  fail with HTTP 500), ``{"delay": 1, "seconds": 3}`` (the next completion sleeps 3 s before
  answering), ``{"garbage": 1}`` (the next reply is not a Llama Guard verdict), ``{"reset": true}``.
* ``GET /_requests``: every completion request received so far (path, headers, JSON body), and
  ``max_in_flight``, the most completions served at once.
* ``GET /v1/models``: one model, ``llama-guard3``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CODE_ABUSE = re.compile(r"container escape|privilege escalation|escape the sandbox|fork bomb", re.I)
ATTACK = re.compile(r"keylogger|ransomware|malware|exploit|phishing|credential|botnet|shellcode", re.I)
PRIVACY = re.compile(r"home address|dox", re.I)


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.fail = 0
        self.fail_status = 500
        self.delay = 0
        self.delay_seconds = 0.0
        self.garbage = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.slow_all = 0.0
        self.abandoned = 0  # completions whose client hung up before the reply (timeouts)


STATE = State()


def verdict_for(text: str) -> tuple[str, list[str]]:
    if CODE_ABUSE.search(text):
        return "unsafe", ["S14"]
    if ATTACK.search(text):
        return "unsafe", ["S2"]
    if PRIVACY.search(text):
        return "unsafe", ["S7"]
    return "safe", []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        return

    def _send(self, status: int, obj: Any, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        return json.loads(raw or b"{}")

    def do_GET(self) -> None:
        if self.path == "/_requests":
            with STATE.lock:
                self._send(
                    200,
                    {
                        "requests": STATE.requests,
                        "max_in_flight": STATE.max_in_flight,
                        "in_flight": STATE.in_flight,
                        "abandoned": STATE.abandoned,
                    },
                )
        elif self.path.rstrip("/") == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "llama-guard3", "object": "model", "owned_by": "test"}]})
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        try:
            body = self._body()
        except json.JSONDecodeError:
            self._send(400, {"error": {"message": "bad json"}})
            return
        if self.path == "/_control":
            with STATE.lock:
                if body.get("reset"):
                    STATE.requests.clear()
                    STATE.fail = STATE.delay = STATE.garbage = 0
                    STATE.max_in_flight = 0
                    STATE.slow_all = 0.0
                STATE.fail = int(body.get("fail", STATE.fail))
                STATE.fail_status = int(body.get("status", STATE.fail_status))
                STATE.delay = int(body.get("delay", STATE.delay))
                STATE.delay_seconds = float(body.get("seconds", STATE.delay_seconds))
                STATE.garbage = int(body.get("garbage", STATE.garbage))
                STATE.slow_all = float(body.get("slow_all", STATE.slow_all))
            self._send(200, {"ok": True})
            return
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        with STATE.lock:
            STATE.requests.append({"path": self.path, "headers": dict(self.headers.items()), "body": body})
            STATE.in_flight += 1
            STATE.max_in_flight = max(STATE.max_in_flight, STATE.in_flight)
            fail = STATE.fail > 0
            if fail:
                STATE.fail -= 1
            delay = STATE.delay > 0
            if delay:
                STATE.delay -= 1
            garbage = STATE.garbage > 0
            if garbage:
                STATE.garbage -= 1
            slow = STATE.slow_all
        try:
            if slow:
                time.sleep(slow)
            if delay:
                time.sleep(STATE.delay_seconds)
            if fail:
                self._send(STATE.fail_status, {"error": {"message": "injected failure", "type": "server_error"}})
                return
            self._send(200, self._completion(body, garbage))
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            with STATE.lock:
                STATE.abandoned += 1
        finally:
            with STATE.lock:
                STATE.in_flight -= 1

    def _completion(self, body: dict[str, Any], garbage: bool) -> dict[str, Any]:
        messages = body.get("messages") or []
        users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
        text = users[-1] if users else ""
        label, codes = verdict_for(text)
        wants_json = any(m.get("role") == "system" and "JSON" in str(m.get("content", "")) for m in messages)
        if garbage:
            content = "I am not sure what you mean."
        elif wants_json:
            cats = {"S14": ["LLMT-08"], "S2": ["LLMT-03"], "S7": ["LLMT-01"]}.get(codes[0], []) if codes else []
            content = (
                "```json\n"
                + json.dumps(
                    {
                        "verdict": "malicious" if label == "unsafe" else "benign",
                        "score": 0.93 if label == "unsafe" else 0.04,
                        "categories": cats,
                        "reason": "keyword rule",
                    }
                )
                + "\n```"
            )
        else:
            content = label if label == "safe" else "unsafe\n" + ",".join(codes)
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": content},
        }
        if body.get("logprobs"):
            import math

            p_unsafe = 0.9 if label == "unsafe" else 0.1
            first = label
            choice["logprobs"] = {
                "content": [
                    {
                        "token": first,
                        "logprob": math.log(p_unsafe if first == "unsafe" else 1 - p_unsafe),
                        "bytes": list(first.encode()),
                        "top_logprobs": [
                            {"token": "unsafe", "logprob": math.log(p_unsafe), "bytes": list(b"unsafe")},
                            {"token": "safe", "logprob": math.log(1 - p_unsafe), "bytes": list(b"safe")},
                        ],
                    }
                ]
            }
        return {
            "id": f"chatcmpl-{len(STATE.requests)}",
            "object": "chat.completion",
            "created": 0,
            "model": body.get("model", "llama-guard3"),
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(text.split()),
                "completion_tokens": 2,
                "total_tokens": len(text.split()) + 2,
            },
        }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ns = ap.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", ns.port), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    timer = threading.Timer(ns.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
