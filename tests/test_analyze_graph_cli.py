"""``analyze graph`` writes the account graph; ``analyze run-graph`` judges it without a database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from stormwatch.cli import main


def _sw(env: dict[str, str], *args: str) -> None:
    res = subprocess.run([sys.executable, "-m", "stormwatch", *args], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode in (0, 10), res.stderr[-2000:]


def test_a_graph_file_gives_the_stored_judgements(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"sqlite:///{tmp_path / 'sw.db'}"
    env = {**os.environ, "STORMWATCH_DB": db}
    sim = tmp_path / "sim"
    _sw(env, "simulate", "--out", str(sim), "--seed", "3", "--accounts", "120", "--days", "5", "-q")
    _sw(env, "ingest", str(sim / "events.jsonl"), "--accounts", str(sim / "accounts.jsonl"), "-q")
    _sw(env, "intel", "import", str(sim / "intel.stix.json"))
    _sw(env, "analyze", "-q")
    graph, result = tmp_path / "graph.json", tmp_path / "result.json"
    assert main(["--db", db, "analyze", "graph", "-o", str(graph)]) == 0
    assert orjson.loads(graph.read_bytes())["schema"].startswith("stormwatch.account-graph/")
    assert main(["analyze", "run-graph", str(graph), "-o", str(result)]) == 0
    judged = {j["account_id"]: j for j in orjson.loads(result.read_bytes())["judgements"]}
    assert main(["--db", db, "accounts", "export", "-o", str(tmp_path / "stored.jsonl")]) == 0
    stored = [orjson.loads(line) for line in (tmp_path / "stored.jsonl").read_bytes().splitlines()]
    assert stored and set(judged) == {s["account_id"] for s in stored}
    for s in stored:
        j = judged[s["account_id"]]
        assert (j["level"], j["actor"], j["cluster_id"]) == (s["level"], s["actor"], s["cluster_id"])
        assert abs(j["risk"] - s["risk"]) < 1e-9


def test_run_graph_refuses_what_is_not_a_graph(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert main(["analyze", "run-graph", str(bad)]) == 4
    assert "not JSON" in capsys.readouterr().err
    bad.write_text('{"schema": "something-else/9"}')
    assert main(["analyze", "run-graph", str(bad)]) == 4
    assert "unsupported account graph schema" in capsys.readouterr().err
