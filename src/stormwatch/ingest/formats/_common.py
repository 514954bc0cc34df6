"""Helpers shared by the OpenAI Batch, OpenAI HTTP-log and LiteLLM formats, one module per concern
(this module re-exports them: ``_fields``, ``_openai``, ``_secrets``, ``_jsonstream``).

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

from stormwatch.ingest.formats._fields import (
    JSON,
    build_event,
    first_str,
    join,
    opt_list,
    opt_obj,
    opt_str,
    parse_ts,
    reject,
)
from stormwatch.ingest.formats._jsonstream import (
    BOM,
    JsonValueSplitter,
    Piece,
    first_line,
    iter_json_lines,
    iter_json_values,
    iter_values_of_lines,
    sniff_object,
)
from stormwatch.ingest.formats._openai import (
    OpenAIMapping,
    chat_messages,
    endpoint_kind,
    flat_input,
    map_openai_request,
    map_openai_response,
    map_role,
    render_content,
    render_tool_calls,
    responses_input,
)
from stormwatch.ingest.formats._secrets import (
    REDACTED,
    is_secret_key,
    looks_like_secret,
    redact_raw,
    safe_key_id,
    scrub,
)

__all__ = [
    "BOM",
    "JSON",
    "REDACTED",
    "JsonValueSplitter",
    "OpenAIMapping",
    "Piece",
    "build_event",
    "chat_messages",
    "endpoint_kind",
    "first_line",
    "first_str",
    "flat_input",
    "is_secret_key",
    "iter_json_lines",
    "iter_json_values",
    "iter_values_of_lines",
    "join",
    "looks_like_secret",
    "map_openai_request",
    "map_openai_response",
    "map_role",
    "opt_list",
    "opt_obj",
    "opt_str",
    "parse_ts",
    "redact_raw",
    "reject",
    "render_content",
    "render_tool_calls",
    "responses_input",
    "safe_key_id",
    "scrub",
    "sniff_object",
]
