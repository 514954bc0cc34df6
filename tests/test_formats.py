"""The OpenAI Batch, OpenAI HTTP-log and LiteLLM ingest formats (and canonical, on the malformed corpus).

Wire fixtures are real captures copied from ``../shared/fixtures/wire`` into ``tests/fixtures/wire``;
the malformed corpus is ``tests/fixtures/malformed``. Nothing here reads ``../shared``.
"""

from __future__ import annotations

import gzip
import itertools
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stormwatch.errors import InputError
from stormwatch.events import Event
from stormwatch.ingest.formats import formats, get_format, sniff_format
from stormwatch.ingest.formats._common import JsonValueSplitter, Piece, redact_raw, scrub
from stormwatch.ingest.formats.base import FormatOptions, Parsed, Rejected

HERE = Path(__file__).parent
WIRE = HERE / "fixtures" / "wire"
BAD = HERE / "fixtures" / "malformed"
BATCH_CTX = FormatOptions(default_account="user_abc", default_org="org-DEMO", extra={"api_key_id": "key_8f3a"})


def run(fmt: str, paths: list[Path], options: FormatOptions | None = None) -> list[Parsed]:
    return list(get_format(fmt).parse(paths, options or FormatOptions()))


def events(results: list[Parsed]) -> list[Event]:
    return [r for r in results if isinstance(r, Event)]


def rejected(results: list[Parsed]) -> dict[int | None, Rejected]:
    return {r.line: r for r in results if isinstance(r, Rejected)}


def expected(source: str) -> list[dict[str, Any]]:
    lines = (WIRE / "normalized_events.jsonl").read_text().splitlines()
    return [obj for obj in map(json.loads, lines) if obj["source"] == source]


def flat(ev: Event) -> str:
    """The prototype's ``prompt`` form: ``role: content`` lines (or the bare prompt)."""
    if ev.messages is not None:
        return "\n".join(f"{m['role']}: {m['content']}" for m in ev.messages)
    return ev.prompt or ""


def same_text(ours: str | None, theirs: str | None) -> bool:
    """The prototype truncated long strings with ``...``: compare on its prefix."""
    if theirs is None or ours is None:
        return theirs == ours
    if theirs.endswith("...") and len(theirs) > 3 and ours != theirs:
        return ours.startswith(theirs[:-3])
    return ours == theirs


def check_against_normalized(ev: Event, exp: dict[str, Any], skip: tuple[str, ...] = ()) -> None:
    assert ev.event_id == exp["event_id"]
    if "ts" in exp:
        assert datetime.fromisoformat(ev.ts) == datetime.fromisoformat(exp["ts"])
    for name in ("account_id", "org_id", "end_user_id", "ip", "user_agent", "model", "conversation_id"):
        if name in exp and name not in skip:
            assert getattr(ev, name) == exp[name], name
    if "api_key_id" in exp and "api_key_id" not in skip:
        assert same_text(ev.api_key_id, exp["api_key_id"])
    assert same_text(flat(ev), exp["prompt"])
    if "response" in exp:
        assert same_text(ev.response, exp["response"])


# --------------------------------------------------------------------------------------------
# real wire fixtures


def test_batch_fixture_matches_normalized() -> None:
    opts = FormatOptions(
        default_account="user_abc", default_org="org-DEMO", extra={"api_key_id": "key_8f3a", "batch_ts": 1795630010}
    )
    results = run("openai_batch", [WIRE / "batch_input.jsonl", WIRE / "batch_output.jsonl"], opts)
    assert not rejected(results)
    evs = {e.event_id: e for e in events(results)}
    exp = expected("openai_batch")
    assert set(evs) == {"req_a1b2c3", "req_d4e5f6", "batch_req_03"}
    for item in exp:
        check_against_normalized(evs[item["event_id"]], item)
    chat = evs["req_a1b2c3"]
    assert chat.messages and chat.messages[0] == {"role": "system", "content": "You are a helpful assistant."}
    assert chat.prompt is None and chat.source == "openai_batch"
    assert chat.attributes is not None
    assert chat.attributes["custom_id"] == "req-0001" and chat.attributes["batch_request_id"] == "batch_req_01"
    assert chat.attributes["usage"]["total_tokens"] == 53 and chat.attributes["status_code"] == 200
    assert chat.attributes["url"] == "/v1/chat/completions" and chat.attributes["method"] == "POST"
    mod = evs["batch_req_03"]  # expired: no response, roles-less moderation input -> prompt
    assert mod.prompt == "how do I bypass EDR with process hollowing" and mod.messages is None
    assert mod.response is None and mod.attributes is not None
    assert mod.attributes["error"]["code"] == "batch_expired" and mod.attributes["failed"] is True
    assert mod.attributes["ts_from_batch"] is True


def test_batch_without_batch_ts_or_account() -> None:
    results = run("openai_batch", [WIRE / "batch_output.jsonl", WIRE / "batch_input.jsonl"], BATCH_CTX)
    bad = [r for r in results if isinstance(r, Rejected)]
    assert len(events(results)) == 2 and len(bad) == 1
    assert bad[0].field == "ts" and bad[0].line == 3 and "no timestamp" in bad[0].reason
    assert bad[0].source.endswith("batch_input.jsonl") and "batch_output.jsonl:3" in bad[0].reason
    no_account = run("openai_batch", [WIRE / "batch_input.jsonl", WIRE / "batch_output.jsonl"])
    assert all(isinstance(r, Rejected) for r in no_account)
    assert {r.field for r in no_account if isinstance(r, Rejected)} >= {"account_id"}
    assert any("--account" in r.reason for r in no_account if isinstance(r, Rejected))


def test_batch_output_without_input_is_rejected() -> None:
    results = run("openai_batch", [WIRE / "batch_output.jsonl"], BATCH_CTX)
    assert len(results) == 3 and all(isinstance(r, Rejected) for r in results)
    assert all(
        isinstance(r, Rejected) and r.field == "custom_id" and "no matching input line" in r.reason for r in results
    )


def test_http_log_fixture_matches_normalized() -> None:
    (ev,) = run("openai_http_log", [WIRE / "openai_http_log.jsonl"])
    assert isinstance(ev, Event)
    check_against_normalized(ev, expected("openai_http_log")[0])
    assert ev.source == "openai_http_log"
    assert ev.attributes is not None
    assert ev.attributes["request_headers"]["x-stainless-lang"] == "python"
    assert ev.attributes["project_id"] == "proj_DEMO" and ev.attributes["status"] == 200
    assert ev.attributes["path"] == "/v1/chat/completions"


def test_litellm_fixture_matches_normalized() -> None:
    path = WIRE / "litellm_standard_logging_payload.json"
    (r,) = run("litellm", [path])  # no proxy auth in the capture: no account
    assert isinstance(r, Rejected) and r.field == "metadata.user_api_key_user_id" and r.line == 1
    assert "--account" in r.reason
    (ev,) = run("litellm", [path], FormatOptions(default_account="acct_sdk"))
    assert isinstance(ev, Event)
    # the prototype did not use model_parameters.user as a last end-user fallback; we do
    check_against_normalized(ev, expected("litellm_standard_logging_payload")[0])
    assert ev.end_user_id == "enduser-hash-42" and ev.account_id == "acct_sdk"
    assert ev.conversation_id == "sess_42"  # session_id is "" -> trace_id
    assert ev.attributes is not None and ev.attributes["call_type"] == "completion"
    assert ev.attributes["litellm_model_name"] == "openai/gpt-4o-mini"


def test_litellm_array_ndjson_and_concatenated_forms(tmp_path: Path) -> None:
    obj = json.loads((WIRE / "litellm_standard_logging_payload.json").read_text())
    second = dict(obj, id="chatcmpl-2")
    opts = FormatOptions(default_account="a")
    forms = {
        "array.json": json.dumps([obj, second], indent=2).encode(),
        "compact_array.json": orjson.dumps([obj, second]),
        "ndjson.jsonl": orjson.dumps(obj) + b"\n" + orjson.dumps(second) + b"\n",
        "concat.json": json.dumps(obj, indent=1).encode() + b"\n" + json.dumps(second, indent=1).encode(),
    }
    for name, data in forms.items():
        path = tmp_path / name
        path.write_bytes(data)
        assert sniff_format(path).name == "litellm", name
        got = run("litellm", [path], opts)
        assert [e.event_id for e in events(got)] == [obj["id"], "chatcmpl-2"], name
    # start lines of pretty-printed array elements
    path = tmp_path / "array.json"
    path.write_bytes(json.dumps([obj, {"id": "x"}], indent=2).encode())
    bad = rejected(run("litellm", [path], opts))
    text = path.read_text().splitlines()
    start = next(i for i, ln in enumerate(text) if ln == "  {" and i > 1) + 1  # the second element's "{"
    assert list(bad) == [start] and bad[start].field == "startTime"


# --------------------------------------------------------------------------------------------
# sniffing


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("batch_input.jsonl", "openai_batch"),
        ("batch_output.jsonl", "openai_batch"),
        ("openai_http_log.jsonl", "openai_http_log"),
        ("litellm_standard_logging_payload.json", "litellm"),
        ("normalized_events.jsonl", "canonical"),
    ],
)
def test_sniff_picks_format(name: str, fmt: str) -> None:
    assert sniff_format(WIRE / name).name == fmt


@pytest.mark.parametrize("name", ["moderations_minimal.jsonl", "otlp_json.jsonl", "litellm_guardrail.jsonl"])
def test_our_sniffers_stay_quiet_on_other_captures(name: str) -> None:
    head = (WIRE / name).read_bytes()[:65536]
    for fmt in ("openai_batch", "openai_http_log", "litellm"):
        assert formats()[fmt].sniff(head, WIRE / name) == 0.0


def test_canonical_file_with_our_attributes_still_sniffs_canonical(tmp_path: Path) -> None:
    """A canonical export of our own events carries custom_id/url/litellm_call_id in attributes."""
    evs = events(run("openai_batch", [WIRE / "batch_input.jsonl", WIRE / "batch_output.jsonl"], BATCH_CTX))
    (ev,) = run("openai_http_log", [WIRE / "openai_http_log.jsonl"])
    (ll,) = run("litellm", [WIRE / "litellm_standard_logging_payload.json"], FormatOptions(default_account="a"))
    assert isinstance(ev, Event) and isinstance(ll, Event)
    lines = [orjson.dumps(e.to_dict()) for e in [*evs, ev, ll]]
    for i, first in enumerate(lines):
        path = tmp_path / f"canon{i}.jsonl"
        path.write_bytes(b"\n".join([first, *lines]) + b"\n")
        assert sniff_format(path).name == "canonical"
        assert all(isinstance(r, Event) for r in run("canonical", [path]))


def test_sniff_gzip_and_bom(tmp_path: Path) -> None:
    gz = tmp_path / "out.jsonl.gz"
    gz.write_bytes(gzip.compress((WIRE / "batch_output.jsonl").read_bytes()))
    assert sniff_format(gz).name == "openai_batch"
    bom = tmp_path / "log.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (WIRE / "openai_http_log.jsonl").read_bytes())
    assert sniff_format(bom).name == "openai_http_log"
    assert len(events(run("openai_http_log", [bom]))) == 1
    bom2 = tmp_path / "ll.json"
    bom2.write_bytes(b"\xef\xbb\xbf" + (WIRE / "litellm_standard_logging_payload.json").read_bytes())
    assert sniff_format(bom2).name == "litellm"


# --------------------------------------------------------------------------------------------
# malformed corpus


def test_canonical_malformed() -> None:
    results = run("canonical", [BAD / "canonical_bad.jsonl"])
    bad = rejected(results)
    assert {line: r.field for line, r in bad.items()} == {
        2: None,
        3: "ts",
        4: "account_id",
        5: "messages",
        6: "refused",
        7: "event_id",
        8: None,
    }
    assert "not valid JSON" in bad[2].reason and "invalid UTF-8" in bad[8].reason
    # good lines around them (CRLF endings, a blank line 9) still parse; the duplicate c1 (line 11) is an
    # event: de-duplication by event_id is the store's job (idempotent ingest).
    assert [e.event_id for e in events(results)] == ["c1", "c10", "c1", "c12"]


def test_canonical_bom() -> None:
    assert sniff_format(BAD / "canonical_bom.jsonl").name == "canonical"
    assert [e.event_id for e in events(run("canonical", [BAD / "canonical_bom.jsonl"]))] == ["c1", "c2"]


@pytest.mark.parametrize("fmt", ["canonical", "openai_http_log", "litellm"])
def test_truncated_gzip_yields_good_lines_then_input_error(fmt: str, tmp_path: Path) -> None:
    path = BAD / "canonical_truncated.jsonl.gz"
    if fmt != "canonical":  # same damage, in each format's own record shape
        src = (
            (WIRE / "openai_http_log.jsonl").read_bytes()
            if fmt == "openai_http_log"
            else orjson.dumps(json.loads((WIRE / "litellm_standard_logging_payload.json").read_text()))
        )
        obj = json.loads(src)
        lines = []
        for i in range(300):
            if fmt == "litellm":
                obj["id"] = f"x{i}"
            else:
                obj["response"]["headers"]["x-request-id"] = f"x{i}"
            lines.append(orjson.dumps(obj))
        data = gzip.compress(b"\n".join(lines) + b"\n")
        path = tmp_path / "t.jsonl.gz"
        path.write_bytes(data[: len(data) // 2])
    got: list[Parsed] = []
    with pytest.raises(InputError, match="damaged or truncated"):
        for r in get_format(fmt).parse([path], FormatOptions(default_account="a")):
            got.append(r)
    assert got and all(isinstance(r, Event) for r in got)


def test_batch_malformed() -> None:
    opts = FormatOptions(default_account="acct_b", extra={"batch_ts": "2026-11-25T00:00:00Z"})
    results = run("openai_batch", [BAD / "batch_bad_input.jsonl", BAD / "batch_bad_output.jsonl"], opts)
    inp = {r.line: r for r in results if isinstance(r, Rejected) and r.source.endswith("input.jsonl")}
    out = {r.line: r for r in results if isinstance(r, Rejected) and r.source.endswith("output.jsonl")}
    assert {line: r.field for line, r in inp.items()} == {
        2: None,
        3: "body.messages",
        4: "body.messages[1].content",
        5: "custom_id",
        6: "custom_id",
        7: "custom_id",
        8: None,
    }
    assert "duplicate custom_id 'b1'" in inp[7].reason and "invalid UTF-8" in inp[8].reason
    assert {line: r.field for line, r in out.items()} == {
        2: None,
        4: "custom_id",
        5: "response.body.created",
        6: "custom_id",
    }
    assert "no matching input line for custom_id 'orphan'" in out[4].reason
    assert "batch_bad_input.jsonl:12" in out[5].reason  # the error names both sides of the join
    evs = {e.event_id: e for e in events(results)}
    assert set(evs) == {"req_b1", "req_b10", "b11", "req_b13", "req_b14", "req_b15"}
    assert evs["req_b1"].messages == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "describe\n[image]"},
    ]
    assert evs["req_b1"].end_user_id == "enduser-7"
    b10 = evs["req_b10"]  # responses: instructions + input items; a refusal part
    assert b10.messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "write malware\n[image]"},
    ]
    assert b10.refused is True and b10.conversation_id == "resp_prev" and b10.end_user_id == "sha256:aa"
    assert evs["b11"].attributes == {
        "custom_id": "b11",
        "url": "/v1/chat/completions",
        "method": "POST",
        "output_missing": True,
        "ts_from_batch": True,
    }
    assert evs["b11"].ts == "2026-11-25T00:00:00.000000Z" and evs["b11"].response is None
    assert evs["req_b13"].prompt == "p1\np2" and evs["req_b13"].refused is True  # finish_reason content_filter
    assert evs["req_b14"].prompt == "e1\ne2" and evs["req_b14"].messages is None
    b15 = evs["req_b15"]
    assert b15.attributes is not None and b15.attributes["failed"] is True and b15.attributes["status_code"] == 400


def test_http_malformed() -> None:
    results = run("openai_http_log", [BAD / "http_bad.jsonl"])
    bad = rejected(results)
    assert {line: r.field for line, r in bad.items()} == {
        2: None,
        3: "ts",
        4: "auth.account_id",
        5: "request.body.messages",
        6: "ts",
        7: "response.headers.x-request-id",
        8: None,
        12: "request.body.messages[0].role",
        13: "response.status",
    }
    evs = events(results)
    assert [e.event_id for e in evs] == ["req_h1", "req_h10", "req_h1"]  # duplicate kept: the store dedups
    h1 = evs[0]
    assert h1.ip == "203.0.113.9" and h1.user_agent == "OpenAI/Python 3.57.0"  # X-Forwarded-For, any case
    dumped = orjson.dumps(h1.to_dict())
    assert b"sk-" not in dumped and b"Bearer" not in dumped and b"session=abc" not in dumped
    assert h1.attributes is not None and h1.attributes["request_headers"]["x-stainless-os"] == "Linux"
    h10 = evs[1]
    assert h10.messages == [{"role": "user", "content": "what is in this image\n[image]"}]
    assert h10.response == "a cat" and h10.conversation_id == "conv_h10" and h10.ts.startswith("2026-11-25T19:00")


def test_http_secrets_never_reach_quarantine(tmp_path: Path) -> None:
    line = json.loads((BAD / "http_bad.jsonl").read_bytes().splitlines()[0])
    line["ts"] = ["bad"]
    path = tmp_path / "h.jsonl"
    path.write_bytes(orjson.dumps(line) + b"\n" + orjson.dumps(line)[:-40] + b"\n")
    results = run("openai_http_log", [path])
    assert [type(r) for r in results] == [Rejected, Rejected]
    for r in results:
        assert isinstance(r, Rejected)
        assert b"sk-proj" not in r.raw and b"sk-abc" not in r.raw and b"session=abc" not in r.raw
        assert b"[redacted]" in r.raw


def test_litellm_malformed() -> None:
    results = run("litellm", [BAD / "litellm_bad.ndjson"])
    bad = [r for r in results if isinstance(r, Rejected)]
    assert [(r.line, r.field) for r in bad] == [
        (2, None),
        (3, "startTime"),
        (4, "metadata.user_api_key_user_id"),
        (5, "messages"),
        (7, "id"),
        (8, None),
        (11, "messages[0].content"),
        (12, "[1].startTime"),
    ]
    evs = {e.event_id: e for e in events(results)}
    assert set(evs) == {"chatcmpl-l1", "chatcmpl-l6", "chatcmpl-l10", "chatcmpl-l12"}
    l1 = evs["chatcmpl-l1"]
    assert (l1.account_id, l1.org_id, l1.api_key_id, l1.ip, l1.end_user_id) == (
        "user_123",
        "org_5",
        "88dc28d0f030",
        "203.0.113.7",
        "enduser-hash-42",
    )
    assert l1.attributes is not None and l1.attributes["user_api_key_alias"] == "team-key"
    assert l1.attributes["api_base"] == "https://gw.example/v1"  # query string (with a key) dropped
    assert l1.attributes["requester_custom_headers"] == {"x-trace": "t"}  # x-api-key dropped
    assert b"sk-" not in orjson.dumps(l1.to_dict())
    assert evs["chatcmpl-l6"].prompt == "plain prompt string" and evs["chatcmpl-l6"].messages is None
    assert evs["chatcmpl-l10"].refused is True


def test_litellm_malformed_pretty_array() -> None:
    """BOM, a bad element, a non-object element, and a file cut off inside the last element."""
    results = run("litellm", [BAD / "litellm_bad_array.json"])
    assert [(r.line, r.field) for r in results if isinstance(r, Rejected)] == [
        (49, "startTime"),
        (98, None),
        (146, None),
    ]
    assert [e.event_id for e in events(results)] == ["chatcmpl-l21", "chatcmpl-l24"]
    last = results[-1]
    assert isinstance(last, Rejected) and "truncated" in last.reason


@pytest.mark.parametrize("fmt", ["canonical", "openai_batch", "openai_http_log", "litellm"])
def test_huge_record_is_rejected_with_its_first_bytes(fmt: str, tmp_path: Path) -> None:
    good = {
        "canonical": (BAD / "canonical_bad.jsonl").read_bytes().splitlines()[0],
        "openai_batch": (WIRE / "batch_input.jsonl").read_bytes().splitlines()[0],
        "openai_http_log": (WIRE / "openai_http_log.jsonl").read_bytes().strip(),
        "litellm": (BAD / "litellm_bad.ndjson").read_bytes().splitlines()[0],
    }[fmt].rstrip(b"\r")
    obj = json.loads(good)
    huge = dict(obj, padding="x" * 5000)
    path = tmp_path / "in.jsonl"
    path.write_bytes(good + b"\n" + orjson.dumps(huge) + b"\n" + good + b"\n")
    opts = FormatOptions(default_account="a", max_record_bytes=4096, extra={"batch_ts": 0})
    results = run(fmt, [path], opts)
    bad = rejected(results)
    assert 2 in bad and "over the limit of 4096" in bad[2].reason
    size = len(orjson.dumps(huge))
    assert f"record is {size} bytes" in bad[2].reason  # the full size, though only the limit was read
    assert 4000 < len(bad[2].raw) <= 4096 and huge_prefix_ok(bad[2].raw, orjson.dumps(huge))  # its first bytes
    if fmt == "openai_batch":  # duplicate custom_id for line 3; line 1 is an event
        assert len(events(results)) == 1 and bad[3].field == "custom_id"
    else:
        assert len(events(results)) == 2


def huge_prefix_ok(kept: bytes, line: bytes) -> bool:
    return line.startswith(kept) or kept.startswith(line[:100])  # (secrets in it redacted)


def test_litellm_streamed_huge_element_is_cut(tmp_path: Path) -> None:
    obj = json.loads((BAD / "litellm_bad.ndjson").read_bytes().splitlines()[0])
    path = tmp_path / "a.json"
    path.write_bytes(json.dumps([obj, dict(obj, id="big", padding="y" * 20000), dict(obj, id="z")], indent=1).encode())
    results = run("litellm", [path], FormatOptions(max_record_bytes=4096))
    assert [e.event_id for e in events(results)] == [obj["id"], "z"]
    (bad,) = [r for r in results if isinstance(r, Rejected)]
    assert "over the limit of 4096" in bad.reason and 4000 < len(bad.raw) <= 4096  # cut (and redacted)


# --------------------------------------------------------------------------------------------
# secrets helpers


def test_scrub_and_redact() -> None:
    data = {
        "Authorization": "Bearer abc",
        "api_key": "x",
        "x-api-key": "y",
        "user_api_key_hash": "h",
        "api_key_id": "k",
        "prompt_tokens": 3,
        "nested": [{"password": "p", "ok": "sk-abcdefghijklmnopqrstuv"}],
    }
    assert scrub(data) == {
        "user_api_key_hash": "h",
        "api_key_id": "k",
        "prompt_tokens": 3,
        "nested": [{"ok": "[redacted]"}],
    }
    raw = b'{"headers":{"Authorization":"Bearer sk-abcdefghijklmnopqrstuv"},"x":1}'
    assert b"sk-" not in redact_raw(raw)
    clean = b'{"a":"b"}'
    assert redact_raw(clean) is clean or redact_raw(clean) == clean


# --------------------------------------------------------------------------------------------
# properties: arbitrary input never raises, and nothing is lost

TEMPLATES: dict[str, list[bytes]] = {
    "canonical": (BAD / "canonical_bad.jsonl").read_bytes().splitlines(),
    "openai_http_log": (BAD / "http_bad.jsonl").read_bytes().splitlines(),
    "litellm": (BAD / "litellm_bad.ndjson").read_bytes().splitlines(),
    "openai_batch": (BAD / "batch_bad_input.jsonl").read_bytes().splitlines()
    + (BAD / "batch_bad_output.jsonl").read_bytes().splitlines(),
}


def line_strategy(fmt: str) -> st.SearchStrategy[bytes]:
    templates = [t.rstrip(b"\r") for t in TEMPLATES[fmt]]
    noise = st.binary(max_size=120).map(lambda b: b.replace(b"\n", b" "))
    cut = st.tuples(st.sampled_from(templates), st.integers(0, 2000)).map(lambda t: t[0][: t[1]])
    return st.one_of(noise, st.sampled_from(templates), cut)


def nonblank(lines: list[bytes]) -> list[bytes]:
    if lines and lines[0].startswith(b"\xef\xbb\xbf"):  # every reader drops a BOM on line 1 (canonical too)
        lines = [lines[0][3:], *lines[1:]]
    return [ln for ln in lines if ln.rstrip(b"\r\n").strip()]


def expected_records(fmt: str, lines: list[bytes]) -> int | None:
    if fmt == "litellm":
        kept = nonblank(lines)
        if kept and (kept[0].lstrip().startswith(b"[") or kept[0].strip() == b"{"):
            return None  # streamed mode: records are not lines
        total = 0
        for ln in kept:
            try:
                obj = orjson.loads(ln)
            except orjson.JSONDecodeError:
                total += 1
                continue
            total += len(obj) if isinstance(obj, list) and len(ln) <= 16 * 1024 * 1024 else 1
        return total
    return len(nonblank(lines))


@pytest.mark.parametrize("fmt", ["canonical", "openai_http_log", "litellm", "openai_batch"])
def test_a_bom_alone_on_the_first_line_is_a_blank_line(fmt: str, tmp_path: Path) -> None:
    """Found by the property test below in CI: a file whose first line is only a UTF-8 BOM."""
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf\n")
    assert list(get_format(fmt).parse([path], FormatOptions(default_account="a", extra={"batch_ts": 0}))) == []


@pytest.mark.parametrize("fmt", ["canonical", "openai_http_log", "litellm", "openai_batch"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arbitrary_lines_never_raise_and_are_accounted(fmt: str, data: st.DataObject, tmp_path: Path) -> None:
    lines = data.draw(st.lists(line_strategy(fmt), max_size=12))
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    opts = FormatOptions(default_account="a", extra={"batch_ts": 0})
    if path.read_bytes().startswith(b"\x1f\x8b"):  # gzip magic: read as gzip, a damaged one is a file error
        with pytest.raises(InputError):
            list(get_format(fmt).parse([path], opts))
        return
    results = list(get_format(fmt).parse([path], opts))
    n_lines = len(lines) + 1
    for r in results:
        assert isinstance(r, Event | Rejected)
        if isinstance(r, Rejected):
            assert r.line is not None and 1 <= r.line <= n_lines
    if fmt == "openai_batch":  # an event consumes its input line and (unless missing) its output line
        used = sum(
            (1 if r.attributes and r.attributes.get("output_missing") else 2)
            if isinstance(r, Event)
            else (2 if "joined with" in r.reason else 1)
            for r in results
        )
        assert used == len(nonblank(lines))
        return
    want = expected_records(fmt, lines)
    if want is not None:
        assert len(results) == want


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(
        st.dictionaries(
            st.text(max_size=5),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=4), kids, max_size=3),
                max_leaves=8,
            ),
            max_size=4,
        ),
        max_size=5,
    ),
    indent=st.sampled_from([None, 1, 2]),
    chunk=st.integers(1, 64),
)
def test_splitter_recovers_array_elements(values: list[dict[str, Any]], indent: int | None, chunk: int) -> None:
    text = json.dumps(values, indent=indent).encode()
    splitter = JsonValueSplitter(1 << 20)
    pieces: list[Piece] = []
    for i in range(0, len(text), chunk):
        pieces.extend(splitter.feed(text[i : i + chunk]))
    pieces.extend(splitter.finish())
    assert [json.loads(p.raw) for p in pieces] == values
    assert all(p.error is None for p in pieces)
    lines = text.split(b"\n")
    for p in pieces:  # each piece starts on the line it says
        assert p.raw.split(b"\n", 1)[0].strip() in lines[p.line - 1]


LITELLM_MIN = (
    b'{"id":"c1","startTime":1795635657.25,"call_type":"completion","messages":[{"role":"user","content":"hi"}]}'
)


@pytest.mark.parametrize("ctl", [b"\x0b", b"\x0c"])
@pytest.mark.parametrize("where", ["between array elements", "top level"])
def test_a_form_feed_or_vertical_tab_is_one_bad_piece_not_a_hang(ctl: bytes, where: str, tmp_path: Path) -> None:
    """Found by the property test above: a bytes ``\\s`` ended a scalar that began with \\f or \\v where it
    began, so the splitter emitted empty pieces forever (and ``ingest`` grew without bound). Now the stray
    byte starts a bad scalar that runs to the next JSON delimiter, rejected whole like any other."""
    if where == "between array elements":
        text = b'[{"a":1},' + ctl + b'{"b":2},{"c":3}]'
    else:
        text = b'{"a":1}\n' + ctl + b'{"b":2}\n{"c":3}\n'
    splitter = JsonValueSplitter(1 << 20)
    pieces = list(itertools.islice(itertools.chain(splitter.feed(text), splitter.finish()), 50))
    assert len(pieces) == 3, pieces[:5]
    assert json.loads(pieces[0].raw) == {"a": 1} and json.loads(pieces[2].raw) == {"c": 3}
    assert pieces[1].raw == ctl + b'{"b":2}'  # kept whole for the quarantine
    # through a format: one rejected record with its line and its bytes, the others read
    path = tmp_path / "p.json"
    path.write_bytes(text.replace(b'{"a":1}', LITELLM_MIN).replace(b'{"c":3}', LITELLM_MIN))
    out = list(get_format("litellm").parse([path], FormatOptions(default_account="a")))
    assert sum(isinstance(r, Event) for r in out) == 2
    rejected = [r for r in out if isinstance(r, Rejected)]
    assert len(rejected) == 1 and rejected[0].line in (1, 2), rejected
