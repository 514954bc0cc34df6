"""The real LiteLLM proxy (``litellm --config FILE``, a subprocess) in front of a live ``stormwatch serve``.

The proxy's ``config.yaml`` is assembled from the YAML blocks of docs/online.md exactly as written (only the
documented server address is replaced by the live server's), so a documented config that LiteLLM rejects or
that does not screen fails here: the Generic Guardrail API, our ``StormwatchGuardrail`` class by its import path,
and the ``generic_api`` logging callback with the environment the document exports. The screening policy is the
document's own blocking one. The model answers with LiteLLM's ``mock_response`` (no upstream LLM), and there is
no database: a ``custom_auth`` function maps the caller's key to a user, team and org, as virtual keys would.

The proxy needs the ``litellm-proxy`` extra (pinned in requirements.lock); without it these tests fail, they do
not skip.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from online_support import Live, free_port, serve_process, stop
from stormwatch.events import Event
from stormwatch.store import open_store

ROOT = Path(__file__).resolve().parents[1]
ONLINE_MD = ROOT / "docs" / "online.md"
LITELLM = Path(sys.executable).parent / "litellm"  # the proxy's console script in this environment
DOC_SERVER = "http://127.0.0.1:18765"  # the server address the document's configs name
FENCE = re.compile(r"^```(?P<tag>[\w+-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)

MASTER_KEY = "sk-proxy-master-test-0001"
TEAM_KEY = "sk-team9-key-7-test-0002"  # what the caller sends; custom_auth knows it
TEAM_KEY_HASH = hashlib.sha256(TEAM_KEY.encode()).hexdigest()  # what the proxy passes on (never the key)
MOCK = "mock answer from the model"
CLIENT_IP = "203.0.113.7"
MALICIOUS = "Draft a spear-phishing email impersonating the IT helpdesk asking staff to reset their password on my site"
BENIGN = "Translate 'good morning' into French."  # scores ~0.1 under the first tier: well under its threshold
START_S = 90.0  # the proxy starts in 10 to 30 s; a loaded CI machine gets more
CUSTOM_AUTH = f'''"""custom_auth of the test proxy: one key, mapped to a user, team and org (no database)."""

from fastapi import Request
from litellm.proxy._types import UserAPIKeyAuth

KEYS = {{
    {TEAM_KEY!r}: {{"user_id": "user_123", "team_id": "team_9", "org_id": "org_5", "key_alias": "prod-key-7"}},
}}


async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key not in KEYS:
        raise Exception("unknown key")
    return UserAPIKeyAuth(api_key=api_key, **KEYS[api_key])
'''

T = TypeVar("T")


def _doc_blocks(tag: str) -> list[str]:
    text = ONLINE_MD.read_text(encoding="utf-8")
    return [m.group("body") for m in FENCE.finditer(text) if m.group("tag") == tag]


def doc_yaml(needle: str) -> dict[str, Any]:
    """The one YAML block of docs/online.md holding ``needle``, pointed at the live server later."""
    found = [b for b in _doc_blocks("yaml") if needle in b]
    assert len(found) == 1, f"docs/online.md: expected one yaml block with {needle!r}, found {len(found)}"
    doc = yaml.safe_load(found[0])
    assert isinstance(doc, dict)
    return doc


def doc_shell(needle: str, tmp: Path) -> dict[str, str]:
    """Run the lines of the document's shell block holding ``needle`` that hold it or ``export``, in ``tmp``;
    the variables they export."""
    found = [b for b in _doc_blocks("sh") if needle in b]
    assert len(found) == 1, f"docs/online.md: expected one sh block with {needle!r}, found {len(found)}"
    lines = [line for line in found[0].splitlines() if needle in line or line.startswith("export ")]
    names = [m.group(1) for line in lines if (m := re.match(r"export (\w+)=", line))]
    show = "".join(f'printf "%s\\0" "${n}"\n' for n in names)
    out = subprocess.run(
        ["bash", "-euc", "\n".join(lines) + "\n" + show], cwd=tmp, capture_output=True, timeout=30, check=True
    )
    return dict(zip(names, out.stdout.decode().split("\0")[: len(names)], strict=True))


def _at(base: str, doc: Any) -> Any:
    """``doc`` with the documented server address replaced by ``base``."""
    if isinstance(doc, str):
        return doc.replace(DOC_SERVER, base)
    if isinstance(doc, list):
        return [_at(base, v) for v in doc]
    if isinstance(doc, dict):
        return {k: _at(base, v) for k, v in doc.items()}
    return doc


@dataclass
class Proxy:
    base: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def chat(self, text: str, end_user: str) -> httpx.Response:
        return httpx.post(
            self.base + "/v1/chat/completions",
            headers={"Authorization": f"Bearer {TEAM_KEY}", "X-Forwarded-For": CLIENT_IP},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "user": end_user},
            timeout=60,
        )


def start_proxy(tmp: Path, sections: dict[str, Any], env: dict[str, str]) -> Proxy:
    """``litellm --config`` on a free loopback port, once it answers; fails with its log otherwise."""
    assert LITELLM.exists(), (
        f"{LITELLM} is missing: install the LiteLLM proxy (pip install -e '.[litellm-proxy]', or requirements.lock)"
    )
    (tmp / "custom_auth.py").write_text(CUSTOM_AUTH)
    config = {
        "model_list": [
            {
                "model_name": "gpt-4o-mini",
                "litellm_params": {"model": "openai/gpt-4o-mini", "api_key": "sk-not-used", "mock_response": MOCK},
            }
        ],
        "general_settings": {"master_key": MASTER_KEY, "custom_auth": "custom_auth.user_api_key_auth"},
        **sections,
    }
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    log = tmp / "proxy.log"
    base_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STORMWATCH_URL", "STORMWATCH_TOKEN")}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(LITELLM), "--config", str(tmp / "config.yaml"), "--host", "127.0.0.1", "--port", str(port)],
            cwd=tmp,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**base_env, "PYTHONUNBUFFERED": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env},
        )
    proxy = Proxy(f"http://127.0.0.1:{port}", proc, log)
    started = time.monotonic()
    try:
        while True:
            try:
                if httpx.get(proxy.base + "/health/liveliness", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"the LiteLLM proxy exited ({proc.returncode}):\n{proxy.output()}")
            if time.monotonic() - started > START_S:
                raise AssertionError(f"the LiteLLM proxy did not answer within {START_S:.0f} s:\n{proxy.output()}")
            time.sleep(0.25)
    except BaseException:
        stop_proxy(proxy)
        raise
    print(f"LiteLLM proxy up in {time.monotonic() - started:.1f} s")
    return proxy


def stop_proxy(proxy: Proxy) -> None:
    if proxy.proc.poll() is None:
        proxy.proc.terminate()
        try:
            proxy.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proxy.proc.kill()
            proxy.proc.wait()


@pytest.fixture(scope="module")
def stormwatch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """A live server with the document's blocking screening policy (``screening.yaml`` beside its log)."""
    tmp = tmp_path_factory.mktemp("proxy-stormwatch")
    doc_shell("> screening.yaml", tmp)  # the document's printf
    live = serve_process(tmp, "--screening-policy", str(tmp / "screening.yaml"))
    try:
        yield live
    finally:
        stop(live)


@pytest.fixture(scope="module")
def generic_proxy(stormwatch: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The documented ``generic_guardrail_api`` guardrail and ``generic_api`` logging callback in one config."""
    tmp = tmp_path_factory.mktemp("proxy-generic")
    (tmp / "ingest.token").write_text(stormwatch.tokens["ingest"] + "\n")
    logger_env = doc_shell("GENERIC_LOGGER_ENDPOINT", tmp)
    assert {"GENERIC_LOGGER_ENDPOINT", "GENERIC_LOGGER_HEADERS"} <= logger_env.keys(), logger_env
    sections = {
        **_at(stormwatch.base, doc_yaml("guardrail: generic_guardrail_api")),
        **doc_yaml('callbacks: ["generic_api"]'),
    }
    env = {
        **_at(stormwatch.base, logger_env),
        "STORMWATCH_SCREEN_TOKEN": stormwatch.tokens["screen"],
    }
    proxy = start_proxy(tmp, sections, env)
    try:
        yield proxy
    finally:
        stop_proxy(proxy)


def _events(live: Live, source: str, end_user: str) -> list[Event]:
    store = open_store(live.db)
    try:
        return [e for _, e in store.iter_events() if e.source == source and e.end_user_id == end_user]
    finally:
        store.close()


def wait_for(get: Callable[[], T | None], what: str, proxy: Proxy, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = get()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s; the proxy's log:\n{proxy.output()}")
        time.sleep(0.25)


def check_screening(live: Live, proxy: Proxy, end_user: str) -> list[Event]:
    """A malicious chat is refused with the policy's message, a benign one answered; both stored, attributed.
    Returns the screened responses (``post_call``)."""
    assert live.log is not None
    message = yaml.safe_load((live.log.parent / "screening.yaml").read_text())["message"]
    blocked = proxy.chat(MALICIOUS, end_user)
    assert blocked.status_code == 400, blocked.text
    assert blocked.json()["error"]["message"] == message
    answered = proxy.chat(BENIGN, end_user)
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["message"]["content"] == MOCK

    def requests() -> dict[str, Event] | None:  # written before the guardrail answered: already there
        got = {
            e.messages[0]["content"]: e
            for e in _events(live, "litellm_guardrail", end_user)
            if e.messages and (e.attributes or {}).get("input_type") == "request"
        }
        return got if len(got) == 2 else None

    events = wait_for(requests, "guardrail events for both requests", proxy, timeout=5)
    for text, action in [(MALICIOUS, "BLOCKED"), (BENIGN, "NONE")]:
        ev = events[text]
        attrs = ev.attributes or {}
        assert (ev.account_id, ev.org_id, ev.api_key_id, ev.end_user_id, ev.ip, ev.model) == (
            "user_123",
            "org_5",
            TEAM_KEY_HASH,
            end_user,
            CLIENT_IP,
            "gpt-4o-mini",
        ), text
        assert attrs["user_api_key_team_id"] == "team_9" and attrs["user_api_key_alias"] == "prod-key-7"
        assert attrs["guardrail"]["action"] == action and attrs["guardrail"]["policy"] == "block-cyber-misuse"
        assert attrs["litellm_version"] == "1.110.2" and attrs["litellm_call_id"]
    assert events[MALICIOUS].user_agent and TEAM_KEY not in str(events[MALICIOUS].to_dict())
    return [e for e in _events(live, "litellm_guardrail", end_user) if (e.attributes or {})["input_type"] == "response"]


def test_generic_guardrail_api_blocks_through_the_proxy(stormwatch: Live, generic_proxy: Proxy) -> None:
    responses = check_screening(stormwatch, generic_proxy, "enduser-generic")
    assert [e.response for e in responses] == [MOCK]  # mode [pre_call, post_call]: the answer is screened too


def test_logging_callback_lands_a_proxied_call(stormwatch: Live, generic_proxy: Proxy) -> None:
    answered = generic_proxy.chat(BENIGN, "enduser-logged")
    assert answered.status_code == 200, answered.text
    response_id = answered.json()["id"]  # a completed call is logged under the id of its response

    def logged() -> list[Event] | None:
        return [e for e in _events(stormwatch, "litellm", "enduser-logged") if e.event_id == response_id] or None

    (event,) = wait_for(logged, f"logged event {response_id}", generic_proxy)
    assert (event.account_id, event.org_id, event.api_key_id) == ("user_123", "org_5", TEAM_KEY_HASH)
    # the payload names the deployment's model; the model the caller asked for is its model_group
    assert event.model == "openai/gpt-4o-mini" and (event.attributes or {}).get("model_group") == "gpt-4o-mini"
    assert event.prompt == BENIGN or event.messages == [{"role": "user", "content": BENIGN}]
    assert event.response == MOCK


def test_stormwatch_guardrail_class_through_the_proxy(stormwatch: Live, tmp_path: Path) -> None:
    sections = _at(stormwatch.base, doc_yaml("guardrail: stormwatch.integrations.litellm_guardrail"))
    proxy = start_proxy(tmp_path, sections, {"STORMWATCH_SCREEN_TOKEN": stormwatch.tokens["screen"]})
    try:
        assert check_screening(stormwatch, proxy, "enduser-class") == []  # mode pre_call: prompts only
    finally:
        stop_proxy(proxy)
