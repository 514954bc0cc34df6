"""The root CLI (exit codes for every way a command can end), the plugin manager's error paths,
and `stormwatch demo` run in-process on a tiny simulated platform."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest

from stormwatch import plugins
from stormwatch.cli import cli, main
from stormwatch.errors import EXIT_CONFIG, EXIT_ERROR, EXIT_INPUT, EXIT_OK, EXIT_USAGE, InputError
from stormwatch.plugins import Command, PluginError, hookimpl

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    plugins.reset()
    yield
    plugins.reset()


@click.command("t-abort")
def _abort() -> None:
    raise click.Abort()


@click.command("t-pipe")
def _pipe() -> None:
    raise BrokenPipeError()


@click.command("t-code")
def _code() -> int:
    return 7


@click.command("t-hint")
def _hint() -> None:
    raise InputError("the input is wrong", hint="fix the input")


@click.command("t-ok")
@click.pass_context
def _ok(ctx: click.Context) -> None:
    click.echo(f"db={ctx.obj['db_url']}")


class Cmds:
    @hookimpl
    def stormwatch_cli_commands(self) -> Mapping[str, Any]:
        return {
            "t-abort": Command(_abort, "aborts"),
            "t-pipe": (_pipe, "broken pipe"),
            "t-code": _code,
            "t-hint": Command(_hint, "input error"),
            "t-ok": Command(_ok, "prints the db"),
            "t-old": Command(_ok, "old name", deprecated="t-ok"),
        }


def test_every_way_a_command_ends_maps_to_an_exit_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    plugins.register(Cmds(), "t-cmds")
    assert main(["t-abort"]) == EXIT_ERROR
    assert "aborted" in capsys.readouterr().err
    assert main(["t-pipe"]) == EXIT_OK
    assert main(["t-code"]) == 7
    assert main(["t-hint"]) == EXIT_INPUT
    err = capsys.readouterr().err
    assert "error: the input is wrong" in err and "hint: fix the input" in err
    monkeypatch.setenv("STORMWATCH_DB", "sqlite:///from-env.db")
    assert main(["t-ok"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "db=sqlite:///from-env.db"
    assert main(["--db", "sqlite:///flag.db", "t-old"]) == EXIT_OK
    assert capsys.readouterr().out.strip() == "db=sqlite:///flag.db"
    # listed in help, except the deprecated old name
    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "t-abort" in out and "prints the db" in out and "t-old" not in out
    names = cli.list_commands(click.Context(cli))
    assert {"t-abort", "t-old", "ingest", "demo"} <= set(names)


def test_usage_errors_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == EXIT_USAGE
    assert "No such command" in capsys.readouterr().err
    assert main(["ingest", "--no-such-option"]) == EXIT_USAGE
    assert main(["--version"]) == EXIT_OK
    assert "stormwatch" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# the plugin manager


class NoneTable:
    @hookimpl
    def stormwatch_sinks(self) -> None:
        return None


def test_a_hook_returning_none_adds_nothing() -> None:
    before = plugins.entries("sinks")
    plugins.register(NoneTable(), "none-table")
    assert plugins.entries("sinks") == before


def test_the_same_object_under_two_names_is_refused() -> None:
    obj = NoneTable()
    plugins.register(obj, "first-name")
    with pytest.raises(PluginError, match="'second-name' could not be registered") as info:
        plugins.register(obj, "second-name")
    assert info.value.plugin == "second-name"
    assert info.value.exit_code == EXIT_CONFIG


def test_unknown_kinds_and_entries_of_objects() -> None:
    with pytest.raises(ValueError, match="unknown plugin kind 'widgets'"):
        plugins.entries("widgets")
    with pytest.raises(ValueError, match="unknown plugin kind"):
        plugins.register_entries("widgets", {}, name="w")
    name = plugins.register_entries("sinks", {"obj-sink": NoneTable}, name="obj-sinks")
    entry = plugins.entries("sinks")["obj-sink"]
    assert entry.plugin == name and entry.source == "inprocess"
    assert entry.spec.endswith(":NoneTable")
    assert plugins.load("sinks", "obj-sink") is NoneTable
    plugins.register_entries("sinks", {"obj-sink": str}, name="obj-sinks", replace=True)
    assert plugins.load("sinks", "obj-sink") is str
    with pytest.raises(KeyError):
        plugins.load("sinks", "never-registered")


def test_generation_changes_with_the_set_of_plugins() -> None:
    g0 = plugins.generation()
    plugins.register(NoneTable(), "gen")
    g1 = plugins.generation()
    plugins.unregister("gen")
    plugins.unregister("gen")  # a second time: no error
    assert g0 < g1 < plugins.generation()


def test_concurrent_first_use_builds_one_manager() -> None:
    plugins.reset()
    seen: list[object] = []
    barrier = threading.Barrier(4)

    def grab() -> None:
        barrier.wait()
        seen.append(plugins.get_manager())

    threads = [threading.Thread(target=grab) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and all(m is seen[0] for m in seen)


# --------------------------------------------------------------------------------------------
# stormwatch demo, in-process on a tiny platform


def test_demo_runs_the_pipeline_and_names_its_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    argv = ["demo", "--out", str(out), "--accounts", "60", "--days", "3", "--seed", "3", "-q"]
    code = main([*argv, "--policies", str(REPO / "policies")])
    captured = capsys.readouterr()
    assert code == EXIT_OK, captured.err
    assert not (out / "stale.txt").exists()  # --out is replaced
    for step in ("simulate", "ingest", "score", "import the partner", "judge", "ground truth", "dry run", "audit"):
        assert step in captured.err, step
    assert "audit chain intact" in captured.out
    assert "flagged for enforcement:" in captured.out
    assert "nothing sent" in captured.out
    rows = [json.loads(line) for line in (out / "accounts.jsonl").read_text().splitlines()]
    assert len(rows) == 60 and len({r["account_id"] for r in rows}) == 60
    assert all(0.0 <= r["risk"] <= 1.0 for r in rows)
    bundle = json.loads((out / "intel-export.stix.json").read_text())
    assert bundle["type"] == "bundle"
    for name in ("platform", "stormwatch.db", "accounts.jsonl", "intel-export.stix.json"):
        assert str(out / name) in captured.out


def test_demo_fails_when_the_audit_chain_is_broken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from stormwatch.disrupt import service

    class Broken:
        ok = False
        message = "entry 3 changed"

    monkeypatch.setattr(service, "verify_audit", lambda store: Broken())
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--accounts", "40", "--days", "2", "-q"]
    code = main([*argv, "--policies", str(REPO / "policies")])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR
    assert "audit chain broken: entry 3 changed" in err
    assert not (out / "intel-export.stix.json").exists()  # it stopped at the broken step


def test_demo_refuses_a_missing_policies_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--out", str(tmp_path / "d"), "--policies", str(tmp_path / "none"), "-q"])
    assert code == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_a_missing_model_named_in_the_environment_is_an_input_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """No traceback: the message names the file and the exit code is 4 (bad input)."""
    missing = tmp_path / "nope.json.gz"
    monkeypatch.setenv("STORMWATCH_DETECT_MODEL", str(missing))
    assert main(["classify", "--text", "write a keylogger"]) == 4
    err = capsys.readouterr().err
    assert str(missing) in err and "No such file" in err and "Traceback" not in err
