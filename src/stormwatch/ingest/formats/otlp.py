"""OpenTelemetry traces (OTLP) -> usage events: the GenAI span mapping shared by files and the receiver.

One mapping for three wire shapes:

* OTLP/JSON ``ExportTraceServiceRequest`` documents (``{"resourceSpans": [...]}``), one per line:
  what the OpenTelemetry Collector's ``file`` exporter writes, and the body of an OTLP/HTTP JSON
  export. This module's :class:`OtlpJsonFormat` (format ``otlp``) reads such files;
* OTLP/HTTP protobuf bodies (:func:`spans_from_protobuf`, decoded with ``opentelemetry-proto``,
  the ``otlp`` extra), as sent by the OpenTelemetry SDK exporter and the Langfuse SDK;
* both reach :func:`span_to_event`, the field mapping of ``../shared/research/interfaces.md`` §6
  (Ingest A), which the HTTP receiver (``stormwatch.api.routes.otlp``) uses as well.

Which spans become events: only spans carrying a ``gen_ai.*`` or ``langfuse.observation.*``
attribute (an HTTP or database span of the same trace is not LLM usage and is skipped, not
quarantined). A GenAI span that cannot be mapped (malformed trace or span id, no start time, a
content attribute that does not parse, no account) is quarantined with its location
``otlp:trace=<hex>:span=<hex>`` and the attribute at fault as the field.

Field mapping (first non-empty wins; "span" attributes are looked up on the span, then on its
resource):

==================  ==========================================================================
event_id            ``<traceId>:<spanId>`` (hex), so a replayed export is a duplicate, not new
ts                  ``startTimeUnixNano``
account_id          ``account.id``; ``langfuse.trace.metadata.account_id``; ``user.id`` (not
                    for Langfuse, whose ``user.id`` is the application's end user);
                    ``service.name`` (unless ``unknown_service...``); the default account (the
                    receiver: ``token:<token name>``; files: ``--account``)
org_id              ``org.id``; ``langfuse.trace.metadata.org_id``
end_user_id         ``enduser.id``; ``enduser.pseudo.id``; ``user.id`` when not the account
api_key_id          ``api_key.id``
ip / user_agent     ``client.address`` / ``user_agent.original``
model               ``gen_ai.request.model``; ``gen_ai.response.model``;
                    ``langfuse.observation.model.name``
messages / prompt   ``gen_ai.system_instructions`` + ``gen_ai.input.messages`` (structured or a
                    JSON string); ``langfuse.observation.input``; legacy ``gen_ai.prompt`` (span
                    attribute or ``gen_ai.content.prompt`` event); OpenLLMetry
                    ``gen_ai.prompt.<n>.role|content``. None of them (content capture is off by
                    default in most instrumentations): ``prompt`` is empty and the attribute
                    ``content_captured`` is false - the usage is still recorded
response            ``gen_ai.output.messages``; ``langfuse.observation.output``; legacy
                    ``gen_ai.completion``; ``gen_ai.completion.<n>.content``
conversation_id     ``gen_ai.conversation.id``; ``session.id``; ``langfuse.session.id``
refused             ``content_filter`` among ``gen_ai.response.finish_reasons``
==================  ==========================================================================

Why this module is long: the OTLP mapping covers three attribute generations (current ``gen_ai.*``,
legacy and OpenLLMetry's flattened names, ``langfuse.*``), protobuf and JSON encodings and their
quarantine locations; keeping the whole mapping together keeps the file format and the receiver
identical.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import InputError, RecordError
from stormwatch.events import ROLES, Event, normalize_ts, type_name
from stormwatch.ingest.formats._common import build_event, reject, safe_key_id, scrub
from stormwatch.ingest.formats.base import FormatOptions, Parsed, Rejected, iter_lines, load_json_line

__all__ = [
    "OtlpJsonFormat",
    "Span",
    "is_genai",
    "map_spans",
    "span_location",
    "span_to_event",
    "spans_from_json",
    "spans_from_protobuf",
]

SOURCE = "otlp"
_HEX = re.compile(r"^[0-9a-fA-F]+$")
#: span attributes (beyond the mapped fields) kept in the event's attributes
KEEP = (
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.system",
    "gen_ai.response.id",
    "gen_ai.response.finish_reasons",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.request.max_tokens",
    "gen_ai.request.temperature",
    "gen_ai.agent.name",
    "gen_ai.tool.name",
    "server.address",
    "langfuse.observation.type",
    "langfuse.observation.usage_details",
    "langfuse.environment",
    "langfuse.trace.name",
    "deployment.environment.name",
)


@dataclass(slots=True)
class Span:
    """One span, wire encoding removed: ids in hex, attribute values as plain Python values."""

    trace_id: str
    span_id: str
    name: str
    start_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    raw: Any = None  # the span as received (for quarantine), built only when needed
    error: tuple[str, str | None] | None = None  # (reason, field) when the span itself is malformed

    def get(self, key: str) -> Any:
        """A span attribute, else the resource's."""
        value = self.attributes.get(key)
        return self.resource.get(key) if value is None else value


def span_location(trace_id: str, span_id: str) -> str:
    return f"{SOURCE}:trace={trace_id or '-'}:span={span_id or '-'}"


def is_genai(attributes: Mapping[str, Any]) -> bool:
    return any(k.startswith("gen_ai.") or k.startswith("langfuse.observation.") for k in attributes)


# ------------------------------------------------------------------------------------------------
# OTLP/JSON


def _json_any(value: Any) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value (ints arrive as strings; bytes as base64)."""
    if not isinstance(value, dict):
        return value
    for key, inner in value.items():
        if key == "stringValue":
            return inner
        if key == "intValue":
            try:
                return int(inner)
            except (TypeError, ValueError):
                return inner
        if key in ("doubleValue", "boolValue"):
            return inner
        if key == "bytesValue":
            return inner  # kept as its base64 text
        if key == "arrayValue":
            return [_json_any(v) for v in (inner or {}).get("values", []) or []]
        if key == "kvlistValue":
            return _json_attrs((inner or {}).get("values", []) or [])
    return None


def _json_attrs(items: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(items, list):
        for kv in items:
            if isinstance(kv, dict) and isinstance(kv.get("key"), str):
                out[kv["key"]] = _json_any(kv.get("value"))
    return out


def _json_id(value: Any, size: int) -> str | None:
    """A trace (16 bytes) or span (8 bytes) id as lower-case hex; OTLP/JSON sends hex, some
    emitters base64 (protobuf's generic JSON mapping): both are accepted, anything else is not."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) == 2 * size and _HEX.match(value):
        return value.lower()
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw.hex() if len(raw) == size else None


def _ns(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def spans_from_json(doc: Any) -> Iterator[Span]:
    """Every span of an OTLP/JSON ``ExportTraceServiceRequest`` (a malformed one with ``error`` set)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("resourceSpans", []), list):
        raise RecordError("not an OTLP ExportTraceServiceRequest (no resourceSpans array)", field="resourceSpans")
    for r, rs in enumerate(doc.get("resourceSpans") or []):
        if not isinstance(rs, dict):
            continue
        resource = _json_attrs((rs.get("resource") or {}).get("attributes"))
        for s, ss in enumerate(rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans") or []):
            if not isinstance(ss, dict):
                continue
            scope_obj = ss.get("scope") or ss.get("instrumentationLibrary") or {}
            scope = scope_obj.get("name", "") if isinstance(scope_obj, dict) else ""
            for i, sp in enumerate(ss.get("spans") or []):
                where = f"resourceSpans[{r}].scopeSpans[{s}].spans[{i}]"
                if not isinstance(sp, dict):
                    yield Span(
                        "",
                        "",
                        "",
                        0,
                        {},
                        resource,
                        scope,
                        raw=sp,
                        error=(f"expected an object, got {type_name(sp)}", where),
                    )
                    continue
                trace_id = _json_id(sp.get("traceId"), 16)
                span_id = _json_id(sp.get("spanId"), 8)
                span = Span(
                    trace_id or "",
                    span_id or "",
                    str(sp.get("name", "")),
                    _ns(sp.get("startTimeUnixNano")),
                    _json_attrs(sp.get("attributes")),
                    resource,
                    str(scope or ""),
                    [
                        (str(ev.get("name", "")), _json_attrs(ev.get("attributes")))
                        for ev in sp.get("events") or []
                        if isinstance(ev, dict)
                    ],
                    raw=sp,
                )
                if trace_id is None:
                    span.error = (f"not a 16-byte trace id: {str(sp.get('traceId'))[:64]!r}", "traceId")
                elif span_id is None:
                    span.error = (f"not an 8-byte span id: {str(sp.get('spanId'))[:64]!r}", "spanId")
                yield span


# ------------------------------------------------------------------------------------------------
# OTLP/protobuf


def _pb_any(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        return value.double_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    if kind == "array_value":
        return [_pb_any(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _pb_any(kv.value) for kv in value.kvlist_value.values}
    return None


def _pb_attrs(items: Any) -> dict[str, Any]:
    return {kv.key: _pb_any(kv.value) for kv in items}


def spans_from_protobuf(body: bytes) -> Iterator[Span]:
    """Every span of a protobuf ``ExportTraceServiceRequest``; :class:`InputError` if it does not decode.

    Needs ``opentelemetry-proto`` (the ``otlp`` extra), imported here and not before.
    """
    try:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise InputError(
            "OTLP protobuf needs the opentelemetry-proto package", hint="pip install 'stormwatch[otlp]'"
        ) from exc
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except (DecodeError, ValueError) as exc:
        raise InputError(f"the body is not an OTLP ExportTraceServiceRequest (protobuf): {exc}") from None
    for rs in request.resource_spans:
        resource = _pb_attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            scope = ss.scope.name
            for sp in ss.spans:
                span = Span(
                    sp.trace_id.hex(),
                    sp.span_id.hex(),
                    sp.name,
                    int(sp.start_time_unix_nano),
                    _pb_attrs(sp.attributes),
                    resource,
                    scope,
                    [(ev.name, _pb_attrs(ev.attributes)) for ev in sp.events],
                    raw=sp,
                )
                if len(sp.trace_id) != 16:
                    span.error = (f"not a 16-byte trace id ({len(sp.trace_id)} bytes)", "trace_id")
                elif len(sp.span_id) != 8:
                    span.error = (f"not an 8-byte span id ({len(sp.span_id)} bytes)", "span_id")
                yield span


def _raw_of(span: Span) -> bytes:
    """The span as received, as bytes for the quarantine (secrets redacted by ``reject``)."""
    raw = span.raw
    if raw is None or isinstance(raw, dict | list | str | int | float):
        try:
            return orjson.dumps(raw if raw is not None else {})
        except TypeError:
            return repr(raw).encode("utf-8", "replace")
    if hasattr(raw, "SerializeToString"):
        from google.protobuf.json_format import MessageToJson

        text: str = MessageToJson(raw, indent=None)
        return text.encode("utf-8")
    return repr(raw).encode("utf-8", "replace")


# ------------------------------------------------------------------------------------------------
# the mapping


def _text_parts(parts: Any, where: str) -> str:
    """The text of an OTel message's ``parts`` (``{type: text, content}``; other parts skipped)."""
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        raise RecordError(f"expected an array of parts, got {type_name(parts)}", field=where)
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict) and part.get("type") in (None, "text") and isinstance(part.get("content"), str):
            texts.append(part["content"])
    return "\n".join(texts)


def _role(value: Any) -> str:
    role = str(value or "user").lower()
    if role in ROLES:
        return role
    return {"human": "user", "ai": "assistant", "model": "assistant", "bot": "assistant", "function": "tool"}.get(
        role, "user"
    )


def _decoded(value: Any, where: str) -> Any:
    """A structured value, or one sent as a JSON string (both are allowed on spans)."""
    if isinstance(value, str):
        text = value.strip()
        if text[:1] in ("[", "{"):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise RecordError(f"not valid JSON: {exc}", field=where) from None
    return value


def _messages(value: Any, where: str) -> list[dict[str, str]] | str:
    """OTel (``{role, parts}``) or chat (``{role, content}``) messages; a plain string stays a prompt."""
    value = _decoded(value, where)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        value = value.get("messages", [value]) if "role" in value or "messages" in value else [value]
    if not isinstance(value, list):
        raise RecordError(f"expected messages (an array), got {type_name(value)}", field=where)
    out: list[dict[str, str]] = []
    for i, msg in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(msg, str):
            out.append({"role": "user", "content": msg})
            continue
        if not isinstance(msg, dict):
            raise RecordError(f"expected a message object, got {type_name(msg)}", field=at)
        if "parts" in msg:
            content = _text_parts(msg["parts"], f"{at}.parts")
        else:
            raw = msg.get("content", "")
            content = raw if isinstance(raw, str) else _text_parts(raw, f"{at}.content")
        out.append({"role": _role(msg.get("role")), "content": content})
    return out


def _flat(value: Any, where: str) -> str:
    """A response or legacy prompt as one text."""
    got = _messages(value, where)
    if isinstance(got, str):
        return got
    return "\n".join(m["content"] for m in got if m["content"])


def _indexed(attrs: Mapping[str, Any], prefix: str) -> list[dict[str, str]]:
    """OpenLLMetry's flattened ``<prefix>.<n>.role`` / ``<prefix>.<n>.content`` attributes."""
    found: dict[int, dict[str, str]] = {}
    for key, value in attrs.items():
        if not key.startswith(prefix):
            continue
        index, _, leaf = key[len(prefix) :].partition(".")
        if index.isdigit() and leaf in ("role", "content") and isinstance(value, str):
            found.setdefault(int(index), {})[leaf] = value
    return [
        {"role": _role(found[i].get("role")), "content": found[i].get("content", "")}
        for i in sorted(found)
        if "content" in found[i]
    ]


def _str(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _langfuse_meta(span: Span, key: str) -> str | None:
    """``langfuse.trace.metadata.<key>`` (Langfuse JSON-encodes metadata values)."""
    value = span.get(f"langfuse.trace.metadata.{key}")
    if isinstance(value, str):
        with contextlib.suppress(orjson.JSONDecodeError):
            value = orjson.loads(value)
    return _str(value)


def _event_attr(span: Span, event_name: str, key: str) -> Any:
    for name, attrs in span.events:
        if name == event_name and attrs.get(key) is not None:
            return attrs[key]
    return None


def span_to_event(span: Span, options: FormatOptions) -> Event:
    """The usage event of one GenAI span; :class:`RecordError` (naming the attribute) if it cannot be."""
    if span.error is not None:
        raise RecordError(span.error[0], field=span.error[1])
    if span.start_ns <= 0:
        raise RecordError("no start time", field="startTimeUnixNano")
    attrs = span.attributes
    langfuse = span.scope.startswith("langfuse") or any(k.startswith("langfuse.") for k in attrs)
    origins: dict[str, str] = {"event_id": "spanId", "ts": "startTimeUnixNano"}

    def first(*keys: str) -> tuple[str | None, str | None]:
        for key in keys:
            value = _str(span.get(key))
            if value is not None:
                return value, key
        return None, None

    account, src = first("account.id")
    if account is None:
        account = _langfuse_meta(span, "account_id")
        src = "langfuse.trace.metadata.account_id" if account else None
    user_id = _str(span.get("user.id"))
    if account is None and user_id is not None and not langfuse:
        account, src = user_id, "user.id"
    if account is None:
        service = _str(span.resource.get("service.name"))
        if service is not None and not service.startswith("unknown_service"):
            account, src = service, "service.name"
    if account is None:
        account = options.default_account
    if account is None:
        raise RecordError(
            "no account: set the span or resource attribute account.id (or user.id, service.name), "
            "or give a default account",
            field="account.id",
        )
    origins["account_id"] = src or "account.id"
    org, src = first("org.id")
    if org is None:
        org = _langfuse_meta(span, "org_id")
        src = "langfuse.trace.metadata.org_id" if org else None
    if src:
        origins["org_id"] = src
    end_user, src = first("enduser.id", "enduser.pseudo.id")
    if end_user is None and user_id is not None and origins["account_id"] != "user.id":
        end_user, src = user_id, "user.id"
    if src:
        origins["end_user_id"] = src
    key_id, _ = first("api_key.id")
    ip, _ = first("client.address")
    user_agent, _ = first("user_agent.original")
    model, src = first("gen_ai.request.model", "gen_ai.response.model", "langfuse.observation.model.name")
    if src:
        origins["model"] = src
    conversation, src = first("gen_ai.conversation.id", "session.id", "langfuse.session.id")
    if src:
        origins["conversation_id"] = src

    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    for key in ("gen_ai.input.messages", "langfuse.observation.input", "gen_ai.prompt"):
        value = attrs.get(key)
        if value is None:
            continue
        got = _messages(value, key)
        if isinstance(got, str):
            prompt = got
        else:
            messages = got
        origins["prompt" if prompt is not None else "messages"] = key
        break
    if messages is None and prompt is None:
        legacy = _event_attr(span, "gen_ai.content.prompt", "gen_ai.prompt")
        if legacy is not None:
            got = _messages(legacy, "events[gen_ai.content.prompt].gen_ai.prompt")
            messages, prompt = (None, got) if isinstance(got, str) else (got, None)
        else:
            flat = _indexed(attrs, "gen_ai.prompt.")
            messages = flat or None
    system = attrs.get("gen_ai.system_instructions")
    if system is not None:
        text = _flat(system, "gen_ai.system_instructions")
        if text and messages is not None:
            messages = [{"role": "system", "content": text}, *messages]
        elif text and prompt is not None:
            prompt = f"{text}\n{prompt}"
    captured = messages is not None or prompt is not None
    if not captured:
        prompt = ""

    response: str | None = None
    for key in ("gen_ai.output.messages", "langfuse.observation.output", "gen_ai.completion"):
        value = attrs.get(key)
        if value is not None:
            response = _flat(value, key)
            origins["response"] = key
            break
    if response is None:
        legacy = _event_attr(span, "gen_ai.content.completion", "gen_ai.completion")
        if legacy is not None:
            response = _flat(legacy, "events[gen_ai.content.completion].gen_ai.completion")
        else:
            completions = _indexed(attrs, "gen_ai.completion.")
            response = "\n".join(m["content"] for m in completions) or None

    reasons = attrs.get("gen_ai.response.finish_reasons")
    refused = True if isinstance(reasons, list) and "content_filter" in reasons else None
    kept: dict[str, Any] = {k: span.get(k) for k in KEEP if span.get(k) not in (None, "", [], {})}
    kept.update({k: v for k, v in attrs.items() if k.startswith("gen_ai.guardrail.")})
    kept["trace_id"] = span.trace_id
    kept["span_id"] = span.span_id
    kept["span_name"] = span.name
    if span.scope:
        kept["otel_scope"] = span.scope
    service = _str(span.resource.get("service.name"))
    if service is not None:
        kept["service_name"] = service
    if not captured:
        kept["content_captured"] = False
    fields: dict[str, Any] = {
        "event_id": f"{span.trace_id}:{span.span_id}",
        "ts": normalize_ts(span.start_ns // 1000 / 1_000_000, field="startTimeUnixNano"),
        "account_id": account,
        "org_id": org or options.default_org,
        "end_user_id": end_user,
        "api_key_id": safe_key_id(key_id) if key_id else None,
        "ip": ip,
        "user_agent": user_agent,
        "model": model,
        "messages": messages,
        "prompt": prompt,
        "response": response,
        "conversation_id": conversation,
        "refused": refused,
        "attributes": scrub(kept),
    }
    return build_event(fields, origins, SOURCE)


@dataclass(slots=True)
class MappedSpans:
    """What a batch of spans became: events, quarantined spans, and how many were not GenAI."""

    events: list[Event] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    skipped: int = 0


def map_spans(spans: Iterator[Span], options: FormatOptions, *, line: int | None = None) -> MappedSpans:
    """Map every span; non-GenAI spans are counted, unmappable GenAI spans quarantined at their ids."""
    out = MappedSpans()
    for span in spans:
        if span.error is None and not is_genai(span.attributes):
            out.skipped += 1
            continue
        try:
            out.events.append(span_to_event(span, options))
        except RecordError as exc:
            out.rejected.append(
                reject(span_location(span.trace_id, span.span_id), line, exc.reason, exc.field, _raw_of(span))
            )
    return out


class OtlpJsonFormat:
    """Files of OTLP/JSON trace exports, one ``ExportTraceServiceRequest`` per line (gzip or not)."""

    name = "otlp"
    description = "OpenTelemetry OTLP/JSON trace exports, one per line (Collector file exporter; GenAI spans)"

    def sniff(self, head: bytes, path: Path) -> float:
        start = head.lstrip()[:64]
        return 0.95 if start.startswith(b"{") and b'"resourceSpans"' in start else 0.0

    def parse(self, paths: Sequence[Path], options: FormatOptions) -> Iterator[Parsed]:
        for path in paths:
            source = str(path)
            for lineno, raw in iter_lines(path, options):
                doc = load_json_line(raw, source, lineno, options)
                if isinstance(doc, Rejected):
                    yield reject(source, lineno, doc.reason, doc.field, doc.raw)
                    continue
                try:
                    mapped = map_spans(spans_from_json(doc), options, line=lineno)
                except RecordError as exc:
                    yield reject(source, lineno, exc.reason, exc.field, raw)
                    continue
                yield from mapped.events
                for bad in mapped.rejected:  # keep the file and line, and the span's ids in the reason
                    yield Rejected(source, lineno, f"{bad.source}: {bad.reason}", bad.field, bad.raw)
