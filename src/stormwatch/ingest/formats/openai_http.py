"""OpenAI-style HTTP request/response logs, one envelope per line.

``{ts, client_ip, auth{account_id, org_id, project_id, api_key_id}, request{method, path, headers,
body}, response{status, headers, body}}`` as proposed in ``../shared/research/interfaces.md`` §2.2;
mapped per §6 (Ingest C, HTTP-log column). See ``docs/formats.md``.

Secrets: the ``Authorization`` header (and every other credential-looking header or field) is never
kept - not in the event, not in its attributes, and it is redacted from quarantined raw lines.
Only an allow-list of request/response headers is copied into ``attributes``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from stormwatch.errors import RecordError
from stormwatch.events import Event, type_name
from stormwatch.ingest.formats._common import (
    JSON,
    OpenAIMapping,
    build_event,
    endpoint_kind,
    first_str,
    is_secret_key,
    iter_json_lines,
    join,
    map_openai_request,
    map_openai_response,
    opt_obj,
    opt_str,
    parse_ts,
    reject,
    safe_key_id,
    sniff_object,
)
from stormwatch.ingest.formats.base import FormatOptions, Parsed, Rejected, load_json_line

#: request headers copied into attributes (plus every ``x-stainless-*``).
KEEP_REQUEST_HEADERS = frozenset(
    {
        "openai-organization",
        "openai-project",
        "openai-beta",
        "content-type",
        "accept-language",
        "origin",
        "referer",
        "x-forwarded-for",
        "x-real-ip",
    }
)
#: response headers copied into attributes.
KEEP_RESPONSE_HEADERS = frozenset(
    {"x-request-id", "openai-processing-ms", "openai-version", "openai-model", "content-type"}
)


def headers_of(value: object, path: str) -> dict[str, str]:
    """Headers as a dict with lower-case names: from an object or a list of ``[name, value]`` pairs."""
    if value is None:
        return {}
    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list):
        pairs = []
        for i, item in enumerate(value):
            if not (isinstance(item, list | tuple) and len(item) == 2):
                raise RecordError(f"expected a [name, value] pair, got {type_name(item)}", field=join(path, i))
            pairs.append((item[0], item[1]))
    else:
        raise RecordError(f"expected an object, got {type_name(value)}", field=path)
    out: dict[str, str] = {}
    for name, val in pairs:
        if not isinstance(name, str):
            raise RecordError(f"header name must be a string, got {type_name(name)}", field=path)
        key = name.strip().lower()
        if isinstance(val, list):
            val = ", ".join(str(v) for v in val)
        elif isinstance(val, int | float) and not isinstance(val, bool):
            val = str(val)
        if not isinstance(val, str):
            if is_secret_key(key):
                continue
            raise RecordError(f"expected a string, got {type_name(val)}", field=join(path, key))
        out[key] = f"{out[key]}, {val}" if key in out else val
    return out


def _keep(headers: Mapping[str, str], allow: frozenset[str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if (k in allow or k.startswith("x-stainless-")) and not is_secret_key(k)}


def _body(container: JSON, path: str) -> JSON | None:
    """A logged body: an object, or a JSON string holding one."""
    value = container.get("body")
    if value is None or value == "":
        return None
    if isinstance(value, str | bytes):
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise RecordError(f"body is a string that is not JSON: {exc}", field=join(path, "body")) from exc
    if not isinstance(value, dict):
        raise RecordError(f"expected an object, got {type_name(value)}", field=join(path, "body"))
    return value


class OpenAIHttpLogFormat:
    name = "openai_http_log"
    description = "OpenAI-style HTTP request/response log envelopes, one JSON object per line"

    def sniff(self, head: bytes, path: Path) -> float:
        obj, line = sniff_object(head)
        if obj is not None:
            if "request" in obj and isinstance(obj.get("request"), dict) and ("auth" in obj or "client_ip" in obj):
                return 0.95
            if (
                "request" in obj
                and "response" in obj
                and isinstance(obj.get("request"), dict)
                and "event_id" not in obj
            ):
                return 0.7
            return 0.0
        if b'"request"' in line and (b'"auth"' in line or b'"client_ip"' in line) and b'"event_id"' not in line:
            return 0.9
        return 0.0

    def parse(self, paths: Sequence[Path], options: FormatOptions) -> Iterator[Parsed]:
        for path in paths:
            source = str(path)
            for lineno, raw in iter_json_lines(path, options):
                obj = load_json_line(raw, source, lineno, options)
                if isinstance(obj, Rejected):
                    yield reject(source, lineno, obj.reason, obj.field, raw)
                    continue
                try:
                    yield self.to_event(obj, options)
                except RecordError as exc:
                    yield reject(source, lineno, exc.reason, exc.field, raw)

    def to_event(self, env: object, options: FormatOptions) -> Event:
        if not isinstance(env, dict):
            raise RecordError(f"expected a JSON object, got {type_name(env)}")
        auth = opt_obj(env, "auth", "") or {}
        request = opt_obj(env, "request", "")
        if request is None:
            raise RecordError("required field is missing", field="request")
        response = opt_obj(env, "response", "") or {}
        req_headers = headers_of(request.get("headers"), "request.headers")
        resp_headers = headers_of(response.get("headers"), "response.headers")
        req_body = _body(request, "request")
        resp_body = _body(response, "response")
        url = opt_str(request, "path", "request") or opt_str(request, "url", "request")
        method = opt_str(request, "method", "request")

        mapping = OpenAIMapping()
        if req_body is None:
            raise RecordError("required field is missing (no prompt without a request body)", field="request.body")
        map_openai_request(endpoint_kind(url, req_body), req_body, "request.body", mapping)
        if resp_body is not None:
            map_openai_response(resp_body, "response.body", mapping)
        origins = dict(mapping.origins)

        event_id: str | None = resp_headers.get("x-request-id") or None
        origins["event_id"] = "response.headers.x-request-id"
        if event_id is None and resp_body is not None:
            event_id, src = first_str((resp_body, "id", "response.body"))
            origins["event_id"] = src or "response.body.id"
        if event_id is None:
            event_id, src = first_str((env, "request_id", ""))
            origins["event_id"] = src or "request_id"
        if event_id is None:
            raise RecordError(
                "no event id: neither an x-request-id response header nor response.body.id",
                field="response.headers.x-request-id",
            )

        ts: str | None = None
        if env.get("ts") is not None:
            ts = parse_ts(env["ts"], "ts")
            origins["ts"] = "ts"
        elif resp_body is not None:
            for key in ("created", "created_at"):
                if resp_body.get(key) is not None:
                    ts = parse_ts(resp_body[key], join("response.body", key))
                    origins["ts"] = join("response.body", key)
                    break
        if ts is None:
            raise RecordError("required field is missing (no envelope ts nor response.body.created)", field="ts")

        account, src = first_str((auth, "account_id", "auth"))
        origins["account_id"] = src or "auth.account_id"
        if account is None:
            account = options.default_account
        if account is None:
            raise RecordError(
                "required field is missing (or pass --account to attribute every line to one account)",
                field="auth.account_id",
            )
        org, src = first_str((auth, "org_id", "auth"), (req_headers, "openai-organization", "request.headers"))
        if src:
            origins["org_id"] = src
        project, _ = first_str((auth, "project_id", "auth"), (req_headers, "openai-project", "request.headers"))
        key_id, src = first_str((auth, "api_key_id", "auth"))
        if src:
            origins["api_key_id"] = src
        ip, src = first_str((env, "client_ip", ""))
        if ip is None and req_headers.get("x-forwarded-for"):
            ip = req_headers["x-forwarded-for"].split(",", 1)[0].strip() or None
            src = "request.headers.x-forwarded-for"
        if src:
            origins["ip"] = src
        user_agent = req_headers.get("user-agent") or None
        origins["user_agent"] = "request.headers.user-agent"

        attrs: dict[str, Any] = {}
        if url:
            attrs["path"] = url
        if method:
            attrs["method"] = method
        status = response.get("status", response.get("status_code"))
        if status is not None:
            if isinstance(status, bool) or not isinstance(status, int):
                raise RecordError(f"expected an integer, got {type_name(status)}", field="response.status")
            attrs["status"] = status
            if status >= 400:
                attrs["failed"] = True
        if project:
            attrs["project_id"] = project
        kept = _keep(req_headers, KEEP_REQUEST_HEADERS)
        if kept:
            attrs["request_headers"] = kept
        kept = _keep(resp_headers, KEEP_RESPONSE_HEADERS)
        if kept:
            attrs["response_headers"] = kept
        attrs.update(mapping.attributes)
        for key, value in env.items():  # envelope extras (kept, not interpreted), minus secrets
            if key not in (
                "ts",
                "client_ip",
                "auth",
                "request",
                "response",
                "request_id",
            ) and not is_secret_key(key):
                attrs.setdefault(key, value)

        fields: dict[str, Any] = {
            "event_id": event_id,
            "ts": ts,
            "account_id": account,
            "org_id": org or options.default_org,
            "end_user_id": mapping.end_user_id,
            "api_key_id": safe_key_id(key_id) if key_id else None,
            "ip": ip,
            "user_agent": user_agent,
            "model": mapping.model,
            "messages": mapping.messages,
            "prompt": mapping.prompt,
            "response": mapping.response,
            "conversation_id": mapping.conversation_id,
            "refused": mapping.refused,
            "attributes": attrs,
        }
        return build_event(fields, origins, self.name)
