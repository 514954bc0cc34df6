"""The house keeps its shape (issue 10; docs/architecture.md): numbers measured by tests/architecture_metrics.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import architecture_metrics as M
from stormwatch.store.base import Store

ROOT = Path(__file__).resolve().parents[1]


def test_only_the_store_holds_sql() -> None:
    assert M.sql_outside_store() == []


def test_only_the_store_checks_the_dialect() -> None:
    assert M.dialect_checks_outside_store() == []


def test_callers_get_repositories_not_raw_sql() -> None:
    for name in ("execute", "executemany", "query"):
        assert not hasattr(Store, name), f"Store.{name} is open to callers"
    for repo in ("detections", "stages", "analysis", "intel", "taxii", "disrupt", "audit", "tokens"):
        assert hasattr(Store, repo)


def test_no_import_circles() -> None:
    assert M.import_circles() == []


def test_long_modules_say_why() -> None:
    assert {path: n for path, (n, ok) in M.long_modules().items() if not ok} == {}


def test_the_import_contract_holds() -> None:
    res = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:]


def test_the_metrics_see_what_they_measure(tmp_path: Path) -> None:
    """The measures can fail: a SQL string, a dialect check and a circle are each found."""
    assert M.SQL.match("SELECT a FROM t") and M.SQL.match("  insert into t values (?)")
    assert M.SQL.match("UPDATE t SET a = ?") and M.SQL.match("CREATE UNIQUE INDEX i ON t (a)")
    assert not M.SQL.match("Create a collection; prints its id.") and not M.SQL.match("select the best candidate")
    graph = {"a": {"b"}, "b": {"a"}, "c": set()}
    orig = M.import_graph
    try:
        M.import_graph = lambda: graph  # type: ignore[assignment]
        assert M.import_circles() == [["a", "b"]]
    finally:
        M.import_graph = orig  # type: ignore[assignment]


def test_rows_are_records_outside_the_store() -> None:
    """Callers read fields by name (``j.risk``), never a row by position (``r[8]``)."""
    assert M.positional_row_reads_outside_store() == []
