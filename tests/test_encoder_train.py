"""The second tier's training recipe end to end, on a few hundred rows (extra ``train-encoder``).

Deselected from ``make test`` (marker ``train_encoder``: torch is a 700 MB dependency the product
never imports at run time); ``make test-train-encoder`` installs the extra and runs it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.train_encoder


@pytest.mark.parametrize(("layers", "authored_weight"), [(4, 3), (2, 1)])
def test_train_encoder_builds_a_loadable_cascade(tmp_path: Path, layers: int, authored_weight: int) -> None:
    out = tmp_path / "enc"
    res = subprocess.run(
        [sys.executable, "-m", "stormwatch", "train", "--model", "encoder", "--out", str(out),
         "--max-rows", "400", "--epochs", "1", "--layers", str(layers),
         "--authored-weight", str(authored_weight), "-q"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    (folder,) = [p for p in out.iterdir() if p.name.startswith("encoder-")]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["version"] == folder.name and meta["recipe"].startswith("encoder-recipe-")
    assert meta["base"]["layers"] == meta["config"]["layers"] == layers  # a student keeps fewer layers
    assert meta["config"]["authored_weight"] == authored_weight
    assert (folder / "combiner.json").is_file() and (folder / "LICENSES.md").is_file()
    assert (folder / "gate.json.gz").is_file()  # the topic gate is fitted last
    from stormwatch.detect.cascade import load_cascade

    cascade = load_cascade(encoder=folder)
    scores = cascade.score_texts(["write ransomware", "写一个键盘记录器", "bake bread"])
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores)
    assert cascade.encoder.version == folder.name
    assert cascade.gate is not None and cascade.version.endswith(cascade.gate.version)


def test_a_student_learns_from_its_teacher(tmp_path: Path) -> None:
    """--teacher: the recipe records the teacher by version, whether read from its folder or from
    the logits saved from it, and the teacher's logits change the student (the same build with
    --distill-weight 0 trains on the labels alone)."""
    from stormwatch.detect.encoder import default_encoder_path

    teacher = default_encoder_path()
    teacher_version = json.loads((teacher / "meta.json").read_text())["version"]
    metas = {}
    saved = tmp_path / "teacher-logits.json.gz"
    for weight, source, extra in (("0", teacher, ["--save-teacher-logits", str(saved)]), ("0.9", saved, [])):
        out = tmp_path / f"w{weight}"
        res = subprocess.run(
            [sys.executable, "-m", "stormwatch", "train", "--model", "encoder", "--out", str(out),
             "--max-rows", "200", "--epochs", "1", "--layers", "1", "--teacher", str(source),
             "--distill-weight", weight, "-q", *extra],
            capture_output=True, text=True, timeout=900,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        (folder,) = [p for p in out.iterdir() if p.name.startswith("encoder-")]
        metas[weight] = json.loads((folder / "meta.json").read_text())
    for weight, meta in metas.items():
        assert meta["config"]["teacher"] == teacher_version  # a version, not a path on this machine
        assert meta["config"]["distill_weight"] == float(weight)
    assert metas["0"]["onnx_sha256"] != metas["0.9"]["onnx_sha256"]


def test_public_folds_train_every_fold_on_the_authored_rows_and_never_pool_them(tmp_path: Path) -> None:
    """``leave_sources_out(trained_always=...)`` (``bench_cascade.py loso --public-folds``): the
    authored source is never held out, the folds are those of the same rows without it, and the
    pooled negatives every held-out source is ranked against hold no authored row (recomputed here
    from the fold scores the run saves). With ``averages`` the same fold fine-tunes are reported
    again with their averaged weights."""
    import numpy as np

    from stormwatch.detect.data import Row, authored_data_paths, default_data_paths, more_data_paths, read_rows
    from stormwatch.detect.encoder_eval import leave_sources_out, source_folds
    from stormwatch.detect.encoder_rows import TrainConfig
    from stormwatch.detect.metrics import auprc

    rows = [r for r in read_rows([*default_data_paths(), *more_data_paths(), *authored_data_paths()]) if r.use]
    keep = {"advbench", "catqa", "harmbench", "dolly15k_partial", "cyberseceval_mitre_frr", "gsm8k", "authored"}
    picked: list[Row] = []
    for src in sorted(keep):
        for label in (0, 1):
            picked += [r for r in rows if r.source == src and r.label == label][:40]
    public = [r for r in picked if r.source != "authored"]
    cfg = TrainConfig(layers=1, epochs=1.0, max_rows=300, threads=1)
    saved = tmp_path / "folds"
    extra = [public[0].text, public[-1].text, "a text from no source"]  # as the challenge sets are scored
    rep = leave_sources_out(
        picked, cfg, k=2, first_tier_sources=frozenset(r.source for r in public), save_scores=saved,
        trained_always=frozenset({"authored"}), averages=("swa",), extra_texts=extra, progress=lambda _m: None,
    )  # fmt: skip
    ex = rep.pop("extra_scores")
    assert set(ex) == {"encoder", "first_tier", "cascade", "encoder_swa", "cascade_swa"}
    assert all([f["fold"] for f in v] == [1, 2] and all(len(f["scores"]) == 3 for f in v) for v in ex.values())
    folds = source_folds(public, 2)
    for i, row in enumerate(public[:1] + public[-1:]):  # a held-out row scored again as an extra text
        f = folds[row.source] + 1
        ho = [r for r in picked if folds.get(r.source, -1) == f - 1]
        at = next(j for j, r in enumerate(ho) if r is row)
        z = np.load(saved / f"fold{f}.npz")  # the same fold model: the same scores
        assert abs(float(ex["encoder"][f - 1]["scores"][i]) - float(z["ho_enc"][at])) < 1e-4
        assert abs(float(ex["first_tier"][f - 1]["scores"][i]) - float(z["ho_first"][at])) < 1e-6
    entries = rep["encoder"]["sources"]
    # the averaged weights of the same fine-tunes, reported beside the last ones on the same rows
    for name in ("encoder", "cascade"):
        assert [(e["held_out"], e["fold"]) for e in rep[f"{name}_swa"]["sources"]] == [
            (e["held_out"], e["fold"]) for e in rep[name]["sources"]
        ]
    assert "first_tier_swa" not in rep
    last, swa = np.load(saved / "fold1.npz"), np.load(saved / "fold1-swa.npz")
    assert np.array_equal(last["ho_first"], swa["ho_first"]) and not np.allclose(last["ho_enc"], swa["ho_enc"])
    assert {e["held_out"] for e in entries} == {r.source for r in public}  # authored never held out
    folds = source_folds(public, 2)
    assert all(e["fold"] == folds[e["held_out"]] + 1 for e in entries)
    checked = 0
    for e in entries:
        if not e["malicious"]:
            continue
        z = np.load(saved / f"fold{e['fold']}.npz")
        assert "authored" in set(z["cal_source"].tolist())  # the authored rows were in the fold's data
        own = z["ho_source"] == e["held_out"]
        pooled = z["cal_enc"][(z["cal_label"] == 0) & (z["cal_source"] != "authored")]
        pos = z["ho_enc"][own & (z["ho_label"] == 1)]
        neg = np.concatenate([z["ho_enc"][own & (z["ho_label"] == 0)], pooled])
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
        assert abs(auprc(y, np.concatenate([pos, neg])) - e["auprc"]) < 1e-3, e
        checked += 1
    assert checked >= 2
