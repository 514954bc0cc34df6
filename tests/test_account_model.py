"""Issue 12, item 1: the learned account model (analyze/account_model.py, analyze/account_train.py).

Real components throughout: small simulated platforms are simulated, ingested, scored with the
shipped first tier and analyzed; the model is trained with LightGBM and served by the numpy evaluator.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stormwatch.analyze import account_model as am
from stormwatch.analyze.account_model import NAMES, AccountModel, load_folder, save_model
from stormwatch.analyze.account_train import (
    DROP_WHY,
    Platform,
    build_platform,
    fit_model,
    platform_metrics,
    platform_probability,
    train,
)
from stormwatch.analyze.evaluate import average_precision
from stormwatch.cli import main
from stormwatch.errors import InputError

pytest.importorskip("lightgbm")


def _platform(work: Path, name: str) -> Platform:
    seed, n, days, setting = orjson.loads((work / name / "built.json").read_bytes())
    return build_platform(work, name, seed, n, days, setting, reuse=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The recipe on two small training platforms and one held out (randomised settings)."""
    work = tmp_path_factory.mktemp("account-model")
    report = train(
        work / "models", runs=2, accounts=500, seed=300, held_out_runs=1, held_out_presets=[], rounds=60, work=work
    )
    folder = Path(report["folder"])
    plats = [_platform(work, "train-0"), _platform(work, "train-1")]
    yield {
        "work": work,
        "train": plats,
        "held": _platform(work, "heldout-0"),
        "model": load_folder(folder),
        "info": report["training"],
        "folder": folder,
        "report": report,
    }


def test_probabilities_are_calibrated_on_held_out_data(trained: dict[str, Any]) -> None:
    model: AccountModel = trained["model"]
    held: Platform = trained["held"]
    assert len(held.y) >= 20 and 0 < held.y.sum() < len(held.y)
    p = model.probability_rows(held.X, np.array(held.levels) == "none")
    assert np.all((p >= 0) & (p <= 1))
    # reliability: the mean probability matches the actor rate, overall and in the top and bottom halves
    assert abs(float(p.mean()) - float(held.y.mean())) <= 0.12, (p.mean(), held.y.mean())
    order = np.argsort(p)
    low, high = order[: len(order) // 2], order[len(order) // 2 :]
    assert abs(float(p[low].mean()) - float(held.y[low].mean())) <= 0.15
    assert abs(float(p[high].mean()) - float(held.y[high].mean())) <= 0.2
    # the calibration is strictly monotone in the logit: it never reorders the model's ranking
    grid = np.linspace(-12, 12, 201)
    assert np.all(np.diff(model.calibrate(grid)) > 0)
    # out-of-fold reliability recorded for the model card
    assert trained["info"]["out_of_fold_reliability"]


def test_contributions_sum_to_the_logit_and_match_lightgbm(trained: dict[str, Any]) -> None:
    model: AccountModel = trained["model"]
    X = np.vstack([p.X for p in trained["train"]])
    raw, contrib = model.contributions(X)
    assert contrib.shape == (len(X), len(model.features)) and set(model.features) <= set(NAMES)
    assert np.allclose(model.bias + contrib.sum(axis=1), raw, atol=1e-9)
    assert np.allclose(raw, model.logit(X))
    assert trained["info"]["numpy_vs_lightgbm_max_abs_diff"] < 1e-9


def test_serialisation_round_trip_and_tamper_check(trained: dict[str, Any], tmp_path: Path) -> None:
    model: AccountModel = trained["model"]
    folder: Path = trained["folder"]
    again = load_folder(folder)
    X = trained["held"].X
    assert again.version == model.version and np.array_equal(again.probability(X), model.probability(X))
    manifest = orjson.loads((folder / "manifest.json").read_bytes())
    assert manifest["model_sha256"] and [f["name"] for f in manifest["features"]] == list(model.features)
    assert b"pickle" not in (folder / "model.json").read_bytes()
    # one changed threshold: the sha256 no longer matches and the model is refused
    bad = tmp_path / model.version
    bad.mkdir()
    (bad / "manifest.json").write_bytes((folder / "manifest.json").read_bytes())
    doc = orjson.loads((folder / "model.json").read_bytes())
    doc["trees"][0]["threshold"][0] += 1.0
    (bad / "model.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n")
    with pytest.raises(InputError, match="sha256"):
        load_folder(bad)
    # a well-formed file naming a feature that does not exist is refused too
    doc = orjson.loads((folder / "model.json").read_bytes())
    doc["trees"][0]["feature"][0] = len(NAMES) + 3
    with pytest.raises(InputError, match="does not exist"):
        AccountModel.from_dict(doc)


def test_model_ranks_no_intel_actors_above_security_professionals(trained: dict[str, Any]) -> None:
    """On a held-out platform the model's review queue puts actors without intel before the hard benign
    personas more often than risk does, and the ranking AP does not fall."""
    model: AccountModel = trained["model"]
    held: Platform = trained["held"]
    prob = model.probability_rows(held.X, np.array(held.levels) == "none")
    review = [k for k, lv in enumerate(held.levels) if lv == "review"]
    actors = [k for k in review if held.y[k] and held.X[k, NAMES.index("direct_intel")] == 0]
    pros = [k for k in review if not held.y[k]]
    assert actors and pros

    def wins(score: np.ndarray[Any, Any]) -> float:
        return float(np.mean([score[a] > score[b] for a in actors for b in pros]))

    assert wins(prob) >= 0.9, wins(prob)
    assert wins(prob) > wins(held.risk)
    by_model, by_risk = platform_metrics(held, prob), platform_metrics(held, None)
    assert by_model["ap"] >= by_risk["ap"] and by_model["enforce_precision"] == 1.0
    # the actor accounts that never sent a request are counted apart (nothing request-based sees them)
    speaking = by_model["actors_with_requests"]
    assert speaking == held.actors - len(held.silent_actors) and 0 < speaking <= held.actors
    assert 0.0 <= by_model["budget_recall_with_requests"] <= 1.0
    # no ordering of the queue beats the ceiling; the risk order cannot either
    for m in (by_model, by_risk):
        assert m["budget_recall"] <= m["budget_recall_ceiling"] <= 1.0
        assert m["budget_recall_ceiling"] >= m["enforce_recall"]


def test_judge_orders_the_queue_by_the_model_and_falls_back_to_risk(trained: dict[str, Any]) -> None:
    from stormwatch.analyze.judge import analyze_graph
    from stormwatch.store import open_store

    db = trained["work"] / "heldout-0" / "platform.db"
    store = open_store(f"sqlite:///{db}")
    try:
        graph = store.analysis.load_graph()
    finally:
        store.close()
    now = "2024-03-01T00:00:00.000000Z"
    res = analyze_graph(graph, "m", now=now, account_model=str(trained["folder"]))
    queue = sorted((j for j in res.judgements if j.review_rank), key=lambda j: j.review_rank or 0)
    assert queue and queue[0].explanation["review_queue"]["ordered_by"].startswith("account model")
    probs = [j.explanation["account_model"]["probability"] for j in queue]
    assert probs == sorted(probs, reverse=True)
    top = queue[0].explanation["account_model"]
    assert top["version"] == trained["model"].version and top["top_contributions"]
    assert math.isclose(
        top["bias"] + sum(c["contribution"] for c in top["top_contributions"]), top["logit"], abs_tol=2.0
    )
    # the model changes no level but raising a candidate the rules left at none to review
    off = analyze_graph(graph, "m", now=now, account_model="off")
    lv_off, lv_on = {j.account_id: j.level for j in off.judgements}, {j.account_id: j.level for j in res.judgements}
    assert all(lv_off[a] == "none" and lv_on[a] == "review" for a in lv_on if lv_on[a] != lv_off[a])
    assert res.stats["raised_by_model"] == sum(lv_on[a] != lv_off[a] for a in lv_on)
    ranked = sorted((j for j in off.judgements if j.review_rank), key=lambda j: j.review_rank or 0)
    assert ranked[0].explanation["review_queue"]["ordered_by"] == "risk"
    assert all("account_model" not in j.explanation for j in off.judgements)
    assert [(-j.risk, j.account_id) for j in ranked] == sorted((-j.risk, j.account_id) for j in ranked)
    # the summary counts the accounts beyond the budget that the model still finds likely
    from stormwatch.analyze.review import ReviewBudget

    likely = [j for j in queue if j.explanation["account_model"]["probability"] >= 0.5]
    assert len(likely) >= 2  # the held-out platform's queue has more than one likely actor
    one = analyze_graph(graph, "m", now=now, account_model=str(trained["folder"]), review_budget=ReviewBudget(count=1))
    assert one.stats["review_within_budget"] == 1
    assert one.stats["review_likely_beyond_budget"] == len(likely) - 1
    assert res.stats["review_likely_beyond_budget"] == sum(not j.within_budget for j in likely)
    everyone = analyze_graph(graph, "m", now=now, account_model=str(trained["folder"]),
                             review_budget=ReviewBudget(count=len(queue)))  # fmt: skip
    assert everyone.stats["review_likely_beyond_budget"] == 0
    assert off.stats["review_likely_beyond_budget"] == 0  # no model, no probability to warn with


@pytest.fixture(scope="module")
def per_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Platforms where most operations use one account per task (actors the rules leave at none), a
    model fitted on two of them (with candidate trees), and the third held out."""
    work = tmp_path_factory.mktemp("per-task")
    plats = [build_platform(work, f"apt-{k}", 400 + k, 600, 20, "account-per-task") for k in range(3)]
    model, info = fit_model(plats[:2], rounds=60)
    folder = save_model(model, work / "models" / model.version, {"fit": info})
    return {"work": work, "model": model, "info": info, "folder": folder, "held": plats[2]}


def test_candidate_trees_score_the_accounts_at_none(per_task: dict[str, Any]) -> None:
    model: AccountModel = per_task["model"]
    held: Platform = per_task["held"]
    assert model.candidates is not None and per_task["info"]["candidates"]["actor_rows"] >= 5
    at_none = np.array(held.levels) == "none"
    assert at_none.any() and held.y[at_none].sum() > 0
    p = model.probability_rows(held.X, at_none)
    assert np.array_equal(p[~at_none], model.probability(held.X[~at_none]))
    assert np.array_equal(p[at_none], model.candidates.probability(held.X[at_none]))
    # the candidate trees rank the actors at none above the benign candidates better than chance
    ranked = [
        bool(v)
        for _p, v in sorted(zip(p[at_none].tolist(), held.y[at_none].tolist(), strict=True), key=lambda t: -t[0])
    ]
    assert (average_precision(ranked) or 0) > 2 * held.y[at_none].mean()
    # the candidate trees travel with the model (and change its version)
    again = load_folder(per_task["folder"])
    assert again.candidates is not None and np.array_equal(again.probability_rows(held.X, at_none), p)
    assert again.version == model.version
    # they leave out the features that follow the end of the data (incremental analysis relies on it)
    assert not set(model.candidates.features) & set(am.DATA_END_FEATURES)
    doc = model.to_dict()
    doc["candidates"]["features"] = [*doc["candidates"]["features"], am.DATA_END_FEATURES[0]]
    with pytest.raises(InputError, match="candidate trees use"):
        AccountModel.from_dict(doc)
    # a model without them scores no candidate (the shipped models before this one)
    plain = AccountModel.from_dict({k: v for k, v in model.to_dict().items() if k != "candidates"})
    assert plain.candidates is None and not plain.probability_rows(held.X, at_none)[at_none].any()


def test_the_model_raises_likely_candidates_at_none_to_review_and_never_enforces(
    per_task: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accounts the rules leave at none whose top request scores >= MODEL_CANDIDATE_SCORE are scored;
    those at or above MODEL_REVIEW_PROBABILITY reach review (ranked, with the reason), nothing else
    moves, and an exempt candidate stays where the rules put it."""
    from stormwatch.analyze import params as P
    from stormwatch.analyze.exemptions import Exemption
    from stormwatch.analyze.judge import analyze_graph
    from stormwatch.store import open_store

    store = open_store(f"sqlite:///{per_task['work'] / 'apt-2' / 'platform.db'}")
    try:
        graph = store.analysis.load_graph()
    finally:
        store.close()
    now, folder = "2024-03-01T00:00:00.000000Z", str(per_task["folder"])
    off = {j.account_id: j for j in analyze_graph(graph, "m", now=now, account_model="off").judgements}
    # a line no probability reaches: the candidates are scored, and no level moves
    monkeypatch.setattr(P, "MODEL_REVIEW_PROBABILITY", 1.1)
    base = {j.account_id: j for j in analyze_graph(graph, "m", now=now, account_model=folder).judgements}
    assert {a: j.level for a, j in base.items()} == {a: j.level for a, j in off.items()}
    cand = {a: j.explanation["account_model"]["probability"] for a, j in base.items() if j.level == "none"
            and "account_model" in j.explanation}  # fmt: skip
    assert len(cand) >= 4, "the held-out platform has candidates at none"
    tops = {
        st.account_id: max(
            (float(e["score"]) for e in st.features.get("content", {}).get("top_events") or []), default=0
        )
        for st in graph.states
    }
    at_none = [a for a, j in base.items() if j.level == "none"]
    want = {a for a in at_none if tops.get(a, 0.0) >= P.MODEL_CANDIDATE_SCORE}
    assert want == set(cand)
    values = sorted(set(cand.values()))
    line = values[len(values) // 2]  # raises some candidates and leaves others
    assert line > 0 and values[0] < line
    monkeypatch.setattr(P, "MODEL_REVIEW_PROBABILITY", line)
    exempt_one = max(cand, key=lambda a: cand[a])
    exemption = Exemption("account_id", exempt_one, "a researcher we know", "analyst", date(2099, 1, 1))
    res = analyze_graph(graph, "m", now=now, account_model=folder, exemptions=[exemption])
    got = {j.account_id: j for j in res.judgements}
    raised = {a for a, j in got.items() if j.level != off[a].level}
    assert raised == {a for a, p in cand.items() if p >= line and a != exempt_one}
    assert got[exempt_one].level == "none" and got[exempt_one].exemption is not None
    for a in raised:
        j = got[a]
        assert j.level == "review" and j.review_rank is not None and j.explanation["raised_by_account_model"]
        assert "account model" in j.explanation["reasons"][0] and j.explanation["level"] == "review"
        assert j.explanation["account_model"]["trees"] == "candidates at none"
        assert j.explanation["account_model"]["top_contributions"]  # why it was raised
    # the candidates left at none carry their probability, not the contributions (the bulk of the cost)
    below = [a for a in cand if cand[a] < line]
    assert below and all("top_contributions" not in got[a].explanation["account_model"] for a in below)
    assert res.stats["raised_by_model"] == len(raised) and res.stats["review"] == sum(
        j.level == "review" for j in res.judgements
    )
    assert all(got[a].level == "enforce" for a, j in off.items() if j.level == "enforce")


def test_no_shipped_model_means_risk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(am, "model_root", lambda: tmp_path)
    monkeypatch.delenv(am.ENV, raising=False)
    assert am.shipped_versions() == [] and am.resolve_model(None) is None
    assert am.resolve_model("off") is None
    with pytest.raises(InputError, match="no account model"):
        am.resolve_model("account-9.9+nothere")


def test_average_precision() -> None:
    assert average_precision([True, False, True]) == round((1 + 2 / 3) / 2, 4)
    assert average_precision([False, False]) is None


def test_eval_reports_ap_and_persona_false_positives(
    trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = trained["work"] / "heldout-0"
    db = ["--db", f"sqlite:///{base / 'platform.db'}"]
    config = tmp_path / "stormwatch.toml"  # the active model from the option, the same one in shadow from the file
    config.write_text(f'[analyze]\naccount_model = "off"\naccount_model_shadow = ["{trained["folder"]}"]\n')
    folder = str(trained["folder"])
    assert main([*db, "analyze", "--no-score", "--quiet", "--config", str(config), "--account-model", folder]) == 0
    capsys.readouterr()
    assert main([*db, "analyze", "eval", "--truth", str(base / "truth.json"), "--json"]) == 0
    res = orjson.loads(capsys.readouterr().out)
    assert res["ranked_by"] == f"account model {trained['model'].version}"
    assert 0 < res["ranking_ap"] <= 1 and 0 < res["ranking_ap_risk"] <= 1
    assert res["enforce_precision"] == 1.0 and res["exempt_enforced"] == 0
    assert set(res["false_positives_by_persona"]) >= {"security_pro", "pentest_firm", "red_teamer", "ctf_student"}
    assert res["review_budget_recall"] == res["recall_enforce_or_within_budget"]
    from stormwatch.store import open_store

    truth = orjson.loads((base / "truth.json").read_bytes())["accounts"]
    store = open_store(f"sqlite:///{base / 'platform.db'}")
    try:
        with_requests = {a for a in store.analysis.accounts_with_events_after(0) if truth[a].get("is_actor")}
    finally:
        store.close()
    assert res["actor_accounts_with_requests"] == len(with_requests) > 0
    assert 0 <= res["review_budget_recall_with_requests"] <= 1
    assert res["ranking_ap_shadow"] == {trained["model"].version: res["ranking_ap"]}


def test_train_command_writes_a_loadable_artifact(
    trained: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`analyze train` on the platforms the fixture built (--reuse: analyzed again, not simulated)."""
    out = tmp_path / "models"
    args = ["analyze", "train", "--runs", "2", "--accounts", "500", "--seed", "300", "--held-out-runs", "1"]
    args += ["--preset", "none", "--rounds", "60", "--work", str(trained["work"]), "--reuse"]
    assert main([*args, "--out", str(out), "--quiet", "--json"]) == 0
    report = orjson.loads(capsys.readouterr().out)
    folder = Path(report["folder"])
    assert folder.parent == out and load_folder(folder).version == report["version"]
    # the same data and recipe give the same model, byte for byte
    assert report["version"] == trained["report"]["version"]
    assert (folder / "model.json").read_bytes() == (trained["folder"] / "model.json").read_bytes()
    held = next(iter(report["held_out"].values()))
    assert {"ap", "budget_recall", "enforce_precision", "fp_in_budget_by_persona"} <= set(held["model"])
    assert (out / f"{report['version']}.report.json").is_file()
    assert report["training"]["features_dropped"] == {"distinct_user_agents": DROP_WHY["distinct_user_agents"]}
    assert "distinct_user_agents" not in load_folder(folder).features


def test_the_shipped_default_is_named_by_the_pointer_file(
    trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import shutil

    for name in ("account-1.0+aaaa", "account-1.0+zzzz"):
        shutil.copytree(trained["folder"], tmp_path / name)
    monkeypatch.setattr(am, "model_root", lambda: tmp_path)
    monkeypatch.delenv(am.ENV, raising=False)
    assert am.default_version() == "account-1.0+zzzz"  # no pointer: the newest by series, then name
    am.set_default(tmp_path / "account-1.0+aaaa")
    assert am.default_version() == "account-1.0+aaaa"
    model = am.resolve_model(None)
    assert model is not None and model.folder == (tmp_path / "account-1.0+aaaa").resolve()


def test_the_benchmark_metrics_raise_what_analyze_raises(per_task: dict[str, Any]) -> None:
    """platform_probability scores a platform's rows as analyze does (the candidate trees for the
    accounts at none), so the benchmark's levels are analyze's: the same accounts raised. (The
    benchmark once scored the candidates with the first trees and reported what analyze never did.)"""
    from stormwatch.analyze.judge import analyze_graph
    from stormwatch.store import open_store

    held: Platform = per_task["held"]
    model: AccountModel = per_task["model"]
    store = open_store(f"sqlite:///{per_task['work'] / 'apt-2' / 'platform.db'}")
    try:
        graph = store.analysis.load_graph()
    finally:
        store.close()
    res = analyze_graph(graph, "m", now="2024-03-01T00:00:00.000000Z", account_model=str(per_task["folder"]))
    raised = {j.account_id for j in res.judgements if j.explanation.get("raised_by_account_model")}
    prob = platform_probability(model, held)
    ids = {held.ids[k] for k, lv in enumerate(held.levels) if lv == "none" and am.reaches_review(prob[k])}
    assert raised and ids == raised
    assert platform_metrics(held, prob)["raised_by_model"] == len(raised)
    # a model without candidate trees raises nothing, in analyze and in the benchmark alike
    plain = AccountModel.from_dict({k: v for k, v in model.to_dict().items() if k != "candidates"})
    assert platform_metrics(held, platform_probability(plain, held))["raised_by_model"] == 0
