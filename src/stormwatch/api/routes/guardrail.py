"""LiteLLM Generic Guardrail API: ``POST /beta/litellm_basic_guardrail_api``.

LiteLLM's proxy calls it for every request (``mode: pre_call``) or response (``post_call``) of the
keys and models the guardrail covers: ``guardrail: generic_guardrail_api`` with ``api_base``
pointing at this server and ``api_key`` a stormwatch token (sent as ``x-api-key``), or the
:mod:`stormwatch.integrations.litellm_guardrail` class. Wire format:
``../shared/research/interfaces.md`` §4.1 (LiteLLM 1.110.2's ``GenericGuardrailAPIRequest``).

The texts are scored by the server's detectors (those of ``POST /v1/moderations``), the screening
policy (:mod:`stormwatch.api.screening`; warn-only by default) decides the answer
(``{"action": "NONE" | "BLOCKED" | "GUARDRAIL_INTERVENED", ...}``), and the call is recorded as a
usage event (source ``litellm_guardrail``) **before** the answer is sent (see
:mod:`stormwatch.api.online`): the LiteLLM key hash, user, team, org, end user, forwarded IP
(when the operator lists ``x-forwarded-for`` in the guardrail's ``extra_headers``; LiteLLM sends
``"[present]"`` otherwise), user agent, model, and the verdict. The event id is
``litellm:<litellm_call_id>:<input_type>``, or a hash of the request when LiteLLM sends no call id,
so a retried call is not stored twice.

Needs the ``screen`` permission. The answer carries our scores in the extension field
``x_stormwatch`` (LiteLLM ignores it).

Also here: ``POST /v1/litellm/logs`` receives LiteLLM's ``generic_api`` logging callback (batches
of ``StandardLoggingPayload``: a JSON array, NDJSON or one object), mapped by the ``litellm``
ingest format; records that cannot be mapped are quarantined at ``litellm_logs:<n>`` (their place
in the batch). Needs the ``ingest`` permission. A record without LiteLLM key attribution is
attributed to ``token:<name of the ingest token>``.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from stormwatch.api.auth import Principal, requires
from stormwatch.api.errors import BadRequest
from stormwatch.api.online import gate_for, writer_for
from stormwatch.api.roles import INGEST, SCREEN
from stormwatch.api.routes.moderations import score
from stormwatch.api.screening import ScreeningPolicy, screening_policy_for
from stormwatch.errors import RecordError
from stormwatch.events import ROLES, Event, Rejected
from stormwatch.ingest.formats._common import build_event, reject, safe_key_id
from stormwatch.ingest.formats.base import FormatOptions
from stormwatch.ingest.formats.litellm import LiteLLMFormat

__all__ = ["LOGS_PATH", "PATH", "RUN_ID", "SOURCE", "guardrail_event", "install"]

PATH = "/beta/litellm_basic_guardrail_api"
SOURCE = "litellm_guardrail"
RUN_ID = "online:litellm_guardrail"
LOGS_PATH = "/v1/litellm/logs"
LOGS_RUN_ID = "online:litellm_logs"
MAX_TEXTS = 256
#: request_data keys kept in the event's attributes (the e-mail address is not kept)
KEEP = (
    "user_api_key_alias",
    "user_api_key_team_id",
    "user_api_key_team_alias",
    "user_api_key_org_alias",
    "user_api_key_project_id",
)

router = APIRouter(tags=["screening"])


def _bad(message: str, *loc: str | int) -> BadRequest:
    return BadRequest(message, loc=("body", *loc))


def _obj(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(f"'{key}' must be an object", key)
    return value


def _opt(obj: dict[str, Any], key: str, *loc: str) -> str | None:
    value = obj.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(f"'{key}' must be a string", *loc, key)
    return value


def _parse(body: Any) -> tuple[list[str], str]:
    if not isinstance(body, dict):
        raise _bad("the body must be a JSON object (LiteLLM's GenericGuardrailAPIRequest)")
    texts = body.get("texts")
    if texts is None:
        texts = []
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise _bad("'texts' must be a list of strings", "texts")
    if len(texts) > MAX_TEXTS:
        raise _bad(f"'texts' has {len(texts)} items; at most {MAX_TEXTS}", "texts")
    input_type = body.get("input_type", "request")
    if input_type not in ("request", "response"):
        raise _bad(f"'input_type' must be 'request' or 'response', got {input_type!r}", "input_type")
    return list(texts), input_type


def _forwarded_ip(headers: dict[str, Any]) -> str | None:
    value = headers.get("x-forwarded-for") or headers.get("X-Forwarded-For")
    if not isinstance(value, str) or not value.strip() or value.strip() == "[present]":
        return None
    return value.split(",")[0].strip() or None


def _messages(body: dict[str, Any]) -> list[dict[str, str]] | None:
    rows = body.get("structured_messages")
    if not isinstance(rows, list) or not rows:
        return None
    out = []
    for row in rows:
        if not isinstance(row, dict) or row.get("role") not in ROLES or not isinstance(row.get("content"), str):
            return None  # multimodal or tool rows: the flat texts are used instead
        out.append({"role": row["role"], "content": row["content"]})
    return out


def guardrail_event(
    body: dict[str, Any],
    texts: list[str],
    input_type: str,
    verdict: dict[str, Any],
    principal: Principal,
    now: datetime | None = None,
) -> Event:
    """The usage event of one guardrail call (mapping: ``interfaces.md`` §6, Screening 2)."""
    data = _obj(body, "request_data")
    headers = _obj(body, "request_headers")
    call_id = _opt(body, "litellm_call_id")
    if call_id is not None:
        event_id = f"litellm:{call_id}:{input_type}"
    else:
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        event_id = f"gr-{digest}"
    account = _opt(data, "user_api_key_user_id", "request_data") or f"token:{principal.name}"
    org = _opt(data, "user_api_key_org_id", "request_data") or _opt(data, "user_api_key_team_id", "request_data")
    key_hash = _opt(data, "user_api_key_hash", "request_data")
    messages = _messages(body) if input_type == "request" else None
    text = "\n".join(texts)
    attributes: dict[str, Any] = {k: data[k] for k in KEEP if isinstance(data.get(k), str) and data[k]}
    attributes.update(
        {
            "input_type": input_type,
            "litellm_call_id": call_id,
            "litellm_version": body.get("litellm_version"),
            "guardrail": verdict,
            "screened_by": principal.actor,
        }
    )
    params = body.get("additional_provider_specific_params")
    if isinstance(params, dict) and params:
        attributes["additional_provider_specific_params"] = params
    fields: dict[str, Any] = {
        "event_id": event_id,
        "ts": (now or datetime.now(UTC)).isoformat(),
        "account_id": account,
        "org_id": org,
        "end_user_id": _opt(data, "user_api_key_end_user_id", "request_data"),
        "api_key_id": safe_key_id(key_hash) if key_hash else None,
        "ip": _forwarded_ip(headers),
        "user_agent": headers.get("user-agent") if isinstance(headers.get("user-agent"), str) else None,
        "model": _opt(body, "model"),
        "messages": messages,
        "prompt": None if messages is not None else (text if input_type == "request" else ""),
        "response": text if input_type == "response" else None,
        "conversation_id": _opt(body, "litellm_trace_id"),
        "attributes": {k: v for k, v in attributes.items() if v is not None},
    }
    try:
        return build_event(fields, {}, SOURCE)
    except RecordError as exc:
        raise _bad(f"cannot record this call: {exc.reason}", *(exc.field or "").split(".")) from None


def decide(
    policy: ScreeningPolicy, texts: list[str], input_type: str, results: list[dict[str, Any]], threshold: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the answer to LiteLLM, the verdict recorded on the event)."""
    min_score = policy.min_score if policy.min_score is not None else threshold
    flagged = [
        bool(r["x_stormwatch"]["score"] >= min_score or (policy.min_score is None and r["flagged"])) for r in results
    ]
    applies = input_type in policy.input_types
    any_flagged = any(flagged)
    action = "NONE"
    answer: dict[str, Any] = {"action": "NONE"}
    if any_flagged and applies and policy.mode == "block":
        action = "BLOCKED"
        answer = {"action": action, "blocked_reason": policy.message}
    elif any_flagged and applies and policy.mode == "intervene":
        action = "GUARDRAIL_INTERVENED"
        answer = {"action": action, "texts": [policy.message if f else t for t, f in zip(texts, flagged, strict=True)]}
    verdict = {
        "action": action,
        "verdict": ("deny" if action != "NONE" else "warn") if any_flagged else "allow",
        "flagged": any_flagged,
        "scores": [r["x_stormwatch"]["score"] for r in results],
        "llmt_flagged": sorted({c for r in results for c in r["x_stormwatch"]["llmt_flagged"]}),
        "policy": policy.id,
        "mode": policy.mode,
    }
    return answer, verdict


@router.post(
    PATH,
    summary="LiteLLM Generic Guardrail API: screen a request or response (analyst, admin; scope 'screen')",
)
async def litellm_guardrail(request: Request, principal: Principal = requires(SCREEN)) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"the body is not valid JSON: {exc}") from None
    texts, input_type = _parse(body)
    policy = screening_policy_for(request.app.state)
    results: list[dict[str, Any]] = []
    scorer = None
    if any(t.strip() for t in texts):
        # on the loop for short texts and the first tier, else one hop (moderations.score)
        scorer, results = await score(request, texts, parts=True)
    answer, verdict = decide(
        policy, texts, input_type, results or [_empty() for _ in texts], scorer.threshold if scorer else 1.0
    )
    if scorer is not None:
        verdict["model"] = scorer.version
    event = guardrail_event(body, texts, input_type, verdict, principal)
    await writer_for(request.app.state).write([event], [], run_id=RUN_ID)
    answer["x_stormwatch"] = {"event_id": event.event_id, **verdict}
    return answer


def _log_records(raw: bytes) -> list[tuple[Any, bytes]]:
    """The records of a logging-callback body: a JSON array, one object, or NDJSON."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = None
        lines = [line for line in raw.splitlines() if line.strip()]
        if not lines:
            raise _bad("the body is empty") from None
        out: list[tuple[Any, bytes]] = []
        for line in lines:
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                out.append((exc, line))
                continue
            out.extend((x, orjson.dumps(x)) for x in (item if isinstance(item, list) else [item]))
        return out
    if isinstance(doc, list):
        return [(x, orjson.dumps(x)) for x in doc]
    return [(doc, raw)]


def map_log_records(raw: bytes, default_account: str) -> tuple[list[Event], list[Rejected]]:
    fmt = LiteLLMFormat()
    options = FormatOptions(default_account=default_account)
    events: list[Event] = []
    rejected: list[Rejected] = []
    for i, (item, text) in enumerate(_log_records(raw), start=1):
        if isinstance(item, Exception):
            rejected.append(reject("litellm_logs", i, f"not valid JSON: {item}", None, text))
            continue
        try:
            events.append(fmt.to_event(item, options))
        except RecordError as exc:
            rejected.append(reject("litellm_logs", i, exc.reason, exc.field, text))
    return events, rejected


@router.post(LOGS_PATH, summary="LiteLLM generic_api logging callback: StandardLoggingPayload batches (scope 'ingest')")
async def litellm_logs(request: Request, principal: Principal = requires(INGEST)) -> dict[str, Any]:
    gate = gate_for(request.app.state)
    gate.enter("LiteLLM log batches")
    try:
        raw = await request.body()
        events, rejected = await run_in_threadpool(map_log_records, raw, f"token:{principal.name}")
    finally:
        gate.leave()
    await writer_for(request.app.state).write(events, rejected, run_id=LOGS_RUN_ID)
    return {"ok": True, "events": len(events), "quarantined": len(rejected)}


def _empty() -> dict[str, Any]:
    return {"flagged": False, "x_stormwatch": {"score": 0.0, "llmt_flagged": []}}


def install(app: FastAPI) -> None:
    app.include_router(router)
