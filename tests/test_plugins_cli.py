"""A plugin's exporter and sink are reachable from the command line, like the built-ins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch import plugins
from stormwatch.cli import main
from stormwatch.disrupt import testing as T
from stormwatch.disrupt.sinks import MemorySink
from stormwatch.store import open_store

SENT: list[str] = []


class ListSink(MemorySink):
    name = "list"

    def send(self, action: Any) -> None:
        SENT.append(action.action_id)


def list_sink(**_: Any) -> ListSink:
    return ListSink()


def csv_exporter(store: Any, policy: Any, out: Path, *, recipient: str | None, findings: Any) -> dict[str, Any]:
    rows = store.analysis.judgements(limit=1000)
    out.write_text("account_id,risk\n" + "".join(f"{j.account_id},{j.risk}\n" for j in rows))
    return {"destination": str(out), "objects": len(rows), "clusters": 0, "clusters_withheld": 0, "max_tlp": None}


@pytest.fixture
def registered() -> Iterator[None]:
    plugins.register_entries("exporters", {"csv": csv_exporter}, name="test-csv")
    plugins.register_entries("sinks", {"list": list_sink}, name="test-list-sink")
    SENT.clear()
    yield
    plugins.unregister("test-csv")
    plugins.unregister("test-list-sink")


def test_a_plugin_exporter_runs_from_intel_export(
    sqlite_url: str, tmp_path: Path, registered: None, capsys: pytest.CaptureFixture[str]
) -> None:
    with open_store(sqlite_url) as s:
        T.add_account(s, "acct_1")
        T.add_judgement(s, "acct_1", risk=0.7)
        s.commit()
    out = tmp_path / "j.csv"
    assert main(["--db", sqlite_url, "intel", "export", "--format", "csv", "-o", str(out), "--json"]) == 0
    assert out.read_text().splitlines() == ["account_id,risk", "acct_1,0.7"]
    assert orjson.loads(capsys.readouterr().out)["objects"] == 1
    # a plugin's exporter takes a file or a folder, but one of them
    assert main(["--db", sqlite_url, "intel", "export", "--format", "csv"]) == 2
    assert "give one of -o/--output FILE or --out DIR" in capsys.readouterr().err


def test_an_unknown_exporter_names_the_known_ones(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--db", sqlite_url, "intel", "export", "--format", "xlsx", "-o", "x.xlsx"]) == 2
    err = capsys.readouterr().err
    assert "'xlsx' is not an exporter" in err and "misp-feed" in err and "stix" in err


def test_a_plugin_sink_delivers_from_enforce(sqlite_url: str, tmp_path: Path, registered: None) -> None:
    policies = tmp_path / "p"
    policies.mkdir()
    (policies / "t.yaml").write_text(
        "id: t\nversion: 1\nmode: enforce\nwhen:\n  actor_any: true\n  confidence_at_least: high\n"
        "then:\n  - action: terminate\n"
    )
    with open_store(sqlite_url) as s:
        T.add_account(s, "acct_1")
        T.add_judgement(s, "acct_1", risk=0.9, actor="Emerald Sleet", confidence=0.9, confidence_label="high")
        s.commit()
    args = ["--db", sqlite_url, "enforce", "--policies", str(policies), "--mode", "enforce", "--sink", "list"]
    assert main(args) == 0
    assert len(SENT) == 1
    assert (
        main(["--db", sqlite_url, "enforce", "--policies", str(policies), "--mode", "enforce", "--sink", "nope"]) == 3
    )
