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
        assert r["model_version"].startswith("first_tier-") and r["cascade"] is None  # the default
    res = CliRunner().invoke(classify_command, [str(inp), "-o", str(out), "--quiet", "--detectors", "cascade"])
    assert res.exit_code == EXIT_REJECTED, res.output
    for r in (orjson.loads(x) for x in out.read_text().splitlines()):
        assert r["model_version"].startswith("cascade-1.0+first_tier-")
        # the decision is about the text scored (the last user turn); a conversation may score higher
        assert r["cascade"]["tier"] in {"first", "second"} and r["cascade"]["score"] <= r["score"] + 1e-6


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
