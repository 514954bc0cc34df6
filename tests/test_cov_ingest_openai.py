"""OpenAI request/response body mapping, through the OpenAI HTTP-log and Batch formats.

Message shapes (content parts, tool calls, images, multi-turn, system prompts, the Responses API),
the endpoint families, and the field each malformed body is quarantined under.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, cast

import orjson
import pytest

from stormwatch.errors import RecordError
from stormwatch.events import Event
from stormwatch.ingest.formats import get_format
from stormwatch.ingest.formats.base import FormatOptions, Rejected
from stormwatch.ingest.formats.openai_http import OpenAIHttpLogFormat

OPTS = FormatOptions()


def envelope(body: Any, *, path: str = "/v1/chat/completions", response: Any = None, **extra: Any) -> dict[str, Any]:
    env: dict[str, Any] = {
        "ts": "2026-01-02T03:04:05Z",
        "auth": {"account_id": "acct_1"},
        "request": {"method": "POST", "path": path, "body": body},
        "response": {"status": 200, "headers": {"x-request-id": "req_1"}},
    }
    if response is not None:
        env["response"]["body"] = response
    env.update(extra)
    return env


def http(env: Any, options: FormatOptions = OPTS) -> Event:
    return cast(OpenAIHttpLogFormat, get_format("openai_http_log")).to_event(env, options)


def http_error(env: Any, options: FormatOptions = OPTS) -> RecordError:
    with pytest.raises(RecordError) as info:
        http(env, options)
    return info.value


def chat(messages: Any, **body: Any) -> Event:
    return http(envelope({"model": "gpt-4o", "messages": messages, **body}))


# --------------------------------------------------------------------------------------------
# chat messages: content parts and tool calls


def test_chat_content_parts_render_text_and_placeholders() -> None:
    ev = chat(
        [
            {"role": "system", "content": "be terse"},
            {
                "role": "user",
                "content": [
                    "bare string part",
                    {"type": "text", "text": "describe this"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    {"type": "input_audio", "input_audio": {"data": "AAAA"}},
                    {"type": "file", "file": {"filename": "notes.pdf"}},
                    {"type": "input_file", "filename": "plan.docx"},
                    {"type": "file", "file": {"file_id": "file_1"}},
                    {"type": "video_url"},
                    {"type": "weird_kind"},
                    {"text": {"value": "nested sdk text"}},
                    {"type": "refusal", "refusal": "nope"},
                ],
            },
        ]
    )
    assert ev.messages is not None
    assert ev.messages[0] == {"role": "system", "content": "be terse"}
    assert ev.messages[1]["role"] == "user"
    assert ev.messages[1]["content"].split("\n") == [
        "bare string part",
        "describe this",
        "[image]",
        "[audio]",
        "[file: notes.pdf]",
        "[file: plan.docx]",
        "[file]",
        "[video]",
        "[weird_kind]",
        "nested sdk text",
        "nope",
    ]


def test_chat_tool_calls_function_role_refusal_and_multi_turn() -> None:
    ev = chat(
        [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"q":"Oslo"}'}},
                    "not-a-call",
                    {"name": 5, "arguments": None},
                ],
            },
            {"role": "function", "name": "get_weather", "content": "rain"},
            {"role": "assistant", "content": "", "refusal": "I won't"},
            {"role": "assistant", "content": "see", "function_call": {"name": "lookup", "arguments": "{}"}},
        ]
    )
    assert ev.messages == [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": '[tool_call get_weather({"q":"Oslo"})]\n[tool_call ?()]'},
        {"role": "tool", "content": "rain"},
        {"role": "assistant", "content": "I won't"},
        {"role": "assistant", "content": "see\n[tool_call lookup({})]"},
    ]


@pytest.mark.parametrize(
    ("messages", "field", "reason"),
    [
        ("hello", "request.body.messages", "array of messages"),
        (["hello"], "request.body.messages[0]", "message object"),
        ([{"role": "robot", "content": "x"}], "request.body.messages[0].role", "role must be one of"),
        ([{"role": "user", "content": 42}], "request.body.messages[0].content", "string or an array of parts"),
        ([{"role": "user", "content": [7]}], "request.body.messages[0].content[0]", "content part object"),
        ([{"role": "user", "content": [{"type": 3}]}], "request.body.messages[0].content[0].type", "string"),
        ([{"role": "user", "content": [{"type": "text"}]}], "request.body.messages[0].content[0].text", "string"),
        (
            [{"role": "user", "content": [{"type": "refusal", "refusal": 1}]}],
            "request.body.messages[0].content[0].refusal",
            "string",
        ),
    ],
)
def test_malformed_chat_messages_name_the_source_field(messages: Any, field: str, reason: str) -> None:
    err = http_error(envelope({"messages": messages}))
    assert err.field == field
    assert reason in err.reason


# --------------------------------------------------------------------------------------------
# Responses API input


def test_responses_api_instructions_and_input_items() -> None:
    body = {
        "model": "gpt-4.1",
        "instructions": "you are a helper",
        "input": [
            "plain string item",
            {"role": "user", "content": [{"type": "input_text", "text": "hi"}, {"type": "input_image"}]},
            {"type": "function_call", "name": "search", "arguments": '{"q":1}'},
            {"type": "function_call_output", "call_id": "c", "output": "result text"},
            {"type": "custom_tool_call_output", "output": [{"type": "output_text", "text": "parts out"}]},
            {"type": "reasoning", "summary": []},
        ],
    }
    ev = http(envelope(body, path="/v1/responses"))
    assert ev.messages == [
        {"role": "system", "content": "you are a helper"},
        {"role": "user", "content": "plain string item"},
        {"role": "user", "content": "hi\n[image]"},
        {"role": "assistant", "content": '[tool_call search({"q":1})]'},
        {"role": "tool", "content": "result text"},
        {"role": "tool", "content": "parts out"},
    ]


def test_responses_api_string_input_and_empty_instructions() -> None:
    ev = http(envelope({"instructions": "", "input": "just a prompt"}, path="/v1/responses"))
    assert ev.messages == [{"role": "user", "content": "just a prompt"}]


def test_responses_api_without_input_keeps_the_instructions() -> None:
    ev = http(envelope({"instructions": "sys only", "input": None}, path="/v1/responses"))
    assert ev.messages == [{"role": "system", "content": "sys only"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instructions": 5, "input": "x"}, "request.body.instructions"),
        ({"input": 5}, "request.body.input"),
        ({"input": [3]}, "request.body.input[0]"),
        ({"input": [{"role": "boss", "content": "x"}]}, "request.body.input[0].role"),
    ],
)
def test_malformed_responses_input_names_the_field(body: dict[str, Any], field: str) -> None:
    assert http_error(envelope(body, path="/v1/responses")).field == field


# --------------------------------------------------------------------------------------------
# endpoint families: moderations, embeddings, completions, images, sniffed from the body


@pytest.mark.parametrize(
    ("path", "body", "prompt"),
    [
        ("/v1/moderations", {"input": "is this bad"}, "is this bad"),
        ("/v1/embeddings", {"input": ["a", "b"]}, "a\nb"),
        ("/v1/embeddings", {"input": [1, 2, 3]}, "[tokens]"),
        ("/v1/embeddings", {"input": [[1, 2], "x"]}, "[tokens]\nx"),
        ("/v1/moderations", {"input": [{"type": "text", "text": "t"}, {"type": "image_url"}]}, "t\n[image]"),
        ("/v1/completions", {"prompt": "once upon"}, "once upon"),
        ("/v1/images/generations", {"prompt": "a cat"}, "a cat"),
        ("/v1/images/edits?x=1", {"prompt": "edit it"}, "edit it"),
        ("/v1/videos/", {"prompt": "a clip"}, "a clip"),
        ("/proxy/unknown", {"prompt": "by body"}, "by body"),
        ("/proxy/unknown", {"input": "mod by body"}, "mod by body"),
    ],
)
def test_endpoint_families_map_the_prompt(path: str, body: dict[str, Any], prompt: str) -> None:
    ev = http(envelope(body, path=path))
    assert ev.prompt == prompt
    assert ev.messages is None


def test_body_without_url_is_classified_by_its_keys() -> None:
    env = envelope({"input": [{"role": "user", "content": "x"}]})
    del env["request"]["path"]
    assert http(env).messages == [{"role": "user", "content": "x"}]
    env = envelope({"foo": 1}, path="/v1/unknown")
    err = http_error(env)
    assert err.field == "request.body" and "no prompt text" in err.reason


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/moderations", {"model": "m"}, "request.body.input"),
        ("/v1/completions", {"model": "m"}, "request.body.prompt"),
        ("/v1/embeddings", {"input": 3}, "request.body.input"),
        ("/v1/embeddings", {"input": [None]}, "request.body.input[0]"),
    ],
)
def test_missing_or_bad_prompt_fields(path: str, body: dict[str, Any], field: str) -> None:
    assert http_error(envelope(body, path=path)).field == field


# --------------------------------------------------------------------------------------------
# request metadata: end user, conversation, tools, request attributes


def test_request_metadata_conversation_tools_and_attributes() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "x"}],
        "user": "end-user-7",
        "conversation": {"id": "conv_obj"},
        "metadata": {"team": "red"},
        "stream": True,
        "temperature": 0.2,
        "tools": [
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "web_search", "name": "web"},
            {"type": "code_interpreter"},
            "not-a-tool",
        ],
    }
    ev = http(envelope(body))
    assert ev.end_user_id == "end-user-7"
    assert ev.conversation_id == "conv_obj"
    assert ev.attributes is not None
    assert ev.attributes["metadata"] == {"team": "red"}
    assert ev.attributes["request"] == {
        "stream": True,
        "temperature": 0.2,
        "tools": ["get_weather", "web", "code_interpreter"],
    }


def test_conversation_falls_back_to_previous_response_then_metadata() -> None:
    ev = http(envelope({"input": "x", "conversation": "conv_str"}, path="/v1/responses"))
    assert ev.conversation_id == "conv_str"
    ev = http(envelope({"input": "x", "previous_response_id": "resp_0"}, path="/v1/responses"))
    assert ev.conversation_id == "resp_0"
    ev = http(
        envelope({"input": "x", "metadata": {"conversation_id": "c9", "end_user_id": "u9"}}, path="/v1/responses")
    )
    assert (ev.conversation_id, ev.end_user_id) == ("c9", "u9")


def test_bad_metadata_type_is_named() -> None:
    err = http_error(envelope({"messages": [{"role": "user", "content": "x"}], "metadata": [1]}))
    assert err.field == "request.body.metadata"
    err = http_error(envelope({"messages": [{"role": "user", "content": "x"}], "user": 5}))
    assert err.field == "request.body.user"


# --------------------------------------------------------------------------------------------
# responses: chat choices, refusals, the Responses API output, moderation results


def test_chat_response_choices_refusal_tool_calls_and_finish_reasons() -> None:
    resp = {
        "id": "chatcmpl-1",
        "model": "gpt-4o-2024",
        "choices": [
            {"message": {"role": "assistant", "content": None, "refusal": "can't"}, "finish_reason": "stop"},
            {
                "message": {"content": "ok", "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}]},
                "finish_reason": "tool_calls",
            },
            {"text": "legacy completion text", "finish_reason": "length"},
        ],
        "system_fingerprint": "fp_1",
        "usage": {"total_tokens": 3},
    }
    ev = http(envelope({"messages": [{"role": "user", "content": "x"}]}, response=resp))
    assert ev.refused is True
    assert ev.model == "gpt-4o-2024"
    assert ev.response == "can't\nok\n[tool_call f({})]\nlegacy completion text"
    assert ev.attributes is not None
    assert ev.attributes["finish_reason"] == ["stop", "tool_calls", "length"]
    assert ev.attributes["response_id"] == "chatcmpl-1"
    assert ev.attributes["system_fingerprint"] == "fp_1"


def test_content_filter_finish_reason_marks_refused() -> None:
    resp = {"choices": [{"message": {"content": ""}, "finish_reason": "content_filter"}]}
    ev = http(envelope({"messages": [{"role": "user", "content": "x"}]}, response=resp))
    assert ev.refused is True
    assert ev.attributes is not None and ev.attributes["finish_reason"] == "content_filter"


def test_responses_api_output_items() -> None:
    resp = {
        "id": "resp_1",
        "status": "incomplete",
        "output": [
            {"type": "reasoning", "summary": []},
            {
                "type": "message",
                "content": [
                    {"type": "output_text", "text": "part one"},
                    {"type": "refusal", "refusal": "no more"},
                    {"type": "annotation_only"},
                    "junk",
                ],
            },
            {"content": "string content item"},
            {"type": "message", "content": 5},
            {"type": "function_call", "name": "lookup", "arguments": '{"id":2}'},
        ],
        "incomplete_details": {"reason": "content_filter"},
    }
    ev = http(envelope({"input": "x"}, path="/v1/responses", response=resp))
    assert ev.response == 'part one\nno more\nstring content item\n[tool_call lookup({"id":2})]'
    assert ev.refused is True
    assert ev.attributes is not None
    assert ev.attributes["response_status"] == "incomplete"
    assert ev.attributes["response_id"] == "resp_1"


def test_output_text_shortcut_and_incomplete_without_filter() -> None:
    resp = {"output": [], "output_text": "from the shortcut", "incomplete_details": {"reason": "max_output_tokens"}}
    ev = http(envelope({"input": "x"}, path="/v1/responses", response=resp))
    assert ev.response == "from the shortcut"
    assert ev.refused is None


def test_moderation_results_are_summarised() -> None:
    resp = {
        "id": "modr-1",
        "results": [
            {"flagged": False, "categories": {"violence": False}},
            {"flagged": True, "categories": {"violence": True, "hate": True, "self-harm": False}},
            {"flagged": True, "categories": {"violence": True}},
            "junk",
        ],
    }
    ev = http(envelope({"input": "x"}, path="/v1/moderations", response=resp))
    assert ev.attributes is not None
    assert ev.attributes["moderation"] == {"flagged": True, "categories": ["violence", "hate"]}
    assert ev.response is None


@pytest.mark.parametrize(
    ("resp", "field"),
    [
        ({"choices": "x"}, "response.body.choices"),
        ({"choices": [1]}, "response.body.choices[0]"),
        ({"choices": [{"message": "hi"}]}, "response.body.choices[0].message"),
        ({"choices": [{"message": {"content": 9}}]}, "response.body.choices[0].message.content"),
        ({"output": [1]}, "response.body.output[0]"),
        ({"output": {}}, "response.body.output"),
        ({"model": 1}, "response.body.model"),
    ],
)
def test_malformed_response_bodies_name_the_field(resp: dict[str, Any], field: str) -> None:
    assert http_error(envelope({"messages": [{"role": "user", "content": "x"}]}, response=resp)).field == field


# --------------------------------------------------------------------------------------------
# the same mapping through the Batch format (a file pair), and the HTTP format's file reading


def test_batch_pair_with_responses_api_body(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl"
    out = tmp_path / "out.jsonl.gz"
    inp.write_bytes(
        orjson.dumps(
            {
                "custom_id": "r1",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": "gpt-4.1", "instructions": "sys", "input": [{"role": "user", "content": "q"}]},
            }
        )
        + b"\n"
    )
    out.write_bytes(
        gzip.compress(
            orjson.dumps(
                {
                    "id": "batch_req_1",
                    "custom_id": "r1",
                    "response": {
                        "status_code": 200,
                        "request_id": "req_r1",
                        "body": {
                            "created_at": 1767225600,
                            "output": [{"type": "message", "content": [{"type": "output_text", "text": "a"}]}],
                        },
                    },
                }
            )
            + b"\n"
        )
    )
    results = list(get_format("openai_batch").parse([inp, out], FormatOptions(default_account="owner")))
    assert len(results) == 1 and isinstance(results[0], Event)
    ev = results[0]
    assert ev.event_id == "req_r1"
    assert ev.messages == [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"}]
    assert ev.response == "a"
    assert ev.ts.startswith("2026-01-01")


def test_http_log_file_quarantines_bad_lines_with_line_and_field(tmp_path: Path) -> None:
    good = envelope({"messages": [{"role": "user", "content": "fine"}]})
    bad = envelope({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]})
    bad["request"]["headers"] = {"Authorization": "Bearer sk-live-abcdefghijklmnopqrstuvwxyz0123"}
    path = tmp_path / "http.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(good) + b"\n" + orjson.dumps(bad) + b"\n[1, 2]\n{bad json\n")
    results = list(get_format("openai_http_log").parse([path], OPTS))
    assert isinstance(results[0], Event) and results[0].messages == [{"role": "user", "content": "fine"}]
    rej = {r.line: r for r in results if isinstance(r, Rejected)}
    assert set(rej) == {2, 3, 4}
    assert rej[2].field == "request.body.messages[0].content[0].text"
    assert b"sk-live-abcdefghijklmnopqrstuvwxyz0123" not in rej[2].raw
    assert "expected a JSON object" in rej[3].reason
    assert "not valid JSON" in rej[4].reason
