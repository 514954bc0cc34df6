"""docs/online.md: its ``python`` examples run against a live server, its LiteLLM ``yaml`` configs are
loaded the way the LiteLLM proxy loads them. (Its shell blocks run in tests/test_docs_examples.py.)"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from online_support import Live, serve_thread
from stormwatch.store import open_store

DOC = (Path(__file__).resolve().parents[1] / "docs" / "online.md").read_text(encoding="utf-8")
FENCE = re.compile(r"^```(?P<tag>\w+)\n(?P<body>.*?)^```$", re.M | re.S)
BLOCKS = [(m.group("tag"), m.group("body")) for m in FENCE.finditer(DOC)]
PYTHON = [body for tag, body in BLOCKS if tag == "python"]
YAML = [yaml.safe_load(body) for tag, body in BLOCKS if tag == "yaml"]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORMWATCH_DETECTORS", "first_tier")
        for srv, _app in serve_thread(tmp_path_factory.mktemp("docs-online")):
            mp.setenv("STORMWATCH_URL", srv.base)
            mp.setenv("STORMWATCH_SCREEN_TOKEN", srv.tokens["screen"])
            mp.setenv("STORMWATCH_INGEST_TOKEN", srv.tokens["ingest"])
            mp.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", srv.base + "/v1/traces")
            mp.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"Authorization=Bearer%20{srv.tokens['ingest']}")
            mp.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
            yield srv


def test_the_doc_has_the_promised_examples() -> None:
    assert len(PYTHON) == 3 and len(YAML) == 3 and "GENERIC_LOGGER_ENDPOINT" in DOC


def _events(live: Live) -> list[Any]:
    store = open_store(live.db)
    try:
        return [e for _, e in store.iter_events()]
    finally:
        store.close()


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_python_examples_run(live: Live, index: int, capsys: pytest.CaptureFixture[str]) -> None:
    before = len(_events(live))
    exec(compile(PYTHON[index], f"docs/online.md python block {index + 1}", "exec"), {"__name__": "__docs__"})
    after = _events(live)
    assert len(after) == before + 1
    event = after[-1]
    if index == 0:  # moderations: scored, and the call stored under the caller's token
        assert capsys.readouterr().out.startswith("True")
        assert (event.source, event.account_id) == ("moderations", "token:litellm-proxy")
    else:
        assert (event.account_id, event.end_user_id) == ("acct_123", "customer-42")
        assert event.messages and event.messages[0]["role"] == "user"


def test_litellm_configs_load_as_the_proxy_loads_them(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each guardrail entry builds the class LiteLLM would build, pointed at the live server."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytest.importorskip("litellm")
    from litellm.proxy.guardrails.guardrail_hooks.generic_guardrail_api.generic_guardrail_api import GenericGuardrailAPI
    from litellm.proxy.types_utils.utils import get_instance_fn

    monkeypatch.setenv("STORMWATCH_TOKEN", live.tokens["screen"])
    guardrails = [g for doc in YAML for g in doc.get("guardrails", [])]
    assert [g["litellm_params"]["guardrail"] for g in guardrails] == [
        "generic_guardrail_api",
        "stormwatch.integrations.litellm_guardrail.StormwatchGuardrail",
    ]
    for entry in guardrails:
        params = dict(entry["litellm_params"])
        kind = params.pop("guardrail")
        mode = params.pop("mode")
        default_on = params.pop("default_on")
        params["api_key"] = live.tokens["screen"]  # os.environ/... is resolved by the proxy
        params["api_base"] = live.base
        cls = GenericGuardrailAPI if kind == "generic_guardrail_api" else get_instance_fn(kind)
        guardrail = cls(guardrail_name=entry["guardrail_name"], event_hook=mode, default_on=default_on, **params)
        assert isinstance(guardrail, GenericGuardrailAPI)
        assert guardrail.api_base == live.base + "/beta/litellm_basic_guardrail_api"
        assert "x-forwarded-for" in [str(h).lower() for h in guardrail.extra_headers]
        assert guardrail.headers["x-api-key"] == live.tokens["screen"]
    (logging,) = [doc for doc in YAML if "litellm_settings" in doc]
    assert logging["litellm_settings"]["callbacks"] == ["generic_api"]


def test_litellm_logging_callback_as_documented(live: Live, monkeypatch: pytest.MonkeyPatch) -> None:
    """The documented environment, read by LiteLLM's own callback, lands the call in the store."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    pytest.importorskip("litellm")
    import asyncio
    import json

    from litellm.integrations.generic_api.generic_api_callback import GenericAPILogger

    exports = dict(re.findall(r"^export (GENERIC_LOGGER_\w+)=(.+)$", DOC, flags=re.M))
    endpoint = exports["GENERIC_LOGGER_ENDPOINT"].replace("http://127.0.0.1:18765", live.base)
    headers = exports["GENERIC_LOGGER_HEADERS"].strip('"').replace("$(cat ingest.token)", live.tokens["ingest"])
    monkeypatch.setenv("GENERIC_LOGGER_ENDPOINT", endpoint)
    monkeypatch.setenv("GENERIC_LOGGER_HEADERS", headers)
    payload = json.loads((Path(__file__).parent / "fixtures/wire/litellm_standard_logging_payload.json").read_text())

    async def send() -> None:
        logger = GenericAPILogger()  # what `callbacks: ["generic_api"]` builds
        logger.log_queue.append(payload)
        await logger.async_send_batch()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()

    asyncio.run(send())
    stored = [e for e in _events(live) if e.event_id == payload["id"]]
    assert len(stored) == 1 and stored[0].account_id == "token:otel-exporter"  # no proxy auth in the capture
