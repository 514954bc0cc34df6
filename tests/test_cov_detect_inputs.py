"""Bad and unusual input to the detection package: labelled-row files, text extraction and
normalisation, settings, the judge's reply parsing, the keyword reference detector, the embedding
window rule and the package's lazy attributes. Every error must say what is wrong (and where)."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

import stormwatch.detect as detect_pkg
from stormwatch.detect import data as ddata
from stormwatch.detect.base import KeywordDetector
from stormwatch.detect.embedding_windows import encode_windows, window_starts
from stormwatch.detect.judge_protocol import _first_token_unsafe_prob, _status_hint, parse_generic_json
from stormwatch.detect.settings import DetectSettings, load_settings
from stormwatch.detect.text import item_id, item_text, item_turns, normalize, tokenize
from stormwatch.vocab import LLMT_IDS

# ---------------------------------------------------------------- labelled rows (detect/data.py)


def _jsonl(path: Path, objs: list[Any], *, gz: bool = False, blank: bool = False) -> Path:
    lines = [orjson.dumps(o) for o in objs]
    if blank:
        lines.insert(1, b"  ")
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def test_read_rows_accepts_every_label_spelling_and_sorts(tmp_path: Path) -> None:
    objs = [
        {"id": "b", "text": "Write ransomware", "label": "malicious", "category": "x"},
        {"id": "a", "text": "bake bread", "label": "benign"},
        {"id": "c", "text": "t3", "label": 1},
        {"id": "d", "text": "t4", "label": 0},
        {"id": "e", "text": "t5", "label": "true", "meta": {"group": "g1", "kind": "prompt"}},
        {"id": "f", "text": "t6", "label": "false", "split_hint": "test", "group": "g2"},
        {"id": "g", "text": "t7", "label": True, "source": "other"},
    ]
    rows = ddata.read_rows([_jsonl(tmp_path / "mysrc.jsonl.gz", objs, gz=True, blank=True)])
    assert [(r.source, r.id) for r in rows] == [(s, i) for s, i in sorted(("mysrc", o["id"]) for o in objs[:6])] + [
        ("other", "g")
    ]
    by_id = {r.id: r for r in rows}
    assert [by_id[i].label for i in "abcdefg"] == [0, 1, 1, 0, 1, 0, 1]
    assert by_id["a"].split == "train" and by_id["f"].split == "test"
    assert by_id["a"].group == "bake bread"  # default group: the lowered text
    assert by_id["e"].group == "g1" and by_id["f"].group == "g2"
    assert by_id["a"].cats == ()  # benign rows carry no LLMT labels


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"id": "x", "text": "hi", "label": "maybe"}', r"bad\.jsonl:2: unknown label 'maybe'"),
        (b'{"id": "x", "label": "benign"}', r"bad\.jsonl:2: missing 'text'"),
        (b'{"id": "x", "text": 42, "label": "benign"}', r"bad\.jsonl:2: missing 'text'"),
        (b"{not json", r"bad\.jsonl:2: "),
    ],
)
def test_read_rows_names_file_and_line_of_a_bad_row(tmp_path: Path, line: bytes, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"id": "ok", "text": "fine", "label": 0}\n' + line + b"\n")
    with pytest.raises(ValueError, match=message):
        ddata.read_rows([path])


def test_open_text_replaces_invalid_utf8_instead_of_failing(tmp_path: Path) -> None:
    path = tmp_path / "latin.txt"
    path.write_bytes(b"caf\xe9\n")
    with ddata.open_text(path) as fh:
        assert fh.read() == "caf\ufffd\n"


def test_data_digest_is_order_sensitive_and_gzip_transparent(tmp_path: Path) -> None:
    a = tmp_path / "a.jsonl"
    a.write_text("one\n")
    b = tmp_path / "b.jsonl.gz"
    b.write_bytes(gzip.compress(b"two\n"))
    assert ddata.data_digest([a, b]) == hashlib.sha256(b"one\ntwo\n").hexdigest()
    assert ddata.data_digest([b, a]) != ddata.data_digest([a, b])
    assert ddata.data_digest([]) == hashlib.sha256(b"").hexdigest()


def _shared_row(i: str, source: str, **meta: Any) -> dict[str, Any]:
    return {
        "id": i,
        "source": source,
        "text": f"text {i}",
        "label": "benign",
        "category": "",
        "split_hint": "train",
        "meta": meta,
        "extra": "dropped",
    }


def test_vendor_training_data_splits_share_alike_sources_and_copies_licenses(tmp_path: Path) -> None:
    ds = tmp_path / "datasets"
    (ds / "prompts" / "everyday").mkdir(parents=True)
    (ds / "licenses" / "everyday").mkdir(parents=True)
    _jsonl(ds / "prompts" / "xstest.jsonl", [_shared_row("x2", "xstest"), _shared_row("x1", "xstest", group="g")])
    _jsonl(
        ds / "prompts" / "everyday" / "nq_open.jsonl",
        [_shared_row("n1", "nq_open", kind="conversation")],
        blank=True,
    )
    _jsonl(ds / "prompts" / "everyday" / "gsm8k.jsonl", [_shared_row("g1", "gsm8k")])
    (ds / "licenses" / "xstest.LICENSE.txt").write_text("xs")
    (ds / "licenses" / "everyday" / "nq_open.LICENSE.txt").write_text("nq")
    out = tmp_path / "model"
    written = ddata.vendor_training_data(ds, out)
    assert written == sorted([out / "train.jsonl.gz", out / "train-nq_open.jsonl.gz"])
    main = [orjson.loads(x) for x in gzip.decompress((out / "train.jsonl.gz").read_bytes()).splitlines()]
    assert [r["id"] for r in main] == ["g1", "x1", "x2"]  # sorted by (source, id)
    assert main[1]["group"] == "g" and main[0]["group"] == ""
    assert "extra" not in main[0] and "meta" not in main[0] and "kind" not in main[0]
    nq = orjson.loads(gzip.decompress((out / "train-nq_open.jsonl.gz").read_bytes()))
    assert nq["kind"] == "conversation"  # a non-prompt kind is kept
    assert (out / "licenses" / "everyday" / "nq_open.LICENSE.txt").read_text() == "nq"
    # deterministic: a second run writes the same bytes (gzip mtime 0)
    first = (out / "train.jsonl.gz").read_bytes()
    ddata.vendor_training_data(ds, out)
    assert (out / "train.jsonl.gz").read_bytes() == first
    assert ddata.read_rows(written)[0].id == "g1"  # and the reader takes the vendored form


# ---------------------------------------------------------------- text extraction (detect/text.py)


def test_normalize_folds_width_and_strips_invisible_characters() -> None:
    assert normalize("ＭＡＬＷＡＲＥ") == "malware"
    assert normalize("mal\u200bwa\u00adre\ufeff") == "malware"
    assert normalize("ma\u202elware") == "malware"  # bidi override
    assert normalize("Café") == "café"  # already NFKC: only lowered
    assert normalize("ﬁle") == "file"  # compatibility ligature
    assert tokenize("key\u200blogger_v2, DROP-table!") == ["keylogger", "v2", "drop", "table"]
    assert tokenize("") == [] and tokenize("\u200b\u200c") == []


def test_tokenize_handles_very_long_input() -> None:
    text = "ransomware " * 50_000 + "\u200b" * 1000
    toks = tokenize(text)
    assert len(toks) == 50_000 and set(toks) == {"ransomware"}


def test_item_id_prefers_id_then_event_id_then_default() -> None:
    assert item_id({"id": 7, "event_id": "e"}) == "7"
    assert item_id({"id": None, "event_id": "e"}) == "e"
    assert item_id({"text": "x"}, default="line-3") == "line-3"
    assert item_id("plain text", default="d") == "d"


def test_item_text_forms() -> None:
    assert item_text({"text": None, "prompt": "p"}) == "p"
    assert item_text({"text": ["a", None, {"type": "text", "text": "b"}, {"type": "image"}]}) == "a\nb\n"
    assert item_text({"prompt": 12}) == "12"
    msgs = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        "not a message",
        {"content": None},  # role defaults to user, content to ""
        {"role": "assistant", "content": "a"},
    ]
    assert item_text({"messages": msgs}) == "hi\n\n"
    assert item_text({"messages": []}) == ""


@pytest.mark.parametrize("item", [{}, {"text": None}, {"messages": "nope"}, 42, None, ["a"]])
def test_item_text_without_text_is_a_clear_error(item: Any) -> None:
    with pytest.raises(ValueError, match="no text: expected 'text', 'prompt' or 'messages'"):
        item_text(item)


def test_item_turns_skips_non_mapping_messages_and_falls_back_to_text() -> None:
    turns = item_turns({"messages": ["junk", {"content": "q"}, {"role": "assistant", "content": None}]})
    assert turns == [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]
    assert item_turns({"messages": [], "text": "t"}) == [{"role": "user", "content": "t"}]
    assert item_turns("plain") == [{"role": "user", "content": "plain"}]


# ---------------------------------------------------------------- settings (detect/settings.py)


def _toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "stormwatch.toml"
    path.write_text(body)
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[detect]\npreset = "loose"\n', r"unknown preset 'loose'; expected one of strict, balanced, permissive"),
        ("[detect]\nthreshold = 1.5\n", r"threshold must be a number in \[0, 1\]"),
        ('[detect]\nthreshold = "high"\n', r"threshold must be a number in \[0, 1\]"),
        ("[detect]\ncategory_thresholds = { LLMT-99 = 0.5 }\n", "unknown category 'LLMT-99' in category_thresholds"),
        ("[detect]\ncategory_thresholds = { LLMT-04 = -0.1 }\n", r"category threshold for LLMT-04 must be in \[0, 1\]"),
        ('[detect]\ncategory_thresholds = { LLMT-04 = "x" }\n', r"category threshold for LLMT-04 must be in \[0, 1\]"),
    ],
)
def test_bad_settings_file_is_rejected_with_the_reason(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_settings(_toml(tmp_path, body), env={})


def test_settings_precedence_file_env_cli(tmp_path: Path) -> None:
    path = _toml(tmp_path, '[detect]\npreset = "strict"\nthreshold = 0\ncategory_thresholds = { LLMT-04 = 1 }\n')
    s = load_settings(path, env={})
    assert s == DetectSettings(preset="strict", threshold=0.0, category_thresholds={"LLMT-04": 1.0})
    assert load_settings(path, env={"STORMWATCH_DETECT_PRESET": "permissive"}).preset == "permissive"
    assert load_settings(path, preset="balanced", threshold=0.25, env={"STORMWATCH_DETECT_PRESET": "x"}) == (
        DetectSettings(preset="balanced", threshold=0.25, category_thresholds={"LLMT-04": 1.0})
    )
    # a missing file means defaults; an unknown preset from the environment is still rejected
    assert load_settings(tmp_path / "absent.toml", env={}) == DetectSettings()
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        load_settings(tmp_path / "absent.toml", env={"STORMWATCH_DETECT_PRESET": "nope"})
    assert DetectSettings(threshold=0.3).resolved_threshold({"balanced": 0.9}) == 0.3
    assert DetectSettings(preset="strict").resolved_threshold({"strict": 0.4}) == 0.4


# ---------------------------------------------------------------- judge replies (detect/judge_protocol.py)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("I cannot judge this.", "no JSON object in reply"),
        ("} backwards {", "no JSON object in reply"),
        ('{"verdict": "malicious", "score": }', "bad JSON in reply"),
        ('{"verdict": "maybe"}', "unknown verdict 'maybe'"),
        ('{"score": 0.5}', "unknown verdict ''"),
        ('{"verdict": "benign", "score": "high"}', "bad score 'high'"),
        ('{"verdict": "benign", "score": [1]}', r"bad score \[1\]"),
        ('{"verdict": "benign", "score": NaN}', "score is NaN"),
    ],
)
def test_malformed_generic_json_replies_raise(reply: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_generic_json(reply)


def test_generic_json_reply_is_normalised() -> None:
    reply = (
        "Sure, here is my verdict:\n```json\n"
        '{"verdict": " UNSAFE ", "score": 7, "categories": ["LLMT-04", "LLMT-99", "LLMT-04", 3], '
        '"reason": "' + "r" * 900 + '"}\n```'
    )
    label, score, cats, reason = parse_generic_json(reply)
    assert (label, score, cats) == ("unsafe", 1.0, ("LLMT-04",))  # clamped, unknown ids dropped
    assert len(reason) == 500
    assert parse_generic_json('{"verdict": "no", "score": -3, "categories": "LLMT-01"}') == ("safe", 0.0, (), "")
    assert parse_generic_json('{"verdict": "yes"}')[:2] == ("unsafe", 1.0)  # no score: from the verdict


def test_status_hints_point_at_the_likely_fix() -> None:
    for status in (401, 403):
        hint = _status_hint(status, "guard", "MY_KEY")
        assert "$MY_KEY" in hint and "never on the command line" in hint
    assert "base_url" in _status_hint(404, "guard", "K") and "'guard'" in _status_hint(404, "guard", "K")
    assert _status_hint(500, "guard", "K") == "check the model name and the server's log"


def _choice(*tops: tuple[str, float]) -> Any:
    first = SimpleNamespace(top_logprobs=[SimpleNamespace(token=t, logprob=lp) for t, lp in tops])
    return SimpleNamespace(logprobs=SimpleNamespace(content=[first]))


def test_first_token_probability_from_logprobs() -> None:
    import math

    assert _first_token_unsafe_prob(_choice((" Unsafe", math.log(0.25)), ("unsafe", math.log(0.5)))) == 0.75
    assert _first_token_unsafe_prob(_choice(("safe", math.log(0.9)), ("Sure", 0.0))) == pytest.approx(0.1)
    assert _first_token_unsafe_prob(_choice(("maybe", 0.0))) is None  # neither token among the tops
    assert _first_token_unsafe_prob(_choice()) is None
    assert _first_token_unsafe_prob(SimpleNamespace(logprobs=None)) is None  # server sent no logprobs
    assert _first_token_unsafe_prob(SimpleNamespace(logprobs=SimpleNamespace(content=[]))) is None
    assert _first_token_unsafe_prob(SimpleNamespace(logprobs=SimpleNamespace(content=None))) is None


# ---------------------------------------------------------------- keyword detector, registry, windows


def test_keyword_detector_rejects_bad_fit_input() -> None:
    with pytest.raises(ValueError, match="items and labels differ in length"):
        KeywordDetector().fit(["a", "b"], [1])
    with pytest.raises(ValueError, match="weight must be positive"):
        KeywordDetector(weight=0).fit(["a"])
    with pytest.raises(ValueError, match="KeywordDetector has no parameter 'nope'"):
        KeywordDetector().set_params(nope=1)


def test_keyword_detector_custom_keywords_without_a_category() -> None:
    det = KeywordDetector(keywords=["Sourdough", "malware"]).fit(["x"], [0])
    assert det.keywords_ == frozenset({"sourdough", "malware"})
    [cats] = det.score_categories(["SOURDOUGH starter"])
    assert cats == dict.fromkeys(LLMT_IDS, 0.0)  # a hit, but no category for it
    [score] = det.score(["SOURDOUGH starter"])
    assert score > 0
    [cats] = det.score_categories(["mal\u200bware"])  # invisible characters do not hide a keyword
    assert cats["LLMT-03"] > 0


def test_unknown_package_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"module 'stormwatch\.detect' has no attribute 'NoSuchThing'"):
        _ = detect_pkg.NoSuchThing
    assert detect_pkg.KeywordDetector is KeywordDetector  # the lazy path resolves real names


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "must be >= 1"),
        ({"stride": 0}, "must be >= 1"),
        ({"max_windows": 0}, "must be >= 1"),
        ({"window": 4, "stride": 5}, "stride must not exceed window"),
    ],
)
def test_window_starts_rejects_bad_geometry(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        window_starts(100, **kwargs)


def test_window_starts_edge_cases() -> None:
    assert window_starts(0, window=4, stride=2) == [0]
    assert window_starts(4, window=4, stride=2) == [0]
    assert window_starts(7, window=4, stride=2) == [0, 2, 3]  # the last window ends at n
    assert window_starts(100, window=4, stride=2, max_windows=1) == [0]
    spread = window_starts(100, window=4, stride=2, max_windows=3)
    assert spread == [0, 48, 96]  # first and last kept


def test_encode_windows_rejects_a_window_longer_than_the_encoder() -> None:
    with pytest.raises(ValueError, match=r"window 254 too long for the encoder \(128 positions\)"):
        encode_windows(SimpleNamespace(max_len=128), ["text"])  # type: ignore[arg-type]
