"""`stormwatch demo` screens two prompts live: a real API server on loopback, the official openai SDK,
a screen-scoped token; the calls become usage events in the demo's store."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.demo import SCREEN_PROMPTS
from stormwatch.errors import EXIT_OK

REPO = Path(__file__).resolve().parents[1]


def test_demo_screens_live_with_the_openai_sdk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORMWATCH_DETECTORS", "first_tier")  # measured flags (docs/model-card.md)
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--accounts", "40", "--days", "2", "--seed", "5", "-q"]
    code = main([*argv, "--policies", str(REPO / "policies")])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert "POST /v1/moderations" in captured.err
    lines = [ln.strip() for ln in captured.out.splitlines()]
    everyday = next(ln for ln in lines if "Lisbon" in ln)
    phishing = next(ln for ln in lines if "spear-phishing" in ln)
    assert everyday.startswith("clear"), everyday
    assert phishing.startswith("FLAGGED"), phishing
    assert any(ln.startswith("model first_tier-") for ln in lines), lines
    assert "2 prompts screened on http://127.0.0.1:" in captured.out
    with closing(sqlite3.connect(out / "stormwatch.db")) as db:
        rows = db.execute("SELECT prompt, account_id FROM events WHERE source = 'moderations'").fetchall()
        token_names = [r[0] for r in db.execute("SELECT name FROM api_tokens")]
    assert [r[0] for r in rows] == ["\n".join(SCREEN_PROMPTS)]  # one call, both inputs
    assert rows[0][1] == "token:demo-screening"
    assert "demo-screening" in token_names
