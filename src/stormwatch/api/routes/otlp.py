"""OTLP/HTTP trace receiver: ``POST /v1/traces`` and Langfuse's ``POST /api/public/otel/v1/traces``.

Point an OpenTelemetry exporter at the server (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=
http://host:port/v1/traces`` with ``OTEL_EXPORTER_OTLP_HEADERS=Authorization=Bearer%20<token>``), or
the Langfuse SDK (``LANGFUSE_HOST=http://host:port``, the secret key a stormwatch token; it sends
HTTP Basic, which this path accepts). Bodies: ``application/x-protobuf`` or ``application/json``
(OTLP/JSON, hex ids), optionally ``Content-Encoding: gzip``.

GenAI spans become usage events (mapping: :mod:`stormwatch.ingest.formats.otlp`, shared with the
``otlp`` file format); spans that are not GenAI are skipped; GenAI spans that cannot be mapped are
quarantined at ``otlp:trace=<id>:span=<id>`` with the attribute at fault, and counted in the
answer's ``partial_success.rejected_spans``. A span without an account attribute is attributed to
``token:<name of the ingest token>``.

Everything is stored before the answer (:mod:`stormwatch.api.online`): 200 means committed. Limits:
the compressed body as every route (8 MiB by default); the decompressed body at most
``otlp_max_decoded_bytes`` (32 MiB by default; more is refused with 413: a gzip bomb stops there);
at most 8 bulk requests (OTLP exports, LiteLLM log batches) read and decoded at once (more: 503
with ``Retry-After``, the body unread; :class:`~stormwatch.api.online.Gate`), and the writer's
bounded queue (503 with ``Retry-After`` when it is behind; OTLP exporters retry on both).

Needs the ``ingest`` permission (analyst, admin; narrow a token with ``--scope ingest``).
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from stormwatch.api.auth import Principal, requires
from stormwatch.api.errors import ApiError, BadRequest
from stormwatch.api.online import gate_for, writer_for
from stormwatch.api.roles import INGEST
from stormwatch.errors import InputError, RecordError
from stormwatch.ingest.formats.base import FormatOptions
from stormwatch.ingest.formats.otlp import MappedSpans, map_spans, spans_from_json, spans_from_protobuf

__all__ = ["LANGFUSE_PATH", "MAX_DECODED_BYTES", "PATH", "RUN_ID", "decode_body", "install"]

PATH = "/v1/traces"
LANGFUSE_PATH = "/api/public/otel/v1/traces"
RUN_ID = "online:otlp"
MAX_DECODED_BYTES = 32 * 1024 * 1024
PROTOBUF = "application/x-protobuf"
JSON = "application/json"

router = APIRouter(tags=["ingest"])


class PayloadTooLarge(ApiError):
    status = 413
    type = "payload_too_large"


class UnsupportedMediaType(ApiError):
    status = 415
    type = "unsupported_media_type"


def decode_body(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """The body with its ``Content-Encoding`` undone, refusing more than ``limit`` decoded bytes."""
    coding = (encoding or "identity").strip().lower()
    if coding in ("", "identity"):
        return raw
    if coding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(f"Content-Encoding {coding!r} is not supported: gzip, deflate or none")
    inflate = zlib.decompressobj(wbits=47 if coding != "deflate" else 15)  # 47: gzip or zlib header
    try:
        out = inflate.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"the {coding} body does not decompress: {exc}") from None
    if len(out) > limit or inflate.unconsumed_tail:
        raise PayloadTooLarge(f"the body decompresses to more than {limit} bytes")
    if not inflate.eof:
        raise BadRequest(f"the {coding} body is truncated")
    return out


def _media(request: Request) -> str:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if kind == JSON:
        return JSON
    raise UnsupportedMediaType(
        f"Content-Type {kind or '(none)'!r} is not supported: application/x-protobuf or application/json"
    )


def _map(body: bytes, media: str, options: FormatOptions) -> MappedSpans:
    if media == PROTOBUF:
        return map_spans(spans_from_protobuf(body), options)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    return map_spans(spans_from_json(doc), options)


def _answer(media: str, mapped: MappedSpans) -> Response:
    rejected = len(mapped.rejected)
    message = ""
    if rejected:
        first = mapped.rejected[0]
        message = (f"{rejected} span(s) quarantined, first {first.source}: {first.field or '-'}: {first.reason}")[:500]
    if media == PROTOBUF:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

        reply = ExportTraceServiceResponse()
        if rejected:
            reply.partial_success.rejected_spans = rejected
            reply.partial_success.error_message = message
        return Response(reply.SerializeToString(), media_type=PROTOBUF)
    doc: dict[str, Any] = {}
    if rejected:
        doc["partialSuccess"] = {"rejectedSpans": str(rejected), "errorMessage": message}
    return Response(orjson.dumps(doc), media_type=JSON)


async def _receive(request: Request, principal: Principal) -> Response:
    media = _media(request)
    state = request.app.state
    limit = int(getattr(state, "otlp_max_decoded_bytes", MAX_DECODED_BYTES))
    gate = gate_for(state)
    gate.enter("OTLP exports")  # before the body is read: a refused export costs no memory
    try:
        raw = await request.body()
        body = await run_in_threadpool(decode_body, raw, request.headers.get("content-encoding"), limit)
        del raw
        options = FormatOptions(default_account=f"token:{principal.name}")
        try:
            mapped = await run_in_threadpool(_map, body, media, options)
        except (InputError, RecordError) as exc:
            if isinstance(exc, ApiError):
                raise
            raise BadRequest(str(exc)) from None
        del body
    finally:
        gate.leave()
    if mapped.events or mapped.rejected:
        await writer_for(state).write(mapped.events, mapped.rejected, run_id=RUN_ID)
    return _answer(media, mapped)


@router.post(PATH, summary="OTLP/HTTP traces: GenAI spans become usage events (scope 'ingest')")
async def otlp_traces(request: Request, principal: Principal = requires(INGEST)) -> Response:
    return await _receive(request, principal)


@router.post(LANGFUSE_PATH, summary="The Langfuse SDK's OTLP path (HTTP Basic: any public key, a token as secret)")
async def langfuse_traces(request: Request, principal: Principal = requires(INGEST)) -> Response:
    return await _receive(request, principal)


def install(app: FastAPI) -> None:
    app.include_router(router)
