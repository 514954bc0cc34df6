"""The challenge sets (benchmarks/challenge) are the size the issue asks for and are never trained on."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from stormwatch.detect.data import authored_data_paths, default_data_paths, more_data_paths, read_rows
from stormwatch.vocab import LLMT_IDS

CHALLENGE = Path(__file__).resolve().parents[1] / "benchmarks" / "challenge"


def _rows(name: str) -> list[dict[str, str]]:
    with open(CHALLENGE / f"{name}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def test_the_sets_have_the_sizes_and_labels_the_issue_asks_for() -> None:
    terse = _rows("terse_operator")
    defenders = _rows("defender_questions")
    assert len(terse) >= 200 and {r["label"] for r in terse} == {"malicious"}
    assert len(defenders) >= 200 and {r["label"] for r in defenders} == {"benign"}
    for rows in (terse, defenders):
        per_cat = Counter(r["category"] for r in rows)
        assert set(per_cat) == set(LLMT_IDS) and min(per_cat.values()) >= 10
    everyday = _rows("imperative_everyday")
    assert len(everyday) >= 100 and {r["label"] for r in everyday} == {"benign"}
    for lang in ("zh", "ru", "ko", "fa"):
        rows = _rows(f"lang_{lang}")
        labels = Counter(r["label"] for r in rows)
        assert len(rows) >= 100 and labels["malicious"] >= 40 and labels["benign"] >= 40, lang
        assert {r["lang"] for r in rows} == {lang}


def test_every_row_has_the_schema_and_ids_and_texts_are_unique_across_the_files() -> None:
    keys = ["id", "text", "label", "category", "lang", "set", "source"]
    ids: Counter[str] = Counter()
    texts: Counter[str] = Counter()
    for f in sorted(CHALLENGE.glob("*.jsonl")):
        for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            r = json.loads(line)
            assert list(r) == keys, (f.name, i)
            assert r["source"] == "challenge" and r["label"] in ("malicious", "benign"), (f.name, i)
            assert r["set"] == f.stem.removesuffix("_2"), (f.name, i)  # a second batch joins its set
            assert r["id"].startswith(r["set"] + ":"), (f.name, i)
            assert r["category"] in LLMT_IDS or (r["category"] == "everyday" and r["label"] == "benign"), (f.name, i)
            ids[r["id"]] += 1
            texts[_norm(r["text"])] += 1
    assert [k for k, n in ids.items() if n > 1] == []
    assert [k for k, n in texts.items() if n > 1] == []


def test_the_second_batch_covers_every_category() -> None:
    for name, per in (("terse_operator_2", 16), ("defender_questions_2", 16)):
        counts = Counter(r["category"] for r in _rows(name))
        assert set(counts) == set(LLMT_IDS) and min(counts.values()) == per, name
    for lang in ("zh", "ru", "ko", "fa"):
        rows = _rows(f"lang_{lang}_2")
        assert {r["label"] for r in rows} == {"benign"} and {r["lang"] for r in rows} == {lang}
        assert set(Counter(r["category"] for r in rows)) == set(LLMT_IDS), lang


def test_no_challenge_text_is_in_the_training_data() -> None:
    # the authored batches waiting in authored/next/ too: a build may --add them
    authored = authored_data_paths()
    assert authored
    waiting = sorted((authored[0].parent / "next").glob("*.jsonl"))
    assert waiting
    train = {_norm(r.text) for r in read_rows([*default_data_paths(), *more_data_paths(), *authored, *waiting])}
    clashes = [
        (f.name, r["id"]) for f in sorted(CHALLENGE.glob("*.jsonl")) for r in _rows(f.stem) if _norm(r["text"]) in train
    ]
    assert clashes == []
