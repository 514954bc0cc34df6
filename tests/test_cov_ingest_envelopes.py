"""HTTP-log envelopes, LiteLLM payloads and Batch files: the fields outside the OpenAI body.

Headers (object or pairs, secrets never kept), bodies logged as JSON strings, event-id and
timestamp fallbacks, account attribution, guardrails, Batch joins; and one CLI run mixing formats.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.errors import EXIT_QUARANTINED, RecordError
from stormwatch.events import Event
from stormwatch.ingest.formats import get_format, sniff_format
from stormwatch.ingest.formats.base import FormatOptions, Rejected
from stormwatch.ingest.formats.litellm import LiteLLMFormat
from stormwatch.ingest.formats.openai_http import OpenAIHttpLogFormat

SECRET = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
MSG = [{"role": "user", "content": "hello"}]


def env(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ts": "2026-01-02T03:04:05Z",
        "auth": {"account_id": "acct_1"},
        "request": {"method": "POST", "path": "/v1/chat/completions", "body": {"messages": MSG}},
        "response": {"status": 200, "headers": {"x-request-id": "req_1"}},
    }
    base.update(over)
    return base


def http(obj: Any, options: FormatOptions | None = None) -> Event:
    return cast(OpenAIHttpLogFormat, get_format("openai_http_log")).to_event(obj, options or FormatOptions())


def http_error(obj: Any, options: FormatOptions | None = None) -> RecordError:
    with pytest.raises(RecordError) as info:
        http(obj, options)
    return info.value


# --------------------------------------------------------------------------------------------
# OpenAI HTTP log


def test_headers_as_pairs_lists_and_numbers_keep_only_the_allow_list() -> None:
    request = {
        "method": "POST",
        "path": "/v1/chat/completions",
        "headers": [
            ["User-Agent", "OpenAI/Python 1.0"],
            ["Authorization", f"Bearer {SECRET}"],
            ["X-Forwarded-For", "203.0.113.9, 10.0.0.1"],
            ["X-Stainless-Retry-Count", 2],
            ["OpenAI-Project", "proj_9"],
            ["Accept-Language", ["en", "de"]],
            ["openai-beta", "a"],
            ["OpenAI-Beta", "b"],
            ["api-key", None],
        ],
        "body": json.dumps({"messages": MSG}),
    }
    response = {
        "status_code": 429,
        "headers": {"X-Request-Id": "req_pairs", "openai-processing-ms": 12, "set-cookie": "s=1"},
        "body": "",
    }
    ev = http(env(request=request, response=response, client_ip=None, trace="t-1", api_key=SECRET))
    assert ev.event_id == "req_pairs"
    assert ev.ip == "203.0.113.9"
    assert ev.user_agent == "OpenAI/Python 1.0"
    assert ev.messages == MSG
    attrs = ev.attributes or {}
    assert attrs["status"] == 429 and attrs["failed"] is True
    assert attrs["project_id"] == "proj_9"
    assert attrs["request_headers"] == {
        "x-forwarded-for": "203.0.113.9, 10.0.0.1",
        "x-stainless-retry-count": "2",
        "openai-project": "proj_9",
        "accept-language": "en, de",
        "openai-beta": "a, b",
    }
    assert attrs["response_headers"] == {"x-request-id": "req_pairs", "openai-processing-ms": "12"}
    assert attrs["trace"] == "t-1"
    assert SECRET not in orjson.dumps(ev.attributes).decode()
    assert "api_key" not in attrs


@pytest.mark.parametrize(
    ("headers", "field", "reason"),
    [
        ("x", "request.headers", "expected an object"),
        ([["only-name"]], "request.headers[0]", "[name, value] pair"),
        ([[1, "v"]], "request.headers", "header name must be a string"),
        ({"accept": {"a": 1}}, "request.headers.accept", "expected a string"),
    ],
)
def test_malformed_headers_are_named(headers: Any, field: str, reason: str) -> None:
    err = http_error(env(request={"path": "/v1/chat/completions", "headers": headers, "body": {"messages": MSG}}))
    assert err.field == field
    assert reason in err.reason


@pytest.mark.parametrize(
    ("over", "field", "reason"),
    [
        ({"request": None}, "request", "required field is missing"),
        ({"request": {"path": "/v1/chat/completions"}}, "request.body", "no prompt without a request body"),
        ({"request": {"body": "{not json"}}, "request.body", "not JSON"),
        ({"request": {"body": "[1]"}}, "request.body", "expected an object"),
        ({"response": {"headers": {"x-request-id": "r"}, "status": "200"}}, "response.status", "expected an integer"),
        ({"response": {}}, "response.headers.x-request-id", "no event id"),
        ({"ts": None, "response": {"headers": {"x-request-id": "r"}}}, "ts", "no envelope ts"),
        ({"auth": {}}, "auth.account_id", "--account"),
        ({"auth": {"account_id": 7}}, "auth.account_id", "expected a string"),
        ({"ts": "yesterday"}, "ts", "RFC 3339"),
    ],
)
def test_malformed_envelopes_are_named(over: dict[str, Any], field: str, reason: str) -> None:
    err = http_error(env(**over))
    assert err.field == field
    assert reason in err.reason
    with pytest.raises(RecordError, match="JSON object"):
        http([1])


def test_event_id_and_ts_fallbacks_and_default_account() -> None:
    response = {"status": 200, "body": {"id": "chatcmpl-9", "created_at": 1767225600, "choices": []}}
    ev = http(env(ts=None, auth={"org_id": "org-9"}, response=response), FormatOptions(default_account="fallback"))
    assert ev.event_id == "chatcmpl-9"
    assert ev.ts.startswith("2026-01-01T00:00:00")
    assert (ev.account_id, ev.org_id) == ("fallback", "org-9")
    ev = http(env(response={}, request_id="envelope-id"))
    assert ev.event_id == "envelope-id"
    ev = http(
        env(
            request={
                "path": "/v1/chat/completions",
                "headers": {"openai-organization": "org-h"},
                "body": {"messages": MSG},
            }
        )
    )
    assert ev.org_id == "org-h"


def test_http_sniff_scores(tmp_path: Path) -> None:
    fmt = get_format("openai_http_log")
    assert fmt.sniff(orjson.dumps(env()) + b"\n", tmp_path / "x") == 0.95
    assert fmt.sniff(orjson.dumps({"request": {}, "response": {}}) + b"\n", tmp_path / "x") == 0.7
    assert fmt.sniff(orjson.dumps({"event_id": "e", "request": {}, "response": {}}) + b"\n", tmp_path / "x") == 0.0
    # a first line longer than the sniffed head: the keys decide
    cut = b'{"request": {"path": "/v1"}, "auth": {"account_id": "a"}, "pad": "' + b"x" * 100
    assert fmt.sniff(cut, tmp_path / "x") == 0.9
    assert fmt.sniff(b'{"something": "else", "pad": "xxxx', tmp_path / "x") == 0.0


# --------------------------------------------------------------------------------------------
# LiteLLM


def litellm(obj: Any, options: FormatOptions | None = None) -> Event:
    return cast(LiteLLMFormat, get_format("litellm")).to_event(obj, options or FormatOptions())


def payload(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "call_1",
        "call_type": "acompletion",
        "startTime": 1767225600.5,
        "model": "gpt-4o",
        "metadata": {"user_api_key_user_id": "acct_l"},
        "messages": MSG,
    }
    base.update(over)
    return base


def test_litellm_message_shapes_and_response_kinds() -> None:
    assert litellm(payload(messages="raw prompt")).prompt == "raw prompt"
    assert litellm(payload(messages=["emb a", "emb b"])).prompt == "emb a\nemb b"
    assert litellm(payload(messages={"role": "user", "content": "single"})).messages == [
        {"role": "user", "content": "single"}
    ]
    ev = litellm(payload(response="plain answer", session_id="", trace_id="tr_1"))
    assert (ev.response, ev.conversation_id) == ("plain answer", "tr_1")
    assert litellm(payload(response="")).response is None
    assert litellm(payload(response=[{"embedding": [0.1]}])).response is None
    ev = litellm(
        payload(
            response={
                "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
                "usage": {"total_tokens": 1},
            }
        )
    )
    assert ev.response == "hi"
    assert ev.attributes is not None
    assert ev.attributes["finish_reason"] == "stop" and ev.attributes["usage"] == {"total_tokens": 1}


def test_litellm_identity_fields_guardrails_and_errors() -> None:
    ev = litellm(
        payload(
            metadata={
                "user_api_key_user_id": "acct_l",
                "user_api_key_team_id": "team_1",
                "user_api_key_hash": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
                "user_api_key_end_user_id": "eu_1",
                "requester_ip_address": "198.51.100.4",
                "user_agent": "curl/8",
            },
            model_parameters={"user": "ignored-later"},
            hidden_params={"litellm_model_name": "openai/gpt-4o"},
            api_base=f"https://api.example.com/v1?key={SECRET}",
            guardrail_information={"guardrail_name": "g1", "guardrail_status": "guardrail_intervened"},
            error_information={"error_code": "400", "error_class": "BadRequest", "traceback": "..."},
        )
    )
    assert (ev.org_id, ev.end_user_id, ev.ip, ev.user_agent) == ("team_1", "eu_1", "198.51.100.4", "curl/8")
    assert ev.api_key_id is not None
    assert ev.refused is True
    attrs = ev.attributes or {}
    assert attrs["litellm_model_name"] == "openai/gpt-4o"
    assert attrs["api_base"] == "https://api.example.com/v1"
    assert attrs["guardrails"][0]["guardrail_status"] == "guardrail_intervened"
    assert attrs["error_information"] == {"error_code": "400", "error_class": "BadRequest"}
    assert SECRET not in orjson.dumps(attrs).decode()
    # model_parameters.user is the last end-user fallback; a status_fields guardrail also refuses
    ev = litellm(payload(model_parameters={"user": "u_mp"}, status_fields={"guardrail_status": "guardrail_intervened"}))
    assert ev.end_user_id == "u_mp" and ev.refused is True
    ev = litellm(payload(api_base="/relative/path", guardrail_information=[{"guardrail_status": "success"}]))
    assert ev.attributes is not None and ev.attributes["api_base"] == "/relative/path"
    assert ev.refused is None


@pytest.mark.parametrize(
    ("over", "options", "field", "reason"),
    [
        ({"id": None, "litellm_call_id": None}, None, "id", "neither id nor litellm_call_id"),
        ({"startTime": None}, None, "startTime", "required field is missing"),
        ({"metadata": {}}, None, "metadata.user_api_key_user_id", "--account"),
        ({"metadata": "x"}, None, "metadata", "expected an object"),
        ({"messages": None}, None, "messages", "no prompt"),
        ({"messages": 5}, None, "messages", "array of messages or a string"),
        ({"messages": [{"role": "user", "content": 3}]}, None, "messages[0].content", "string"),
        ({"response": 5}, None, "response", "object or a string"),
    ],
)
def test_litellm_errors_name_the_field(
    over: dict[str, Any], options: FormatOptions | None, field: str, reason: str
) -> None:
    with pytest.raises(RecordError) as info:
        litellm(payload(**over), options)
    assert info.value.field == field
    assert reason in info.value.reason


def test_litellm_default_account_and_ndjson_array_line(tmp_path: Path) -> None:
    assert litellm(payload(metadata=None), FormatOptions(default_account="owner")).account_id == "owner"
    path = tmp_path / "batch.ndjson"
    line = orjson.dumps([payload(id="a"), payload(id="b", messages=7), "junk"])
    path.write_bytes(orjson.dumps(payload(id="c")) + b"\n" + line + b"\n")
    results = list(get_format("litellm").parse([path], FormatOptions()))
    assert [r.event_id for r in results if isinstance(r, Event)] == ["c", "a"]
    rej = [r for r in results if isinstance(r, Rejected)]
    assert [(r.line, r.field) for r in rej] == [(2, "[1].messages"), (2, "[2]")]


def test_litellm_pretty_printed_and_array_files_with_bom(tmp_path: Path) -> None:
    pretty = tmp_path / "pretty.json"
    pretty.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps(payload(id="p1"), indent=2).encode()
        + b"\n"
        + json.dumps(payload(id="p2"), indent=2).encode()
    )
    array = tmp_path / "array.json.gz"
    array.write_bytes(gzip.compress(json.dumps([payload(id="q1"), payload(id="q2", startTime="bad")]).encode()))
    assert sniff_format(pretty).name == "litellm"
    assert sniff_format(array).name == "litellm"
    got = list(get_format("litellm").parse([pretty, array], FormatOptions()))
    assert [r.event_id for r in got if isinstance(r, Event)] == ["p1", "p2", "q1"]
    [bad] = [r for r in got if isinstance(r, Rejected)]
    assert bad.field == "startTime" and bad.source == str(array)


# --------------------------------------------------------------------------------------------
# OpenAI Batch


def batch_input(cid: Any, **body: Any) -> dict[str, Any]:
    return {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": {"messages": MSG, **body}}


def batch_output(cid: Any, **over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": f"batch_req_{cid}",
        "custom_id": cid,
        "response": {"status_code": 200, "body": {"created": 1767225600, "choices": []}},
        "error": None,
    }
    out.update(over)
    return out


def write(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join((r if isinstance(r, bytes) else orjson.dumps(r)) + b"\n" for r in rows))
    return path


def test_batch_joins_errors_and_fallbacks(tmp_path: Path) -> None:
    inp = write(
        tmp_path / "in.jsonl",
        [
            batch_input("ok"),
            batch_input("failed"),
            batch_input("missing"),
            batch_input("ok"),  # duplicate custom_id
            batch_input(""),  # empty custom_id
            batch_output("stray-output-in-input"),
            {"hello": 1},
            b"{broken",
            {"custom_id": "nobody", "method": "POST"},  # no body
            batch_input("badstatus"),
        ],
    )
    out = write(
        tmp_path / "out.jsonl",
        [
            batch_output("ok"),
            batch_output("failed", response=None, error={"code": "expired", "message": "timed out"}),
            batch_output("orphan"),
            batch_output("ok"),  # duplicate
            batch_input("input-in-output"),
            {"x": 1},
            b"{broken",
            batch_output(5),
            batch_output("badstatus", response={"status_code": "200"}),
        ],
    )
    opts = FormatOptions(default_account="owner", extra={"batch_id": "batch_9", "batch_ts": "2026-01-05T00:00:00Z"})
    results = list(get_format("openai_batch").parse([inp, out], opts))
    evs = {e.attributes["custom_id"]: e for e in results if isinstance(e, Event) and e.attributes}
    assert set(evs) == {"ok", "failed", "missing"}
    assert evs["ok"].event_id == "batch_req_ok"
    assert evs["failed"].attributes is not None and evs["failed"].attributes["failed"] is True
    assert evs["failed"].attributes["ts_from_batch"] is True
    assert evs["missing"].event_id == "batch_9:missing"
    assert evs["missing"].attributes is not None and evs["missing"].attributes["output_missing"] is True
    rej = {(Path(r.source).name, r.line): r for r in results if isinstance(r, Rejected)}
    assert "duplicate custom_id 'ok'" in rej[("in.jsonl", 4)].reason
    assert rej[("in.jsonl", 5)].field == "custom_id" and "empty" in rej[("in.jsonl", 5)].reason
    assert "an output line in a Batch input file" in rej[("in.jsonl", 6)].reason
    assert rej[("in.jsonl", 7)].field == "custom_id"
    assert "not valid JSON" in rej[("in.jsonl", 8)].reason
    assert rej[("in.jsonl", 9)].field == "body"
    assert "duplicate custom_id 'ok'" in rej[("out.jsonl", 4)].reason
    assert "an input line in a Batch output file" in rej[("out.jsonl", 5)].reason
    assert "not a Batch output line" in rej[("out.jsonl", 6)].reason
    assert "not valid JSON" in rej[("out.jsonl", 7)].reason
    assert rej[("out.jsonl", 8)].field == "custom_id"
    # a bad response field is blamed on the output line, naming the input it was joined with
    bad = rej[("out.jsonl", 9)]
    assert bad.field == "response.status_code" and "joined with input" in bad.reason
    assert "no matching input line for custom_id 'orphan'" in rej[("out.jsonl", 3)].reason


def test_batch_without_account_or_timestamp_and_unrecognised_files(tmp_path: Path) -> None:
    inp = write(tmp_path / "in.jsonl", [batch_input("a")])
    [r] = list(get_format("openai_batch").parse([inp], FormatOptions(default_account="o")))
    assert isinstance(r, Rejected) and r.field == "ts" and "--batch-ts" in r.reason
    out = write(tmp_path / "out.jsonl", [batch_output("a", response={"status_code": 500, "body": {}})])
    [r] = list(get_format("openai_batch").parse([inp, out], FormatOptions(default_account="o")))
    assert isinstance(r, Rejected) and "failed or expired" in r.reason
    [r] = list(get_format("openai_batch").parse([inp, out], FormatOptions(extra={"batch_ts": 1767225600})))
    assert isinstance(r, Rejected) and r.field == "account_id" and "--account" in r.reason
    only_out = write(tmp_path / "only_out.jsonl", [batch_output("z")])
    [r] = list(get_format("openai_batch").parse([only_out], FormatOptions(default_account="o")))
    assert isinstance(r, Rejected) and "no Batch input file was given" in r.reason
    junk = write(tmp_path / "junk.jsonl", [{"a": 1}, b"{nope"])
    got = list(get_format("openai_batch").parse([junk], FormatOptions(default_account="o")))
    assert [(r.line, r.field) for r in got if isinstance(r, Rejected)] == [(1, "custom_id"), (2, None)]


def test_batch_classifies_a_file_whose_first_lines_are_not_json(tmp_path: Path) -> None:
    # the sniffed head holds only broken lines; the classifier reads on through the file
    head_junk = [b"{broken " + b"x" * 70_000, orjson.dumps(batch_input("late"))]
    inp = write(tmp_path / "late.jsonl", head_junk)
    opts = FormatOptions(default_account="o", extra={"batch_ts": "2026-01-01T00:00:00Z"})
    got = list(get_format("openai_batch").parse([inp], opts))
    assert [r.event_id for r in got if isinstance(r, Event)] == ["late"]
    assert [r.line for r in got if isinstance(r, Rejected)] == [1]


def test_batch_sniff_on_a_cut_first_line(tmp_path: Path) -> None:
    fmt = get_format("openai_batch")
    assert fmt.sniff(b'{"custom_id": "a", "body": {"pad": "xxxx', tmp_path / "x") == 0.9
    assert fmt.sniff(b'{"custom_id": "a", "event_id": "e", "body": "xx', tmp_path / "x") == 0.0
    assert fmt.sniff(orjson.dumps({"custom_id": "a"}) + b"\n", tmp_path / "x") == 0.0


# --------------------------------------------------------------------------------------------
# one CLI run with every format, gzip and a BOM


def test_cli_ingests_mixed_formats_in_one_run(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    canonical = tmp_path / "canon.jsonl"
    canonical.write_bytes(
        b"\xef\xbb\xbf"
        + orjson.dumps({"event_id": "c1", "ts": "2026-01-01T00:00:00Z", "account_id": "a", "prompt": "p"})
        + b"\n"
    )
    http_log = tmp_path / "http.jsonl.gz"
    bad = env(request={"path": "/v1/chat/completions", "headers": {"authorization": f"Bearer {SECRET}"}, "body": {}})
    http_log.write_bytes(gzip.compress(orjson.dumps(env()) + b"\n" + orjson.dumps(bad) + b"\n"))
    lite = tmp_path / "lite.ndjson"
    lite.write_bytes(orjson.dumps(payload()) + b"\n")
    binp = write(tmp_path / "b_in.jsonl", [batch_input("b1")])
    bout = write(tmp_path / "b_out.jsonl", [batch_output("b1")])
    files = [canonical, http_log, lite, binp, bout]
    code = main(["--db", sqlite_url, "ingest", *map(str, files), "--account", "owner", "--json", "-q"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == EXIT_QUARANTINED
    assert (summary["stored"], summary["quarantined"]) == (4, 1)
    assert main(["--db", sqlite_url, "quarantine", "list", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)["items"]
    assert (row["source"], row["line"]) == (str(http_log.resolve()), 2)
    assert row["field"] == "request.body.messages"
    assert SECRET not in json.dumps(row)
