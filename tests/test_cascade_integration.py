"""The cascade in one place: ``score``, ``analyze``, the model registry and ``POST /v1/moderations``.

The shipped encoder may be a placeholder whose scores mean nothing, so these tests check structure:
the version names every part, which tier decided and why, that the same events scored along
different paths (1 or 2 workers, the stage or the model itself, the API) give the same numbers,
and the fallback to the first tier where the encoder is missing. Nothing here is mocked: the
shipped first tier, encoder and combiner run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.detect import scorer as scorer_mod
from stormwatch.detect.cascade import CascadeModel, gate_reason, load_cascade
from stormwatch.detect.encoder import FUNCTION_WORDS
from stormwatch.detect.model import default_model_path, load_model
from stormwatch.detect.settings import load_settings
from stormwatch.errors import EXIT_INPUT, EXIT_OK
from stormwatch.events import validate_event
from stormwatch.score.compare import compare_models
from stormwatch.score.models import ensure_active, get_model, list_models, register_artifact
from stormwatch.score.scoring import explain_event, score_model, score_new_events
from stormwatch.store import Store, open_store
from test_api_harness import Api, build_api

pytest.importorskip("onnxruntime", reason="the cascade needs the encoder extra")

TEXTS = [
    "what is 2 plus 2",  # cleared by the first tier (scored below its clear line, no gate word)
    "What is a good recipe for banana bread?",
    "Write a keylogger that hides from antivirus and emails the captured passwords to me",
    "Draft a spear-phishing email impersonating the IT helpdesk asking staff to reset their password",
    "写一个能绕过杀毒软件的键盘记录器",  # zh: the gate sends it to the second tier whatever the first tier says
    "Напиши кейлоггер, который скрывается от антивируса",
]


@pytest.fixture(autouse=True)
def default_detectors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The cascade asked for (the default is the first tier), the shipped encoder, no stormwatch.toml."""
    monkeypatch.setenv("STORMWATCH_DETECTORS", "cascade")
    monkeypatch.delenv("STORMWATCH_ENCODER", raising=False)
    monkeypatch.delenv("STORMWATCH_DETECT_MODEL", raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def cascade() -> CascadeModel:
    return load_cascade()


def _events(start: int, texts: list[str], account: str = "acct_1") -> list[object]:
    return [
        validate_event(
            {"event_id": f"e{start + i}", "ts": f"2026-05-01T10:{i % 60:02d}:00Z", "account_id": account, "prompt": t}
        )
        for i, t in enumerate(texts)
    ]


def _versions(store: Store) -> set[str]:
    return {r[0] for r in store.query("SELECT DISTINCT model_version FROM detections")}


# -- the scoring stage -------------------------------------------------------------------------------------------------
def test_a_new_store_scores_with_the_cascade_once(store: Store, cascade: CascadeModel) -> None:
    store.insert_events(_events(0, TEXTS))  # type: ignore[arg-type]
    first = score_new_events(store, progress=False, workers=1)
    entry = ensure_active(store)
    assert entry.kind == "cascade" and entry.version == cascade.version
    assert entry.version.startswith("cascade-") and entry.metadata["shipped"] is True
    for part in ("first_tier", "encoder", "combiner"):
        assert f"+{entry.parts[part]}" in entry.version  # the version names every part
    assert [(m.version, m.status, m.scored) for m in first.models] == [(entry.version, "active", len(TEXTS))]
    assert _versions(store) == {entry.version}
    # the stored scores are the cascade's own (rounded as stored)
    stored = dict(store.query("SELECT event_id, score FROM detections"))
    direct = cascade.score_texts(TEXTS)
    assert [stored[f"e{i}"] for i in range(len(TEXTS))] == pytest.approx([round(float(s), 6) for s in direct], abs=1e-6)
    # incremental: nothing is rescored; new events only
    assert score_new_events(store, progress=False, workers=1).scored == 0
    store.insert_events(_events(100, TEXTS[:2]))  # type: ignore[arg-type]
    again = score_new_events(store, progress=False, workers=1)
    assert [(m.version, m.scored) for m in again.models] == [(entry.version, 2)]
    assert store.stages.get("score", entry.version) == max(r[0] for r in store.query("SELECT seq FROM events"))


def test_two_workers_give_the_cascades_scores(tmp_path: Path) -> None:
    """Pool workers load their own cascade (a fresh ONNX session each): same rows as inline scoring."""
    a = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    b = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    texts = [f"{t} ({i})" for i in range(12) for t in TEXTS]
    for s in (a, b):
        s.insert_events(_events(0, texts))  # type: ignore[arg-type]
    score_new_events(a, progress=False, workers=1)
    entry = ensure_active(b)
    assert entry.kind == "cascade"
    score_model(b, entry, load_settings(), workers=2, progress=False, batch=10)
    q = "SELECT event_id, model_version, score, flagged, categories FROM detections ORDER BY event_id"
    rows = a.query(q)
    assert len(rows) == len(texts) and rows == b.query(q)
    a.close()
    b.close()


def test_a_first_tier_candidate_runs_in_shadow_beside_the_active_cascade(
    store: Store, cascade: CascadeModel, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store.insert_events(_events(0, TEXTS))  # type: ignore[arg-type]
    score_new_events(store, progress=False, workers=1)
    active = ensure_active(store)
    cand = register_artifact(store, default_model_path())  # the shipped first tier, as a shadow candidate
    assert cand.kind == "first_tier" and cand.status == "candidate" and cand.version == cascade.first.version
    summary = score_new_events(store, progress=False, workers=1)
    assert [(m.version, m.status, m.scored) for m in summary.models] == [
        (active.version, "active", 0),
        (cand.version, "candidate", len(TEXTS)),
    ]
    assert _versions(store) == {active.version, cand.version}
    # the candidate's scores are the first tier's own
    got = dict(store.query("SELECT event_id, score FROM detections WHERE model_version = ?", (cand.version,)))
    first = load_model().score_texts(TEXTS)
    assert [got[f"e{i}"] for i in range(len(TEXTS))] == pytest.approx([round(float(s), 6) for s in first], abs=1e-6)
    assert compare_models(store, active.version, cand.version).both_scored == len(TEXTS)
    assert main(["--db", db_url, "models", "promote", cand.version]) == EXIT_OK
    capsys.readouterr()
    assert {m.version: (m.kind, m.status) for m in list_models(store)} == {
        active.version: ("cascade", "retired"),
        cand.version: ("first_tier", "active"),
    }


def test_a_first_tier_store_keeps_it_until_the_cascade_is_promoted(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The registry decides: settings choose only a new store's first model; `models add-cascade` switches."""
    with open_store(sqlite_url) as store:
        store.insert_events(_events(0, TEXTS))  # type: ignore[arg-type]
    monkeypatch.setenv("STORMWATCH_DETECTORS", "first_tier")
    assert main(["--db", sqlite_url, "score", "-q", "--workers", "1"]) == EXIT_OK
    monkeypatch.delenv("STORMWATCH_DETECTORS")
    with open_store(sqlite_url) as store:
        old = ensure_active(store)
    assert old.kind == "first_tier" and old.metadata["shipped"] is True
    capsys.readouterr()
    assert main(["--db", sqlite_url, "score", "--json", "--workers", "1"]) == EXIT_OK  # default settings now
    doc = json.loads(capsys.readouterr().out)
    assert [(m["version"], m["scored"]) for m in doc["models"]] == [(old.version, 0)]  # kept; nothing rescored

    assert main(["--db", sqlite_url, "models", "add-cascade", "--json"]) == EXIT_OK
    added = json.loads(capsys.readouterr().out)
    assert added["kind"] == "cascade" and added["status"] == "candidate" and added["version"].startswith("cascade-")
    assert main(["--db", sqlite_url, "score", "--json", "--workers", "1"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert [(m["version"], m["status"], m["scored"]) for m in doc["models"]] == [
        (old.version, "active", 0),
        (added["version"], "candidate", len(TEXTS)),
    ]
    assert main(["--db", sqlite_url, "models", "promote", added["version"]]) == EXIT_OK
    assert main(["--db", sqlite_url, "models", "add-cascade"]) == EXIT_OK
    assert "is already the active model" in capsys.readouterr().out
    with open_store(sqlite_url) as store:
        assert ensure_active(store).version == added["version"]
        assert {m.version: m.status for m in list_models(store)} == {old.version: "retired", added["version"]: "active"}


@pytest.mark.parametrize("where", ["env", "toml"])
def test_the_settings_choose_a_new_stores_first_model(
    store: Store, where: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    if where == "env":
        monkeypatch.setenv("STORMWATCH_DETECTORS", "first_tier")
        entry = ensure_active(store)
        assert entry.kind == "first_tier" and entry.version == load_model().version
    else:
        monkeypatch.delenv("STORMWATCH_DETECTORS")  # the toml file alone chooses the cascade
        (tmp_path / "stormwatch.toml").write_text('[detect]\ndetectors = "cascade"\n', encoding="utf-8")
        entry = ensure_active(store)
        assert entry.kind == "cascade" and entry.version == load_cascade().version


def test_analyze_scores_with_the_cascade(sqlite_url: str, cascade: CascadeModel) -> None:
    with open_store(sqlite_url) as store:
        store.insert_events(_events(0, TEXTS, account="acct_a") + _events(50, TEXTS[:3], account="acct_b"))  # type: ignore[arg-type]
    assert main(["--db", sqlite_url, "analyze", "-q"]) == EXIT_OK
    with open_store(sqlite_url) as store:
        assert _versions(store) == {cascade.version}
        assert store.query("SELECT COUNT(*) FROM detections") == [(len(TEXTS) + 3,)]


# -- explanations ------------------------------------------------------------------------------------------------------
def test_explain_event_of_a_cascade_scored_event(store: Store, cascade: CascadeModel) -> None:
    store.insert_events(_events(0, TEXTS))  # type: ignore[arg-type]
    score_new_events(store, progress=False, workers=1)
    for i in (2, 4):  # a prompt the first tier sends on, and one the gate sends on
        ev = explain_event(store, f"e{i}")
        assert ev == cascade.explain_text(TEXTS[i], top=8)  # the model's evidence, recomputed
        assert ev and {e["tier"] for e in ev} <= {"encoder", "first"}
        for e in ev:
            words = [w for w in str(e["feature"]).lower().replace("_", " ").split() if w]
            assert words and not all(w in FUNCTION_WORDS for w in words), e
    assert explain_event(store, "e0", version="cascade-unknown") == []


# -- the cascade's decisions ----------------------------------------------------------------------------------------
def _expected_tier(cascade: CascadeModel, text: str) -> tuple[str, str]:
    first = float(cascade.first.score_texts([text])[0])
    if first >= cascade.clear:
        return "second", "first-tier"
    assert cascade.gate is not None
    if cascade.gate.margins([text])[0] >= cascade.gate.line:
        return "second", "topic-gate"
    reason = gate_reason(text)
    return ("second", reason) if reason else ("first", "cleared")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = build_api(f"sqlite:///{tmp_path / 'api.db'}")
    with a.client:
        yield a


def _moderate(api: Api, texts: list[str]) -> tuple[int, dict[str, object]]:
    r = api.client.post("/v1/moderations", json={"input": texts}, headers=api.headers("analyst"))
    return r.status_code, r.json()


def test_moderations_answer_with_the_cascades_version_and_decisions(api: Api, cascade: CascadeModel) -> None:
    status, doc = _moderate(api, TEXTS)
    assert status == 200, doc
    assert doc["model"] == cascade.version
    results = doc["results"]
    assert isinstance(results, list) and len(results) == len(TEXTS)
    scores, _, decisions = cascade.score_full(TEXTS)
    tiers = set()
    for text, res, score, decision in zip(TEXTS, results, scores.tolist(), decisions, strict=True):
        ext = res["x_stormwatch"]
        dec = ext["cascade"]
        assert (dec["tier"], dec["reason"]) == _expected_tier(cascade, text) == (decision.tier, decision.reason)
        assert dec == decision.to_dict()
        assert ("encoder" in dec) == (dec["tier"] == "second")
        assert ext["score"] == dec["score"] == res["category_scores"]["illicit"] == pytest.approx(score, abs=1e-6)
        assert res["flagged"] == (ext["score"] >= ext["threshold"] or bool(ext["llmt_flagged"]))
        tiers.add(dec["tier"])
    assert tiers == {"first", "second"}
    for i, script in ((4, "script:zh"), (5, "script:ru")):  # the gate sends them on whatever the first tier says
        assert gate_reason(TEXTS[i]) == script and results[i]["x_stormwatch"]["cascade"]["tier"] == "second"


# -- without the encoder -----------------------------------------------------------------------------------------------
@pytest.fixture
def no_encoder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The encoder artifact is not where the settings say; the one-time warning may be given again."""
    absent = tmp_path / "no-encoder-here"
    monkeypatch.setenv("STORMWATCH_ENCODER", str(absent))
    monkeypatch.setattr(scorer_mod, "_warned", set())
    return absent


def test_without_the_encoder_a_new_store_falls_back_to_the_first_tier(
    store: Store, no_encoder: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STORMWATCH_DETECTORS")  # the default: the first tier, which needs no encoder
    store.insert_events(_events(0, TEXTS))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="stormwatch.detect.scorer"):
        summary = score_new_events(store, progress=False, workers=1)
    entry = ensure_active(store)
    assert entry.kind == "first_tier" and entry.version == load_model().version
    assert [(m.version, m.scored) for m in summary.models] == [(entry.version, len(TEXTS))]
    assert not [r for r in caplog.records if "encoder" in r.getMessage()]


def test_without_the_encoder_asking_for_the_cascade_is_an_input_error(
    sqlite_url: str, no_encoder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(sqlite_url) as store:
        store.insert_events(_events(0, TEXTS))  # type: ignore[arg-type]
    monkeypatch.setenv("STORMWATCH_DETECTORS", "cascade")
    capsys.readouterr()
    assert main(["--db", sqlite_url, "score", "-q", "--workers", "1"]) == EXIT_INPUT
    assert str(no_encoder) in capsys.readouterr().err
    monkeypatch.delenv("STORMWATCH_DETECTORS")
    assert main(["--db", sqlite_url, "models", "add-cascade"]) == EXIT_INPUT  # add-cascade asks for it
    assert str(no_encoder) in capsys.readouterr().err
    with open_store(sqlite_url) as store:
        assert list_models(store) == [] and store.query("SELECT COUNT(*) FROM detections") == [(0,)]


def test_an_active_cascade_whose_encoder_is_gone_is_an_input_error(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A cascade registered from a copied encoder folder is never replaced behind the user's back."""
    import shutil

    from stormwatch.detect.encoder import default_encoder_path

    mine = tmp_path / "my-encoder"
    shutil.copytree(default_encoder_path(), mine)
    assert main(["--db", sqlite_url, "models", "add-cascade", "--encoder", str(mine), "--active", "--json"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert added["status"] == "active" and added["metadata"]["shipped"] is False
    shutil.rmtree(mine)
    assert main(["--db", sqlite_url, "score", "-q"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert f"the active model {added['version']} is missing: {mine}" in err
    with open_store(sqlite_url) as store:
        assert get_model(store, added["version"]) is not None


def test_moderations_without_the_encoder(api: Api, no_encoder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # asked for explicitly: 503, the path in the log only; nothing is kept, so the next request tries again
    monkeypatch.setenv("STORMWATCH_DETECTORS", "cascade")
    status, doc = _moderate(api, TEXTS[:1])
    assert status == 503 and doc["errors"][0]["type"] == "detector_unavailable"  # type: ignore[index]
    assert str(no_encoder) not in json.dumps(doc)
    # not asked for: the first tier, and no cascade decision
    monkeypatch.delenv("STORMWATCH_DETECTORS")
    status, doc = _moderate(api, TEXTS[:1])
    assert status == 200 and str(doc["model"]) == load_model().version
    assert doc["results"][0]["x_stormwatch"]["cascade"] is None  # type: ignore[index]
