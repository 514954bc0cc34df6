"""LiteLLM ``StandardLoggingPayload`` records (the ``generic_api`` logging callback's body).

A file may hold one JSON array (``log_format: json_array``), NDJSON (``ndjson``: one object per
line, or one array per line), or a single object - pretty-printed over many lines, or several such
objects back to back (``single``). Mapping: ``../shared/research/interfaces.md`` §4.2 and §6
(Ingest B); see ``docs/formats.md``.

Reading: when the first non-blank line is ``{`` alone or the file starts with ``[``, the file is cut
into records by a streaming splitter (``_common.JsonValueSplitter``) that tracks string, escape and
bracket depth and reports the line where each record starts; memory stays at one record at a time
whatever the file size. Otherwise each line is a record (``base.iter_lines``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from stormwatch.errors import RecordError
from stormwatch.events import Event, type_name
from stormwatch.ingest.formats._common import (
    BOM,
    OpenAIMapping,
    Piece,
    build_event,
    chat_messages,
    first_line,
    first_str,
    flat_input,
    iter_json_lines,
    iter_json_values,
    iter_values_of_lines,
    map_openai_response,
    opt_obj,
    parse_ts,
    reject,
    safe_key_id,
    scrub,
    sniff_object,
)
from stormwatch.ingest.formats.base import FormatOptions, Parsed, Rejected, load_json_line, read_head

#: top-level payload fields copied into attributes as they are.
KEEP_TOP = (
    "litellm_call_id",
    "trace_id",
    "call_type",
    "stream",
    "status",
    "status_fields",
    "custom_llm_provider",
    "model_id",
    "model_group",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "response_cost",
    "cache_hit",
    "request_tags",
    "endTime",
    "completionStartTime",
    "response_time",
    "error_str",
)
#: ``metadata`` fields copied into attributes (under their own names, ``user_api_key_`` prefix kept).
KEEP_METADATA = (
    "user_api_key_alias",
    "user_api_key_team_id",
    "user_api_key_team_alias",
    "user_api_key_org_id",
    "user_api_key_org_alias",
    "user_api_key_project_id",
    "user_api_key_project_alias",
    "user_api_key_spend",
    "user_api_key_max_budget",
    "user_api_key_request_route",
    "team_id",
    "team_alias",
    "applied_guardrails",
    "requester_custom_headers",
    "requester_metadata",
    "spend_logs_metadata",
)
GUARDRAIL_KEYS = (
    "guardrail_name",
    "guardrail_mode",
    "guardrail_status",
    "guardrail_action",
    "risk_score",
    "violation_categories",
    "guardrail_provider",
)
ERROR_KEYS = ("error_code", "error_class", "llm_provider", "error_message")


def _streamed(head: bytes) -> bool:
    """Whether a file must be cut by the splitter rather than read line by line."""
    body = head[len(BOM) :] if head.startswith(BOM) else head
    body = body.lstrip()
    return body.startswith(b"[") or first_line(head) == b"{"


class LiteLLMFormat:
    name = "litellm"
    description = "LiteLLM StandardLoggingPayload (JSON array, NDJSON or single pretty-printed objects)"

    def sniff(self, head: bytes, path: Path) -> float:
        obj, line = sniff_object(head)
        if obj is not None:
            if "litellm_call_id" in obj or ("call_type" in obj and "startTime" in obj):
                return 0.95
            return 0.0
        if b'"event_id"' in line:
            return 0.0  # a canonical line (perhaps carrying LiteLLM attributes): not ours
        if b'"litellm_call_id"' in head or (b'"call_type"' in head and b'"startTime"' in head):
            return 0.95 if _streamed(head) else 0.9
        return 0.0

    def parse(self, paths: Sequence[Path], options: FormatOptions) -> Iterator[Parsed]:
        for path in paths:
            source = str(path)
            pieces: Iterator[Piece]
            if _streamed(read_head(path, 4096)):
                pieces = iter_json_values(path, options)
            else:
                pieces = iter_values_of_lines(iter_json_lines(path, options))
            for piece in pieces:
                yield from self._piece(piece, source, options)

    def _piece(self, piece: Piece, source: str, options: FormatOptions) -> Iterator[Parsed]:
        if piece.error is not None:
            yield reject(source, piece.line, piece.error, None, piece.raw)
            return
        obj = load_json_line(piece.raw, source, piece.line, options)
        if isinstance(obj, Rejected):
            yield reject(source, piece.line, obj.reason, obj.field, piece.raw)
            return
        items: list[tuple[Any, bytes, str]] = [(obj, piece.raw, "")]
        if isinstance(obj, list):  # an NDJSON line holding a whole json_array batch
            items = [(item, orjson.dumps(item), f"[{i}]") for i, item in enumerate(obj)]
        for item, raw, where in items:
            try:
                yield self.to_event(item, options)
            except RecordError as exc:
                fld = f"{where}.{exc.field}" if where and exc.field else where or exc.field
                yield reject(source, piece.line, exc.reason, fld or None, raw)

    def to_event(self, obj: object, options: FormatOptions) -> Event:
        if not isinstance(obj, dict):
            raise RecordError(f"expected a JSON object, got {type_name(obj)}")
        meta = opt_obj(obj, "metadata", "") or {}
        origins: dict[str, str] = {}

        event_id, src = first_str((obj, "id", ""), (obj, "litellm_call_id", ""))
        if event_id is None:
            raise RecordError("required field is missing (neither id nor litellm_call_id)", field="id")
        origins["event_id"] = src or "id"
        if obj.get("startTime") is None:
            raise RecordError("required field is missing", field="startTime")
        ts = parse_ts(obj["startTime"], "startTime")
        origins["ts"] = "startTime"

        account, src = first_str((meta, "user_api_key_user_id", "metadata"))
        origins["account_id"] = src or "metadata.user_api_key_user_id"
        if account is None:
            account = options.default_account
        if account is None:
            raise RecordError(
                "no account: metadata.user_api_key_user_id is empty (no LiteLLM proxy auth?); pass "
                "--account to attribute these records",
                field="metadata.user_api_key_user_id",
            )
        org, src = first_str(
            (meta, "user_api_key_org_id", "metadata"),
            (meta, "user_api_key_team_id", "metadata"),
            (meta, "user_api_key_project_id", "metadata"),
        )
        if src:
            origins["org_id"] = src
        params = obj.get("model_parameters") if isinstance(obj.get("model_parameters"), dict) else None
        end_user, src = first_str(
            (obj, "end_user", ""),
            (meta, "user_api_key_end_user_id", "metadata"),
            (params, "safety_identifier", "model_parameters"),
            (params, "user", "model_parameters"),
        )
        if src:
            origins["end_user_id"] = src
        key_hash, src = first_str((meta, "user_api_key_hash", "metadata"))
        if src:
            origins["api_key_id"] = src
        ip, src = first_str((obj, "requester_ip_address", ""), (meta, "requester_ip_address", "metadata"))
        if src:
            origins["ip"] = src
        user_agent, src = first_str((obj, "user_agent", ""), (meta, "user_agent", "metadata"))
        if src:
            origins["user_agent"] = src
        model, src = first_str((obj, "model", ""))
        if src:
            origins["model"] = src
        conversation, src = first_str((obj, "session_id", ""), (obj, "trace_id", ""))
        if src:
            origins["conversation_id"] = src

        messages: list[dict[str, str]] | None = None
        prompt: str | None = None
        raw_messages = obj.get("messages")
        if isinstance(raw_messages, str):
            prompt = raw_messages
            origins["prompt"] = "messages"
        elif isinstance(raw_messages, list) and raw_messages and not all(isinstance(m, dict) for m in raw_messages):
            prompt = flat_input(raw_messages, "messages")  # e.g. an embedding call's input list
            origins["prompt"] = "messages"
        elif isinstance(raw_messages, list):
            messages = chat_messages(raw_messages, "messages")
            origins["messages"] = "messages"
        elif isinstance(raw_messages, dict) and "role" in raw_messages:
            messages = chat_messages([raw_messages], "messages")
            origins["messages"] = "messages"
        elif raw_messages is None:
            raise RecordError("required field is missing (no prompt)", field="messages")
        else:
            raise RecordError(
                f"expected an array of messages or a string, got {type_name(raw_messages)}", field="messages"
            )

        mapping = OpenAIMapping()
        response = obj.get("response")
        if isinstance(response, str):
            mapping.response = response or None
        elif isinstance(response, dict):
            map_openai_response(response, "response", mapping)
        elif response is not None and not isinstance(response, list):
            raise RecordError(f"expected an object or a string, got {type_name(response)}", field="response")
        origins.update({k: v for k, v in mapping.origins.items() if k == "response"})

        attrs: dict[str, Any] = {k: obj[k] for k in KEEP_TOP if obj.get(k) not in (None, "", [], {})}
        attrs.update({k: meta[k] for k in KEEP_METADATA if meta.get(k) not in (None, "", [], {})})
        for key in ("finish_reason", "usage"):
            if key in mapping.attributes:
                attrs[key] = mapping.attributes[key]
        hidden = obj.get("hidden_params")
        if isinstance(hidden, dict) and isinstance(hidden.get("litellm_model_name"), str):
            attrs["litellm_model_name"] = hidden["litellm_model_name"]
        if isinstance(obj.get("api_base"), str) and obj["api_base"]:
            parts = urlsplit(obj["api_base"])  # never keep query strings: some carry keys
            attrs["api_base"] = f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.netloc else parts.path
        refused = mapping.refused
        guardrails = obj.get("guardrail_information")
        if isinstance(guardrails, dict):
            guardrails = [guardrails]
        if isinstance(guardrails, list) and guardrails:
            summary = [
                {k: g[k] for k in GUARDRAIL_KEYS if g.get(k) is not None} for g in guardrails if isinstance(g, dict)
            ]
            attrs["guardrails"] = summary
            if any(g.get("guardrail_status") == "guardrail_intervened" for g in summary):
                refused = True
        status_fields = obj.get("status_fields")
        if isinstance(status_fields, dict) and status_fields.get("guardrail_status") == "guardrail_intervened":
            refused = True
        error = obj.get("error_information")
        if isinstance(error, dict) and any(error.get(k) for k in ERROR_KEYS):
            attrs["error_information"] = {k: error[k] for k in ERROR_KEYS if error.get(k)}

        fields: dict[str, Any] = {
            "event_id": event_id,
            "ts": ts,
            "account_id": account,
            "org_id": org or options.default_org,
            "end_user_id": end_user,
            "api_key_id": safe_key_id(key_hash) if key_hash else None,
            "ip": ip,
            "user_agent": user_agent,
            "model": model,
            "messages": messages,
            "prompt": prompt,
            "response": mapping.response,
            "conversation_id": conversation,
            "refused": refused,
            "attributes": scrub(attrs),
        }
        return build_event(fields, origins, self.name)


__all__ = ["LiteLLMFormat"]
