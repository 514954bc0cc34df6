"""Helpers shared by the OpenAI Batch, OpenAI HTTP-log and LiteLLM formats.

* typed, path-aware field access that raises :class:`~stormwatch.errors.RecordError` naming the
  *source* field (``request.body.messages[2].content``), not the canonical one;
* the OpenAI request/response body mapping (chat, responses, moderations, completions, embeddings,
  images) used by both OpenAI formats (``../shared/research/interfaces.md`` §6, Ingest C);
* the secrets rule: authorization headers, API-key-looking fields and bearer tokens are never kept,
  neither in an event's attributes nor in a quarantined raw record;
* a BOM-aware line reader and a streaming splitter for top-level JSON values (a pretty-printed
  object, a JSON array, or several of either back to back).
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import RecordError
from stormwatch.events import ROLES, Event, normalize_ts, type_name, validate_event
from stormwatch.ingest.formats.base import (
    FormatOptions,
    Rejected,
    StreamError,
    iter_lines,
    open_binary,
    raw_position,
)

BOM = b"\xef\xbb\xbf"
JSON = dict[str, Any]

# --------------------------------------------------------------------------------------------
# typed access with source paths


def join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def opt_str(obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """``obj[key]`` as a non-empty string, ``None`` when absent, null or empty."""
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RecordError(f"expected a string, got {type_name(value)}", field=join(path, key))
    return value


def opt_obj(obj: Mapping[str, Any], key: str, path: str) -> JSON | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(f"expected an object, got {type_name(value)}", field=join(path, key))
    return value


def opt_list(obj: Mapping[str, Any], key: str, path: str) -> list[Any] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list):
        raise RecordError(f"expected an array, got {type_name(value)}", field=join(path, key))
    return value


def first_str(*candidates: tuple[Mapping[str, Any] | None, str, str]) -> tuple[str | None, str | None]:
    """The first non-empty string among ``(obj, key, path)`` candidates, with the field path it came from."""
    for obj, key, path in candidates:
        if obj is None:
            continue
        value = opt_str(obj, key, path)
        if value is not None:
            return value, join(path, key)
    return None, None


def parse_ts(value: object, path: str) -> str:
    """RFC 3339 or epoch seconds -> canonical UTC string; errors name ``path``."""
    return normalize_ts(value, field=path)


# --------------------------------------------------------------------------------------------
# secrets

_SECRET_KEYS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "api_key",
        "apikey",
        "x_api_key",
        "openai_api_key",
        "azure_api_key",
        "anthropic_api_key",
        "x_goog_api_key",
        "ocp_apim_subscription_key",
        "api_secret",
        "secret",
        "client_secret",
        "secret_key",
        "password",
        "passwd",
        "cookie",
        "set_cookie",
        "access_token",
        "refresh_token",
        "id_token",
        "token",
        "bearer",
        "private_key",
        "user_api_key",
        "api_token",
        "auth_token",
        "session_token",
        "x_litellm_api_key",
        "litellm_api_key",
    }
)
_SECRET_SUFFIX = re.compile(r"(?:^|_)(?:api_?key|secret|password|token|authorization)$")
_SECRET_VALUE = re.compile(
    r"^\s*(?:bearer\s+\S+|basic\s+\S{8,}|sk-[A-Za-z0-9_\-]{16,}|sk_(?:live|test)_\S{8,})", re.IGNORECASE
)
REDACTED = "[redacted]"


def is_secret_key(key: str) -> bool:
    norm = key.strip().lower().replace("-", "_")
    return norm in _SECRET_KEYS or _SECRET_SUFFIX.search(norm) is not None


def looks_like_secret(value: str) -> bool:
    return _SECRET_VALUE.match(value) is not None


def scrub(value: Any) -> Any:
    """A copy of ``value`` without secret-named keys; secret-looking strings become ``[redacted]``."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not (isinstance(k, str) and is_secret_key(k))}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, str) and looks_like_secret(value):
        return REDACTED
    return value


def safe_key_id(value: str) -> str:
    """An API key id as given, unless it is the key itself: then a SHA-256 fingerprint of it."""
    if looks_like_secret(value):
        return "sha256:" + hashlib.sha256(value.strip().encode("utf-8")).hexdigest()[:32]
    return value


_RAW_SECRET_FIELD = re.compile(
    rb'("(?:[A-Za-z0-9_\-]*(?:authorization|api[_-]?key|apikey|secret|password|token)|cookie|set-cookie)"'
    rb'\s*:\s*)"(?:[^"\\]|\\.)*"',
    re.IGNORECASE,
)
_RAW_SECRET_VALUE = re.compile(rb"(?:Bearer\s+[A-Za-z0-9._~+/=\-]{8,}|sk-[A-Za-z0-9_\-]{16,})", re.IGNORECASE)


def redact_raw(raw: bytes) -> bytes:
    """``raw`` with secret values replaced, for quarantine. Unchanged (byte for byte) when it holds none."""
    out = _RAW_SECRET_FIELD.sub(rb'\1"[redacted]"', raw)
    out = _RAW_SECRET_VALUE.sub(b"[redacted]", out)
    return out


def reject(source: str, line: int | None, reason: str, fld: str | None, raw: bytes) -> Rejected:
    return Rejected(source, line, reason, fld, redact_raw(raw))


# --------------------------------------------------------------------------------------------
# building the event


def build_event(fields: JSON, origins: Mapping[str, str], source: str) -> Event:
    """``validate_event`` on a canonical dict; a failure's field is translated back to its source path."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if fields.get("attributes") is not None:
        fields["attributes"] = scrub(fields["attributes"])
    try:
        return validate_event(fields, source=source)
    except RecordError as exc:
        fld = exc.field
        if fld is not None:
            head, sep, rest = fld.partition("[")
            if head in origins:
                fld = origins[head] + (sep + rest if sep else "")
        raise RecordError(exc.reason, field=fld) from exc


# --------------------------------------------------------------------------------------------
# OpenAI message / content rendering

_PLACEHOLDER = {
    "image_url": "[image]",
    "input_image": "[image]",
    "image": "[image]",
    "image_file": "[image]",
    "input_audio": "[audio]",
    "audio": "[audio]",
    "file": "[file]",
    "input_file": "[file]",
    "video_url": "[video]",
    "input_video": "[video]",
}
_TEXT_TYPES = frozenset({"text", "input_text", "output_text", "summary_text", "reasoning_text"})


def render_content(value: object, path: str) -> str:
    """Message content (a string, or a list of parts) as plain text; non-text parts become placeholders."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RecordError(f"expected a string or an array of parts, got {type_name(value)}", field=path)
    out: list[str] = []
    for i, part in enumerate(value):
        where = join(path, i)
        if isinstance(part, str):
            out.append(part)
            continue
        if not isinstance(part, dict):
            raise RecordError(f"expected a content part object, got {type_name(part)}", field=where)
        kind = part.get("type")
        if kind is not None and not isinstance(kind, str):
            raise RecordError(f"expected a string, got {type_name(kind)}", field=join(where, "type"))
        if kind in _TEXT_TYPES or (kind is None and "text" in part):
            text = part.get("text")
            if isinstance(text, dict):  # some SDKs nest {"text": {"value": ...}}
                text = text.get("value")
            if not isinstance(text, str):
                raise RecordError(f"expected a string, got {type_name(text)}", field=join(where, "text"))
            out.append(text)
        elif kind == "refusal":
            refusal = part.get("refusal")
            if not isinstance(refusal, str):
                raise RecordError(f"expected a string, got {type_name(refusal)}", field=join(where, "refusal"))
            out.append(refusal)
        elif kind in ("file", "input_file"):
            inner = part.get("file") if isinstance(part.get("file"), dict) else part
            name = inner.get("filename") if isinstance(inner, dict) else None
            out.append(f"[file: {name}]" if isinstance(name, str) and name else "[file]")
        else:
            out.append(_PLACEHOLDER.get(kind or "", f"[{kind or 'part'}]"))
    return "\n".join(out)


def render_tool_calls(value: object) -> list[str]:
    """``[tool_call name(arguments)]`` lines for chat ``tool_calls`` / legacy ``function_call``."""
    calls = value if isinstance(value, list) else [value] if isinstance(value, dict) else []
    out: list[str] = []
    for call in calls:
        if not isinstance(call, dict):
            continue
        fn = call.get("function") if isinstance(call.get("function"), dict) else call
        assert isinstance(fn, dict)
        name = fn.get("name")
        args = fn.get("arguments")
        out.append(f"[tool_call {name if isinstance(name, str) else '?'}({args if isinstance(args, str) else ''})]")
    return out


def map_role(value: object, path: str) -> str:
    if value == "function":
        return "tool"
    if not isinstance(value, str) or value not in ROLES:
        raise RecordError(f"role must be one of {sorted(ROLES)}, got {value!r}"[:200], field=path)
    return value


def chat_messages(value: object, path: str) -> list[dict[str, str]]:
    """Chat-style ``messages`` (list of ``{role, content}``) -> canonical messages."""
    if not isinstance(value, list):
        raise RecordError(f"expected an array of messages, got {type_name(value)}", field=path)
    out: list[dict[str, str]] = []
    for i, msg in enumerate(value):
        where = join(path, i)
        if not isinstance(msg, dict):
            raise RecordError(f"expected a message object, got {type_name(msg)}", field=where)
        role = map_role(msg.get("role"), join(where, "role"))
        text = render_content(msg.get("content"), join(where, "content"))
        extra = render_tool_calls(msg.get("tool_calls")) + render_tool_calls(msg.get("function_call"))
        if not text and isinstance(msg.get("refusal"), str):
            text = msg["refusal"]
        if extra:
            text = "\n".join([text, *extra]) if text else "\n".join(extra)
        out.append({"role": role, "content": text})
    return out


def responses_input(body: JSON, path: str) -> list[dict[str, str]]:
    """Responses API ``instructions`` + ``input`` (string or items) -> canonical messages."""
    out: list[dict[str, str]] = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        if instructions:
            out.append({"role": "system", "content": instructions})
    elif instructions is not None:
        raise RecordError(f"expected a string, got {type_name(instructions)}", field=join(path, "instructions"))
    value = body.get("input")
    where = join(path, "input")
    if isinstance(value, str):
        out.append({"role": "user", "content": value})
        return out
    if value is None:
        return out
    if not isinstance(value, list):
        raise RecordError(f"expected a string or an array of items, got {type_name(value)}", field=where)
    for i, item in enumerate(value):
        at = join(where, i)
        if isinstance(item, str):
            out.append({"role": "user", "content": item})
            continue
        if not isinstance(item, dict):
            raise RecordError(f"expected an input item object, got {type_name(item)}", field=at)
        kind = item.get("type")
        if "role" in item:
            role = map_role(item.get("role"), join(at, "role"))
            out.append({"role": role, "content": render_content(item.get("content"), join(at, "content"))})
        elif kind == "function_call_output" or kind == "custom_tool_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else render_content(output, join(at, "output"))
            out.append({"role": "tool", "content": text})
        elif kind in ("function_call", "custom_tool_call"):
            out.append({"role": "assistant", "content": render_tool_calls(item)[0]})
        # reasoning, item_reference and other bookkeeping items carry no user text: skipped.
    return out


def flat_input(value: object, path: str) -> str:
    """Moderations / embeddings ``input``, completions ``prompt``: string, strings, parts or token arrays."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return "[tokens]"
        out: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, list):
                out.append("[tokens]")
            elif isinstance(item, dict):
                out.append(render_content([item], join(path, i)))
            else:
                raise RecordError(f"expected a string or a part, got {type_name(item)}", field=join(path, i))
        return "\n".join(out)
    raise RecordError(f"expected a string or an array, got {type_name(value)}", field=path)


# --------------------------------------------------------------------------------------------
# OpenAI request/response mapping (Ingest C)


def endpoint_kind(url: str | None, body: JSON) -> str:
    """The endpoint family: chat, responses, moderations, completions, embeddings, prompt or unknown."""
    path = (url or "").split("?", 1)[0].rstrip("/").lower()
    for suffix, kind in (
        ("/chat/completions", "chat"),
        ("/responses", "responses"),
        ("/moderations", "moderations"),
        ("/completions", "completions"),
        ("/embeddings", "embeddings"),
        ("/images/generations", "prompt"),
        ("/images/edits", "prompt"),
        ("/videos", "prompt"),
    ):
        if path.endswith(suffix):
            return kind
    if "messages" in body:
        return "chat"
    if "instructions" in body or isinstance(body.get("input"), list):
        return "responses"
    if "prompt" in body:
        return "completions"
    if "input" in body:
        return "moderations"
    return "unknown"


@dataclass(slots=True)
class OpenAIMapping:
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    response: str | None = None
    refused: bool | None = None
    model: str | None = None
    end_user_id: str | None = None
    conversation_id: str | None = None
    attributes: JSON = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)


def map_openai_request(kind: str, body: JSON, path: str, out: OpenAIMapping) -> None:
    """Fill the prompt side of ``out`` from a request body at ``path`` (``body`` or ``request.body``)."""
    if kind == "chat":
        out.messages = chat_messages(body.get("messages"), join(path, "messages"))
        out.origins["messages"] = join(path, "messages")
    elif kind == "responses":
        out.messages = responses_input(body, path)
        out.origins["messages"] = join(path, "input")
    elif kind in ("moderations", "embeddings"):
        if "input" not in body:
            raise RecordError("required field is missing", field=join(path, "input"))
        out.prompt = flat_input(body.get("input"), join(path, "input"))
        out.origins["prompt"] = join(path, "input")
    elif kind in ("completions", "prompt"):
        if "prompt" not in body:
            raise RecordError("required field is missing", field=join(path, "prompt"))
        out.prompt = flat_input(body.get("prompt"), join(path, "prompt"))
        out.origins["prompt"] = join(path, "prompt")
    else:
        raise RecordError("no prompt text found (no messages, input or prompt)", field=path)
    metadata = opt_obj(body, "metadata", path)
    out.end_user_id, src = first_str(
        (body, "safety_identifier", path),
        (body, "user", path),
        (metadata, "end_user_id", join(path, "metadata")),
    )
    if src:
        out.origins["end_user_id"] = src
    conversation = body.get("conversation")
    if isinstance(conversation, dict):
        conv, src = first_str((conversation, "id", join(path, "conversation")))
    else:
        conv, src = first_str((body, "conversation", path))
    if conv is None:
        conv, src = first_str(
            (body, "previous_response_id", path), (metadata, "conversation_id", join(path, "metadata"))
        )
    out.conversation_id = conv
    if src:
        out.origins["conversation_id"] = src
    model, src = first_str((body, "model", path))
    if model is not None and out.model is None:
        out.model = model
        out.origins["model"] = src or join(path, "model")
    if metadata:
        out.attributes["metadata"] = metadata
    for key in ("stream", "service_tier", "store", "temperature", "max_tokens", "max_output_tokens"):
        if body.get(key) is not None:
            out.attributes.setdefault("request", {})[key] = body[key]
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        names: list[str] = []
        for tool in tools:
            if isinstance(tool, dict):
                fn = tool.get("function")
                name = fn.get("name") if isinstance(fn, dict) else tool.get("name")
                names.append(name if isinstance(name, str) else str(tool.get("type")))
        out.attributes.setdefault("request", {})["tools"] = names


def map_openai_response(body: JSON, path: str, out: OpenAIMapping) -> None:
    """Fill the response side of ``out`` from a response body at ``path``."""
    model, src = first_str((body, "model", path))
    if model is not None:
        out.model = model
        out.origins["model"] = src or join(path, "model")
    texts: list[str] = []
    finish: list[str] = []
    choices = opt_list(body, "choices", path)
    for i, choice in enumerate(choices or []):
        at = join(join(path, "choices"), i)
        if not isinstance(choice, dict):
            raise RecordError(f"expected an object, got {type_name(choice)}", field=at)
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            finish.append(reason)
            if reason == "content_filter":
                out.refused = True
        message = choice.get("message")
        if isinstance(message, dict):
            text = render_content(message.get("content"), join(join(at, "message"), "content"))
            refusal = message.get("refusal")
            if isinstance(refusal, str) and refusal:
                out.refused = True
                text = text or refusal
            extra = render_tool_calls(message.get("tool_calls")) + render_tool_calls(message.get("function_call"))
            text = "\n".join(t for t in [text, *extra] if t)
            texts.append(text)
        elif message is not None:
            raise RecordError(f"expected an object, got {type_name(message)}", field=join(at, "message"))
        elif isinstance(choice.get("text"), str):
            texts.append(choice["text"])
    output = opt_list(body, "output", path)
    for i, item in enumerate(output or []):
        at = join(join(path, "output"), i)
        if not isinstance(item, dict):
            raise RecordError(f"expected an object, got {type_name(item)}", field=at)
        kind = item.get("type")
        if kind == "message" or (kind is None and "content" in item):
            parts = item.get("content")
            if isinstance(parts, list):
                for j, part in enumerate(parts):
                    if isinstance(part, dict) and part.get("type") == "refusal":
                        out.refused = True
                        texts.append(render_content([part], join(join(at, "content"), j)))
                    elif isinstance(part, dict) and part.get("type") == "output_text":
                        texts.append(render_content([part], join(join(at, "content"), j)))
            elif isinstance(parts, str):
                texts.append(parts)
        elif kind in ("function_call", "custom_tool_call"):
            texts.extend(render_tool_calls(item))
    if isinstance(body.get("output_text"), str) and not texts:
        texts.append(body["output_text"])
    incomplete = body.get("incomplete_details")
    if isinstance(incomplete, dict) and incomplete.get("reason") == "content_filter":
        out.refused = True
    if (choices is not None and choices) or output is not None:
        out.response = "\n".join(texts)
        out.origins["response"] = join(path, "choices" if choices else "output")
    if finish:
        out.attributes["finish_reason"] = finish[0] if len(finish) == 1 else finish
    results = body.get("results")
    if isinstance(results, list):
        flagged = False
        categories: list[str] = []
        for res in results:
            if isinstance(res, dict):
                flagged = flagged or res.get("flagged") is True
                cats = res.get("categories")
                if isinstance(cats, dict):
                    categories.extend(k for k, v in cats.items() if v is True and k not in categories)
        out.attributes["moderation"] = {"flagged": flagged, "categories": categories}
    for key in ("id", "status", "service_tier", "system_fingerprint", "usage", "error"):
        if body.get(key) is not None:
            name = "response_id" if key == "id" else "response_status" if key == "status" else key
            out.attributes.setdefault(name, body[key])


# --------------------------------------------------------------------------------------------
# reading files


def iter_json_lines(path: Path, options: FormatOptions) -> Iterator[tuple[int, bytes]]:
    """:func:`base.iter_lines` with a UTF-8 byte-order mark at the start of the file dropped."""
    first = True
    for lineno, raw in iter_lines(path, options):
        if first:
            first = False
            if raw.startswith(BOM):
                raw = raw[len(BOM) :]
                if not raw.strip():
                    continue
        yield lineno, raw


def first_line(head: bytes) -> bytes:
    """The first non-blank line of a sniffed head, BOM and surrounding whitespace removed."""
    if head.startswith(BOM):
        head = head[len(BOM) :]
    return head.lstrip().split(b"\n", 1)[0].strip()


def sniff_object(head: bytes) -> tuple[JSON | None, bytes]:
    """The first line parsed as an object (the first element when it is an array), and the line itself."""
    line = first_line(head)
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None, line
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        obj = obj[0]
    return (obj if isinstance(obj, dict) else None), line


_WS = frozenset(b" \t\r\n")
_IN_STRING = re.compile(rb'["\\\n]')
_IN_CONTAINER = re.compile(rb'["{}\[\]\n]')
_SCALAR_END = re.compile(rb"[\s,\]]")


@dataclass(slots=True)
class Piece:
    """One top-level JSON value (or element of a top-level array) cut from a stream."""

    line: int
    raw: bytes
    error: str | None = None


class JsonValueSplitter:
    """Cut a byte stream into top-level JSON values without parsing them.

    A top-level array is opened and its elements are cut one by one, so a file may be one object
    (pretty-printed or not), one array, or several of either back to back. The splitter tracks only
    string/escape state and bracket depth; validating each piece is left to ``orjson``. A piece longer
    than ``max_bytes`` is cut short (its first ``max_bytes`` bytes are kept) and marked with an error.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.line = 1
        self.in_array = False
        self.in_elem = False
        self.scalar = False
        self.depth = 0
        self.in_str = False
        self.esc = False
        self.buf = bytearray()
        self.size = 0
        self.start = 0

    def _append(self, data: bytes) -> None:
        self.size += len(data)
        room = self.max_bytes - len(self.buf)
        if room > 0:
            self.buf += data[:room]

    def _emit(self, error: str | None = None) -> Piece:
        if error is None and self.size > self.max_bytes:
            error = (
                f"record is {self.size} bytes, over the limit of {self.max_bytes} "
                "(raise --max-record-bytes to accept it)"
            )
        piece = Piece(self.start, bytes(self.buf), error)
        self.buf = bytearray()
        self.size = 0
        self.in_elem = False
        self.depth = 0
        self.in_str = False
        self.esc = False
        return piece

    def feed(self, chunk: bytes) -> Iterator[Piece]:
        i = 0
        n = len(chunk)
        while i < n:
            if not self.in_elem:
                c = chunk[i]
                if c in _WS:
                    if c == 0x0A:
                        self.line += 1
                    i += 1
                    continue
                if self.in_array and c == 0x2C:  # ,
                    i += 1
                    continue
                if self.in_array and c == 0x5D:  # ]
                    self.in_array = False
                    i += 1
                    continue
                if not self.in_array and c == 0x5B:  # [
                    self.in_array = True
                    i += 1
                    continue
                self.in_elem = True
                self.start = self.line
                if c in (0x7D, 0x5D) or (c == 0x2C and not self.in_array):  # stray } ] ,
                    self._append(chunk[i : i + 1])
                    i += 1
                    yield self._emit("unexpected character outside any record")
                    continue
                self.scalar = c not in (0x7B, 0x5B)
                self.depth = 0
                continue
            if self.esc:
                self._append(chunk[i : i + 1])
                self.esc = False
                i += 1
                continue
            if self.in_str:
                m = _IN_STRING.search(chunk, i)
                if m is None:
                    self._append(chunk[i:])
                    break
                j = m.start()
                self._append(chunk[i : j + 1])
                c = chunk[j]
                i = j + 1
                if c == 0x5C:  # backslash
                    self.esc = True
                elif c == 0x22:
                    self.in_str = False
                else:
                    self.line += 1
                continue
            if self.scalar:
                m = _SCALAR_END.search(chunk, i)
                if m is None:
                    self._append(chunk[i:])
                    break
                self._append(chunk[i : m.start()])
                i = m.start()
                yield self._emit()
                continue
            m = _IN_CONTAINER.search(chunk, i)
            if m is None:
                self._append(chunk[i:])
                break
            j = m.start()
            self._append(chunk[i : j + 1])
            c = chunk[j]
            i = j + 1
            if c == 0x22:
                self.in_str = True
            elif c in (0x7B, 0x5B):
                self.depth += 1
            elif c in (0x7D, 0x5D):
                self.depth -= 1
                if self.depth <= 0:
                    yield self._emit()
            else:
                self.line += 1

    def finish(self) -> Iterator[Piece]:
        if self.in_elem:
            if self.scalar and not self.in_str:
                yield self._emit()
            else:
                yield self._emit("truncated: the file ends inside this record")
        elif self.in_array:
            self.start = self.line
            self.in_array = False
            yield self._emit("truncated: the file ends inside a JSON array (missing ']')")


def iter_json_values(path: Path, options: FormatOptions, chunk_size: int = 1 << 20) -> Iterator[Piece]:
    """Stream the top-level JSON values (array elements expanded) of ``path`` with their start lines."""
    splitter = JsonValueSplitter(options.max_record_bytes)
    report: Callable[[int], None] | None = options.on_progress
    last = 0
    with open_binary(path) as fh:
        first = True
        while True:
            try:
                chunk = fh.read(chunk_size)
            except (EOFError, OSError, zlib.error) as exc:
                raise StreamError(path, splitter.line, f"compressed stream is damaged or truncated: {exc}") from exc
            if not chunk:
                break
            if first:
                first = False
                if chunk.startswith(BOM):
                    chunk = chunk[len(BOM) :]
            yield from splitter.feed(chunk)
            if report is not None:
                pos = raw_position(fh)
                report(max(pos - last, 0))
                last = pos
    yield from splitter.finish()


def iter_values_of_lines(lines: Iterable[tuple[int, bytes]]) -> Iterator[Piece]:
    """Lines as pieces (used by NDJSON readers so both paths share the per-record code)."""
    for lineno, raw in lines:
        yield Piece(lineno, raw)
