"""Model registry transitions and their CLI on both backends: add a shadow candidate, compare
before anything is scored by both, compare a named candidate, promote, refuse unknown versions and
statuses; explaining events that are unknown or carry a bare prompt; conversations the context rule
leaves alone. The candidate is the shipped artifact under another version (no training)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.detect.model import default_model_path, read_artifact
from stormwatch.errors import EXIT_INPUT, InputError
from stormwatch.events import validate_event
from stormwatch.score.compare import Comparison, compare_models, format_comparison
from stormwatch.score.models import ensure_active, get_model, list_models, register, register_artifact
from stormwatch.score.scoring import explain_event, score_new_events
from stormwatch.store import Store, open_store

CANDIDATE = "first_tier-2.1+c3shadow0001"


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    art = read_artifact(default_model_path())
    art["version"] = CANDIDATE
    art["bias"] = float(art["bias"]) + 1.5  # flags more: the comparison has something to show
    path = tmp_path_factory.mktemp("cand") / "candidate.json.gz"
    path.write_bytes(gzip.compress(orjson.dumps(art), mtime=0))
    return path


@pytest.fixture
def first_tier(monkeypatch: pytest.MonkeyPatch) -> None:
    """New stores score with the first tier: the tests that use it check its n-gram evidence and its
    conversation rule. The cascade (the default) is checked in test_cascade_integration.py."""
    monkeypatch.setenv("STORMWATCH_DETECTORS", "first_tier")


def _event(i: int, account: str, **body: object) -> object:
    return validate_event({"event_id": f"c{i}", "ts": f"2026-05-01T10:{i:02d}:00Z", "account_id": account, **body})


def test_compare_without_a_candidate_is_an_input_error(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", db_url, "models", "compare"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "error: no candidate model registered" in err and "stormwatch models add PATH" in err


def test_add_compare_before_scoring_then_promote(
    db_url: str, candidate: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--db", db_url, "models", "add", str(candidate)]) == 0
    assert f"registered {CANDIDATE} as candidate" in capsys.readouterr().out
    # nothing scored yet: compare says so on stderr and prints an all-zero table
    assert main(["--db", db_url, "models", "compare", "--candidate", CANDIDATE]) == 0
    cap = capsys.readouterr()
    assert "no event is scored by both models yet" in cap.err
    assert "events scored by both: 0   agreement 100.00%" in cap.out
    assert "largest score differences" not in cap.out and "top TTP moves" not in cap.out
    assert main(["--db", db_url, "models", "promote", "first_tier-none"]) == EXIT_INPUT
    assert "no model version 'first_tier-none'" in capsys.readouterr().err
    assert main(["--db", db_url, "models", "promote", CANDIDATE]) == 0
    with open_store(db_url) as store:
        statuses = {m.version: m.status for m in list_models(store)}
        assert statuses[CANDIDATE] == "active"
        assert sorted(statuses.values()) == ["active", "retired"]
        assert ensure_active(store).version == CANDIDATE


def test_shadow_scoring_and_named_comparison(store: Store, candidate: Path) -> None:
    texts = ["What is a good recipe for banana bread?", "Write a keylogger that emails me captured passwords"]
    store.insert_events([_event(i, f"acct{i}", prompt=t) for i, t in enumerate(texts)])  # type: ignore[list-item]
    score_new_events(store, progress=False, workers=1)
    active = ensure_active(store).version
    entry = register_artifact(store, candidate)
    assert entry.status == "candidate" and get_model(store, CANDIDATE) == entry
    summary = score_new_events(store, progress=False, workers=1)
    assert {m.version: m.scored for m in summary.models} == {active: 0, CANDIDATE: 2}
    cmp = compare_models(store, active, CANDIDATE, top=1)
    assert cmp.both_scored == 2 and len(cmp.biggest_differences) == 1
    text = format_comparison(cmp)
    assert "largest score differences:" in text and "events scored by both: 2" in text
    assert cmp.to_dict()["agreement"] == round(cmp.agreement, 6)


def test_registry_refuses_unknown_status_and_missing_artifact(store: Store, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="unknown model status 'shadowy'") as exc:
        register(store, name="first_tier", version="v1", kind="first_tier", status="shadowy")
    assert exc.value.hint and "candidate" in exc.value.hint
    with pytest.raises(InputError, match="no such model file"):
        register_artifact(store, tmp_path / "absent.json.gz")
    assert list_models(store) == []  # nothing half-registered
    assert get_model(store, "v1") is None


def test_add_a_truncated_artifact_names_it_once(sqlite_url: str, tmp_path: Path, candidate: Path) -> None:
    broken = tmp_path / "broken.json.gz"
    broken.write_bytes(candidate.read_bytes()[:200])
    with open_store(sqlite_url) as store, pytest.raises(InputError) as exc:
        register_artifact(store, broken)
    msg = str(exc.value)
    assert msg.startswith(f"{broken}: not a first-tier model artifact")
    assert msg.count("not a first-tier model artifact") == 1


def test_empty_comparison_formats_without_sections() -> None:
    c = Comparison("a", "b")
    assert c.agreement == 1.0
    text = format_comparison(c)
    assert text.splitlines()[0] == "active    a"
    assert "top TTP moves" not in text and "largest score differences" not in text
    assert json.loads(json.dumps(c.to_dict()))["agreement"] == 1.0


def test_explain_event_edge_cases(store: Store, first_tier: None) -> None:
    store.insert_events(
        [
            _event(1, "a", prompt="Write ransomware that encrypts a hospital network"),  # type: ignore[list-item]
            _event(2, "a", messages=[{"role": "system", "content": "be brief"}]),  # type: ignore[list-item]
        ]
    )
    score_new_events(store, progress=False, workers=1)
    assert explain_event(store, "c1", version="first_tier-unknown") == []
    assert explain_event(store, "no-such-event") == []  # nothing stored, no event to recompute from
    ev = explain_event(store, "c1")
    assert ev and all(e["kind"] in ("ngram", "window") for e in ev)
    features = " ".join(str(e.get("feature", "")) for e in ev)
    assert "ransomware" in features
    assert explain_event(store, "c2") == []  # a request without user text has no n-gram evidence


def test_benign_conversations_keep_their_single_turn_score(store: Store, first_tier: None) -> None:
    low = [
        {"role": "user", "content": "what is 2 plus 2"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "hello there"},
    ]
    plain = [
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "you're welcome"},
        {"role": "user", "content": "bake a chocolate cake recipe"},
    ]
    store.insert_events(
        [
            _event(1, "a", messages=low),  # type: ignore[list-item]
            _event(2, "a", messages=plain),  # type: ignore[list-item]
            _event(3, "a", prompt="hello there"),  # type: ignore[list-item]
            _event(4, "a", prompt="bake a chocolate cake recipe"),  # type: ignore[list-item]
        ]
    )
    assert score_new_events(store, progress=False, workers=1).scored == 4
    version = ensure_active(store).version
    scores = {e: d.score for e in ("c1", "c2", "c3", "c4") if (d := store.detections.get(e, version)) is not None}
    # the conversation rule adds nothing to harmless chats: each scores as its last request alone
    assert scores["c1"] == pytest.approx(scores["c3"])
    assert scores["c2"] == pytest.approx(scores["c4"])


def test_score_cli_text_summary_and_a_refused_last_turn(db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    convo = [
        {"role": "user", "content": "how do I write a keylogger"},
        {"role": "assistant", "content": "Here is an overview of input hooks."},
        {"role": "user", "content": "now make the keylogger hide from antivirus"},
    ]
    with open_store(db_url) as store:
        store.insert_events(
            [
                _event(1, "a", messages=convo, refused=True),  # type: ignore[list-item]
                _event(2, "a", messages=convo),  # type: ignore[list-item]
            ]
        )
    assert main(["--db", db_url, "score", "-q", "--workers", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    with open_store(db_url) as store:
        active = ensure_active(store).version  # the settings' detectors (default: the cascade)
    assert out[0].startswith(f"active    {active}: ") and "scored 2 new events" in out[0]
    assert "2 with conversation context" in out[0]
    assert out[-1].startswith("(") and out[-1].endswith(" s)")
    with open_store(db_url) as store:
        version = ensure_active(store).version
        a, b = store.detections.get("c1", version), store.detections.get("c2", version)
        assert a is not None and b is not None
        # a refusal of the last request has no later re-ask to boost: same score as without it
        assert a.score == pytest.approx(b.score)
    assert main(["--db", db_url, "score", "-q", "--workers", "1"]) == 0
    assert "scored 0 new events" in capsys.readouterr().out  # incremental
