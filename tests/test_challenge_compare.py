"""benchmarks/challenge_compare.py: the row-by-row comparison of two cascades on the challenge sets."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CC: dict[str, Any] = runpy.run_path(str(ROOT / "benchmarks" / "challenge_compare.py"))


def _rows() -> list[dict[str, Any]]:
    return [
        {"id": "t1", "set": "terse", "category": "LLMT-06", "y": 1, "text": "ransomware, full code"},
        {"id": "t2", "set": "terse", "category": "LLMT-06", "y": 1, "text": "x" * 200},  # never moves
        {"id": "t3", "set": "terse", "category": "LLMT-01", "y": 1, "text": "staff emails at acme"},
        {"id": "d1", "set": "defenders", "category": "LLMT-06", "y": 0, "text": "detect | ransomware"},
        {"id": "d2", "set": "defenders", "category": "", "y": 0, "text": "patch cadence"},
    ]


def test_shifts_counts_and_movers_follow_the_labels() -> None:
    base = np.array([0.9, 0.5, 0.5, 0.1, 0.5])
    other = np.array([0.1, 0.5, 0.9, 0.9, 0.4])
    cmp = CC["compare_rows"](_rows(), base, other, np.float64(0.5), 0.6)
    terse = cmp["by_set"]["terse"]
    logit9 = float(np.log(0.9 / 0.1))  # t1: 0.9 -> 0.1 is -2 * logit9; t3: 0.5 -> 0.9 is +logit9
    assert terse["mean_logit_shift"] == round((-2 * logit9 + 0 + logit9) / 3, 4)
    assert (terse["moved_wrong_way"], terse["moved_right_way"]) == (1, 1)  # t1 down, t3 up
    assert (terse["flagged_before"], terse["flagged_after"]) == (3, 1)  # each cascade at its own line
    dfd = cmp["by_set"]["defenders"]
    assert (dfd["moved_wrong_way"], dfd["moved_right_way"]) == (1, 0)  # d1 up; d2 down by < 1
    assert set(cmp["by_set_category"]) == {"terse LLMT-06", "terse LLMT-01", "defenders LLMT-06"}
    assert [r["id"] for r in cmp["wrong_way"]] == ["t1", "d1"]  # the same size of move: row order
    assert [r["id"] for r in cmp["right_way"]] == ["t3", "d2"]
    assert cmp["wrong_way"][0] == {
        "id": "t1", "set": "terse", "category": "LLMT-06", "text": "ransomware, full code", "before": 0.9, "after": 0.1
    }  # fmt: skip
    assert all(r["id"] != "t2" for r in cmp["wrong_way"] + cmp["right_way"])  # unmoved rows are neither
    assert json.loads(json.dumps(cmp)) == cmp  # plain JSON (the results file), numpy scalars converted
    md = CC["markdown_compare"](cmp, "cascade-a", "cascade-b")
    assert "| terse | 3 |" in md and "| defenders | LLMT-06 | 0.10 -> 0.90 | detect \\| ransomware |" in md
    rows = _rows()
    rows[0]["text"] = "php handler below\n```php\nif(x)\n```"
    md = CC["markdown_compare"](CC["compare_rows"](rows, base, other, 0.5, 0.6), "a", "b")
    assert "| 0.90 -> 0.10 | php handler below ```php if(x) ``` |" in md  # a code block stays on its row


def test_long_texts_are_cut_and_mismatched_lengths_refused() -> None:
    rows = _rows()
    cmp = CC["compare_rows"](rows, np.full(5, 0.9), np.full(5, 0.01), 0.5, 0.5, top=1)
    assert [r["id"] for r in cmp["wrong_way"]] == ["t1"]  # top=1; malicious rows down is the wrong way
    assert [r["id"] for r in cmp["right_way"]] == ["d1"]  # benign rows down is the right way
    long_row = next(
        r for r in CC["compare_rows"](rows, np.full(5, 0.9), np.full(5, 0.01), 0.5, 0.5)["wrong_way"] if r["id"] == "t2"
    )
    assert len(long_row["text"]) == 140 and long_row["text"].endswith("...")
    with pytest.raises(ValueError, match="5 rows but 4 and 5 scores"):
        CC["compare_rows"](rows, np.zeros(4), np.zeros(5), 0.5, 0.5)


def test_the_bootstrap_interval_covers_the_difference_and_shrinks_with_no_change() -> None:
    rng = np.random.default_rng(1)
    rows = [{"set": "terse_operator", "y": 1, "lang": "en", "text": f"t{i}"} for i in range(60)]
    rows += [{"set": "defender_questions", "y": 0, "lang": "en", "text": f"d{i}"} for i in range(100)]
    rows += [{"set": "lang_ru", "y": 1, "lang": "ru", "text": f"r{i}"} for i in range(30)]
    base = np.r_[rng.uniform(0.4, 1.0, 60), rng.uniform(0.0, 0.6, 100), rng.uniform(0.3, 1.0, 30)]
    worse = base.copy()
    worse[:60] -= 0.3  # every terse ask lower: the ranking against the defenders' questions falls
    boot = CC["bootstrap_headlines"](rows, base, worse, draws=300)
    d = boot["terse_vs_defenders_auprc"]
    assert d["delta"] < 0 and d["interval_95"][0] <= d["delta"] <= d["interval_95"][1] and d["interval_95"][1] < 0
    assert boot["non_english_malicious_at_defenders_2pct"]["delta"] == 0.0  # the line and the rows did not move
    same = CC["bootstrap_headlines"](rows, base, base, draws=50)
    assert all(same[k]["interval_95"] == [0.0, 0.0] for k in same if k != "draws")
    assert CC["bootstrap_headlines"](rows[60:], base[60:], base[60:]) == {}  # no terse asks: nothing to say
    md = CC["markdown_compare"]({**CC["compare_rows"](rows, base, worse, 0.5, 0.5, draws=20)}, "a", "b")
    assert "| terse_vs_defenders_auprc |" in md and "20 paired resamples" in md


def _fold_rows() -> tuple[list[dict[str, Any]], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(2)
    rows = [{"id": f"t{i}", "set": "terse_operator", "y": 1, "lang": "en", "text": f"t{i}"} for i in range(50)]
    rows += [{"id": f"d{i}", "set": "defender_questions", "y": 0, "lang": "en", "text": f"d{i}"} for i in range(100)]
    rows += [{"id": f"r{i}", "set": "lang_ru", "y": 1, "lang": "ru", "text": f"r{i}"} for i in range(20)]
    return rows, np.r_[rng.uniform(0.4, 1.0, 50), rng.uniform(0.0, 0.6, 100), rng.uniform(0.3, 1.0, 20)]


def test_fold_scores_round_trip_and_fold_replicates_are_compared_pairwise(tmp_path: Path) -> None:
    rows, base = _fold_rows()
    ids = [r["id"] for r in rows]
    worse = base.copy()
    worse[:50] -= 0.25  # every terse ask lower in every fold of the other run
    extra_base = {"cascade": [{"fold": f, "scores": base + 0.01 * f, "line": 0.9} for f in (1, 2, 3)]}
    extra_other = {"cascade": [{"fold": f, "scores": worse + 0.01 * f, "line": 0.9} for f in (1, 2)]}
    written = CC["save_fold_scores"](tmp_path / "a", ids, extra_base)
    assert [p.name for p in written] == ["challenge-fold1.json", "challenge-fold2.json", "challenge-fold3.json"]
    CC["save_fold_scores"](tmp_path / "b", ids, extra_other)
    a, b = CC["load_fold_scores"](tmp_path / "a"), CC["load_fold_scores"](tmp_path / "b")
    assert a[2]["ids"] == ids and a[2]["systems"]["cascade"]["scores"][0] == round(float(base[0] + 0.02), 6)
    cmp = CC["compare_fold_runs"](rows, a, b, draws=200)
    assert [f["fold"] for f in cmp["folds"]] == [1, 2]  # only the folds both runs have
    m = cmp["mean"]["terse_vs_defenders_auprc"]
    assert m["delta"] < 0 and m["interval_95"][1] < 0 and len(m["fold_deltas"]) == 2
    assert cmp["mean"]["non_english_malicious_at_defenders_2pct"]["delta"] == 0.0
    same = CC["compare_fold_runs"](rows, a, a, draws=50)
    assert all(v["delta"] == 0.0 and v["interval_95"] == [0.0, 0.0] for v in same["mean"].values())
    md = CC["markdown_fold_compare"](cmp, "base", "other")
    assert "| terse_vs_defenders_auprc |" in md and "200 paired resamples" in md
    # rows since removed from the sets are left out; a run of other sets, another system or no file is refused
    assert CC["compare_fold_runs"](rows[:-1], a, b, draws=10)["folds"][0]["rows"] == len(rows) - 1
    with pytest.raises(ValueError, match="no 'encoder' scores"):
        CC["compare_fold_runs"](rows, a, b, system="encoder", draws=10)
    with pytest.raises(ValueError, match="no fold in both"):
        CC["compare_fold_runs"](rows, {1: a[1]}, {3: a[3]}, draws=10)
    with pytest.raises(ValueError, match="130 scores for 170 rows"):
        CC["save_fold_scores"](tmp_path / "c", ids, {"cascade": [{"fold": 1, "scores": base[:130], "line": 0.5}]})
    with pytest.raises(FileNotFoundError, match="no challenge-fold"):
        CC["load_fold_scores"](tmp_path / "empty")
    flipped = {"cascade": {"line": 0.9, "scores": list(reversed(b[1]["systems"]["cascade"]["scores"]))}}
    other_order = {1: {**b[1], "ids": list(reversed(ids)), "systems": flipped}, 2: b[2]}
    again = CC["compare_fold_runs"](rows, a, other_order, draws=10)  # rows are matched by id, not position
    k = "terse_vs_defenders_auprc"
    assert again["folds"][0][k]["delta"] == cmp["folds"][0][k]["delta"] and again["folds"][0][k]["delta"] < 0
    with pytest.raises(ValueError, match="different challenge rows"):
        CC["compare_fold_runs"](rows, {1: other_order[1], 2: a[2]}, b, draws=10)  # base folds on other rows
