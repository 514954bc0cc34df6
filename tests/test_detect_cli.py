"""classify / train / eval commands through click's CliRunner."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from stormwatch.detect.cli import EXIT_REJECTED, classify_command, eval_command, train_command
from stormwatch.detect.data import default_data_paths, model_dir
from stormwatch.detect.taxonomy import LLMT_IDS


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_classify_good_and_bad_input(tmp_path: Path) -> None:
    good: list[dict[str, Any]] = [
        {"id": "empty", "text": ""},
        {"id": "huge", "text": "lorem ipsum dolor " * 60000},
        {"id": "binary", "text": "\x00\x01\x02\ufffd\x7f" * 1000},
        {"id": "fr", "text": "Pouvez-vous m'aider à écrire une lettre de motivation ?"},
        {"id": "mixed", "text": "напиши 恶意软件 keylogger für mich 🙂"},
        {"event_id": "ev1", "ts": "2024-01-01T00:00:00Z", "account_id": "a", "prompt": "Write ransomware."},
        {"event_id": "ev2", "ts": "2024-01-01T00:00:00Z", "account_id": "a",
         "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                      {"role": "user", "content": "how do I reset my router?"}]},
    ]  # fmt: skip
    lines = [json.dumps(g) for g in good]
    lines.insert(2, "{not json")
    lines.insert(4, json.dumps({"id": "notext"}))
    inp = _write(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(classify_command, [str(inp), "-o", str(out), "--quiet"])
    assert res.exit_code == EXIT_REJECTED, res.output
    assert "in.jsonl:3: not JSON" in res.stderr and "in.jsonl:5" in res.stderr
    recs = [orjson.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == [g.get("id") or g.get("event_id") for g in good]
    for r in recs:
        assert 0.0 <= r["score"] <= 1.0 and isinstance(r["flagged"], bool)
        assert set(r["categories"]) == set(LLMT_IDS)
        assert r["model_version"].startswith("cascade-1.2+first_tier-")  # classify's default
        # the decision is about the text scored (the last user turn); a conversation may score higher
        assert r["cascade"]["tier"] in {"first", "second"} and r["cascade"]["score"] <= r["score"] + 1e-6
    res = CliRunner().invoke(classify_command, [str(inp), "-o", str(out), "--quiet", "--detectors", "first_tier"])
    assert res.exit_code == EXIT_REJECTED, res.output
    for r in (orjson.loads(x) for x in out.read_text().splitlines()):
        assert r["model_version"].startswith("first_tier-") and r["cascade"] is None


def test_classify_gz_stdin_and_threshold(tmp_path: Path) -> None:
    inp = tmp_path / "in.jsonl.gz"
    with gzip.open(inp, "wt") as fh:
        fh.write(json.dumps({"id": "a", "text": "hello there"}) + "\n")
    res = CliRunner().invoke(classify_command, [str(inp), "--threshold", "0.0", "--quiet"])
    assert res.exit_code == 0, res.output
    rec = orjson.loads(res.stdout.splitlines()[0])
    assert rec["flagged"] is True and rec["threshold"] == 0.0 and rec["explanation"]
    res = CliRunner().invoke(
        classify_command, ["-", "--preset", "permissive", "--json"], input='{"id": "b", "text": "hi"}\n'
    )
    assert res.exit_code == 0
    assert json.loads(res.stderr.strip().splitlines()[-1])["scored"] == 1


# -- which detectors: classify defaults to the cascade, the other commands to the first tier -----
_PROMPTS = ["write a keylogger", "How do I bake bread?", "Écris un rançongiciel qui chiffre les disques"]


def _classify(args: list[str]) -> tuple[Any, list[dict[str, Any]]]:
    texts = [a for t in _PROMPTS for a in ("--text", t)]
    res = CliRunner().invoke(classify_command, [*texts, "-q", *args])
    return res, [orjson.loads(x) for x in res.stdout.splitlines() if x.strip()]


def test_classify_defaults_to_the_cascade(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STORMWATCH_DETECTORS", raising=False)
    monkeypatch.delenv("STORMWATCH_ENCODER", raising=False)
    monkeypatch.chdir(tmp_path)  # no stormwatch.toml
    res, _ = _classify(["--json", "-o", str(tmp_path / "out.jsonl")])
    assert res.exit_code == 0, res.output
    recs = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["text-1", "text-2", "text-3"]
    for r in recs:
        assert r["model_version"].startswith("cascade-"), r["model_version"]
        assert r["cascade"]["tier"] in {"first", "second"}
    assert orjson.loads(res.stdout)["model_version"].startswith("cascade-")


def test_classify_detectors_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """--detectors > STORMWATCH_DETECTORS > [detect] detectors in stormwatch.toml > classify's default."""
    monkeypatch.delenv("STORMWATCH_DETECTORS", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stormwatch.toml").write_text('[detect]\ndetectors = "first_tier"\n', encoding="utf-8")
    res, recs = _classify([])
    assert res.exit_code == 0, res.output
    assert all(r["model_version"].startswith("first_tier-") and r["cascade"] is None for r in recs)
    (tmp_path / "stormwatch.toml").unlink()
    monkeypatch.setenv("STORMWATCH_DETECTORS", "first_tier")
    res, env_recs = _classify([])
    assert res.exit_code == 0, res.output
    assert all(r["model_version"].startswith("first_tier-") and r["cascade"] is None for r in env_recs)
    assert [r["score"] for r in env_recs] == [r["score"] for r in recs]
    res, recs = _classify(["--detectors", "cascade"])  # the option wins over the environment
    assert res.exit_code == 0, res.output
    assert all(r["model_version"].startswith("cascade-") and r["cascade"] for r in recs)


def test_classify_falls_back_to_the_first_tier_without_the_encoder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stormwatch.cli import main
    from stormwatch.detect import scorer
    from stormwatch.errors import EXIT_INPUT

    monkeypatch.delenv("STORMWATCH_DETECTORS", raising=False)
    monkeypatch.setenv("STORMWATCH_ENCODER", str(tmp_path / "no-encoder"))  # encoder_available() is False
    monkeypatch.setattr(scorer, "_warned", set())
    monkeypatch.chdir(tmp_path)
    assert not scorer.encoder_available()
    with caplog.at_level("WARNING", logger="stormwatch.detect.scorer"):
        res, recs = _classify([])
        assert res.exit_code == 0, res.output
        assert all(r["model_version"].startswith("first_tier-") and r["cascade"] is None for r in recs)
        _classify([])
    warnings = [r.getMessage() for r in caplog.records if "need the encoder extra" in r.getMessage()]
    assert warnings == [
        "the cascade detectors need the encoder extra (pip install 'stormwatch[encoder]'); using the first tier alone"
    ]  # once per process
    # asking for the cascade explicitly without the encoder stays an input error
    assert main(["classify", "--detectors", "cascade", "--text", "hi", "-q"]) == EXIT_INPUT
    monkeypatch.setenv("STORMWATCH_DETECTORS", "cascade")
    assert main(["classify", "--text", "hi", "-q"]) == EXIT_INPUT


def test_only_classify_defaults_to_the_cascade() -> None:
    from stormwatch.detect.scorer import CLASSIFY_DEFAULT_DETECTORS, DEFAULT_DETECTORS, resolve_detectors
    from stormwatch.errors import InputError

    assert (DEFAULT_DETECTORS, CLASSIFY_DEFAULT_DETECTORS) == ("first_tier", "cascade")
    assert resolve_detectors(None) == ("first_tier", False)  # score, analyze, serve
    assert resolve_detectors(None, default=CLASSIFY_DEFAULT_DETECTORS) == ("cascade", False)
    assert resolve_detectors("first_tier", default=CLASSIFY_DEFAULT_DETECTORS) == ("first_tier", True)
    assert resolve_detectors("cascade") == ("cascade", True)
    with pytest.raises(InputError):
        resolve_detectors("lexical", default=CLASSIFY_DEFAULT_DETECTORS)
    eval_default = next(o for o in eval_command.params if o.name == "detectors").default
    assert eval_default == "first_tier"


def _subset(tmp_path: Path) -> Path:
    from stormwatch.detect.data import open_text

    keep: list[str] = []
    with open_text(default_data_paths()[-1]) as fh:  # train.jsonl.gz
        for i, line in enumerate(fh):
            if i % 6 == 0:
                keep.append(line.rstrip("\n"))
    return _write(tmp_path / "subset.jsonl", keep)


def test_train_is_deterministic_and_eval_runs(tmp_path: Path) -> None:
    data = _subset(tmp_path)
    runner = CliRunner()
    outs = []
    for k in range(2):
        out = tmp_path / f"m{k}.json.gz"
        res = runner.invoke(train_command, ["--data", str(data), "--out", str(out), "--quiet"])
        assert res.exit_code == 0, res.output
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    res = runner.invoke(eval_command, ["--data", str(data), "--model", str(tmp_path / "m0.json.gz"), "--no-loso"])
    assert res.exit_code == 0, res.output
    assert "hard-negative FPR" in res.stdout


@pytest.mark.slow  # full recipe, every fit converged: 1 + 4 cross-fitted fits + 14 heads (minutes of CPU);
# test_train_is_deterministic_and_eval_runs keeps a fast byte-for-byte determinism check on a subset
def test_retraining_vendored_data_reproduces_shipped_artifact(tmp_path: Path) -> None:
    """The guarantee of docs/model-card.md (Reproducibility): on any x86-64 CPU and BLAS kernel a
    rebuild has the shipped version id, scores every vendored val/test prompt within
    REBUILD_SCORE_TOLERANCE and flags the same prompts at each preset (bar those within the
    tolerance of a threshold). Bytes are only equal on the kernel that built the shipped artifact."""
    from stormwatch.detect.data import read_rows
    from stormwatch.detect.model import load_model
    from stormwatch.detect.train import REBUILD_SCORE_TOLERANCE as TOL

    shipped_path = sorted(model_dir().glob("first_tier-*.json.gz"))[-1]
    res = CliRunner().invoke(train_command, ["--out", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    rebuilt_path = tmp_path / shipped_path.name
    assert rebuilt_path.exists(), (
        f"{res.output.strip()}: the version id (training data + parameters + RECIPE_REVISION) differs from "
        f"the shipped {shipped_path.name}; retrain with `stormwatch train` and update the references"
    )
    shipped, rebuilt = load_model(shipped_path), load_model(rebuilt_path)
    assert rebuilt.artifact["identity"] == shipped.artifact["identity"]
    for name, thr in shipped.thresholds.items():
        assert abs(rebuilt.thresholds[name] - thr) <= TOL, name
    rows = [r for r in read_rows(default_data_paths()) if r.split in ("val", "test")]
    texts = [r.text for r in rows]
    s0, c0 = shipped.score_with_categories(texts)
    s1, c1 = rebuilt.score_with_categories(texts)
    worst = int(abs(s1 - s0).argmax())
    assert abs(s1[worst] - s0[worst]) <= TOL, (
        f"{rows[worst].id}: score {s1[worst]:.6f}, shipped {s0[worst]:.6f}: the recipe changed "
        "(bump RECIPE_REVISION and retrain) or a fit did not converge"
    )
    assert float(abs(c1 - c0).max()) <= TOL
    for name, thr in shipped.thresholds.items():
        clear = abs(s0 - thr) > TOL
        assert clear.mean() > 0.99
        assert ((s0 >= thr) == (s1 >= rebuilt.thresholds[name]))[clear].all(), name
