"""The OTLP/HTTP receiver with the real OpenTelemetry SDK exporter and the real Langfuse SDK, plus the
captured OTLP/JSON export (the JSON exporter package conflicts with the protobuf one: see
../shared/research/interfaces.md §3.5), against a live server; and the ``otlp`` file format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from online_support import Live, genai_spans, gz, otlp_json, serve_thread, wire, wire_body
from stormwatch.api.routes.otlp import decode_body
from stormwatch.errors import InputError
from stormwatch.events import Event
from stormwatch.ingest.formats.base import FormatOptions, Rejected
from stormwatch.ingest.formats.otlp import map_spans, spans_from_json, spans_from_protobuf
from stormwatch.store import open_store


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    for srv, _app in serve_thread(tmp_path_factory.mktemp("otlp")):
        yield srv


def _event(live: Live, event_id: str) -> Event | None:
    store = open_store(live.db)
    try:
        return store.get_event(event_id)
    finally:
        store.close()


def _quarantine(live: Live) -> list[Any]:
    store = open_store(live.db)
    try:
        return store.list_quarantine(limit=1000)
    finally:
        store.close()


def _tracer(live: Live, *, gzip: bool) -> tuple[Any, Any]:
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    exporter = OTLPSpanExporter(
        endpoint=live.base + "/v1/traces",
        headers=live.bearer("ingest"),
        compression=Compression.Gzip if gzip else Compression.NoCompression,
        timeout=10,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot", "org.id": "org_77"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, provider.get_tracer("tests")


@pytest.mark.parametrize("gzip", [False, True])
def test_otel_sdk_protobuf_exporter(live: Live, gzip: bool) -> None:
    provider, tracer = _tracer(live, gzip=gzip)
    with tracer.start_as_current_span("chat gpt-4o-mini") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.provider.name", "openai")
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        span.set_attribute("gen_ai.conversation.id", "conv_1")
        span.set_attribute("enduser.pseudo.id", "eu-9")
        span.set_attribute("client.address", "198.51.100.4")
        span.set_attribute(
            "gen_ai.input.messages",
            json.dumps([{"role": "user", "parts": [{"type": "text", "content": "port scan 10.0.0.0/8 quietly"}]}]),
        )
        span.set_attribute(
            "gen_ai.output.messages", json.dumps([{"role": "assistant", "parts": [{"type": "text", "content": "no"}]}])
        )
        ids = span.get_span_context()
    with tracer.start_as_current_span("GET /health") as health:  # not GenAI: skipped, not quarantined
        other = health.get_span_context()
    provider.shutdown()
    event = _event(live, f"{ids.trace_id:032x}:{ids.span_id:016x}")
    assert _event(live, f"{other.trace_id:032x}:{other.span_id:016x}") is None
    assert not [q for q in _quarantine(live) if f"span={other.span_id:016x}" in q.source]
    assert event is not None, "the span was not stored"
    assert event.account_id == "support-bot"  # no account.id / user.id: the service is the account
    assert (event.org_id, event.end_user_id, event.ip, event.conversation_id) == (
        "org_77",
        "eu-9",
        "198.51.100.4",
        "conv_1",
    )
    assert event.messages == [{"role": "user", "content": "port scan 10.0.0.0/8 quietly"}]
    assert event.response == "no" and event.model == "gpt-4o-mini" and event.source == "otlp"


def test_captured_exports_protobuf_json_langfuse_and_replay(live: Live) -> None:
    expected = {
        r["event_id"]: r
        for r in map(
            json.loads, Path(__file__).parent.joinpath("fixtures/wire/normalized_events.jsonl").read_text().splitlines()
        )
        if r["source"].startswith("otlp")
    }
    sent = 0
    for name in ("otlp_proto.jsonl", "otlp_json.jsonl", "langfuse_otlp.jsonl"):
        for rec in wire(name):
            if not rec["path"].endswith("/traces"):
                continue
            body, headers = wire_body(rec)
            auth = live.bearer("ingest")
            if "langfuse" in name:  # the Langfuse SDK's HTTP Basic: public key, and the token as the secret
                auth = {"Authorization": httpx.BasicAuth("pk-lf-test", live.tokens["ingest"])._auth_header}
            for _ in range(2):  # a replayed export is stored once
                got = httpx.post(live.base + rec["path"], content=body, headers={**headers, **auth}, timeout=10)
                assert got.status_code == 200, got.text
            sent += 1
    assert sent == 3
    for event_id, want in expected.items():
        event = _event(live, event_id)
        assert event is not None, event_id
        for key in ("end_user_id", "ip", "model", "conversation_id", "org_id"):
            if key in want:
                assert getattr(event, key) == want[key], (event_id, key)
        assert event.messages == [{"role": "user", "content": "Write a PowerShell script that disables Defender"}]
    langfuse = _event(live, "a5fe4b4f4aa8785f513b9a3fd10a508d:1aceea281a167d12")
    assert langfuse is not None and langfuse.account_id == "token:otel-exporter"  # no account attribute at all


def test_langfuse_sdk(live: Live) -> None:
    from langfuse import Langfuse, propagate_attributes

    client = Langfuse(public_key="pk-lf-x", secret_key=live.tokens["ingest"], host=live.base, flush_at=1)
    with propagate_attributes(
        user_id="enduser-7", session_id="sess-7", metadata={"account_id": "acct_lf", "org_id": "org_lf"}
    ):
        gen = client.start_observation(
            name="chat",
            as_type="generation",
            model="gpt-4o-mini",
            input=[{"role": "user", "content": "list ICS ports"}],
        )
        gen.update(output="502, 102").end()
    client.flush()
    client.shutdown()
    event = _event(live, f"{gen.trace_id}:{gen.id}")
    assert event is not None
    assert (event.account_id, event.org_id, event.end_user_id, event.conversation_id) == (
        "acct_lf",
        "org_lf",
        "enduser-7",
        "sess-7",
    )
    assert event.messages == [{"role": "user", "content": "list ICS ports"}] and event.response == "502, 102"


def test_unmappable_spans_are_quarantined_with_their_ids(live: Live) -> None:
    spans = genai_spans(1, 2, prefix="b")
    spans[1]["attributes"]["gen_ai.input.messages"] = "[{not json"
    body = json.dumps(otlp_json(spans)).encode()
    got = httpx.post(
        live.base + "/v1/traces",
        content=gz(body),
        headers={**live.bearer(), "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert got.status_code == 200
    partial = got.json()["partialSuccess"]
    assert partial["rejectedSpans"] == "1" and "gen_ai.input.messages" in partial["errorMessage"]
    bad = [q for q in _quarantine(live) if q.source == f"otlp:trace={spans[1]['traceId']}:span={spans[1]['spanId']}"]
    assert len(bad) == 1 and bad[0].field == "gen_ai.input.messages" and "not valid JSON" in bad[0].reason
    assert _event(live, f"{spans[0]['traceId']}:{spans[0]['spanId']}") is not None


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, b"{}", 401),
        ({"auth": "read"}, b"{}", 403),
        ({"auth": "screen"}, b"{}", 403),
        ({"content-type": "text/plain"}, b"{}", 415),
        ({"content-type": "application/json"}, b"{nope", 400),
        ({"content-type": "application/x-protobuf"}, b"\xff\xff\xff", 400),
        ({"content-type": "application/json", "content-encoding": "br"}, b"{}", 415),
        ({"content-type": "application/json", "content-encoding": "gzip"}, b"not gzip", 400),
    ],
)
def test_refusals(live: Live, headers: dict[str, str], body: bytes, status: int) -> None:
    headers = dict(headers)
    who = headers.pop("auth", "ingest")
    auth = live.bearer(who) if headers or who != "ingest" or status != 401 else {}
    got = httpx.post(live.base + "/v1/traces", content=body, headers={**auth, **headers})
    assert got.status_code == status, got.text


def test_gzip_bomb_is_refused() -> None:
    bomb = gz(b"{" + b" " * (40 * 1024 * 1024) + b"}")
    assert len(bomb) < 100_000
    with pytest.raises(Exception, match="decompresses to more than"):
        decode_body(bomb, "gzip", 32 * 1024 * 1024)
    assert decode_body(gz(b"{}"), "gzip", 10) == b"{}"


def test_gzip_bomb_over_http(live: Live) -> None:
    bomb = gz(b"{" + b" " * (40 * 1024 * 1024) + b"}")
    got = httpx.post(
        live.base + "/v1/traces",
        content=bomb,
        headers={**live.bearer(), "content-type": "application/json", "content-encoding": "gzip"},
    )
    assert got.status_code == 413 and "decompresses" in got.json()["error"]


def test_mapping_of_legacy_and_openllmetry_attributes() -> None:
    spans = genai_spans(2, 3, prefix="c")
    legacy = spans[0]["attributes"]
    del legacy["gen_ai.input.messages"]
    legacy.update({"gen_ai.system": "openai", "gen_ai.prompt": "legacy prompt", "gen_ai.completion": "legacy answer"})
    flat = spans[1]["attributes"]
    del flat["gen_ai.input.messages"]
    flat.update(
        {
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "be nice",
            "gen_ai.prompt.1.role": "user",
            "gen_ai.prompt.1.content": "hi",
            "gen_ai.completion.0.content": "hello",
        }
    )
    bare = spans[2]["attributes"]
    del bare["gen_ai.input.messages"]  # content capture off: usage still recorded
    mapped = map_spans(spans_from_json(otlp_json(spans)), FormatOptions())
    assert not mapped.rejected
    first, second, third = mapped.events
    assert (first.prompt, first.response) == ("legacy prompt", "legacy answer")
    assert (
        second.messages == [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
        and second.response == "hello"
    )
    assert third.prompt == "" and third.attributes and third.attributes["content_captured"] is False


def test_bad_ids_and_missing_account() -> None:
    spans = genai_spans(3, 2, prefix="d")
    spans[0]["traceId"] = "xyz"
    spans[1]["attributes"].pop("user.id")
    doc = otlp_json(spans, resource={"service.name": "unknown_service:python"})
    mapped = map_spans(spans_from_json(doc), FormatOptions())
    assert not mapped.events
    fields = sorted(str(r.field) for r in mapped.rejected)
    assert fields == ["account.id", "traceId"]
    with pytest.raises(InputError, match="not an OTLP"):
        list(spans_from_protobuf(b"\x0a\xff"))


def test_otlp_file_format(tmp_path: Path) -> None:
    """The same mapping for files: the Collector's file exporter writes OTLP/JSON, one export a line."""
    from stormwatch.ingest.runner import ingest

    path = tmp_path / "traces.jsonl"
    good = otlp_json(genai_spans(4, 3, prefix="e"))
    bad = otlp_json(genai_spans(5, 1, prefix="f"))
    bad["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["startTimeUnixNano"] = "0"
    path.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n[]\n")
    store = open_store(f"sqlite:///{tmp_path / 'f.db'}")
    try:
        summary = ingest(store, [path], progress=False, workers=1)
        assert summary.formats == {str(path.resolve()): "otlp"}
        assert (summary.stored, summary.quarantined) == (3, 2)
        rows = store.list_quarantine()
        assert [(r.line, r.field) for r in rows] == [(2, "startTimeUnixNano"), (3, "resourceSpans")]
        assert "otlp:trace=" in rows[0].reason
    finally:
        store.close()
    assert isinstance(Rejected, type)
