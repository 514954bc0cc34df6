"""The combiner's rows and first-tier scores: as the first tier ships (the build), or cross-fitted by
source (:func:`stormwatch.detect.encoder_artifact.cross_fitted_first_scores`, the paired alternative
that leave-source-out reports)."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stormwatch.detect.data import Row
from stormwatch.detect.model import FirstTierModel
from stormwatch.detect.train import train_artifact
from stormwatch.detect.train_params import TrainParams

pytest.importorskip("scipy")
pytestmark = pytest.mark.usefixtures("one_openmp_thread")  # conftest.py


BENIGN = ["bake a loaf of rye bread", "plan a trip to the lakes", "summarise this meeting note",
          "write a birthday poem for my aunt", "fix the css on the login page", "translate this menu",
          "suggest names for a cat", "draft a polite reminder email"]  # fmt: skip
MALICIOUS = ["steal the session cookies", "encrypt their file share for ransom", "dump lsass quietly",
             "spray passwords at the vpn", "hide the implant from the edr", "exfiltrate the mailbox"]  # fmt: skip


def _rows(source: str, label: int, n: int, rnd: random.Random, split: str = "train", marker: str = "") -> list[Row]:
    pool = MALICIOUS if label else BENIGN
    out = []
    for i in range(n):
        words = rnd.sample(pool, 2)
        text = f"{words[0]} and {words[1]} {marker} {source} {i}".strip()
        out.append(Row(f"{source}:{split}:{i}", source, text, label, "LLMT-03" if label else "everyday", split,
                       f"{source}:{i}", True, ("LLMT-03",) if label else ()))  # fmt: skip
    return out


def test_in_source_rows_are_scored_by_a_first_tier_that_never_saw_their_source() -> None:
    from stormwatch.detect.encoder_artifact import cross_fitted_first_scores

    rnd = random.Random(7)
    # "zqxj" marks malice in sources A and B only; a feature needs two sources to be used, so a
    # first tier without A (its fold) cannot use it, and A's held-out rows must score lower there
    rows = [
        *_rows("mal_a", 1, 40, rnd, marker="zqxj"),
        *_rows("mal_b", 1, 30, rnd, marker="zqxj"),
        *_rows("ben_c", 0, 60, rnd),
        *_rows("ben_d", 0, 50, rnd),
    ]
    p = replace(TrainParams(), calibration_folds=1)
    art = train_artifact(rows, p)
    art["params"] = asdict(p)
    first = FirstTierModel(art)
    use = [*_rows("mal_a", 1, 10, rnd, split="val", marker="zqxj"), *_rows("other", 1, 5, rnd, split="val")]
    shipped = first.score_texts([r.text for r in use])
    crossed = cross_fitted_first_scores(first, rows, use, progress=lambda _m: None)
    in_source = np.array([r.source == "mal_a" for r in use])
    assert np.all(crossed[in_source] < shipped[in_source] - 0.01)  # the shortcut of its own source is gone
    assert np.array_equal(crossed[~in_source], shipped[~in_source])  # a source it never saw: as shipped


def _combiner_case() -> tuple[Any, list[Any], list[Any], list[Any], Any]:
    rnd = random.Random(11)
    rows = [*_rows("mal_a", 1, 40, rnd, marker="zqxj"), *_rows("mal_b", 1, 30, rnd, marker="zqxj"),
            *_rows("ben_c", 0, 60, rnd), *_rows("ben_d", 0, 50, rnd)]  # fmt: skip
    p = replace(TrainParams(), calibration_folds=1)
    art = train_artifact(rows, p)
    art["params"] = asdict(p)
    first = FirstTierModel(art)
    fitted = _rows("mal_a", 1, 6, rnd)  # rows the first tier was trained on: never combiner rows
    unseen = [*_rows("mal_a", 1, 10, rnd, split="val", marker="zqxj"), *_rows("new_mal", 1, 25, rnd),
              *_rows("cyberseceval_frr_multilingual", 0, 40, rnd), *_rows("new_ben", 0, 30, rnd)]  # fmt: skip
    label = {r.text: r.label for r in fitted + unseen}
    noise = {t: random.Random(t).gauss(0, 1) for t in label}

    def encoder_logits(texts: list[str]) -> np.ndarray:
        return np.array([(3.0 if label[t] else -3.0) + noise[t] for t in texts])

    return first, rows, fitted, unseen, encoder_logits


def test_the_build_and_leave_source_out_fit_the_combiner_on_rows_neither_tier_fitted() -> None:
    from stormwatch.detect.encoder_artifact import fit_combiner_for

    first, rows, fitted, unseen, logits = _combiner_case()
    asked: list[str] = []

    def encoder_logits(texts: list[str]) -> np.ndarray:
        asked.extend(texts)
        return np.asarray(logits(texts))

    comb, use = fit_combiner_for(first, rows, fitted + unseen, encoder_logits, {}, progress=lambda _m: None)
    assert [r.text for r in use] == [r.text for r in unseen] == asked
    assert comb.weights[1] > 0  # the encoder's logit carries the label here
    scores = comb.combine(first.score_texts(asked), np.array([3.0, -3.0]).repeat([35, 70]), ["latin"] * 105)
    assert scores[:35].min() > scores[35:].max()


def test_the_build_fits_on_the_first_tiers_own_scores_and_can_cross_fit() -> None:
    """The default (the build's recipe) scores the rows with the first tier as it ships; ``cross_fit=True``
    (leave-source-out's paired ``cascade_cross_fitted``) refits it by source: the same rows."""
    from stormwatch.detect.encoder_artifact import fit_combiner_for

    first, rows, fitted, unseen, logits = _combiner_case()
    said: dict[bool, list[str]] = {True: [], False: []}
    fits = {
        True: fit_combiner_for(first, rows, fitted + unseen, logits, {}, said[True].append, cross_fit=True),
        False: fit_combiner_for(first, rows, fitted + unseen, logits, {}, said[False].append),
    }
    assert [r.text for r in fits[False][1]] == [r.text for r in fits[True][1]] == [r.text for r in unseen]
    assert any("cross-fit" in m for m in said[True]) and not any("cross-fit" in m for m in said[False])
    assert fits[True][0].weights != fits[False][0].weights  # the val rows of mal_a: in-source vs refit scores


def test_saved_fold_scores_give_the_loso_cascade_again(tmp_path: Path) -> None:
    """``bench_loso_combiners.py``'s ``build`` design on scores saved by ``save_fold_scores`` is the
    cascade ``leave_sources_out`` computes (same combiner rows, ``clear`` line, scores, preset)."""
    import importlib.util

    from stormwatch.detect.encoder_artifact import fit_combiner_for
    from stormwatch.detect.encoder_eval import _cascade, _crossed_cascade, save_fold_scores

    spec = importlib.util.spec_from_file_location(
        "blc", Path(__file__).parents[1] / "benchmarks" / "bench_loso_combiners.py"
    )
    assert spec and spec.loader
    blc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(blc)
    first, rows, fitted, unseen, known = _combiner_case()
    rnd = random.Random(5)
    # benign rows the security lexicon routes (defenders' questions): pooled negatives the combiner scores
    defenders = _rows("defenders", 0, 15, rnd, split="val", marker="how do we detect a dump lsass")
    calib = fitted + unseen + defenders
    asked = {r.text for r in defenders}

    def logits(texts: list[str]) -> np.ndarray:
        return np.array([random.Random(t).gauss(-0.5, 1) if t in asked else known([t])[0] for t in texts])

    ho = [*_rows("held_mal", 1, 20, rnd), *_rows("held_ben", 0, 20, rnd), *_rows("held_mal", 1, 3, rnd, marker="hack")]
    ho_logits = np.array([2.5 if r.label else -2.5 for r in ho]) + np.linspace(-2, 2, len(ho))
    comb, _ = fit_combiner_for(first, rows, calib, logits, {}, progress=lambda _m: None)
    ft_cal, ft_ho = first.score_texts([r.text for r in calib]), first.score_texts([r.text for r in ho])
    expected = _cascade(comb, [r.text for r in ho], ft_ho, ho_logits)
    seen = frozenset(first.artifact["training"]["sources"])
    save_fold_scores(tmp_path / "fold1.npz", calib, ft_cal, logits([r.text for r in calib]), ho, ft_ho, ho_logits, seen)
    fold = dict(np.load(tmp_path / "fold1.npz"))
    assert "cal_text" not in fold and fold["cal_first_fitted"].sum() == len(fitted)
    routed = (ft_ho >= comb.clear) | fold["ho_reason"]
    assert 0 < routed.sum() < len(ho)  # both paths of the routing are exercised
    got, pooled_neg, thr = blc.DESIGNS["build"](fold)
    assert np.allclose(got, expected) and thr == comb.thresholds["balanced"]
    assert len(pooled_neg) == sum(r.label == 0 for r in calib)
    # the linear designs here; the trees' fits are many and slow under a parallel test run (each
    # spreads over every core), so they run once below, and test_combiner_trees.py covers them
    linear = [d for d in blc.DESIGNS if "trees" not in d]
    res = blc.evaluate([fold], designs=linear)
    assert res["build"]["sources"][0]["held_out"] == "held_ben" and set(res) == set(linear)
    assert res["route_all"]["against_build"]["auprc"]["mean_difference"] is not None
    picked = len(blc.CHOICES)
    tree_ho, _, _ = blc.DESIGNS["trees_chosen"](fold)
    assert len(blc.CHOICES) == picked + 1 and len(tree_ho) == len(ho)
    few = ["route_all", "latin_trees_8x200"]
    blc.main(["--scores", str(tmp_path), "--results", str(tmp_path / "r.json"), "--designs", *few])
    written = json.loads((tmp_path / "r.json").read_text())
    assert {"build", *few} <= set(written) and "c1" not in written
    assert written["command"].endswith(f"--designs {' '.join(few)}")
    assert {"build", *few} <= set(written["cross_fitted_negatives"])
    crossed_ho, crossed_neg, _ = blc.DESIGNS["build"](fold, cross_fit_negatives=True)
    assert np.allclose(crossed_ho, got) and len(crossed_neg) == len(pooled_neg)  # held-out scores stay
    # leave_sources_out scores its pooled negatives the same way (combiners fitted without them)
    cal_logits = np.asarray(logits([r.text for r in calib]))
    crossed = _crossed_cascade(first, rows, calib, np.asarray(ft_cal), cal_logits, logits)
    assert np.allclose(crossed[[r.label == 0 for r in calib]], crossed_neg)
    assert not np.allclose(crossed_neg, pooled_neg, rtol=1e-3, atol=0)  # the defenders' rows are routed
    # the benign rows here are all cleared by the first tier; routing every row, the cross-fit moves them
    all_ho, all_neg, _ = blc.DESIGNS["route_all"](fold)
    crossed_all_ho, crossed_all_neg, _ = blc.DESIGNS["route_all"](fold, cross_fit_negatives=True)
    assert np.allclose(crossed_all_ho, all_ho) and not np.allclose(crossed_all_neg, all_neg, rtol=1e-3, atol=0)
    with pytest.raises(SystemExit, match="no fold"):
        blc.main(["--scores", str(tmp_path / "empty"), "--results", str(tmp_path / "r2.json")])
