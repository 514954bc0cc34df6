"""Behaviour of the pool builder (``python -m stormwatch.simulate.build_pools``), the pool loader and
the simulator's argument checks: every source's mapping rule, the drop rules, the deterministic cap,
a full build from a small fake shared tree that the loader then reads back, and clear errors."""

from __future__ import annotations

import lzma
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.simulate import build_pools as bp
from stormwatch.simulate import simulate
from stormwatch.simulate.pools import load_pools


def _row(text: str = "how do I bake bread", **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"id": kw.pop("id", "r1"), "split_hint": "train", "text": text}
    row.update(kw)
    return row


# ---------------------------------------------------------------- classify: the mapping rules


@pytest.mark.parametrize(
    ("source", "extra", "expected"),
    [
        ("cyberseceval_mitre", {"category": "Recon"}, {"pool": "mal_cyber", "ttp": "LLMT-01"}),
        ("cyberseceval_mitre", {"category": "C2"}, {"pool": "mal_cyber", "ttp": "LLMT-03"}),
        ("cyberseceval_mitre", {"category": "Unknown tactic"}, {"pool": "mal_cyber", "ttp": "LLMT-02"}),
        ("cyberseceval_interpreter", {"category": "Social Engineering"}, {"pool": "mal_cyber", "ttp": "LLMT-04"}),
        ("cyberseceval_interpreter", {}, {"pool": "mal_cyber", "ttp": "LLMT-12"}),
        (
            "jbb_behaviors",
            {"category": "Malware/Hacking", "label": "malicious"},
            {"pool": "mal_cyber", "ttp": "LLMT-03"},
        ),
        ("jbb_behaviors", {"category": "Malware/Hacking", "label": "benign"}, {"pool": "sec_frr"}),
        ("jbb_behaviors", {"category": "Harassment", "label": "benign"}, {"pool": "general"}),
        ("cyberseceval_mitre_frr", {}, {"pool": "sec_frr"}),
        ("cyberseceval_crwd_malware_analysis", {}, {"pool": "sec_malware"}),
        ("cyberseceval_crwd_threat_intel", {}, {"pool": "sec_ti"}),
        ("cyberseceval_instruct", {}, {"pool": "code"}),
        ("xstest", {"label": "benign"}, {"pool": "xstest"}),
        ("self_instruct", {}, {"pool": "general"}),
        ("gpteacher", {"category": "codegen"}, {"pool": "code"}),
        ("gpteacher", {"category": "roleplay"}, {"pool": "general"}),
        ("humaneval", {}, {"pool": "code"}),
        ("gsm8k", {}, {"pool": "math"}),
        ("mmlu", {}, {"pool": "math"}),
        ("mgsm", {"meta": {"lang": "de-DE"}}, {"pool": "foreign", "lang": "de"}),
        ("xsid", {"meta": {"lang": "en"}}, {"pool": "assistant"}),
        ("banking77", {}, {"pool": "assistant"}),
        ("nq_open", {"meta": {"needs_context": False}}, {"pool": "general"}),
        ("vicuna_bench", {}, {"pool": "general"}),
    ],
)
def test_classify_maps_each_source_to_its_pool(source: str, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    out = bp.classify(source, _row("  some prompt text  ", **extra))
    assert out == {"id": "r1", "text": "some prompt text", **expected}


@pytest.mark.parametrize(
    ("source", "row"),
    [
        ("self_instruct", _row(split_hint="test")),  # only the train split is vendored
        ("self_instruct", _row(split_hint=None)),
        ("self_instruct", _row("   ")),  # blank after stripping
        ("self_instruct", _row(None)),  # text missing
        ("self_instruct", _row("x" * (bp.MAX_TEXT + 1))),  # too long
        ("jbb_behaviors", _row(category="Harassment", label="malicious")),  # harmful but not cyber
        ("xstest", _row(label="malicious")),  # xstest's unsafe contrast prompts
        ("dolly15k_partial", _row(meta={"needs_context": True})),  # needs a passage we do not ship
        ("no_such_source", _row()),  # an unknown English source is dropped, not guessed
    ],
)
def test_classify_drops_rows_it_cannot_use(source: str, row: dict[str, Any]) -> None:
    assert bp.classify(source, row) is None


def test_classify_keeps_text_exactly_at_the_limit() -> None:
    out = bp.classify("self_instruct", _row("y" * bp.MAX_TEXT))
    assert out is not None and len(out["text"]) == bp.MAX_TEXT


def test_every_vendored_source_has_a_license_entry() -> None:
    for source in [*bp.SOURCES, *bp.EVERYDAY]:
        key = "cyberseceval" if source.startswith("cyberseceval") else source
        assert key in bp.LICENSES, source


# ---------------------------------------------------------------- _cap: deterministic subsample


def test_cap_without_limit_or_under_limit_returns_the_same_list() -> None:
    rows = [{"id": i} for i in range(5)]
    assert bp._cap(rows, 0) is rows
    assert bp._cap(rows, 5) is rows
    assert bp._cap(rows, 10) is rows


def test_cap_is_deterministic_and_keeps_source_order() -> None:
    rows = [{"id": f"row-{i}"} for i in range(50)]
    a = bp._cap(rows, 7)
    b = bp._cap(list(reversed(rows)), 7)
    assert len(a) == 7
    assert {r["id"] for r in a} == {r["id"] for r in b}  # same subset whatever the input order
    idx = [rows.index(r) for r in a]
    assert idx == sorted(idx)  # source order preserved


# ---------------------------------------------------------------- build + load, end to end


def _fake_shared(root: Path, *, missing_license: str | None = None) -> Path:
    prompts = root / "datasets" / "prompts"
    licenses = root / "datasets" / "licenses"
    (prompts / "everyday").mkdir(parents=True)
    (licenses / "everyday").mkdir(parents=True)
    for source, (fname, lic, _cap) in bp.SOURCES.items():
        rows = [_row(f"{source} prompt {i}", id=f"{source}-{i}", category="Recon", label="benign") for i in range(3)]
        rows.append(_row(f"{source} held out", id=f"{source}-x", split_hint="test"))
        lines = [orjson.dumps(r) for r in rows]
        lines.insert(1, b"   ")  # blank lines are skipped
        (prompts / fname).write_bytes(b"\n".join(lines) + b"\n")
        if lic != missing_license:
            (licenses / lic).write_text(f"license of {lic}\n")
    for source in bp.EVERYDAY:
        lang = "fr" if source == "mgsm" else "en"
        rows = [_row(f"{source} question {i}", id=f"{source}-{i}", meta={"lang": lang}) for i in range(2)]
        (prompts / "everyday" / f"{source}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
        (licenses / "everyday" / f"{source}.LICENSE.txt").write_text(f"license of {source}\n")
    return root


def test_build_writes_pools_licenses_and_manifest_the_loader_reads(tmp_path: Path) -> None:
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "out"
    counts = bp.build(shared, out)
    assert set(counts) == set(bp.SOURCES) | set(bp.EVERYDAY)
    assert counts["cyberseceval_mitre"] == 3  # the test-split row is dropped
    assert counts["xstest"] == 3
    assert counts["mgsm"] == 2
    manifest = orjson.loads((out / "manifest.json").read_bytes())
    assert manifest["max_text_chars"] == bp.MAX_TEXT
    assert manifest["sources"]["nq_open"]["license"] == "CC BY-SA 3.0"
    assert manifest["sources"]["cyberseceval_instruct"]["license"] == "MIT"
    assert manifest["sources"]["xsid"]["file"] == "pools/xsid.jsonl.xz"
    assert (out / "licenses" / "cyberseceval.LICENSE.txt").read_text() == "license of cyberseceval.LICENSE.txt\n"
    assert (out / "licenses" / "everyday" / "snips.LICENSE.txt").is_file()

    pools = load_pools(str(out))
    assert pools.sources["cyberseceval_mitre"] == 3
    assert [e[0] for e in pools.mal_by_ttp["LLMT-01"]][:3] == [f"cyberseceval_mitre-{i}" for i in range(3)]
    assert [e[0] for e in pools.foreign_by_lang["fr"]] == ["mgsm-0", "mgsm-1"]
    assert pools.get("math") and pools.get("assistant") and pools.get("sec_ti")
    assert pools.get("no_such_pool") == []


def test_build_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    shared = _fake_shared(tmp_path / "shared")
    bp.build(shared, tmp_path / "a")
    bp.build(shared, tmp_path / "b")
    for path in sorted((tmp_path / "a").rglob("*")):
        if path.is_file():
            twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
            assert twin.read_bytes() == path.read_bytes(), path.name


def test_build_fails_clearly_on_a_missing_input_or_license(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cyberseceval_mitre\.jsonl"):
        bp.build(tmp_path / "empty", tmp_path / "out")
    shared = _fake_shared(tmp_path / "shared", missing_license="xstest.LICENSE.txt")
    with pytest.raises(FileNotFoundError, match=r"xstest\.LICENSE\.txt"):
        bp.build(shared, tmp_path / "out2")


def test_main_prints_counts_and_total(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shared = _fake_shared(tmp_path / "shared")
    out = tmp_path / "out"
    assert bp.main(["--shared", str(shared), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    total = 3 * len(bp.SOURCES) + 2 * len(bp.EVERYDAY)
    assert f"total {total} rows -> {out}" in text
    assert "cyberseceval_mitre" in text and "vicuna_bench" in text


def test_main_rejects_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        bp.main(["--bogus"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


# ---------------------------------------------------------------- the loader on odd directories


def test_load_pools_without_files_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no simulator pools under .*build_pools"):
        load_pools(str(tmp_path / "nothing"))


def test_load_pools_skips_blank_lines(tmp_path: Path) -> None:
    (tmp_path / "pools").mkdir()
    data = b'{"id":"a","pool":"general","text":"hi"}\n\n\n{"id":"b","pool":"xstest","text":"kill a process"}\n'
    (tmp_path / "pools" / "mini.jsonl.xz").write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ))
    pools = load_pools(str(tmp_path))
    assert pools.sources == {"mini": 2}
    assert pools.get("general") == [("a", "hi")]
    assert pools.get("xstest") == [("b", "kill a process")]
    assert pools.mal_by_ttp == {} and pools.foreign_by_lang == {}


# ---------------------------------------------------------------- simulate(): argument checks


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"accounts": 19}, "accounts must be at least 20"),
        ({"accounts": 0}, "accounts must be at least 20"),
        ({"days": 0}, "days must be at least 1"),
        ({"days": -3}, "days must be at least 1"),
    ],
)
def test_simulate_rejects_bad_sizes_before_writing(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        simulate(out, seed=1, progress=False, **kwargs)
    assert not out.exists()


def test_poisson_of_a_non_positive_rate_is_zero_without_drawing() -> None:
    import random

    from stormwatch.simulate.engine import poisson

    rng = random.Random(7)
    state = rng.getstate()
    assert poisson(rng, 0.0) == 0
    assert poisson(rng, -2.5) == 0
    assert rng.getstate() == state  # no random number consumed: streams stay aligned
    assert poisson(rng, 100.0) > 0  # the large-rate normal approximation
