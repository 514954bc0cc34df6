"""The one CLI convention (:mod:`stormwatch.clitools`), checked on every command of the tree, and its old spellings.

* ``-o/--output FILE`` for a file, ``--out DIR`` for a folder, no positional output path;
* ``--json`` prints ONE JSON document; a list command prints ``{"items": [...]}``, also when empty;
* ``-q`` wherever ``--quiet`` is (and the other way round), and ``--quiet`` on every command with progress;
* the same thing has the same option name (``--policies``, ``--secret-env``);
* old spellings are hidden, warn on stderr and still work.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from stormwatch import clitools
from stormwatch.cli import cli, main
from stormwatch.errors import EXIT_CONFIG, EXIT_INPUT, EXIT_OK, EXIT_USAGE

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "policies"


def _walk() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the tree (lazily loaded ones included), as (path, command); the root left out."""
    ctx = click.Context(cli)

    def rec(cmd: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
        if path:
            yield path, cmd
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                assert sub is not None, f"{' '.join((*path, name))}: listed but not loadable"
                yield from rec(sub, (*path, name))

    yield from rec(cli, ())


TREE: dict[tuple[str, ...], click.Command] = dict(_walk())
# a group's own options count when it runs on its own (``stormwatch analyze``)
COMMANDS = {p: c for p, c in TREE.items() if not isinstance(c, click.Group) or c.invoke_without_command}
IDS = [" ".join(p) for p in COMMANDS]

# Commands that show progress (bars or lines on stderr): each takes -q/--quiet.
PROGRESS = {("demo",), ("simulate",), ("ingest",), ("classify",), ("train",), ("eval",), ("score",), ("analyze",)}
# The same thing, the same long option name: destination -> its only spelling.
SAME_THING = {"policy_paths": "--policies", "secret_env": "--secret-env", "webhook_secret_env": "--secret-env"}
# `train --out` also accepts the old `--out FILE` (deprecated, detected by the path), so its type admits files.
OUT_ALSO_OLD_FILE = {("train",)}
LIST_COMMANDS = {
    ("quarantine", "list"), ("models", "list"), ("clusters", "list"), ("actions", "list"), ("audit", "list"),
    ("cases", "list"), ("appeals", "list"), ("token", "list"),
}  # fmt: skip


def _options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option)]


def _long(opt: click.Option) -> list[str]:
    return [o for o in opt.opts + opt.secondary_opts if o.startswith("--")]


def test_the_tree_is_walked() -> None:
    """Lazily loaded commands are all there: the walk sees every command the checks below are about."""
    assert {("intel", "export"), ("policy", "check"), ("train",), ("serve",), ("analyze",)} <= set(COMMANDS)
    assert set(COMMANDS) >= LIST_COMMANDS
    assert {p for p in COMMANDS if p[-1] == "list" and p[0] != "share"} == LIST_COMMANDS
    assert set(COMMANDS) >= PROGRESS


@pytest.mark.parametrize("path", list(COMMANDS), ids=IDS)
def test_option_names_follow_the_convention(path: tuple[str, ...]) -> None:
    cmd = COMMANDS[path]
    where = " ".join(path)
    for opt in _options(cmd):
        names = opt.opts + opt.secondary_opts
        if opt.hidden:
            assert opt.name and opt.name.startswith("deprecated_"), f"{where}: hidden {names} is not an old spelling"
            continue
        if "--output" in names or "-o" in names:
            assert {"-o", "--output"} <= set(names), f"{where}: a file option is spelled -o/--output: {names}"
            assert isinstance(opt.type, click.Path) and not opt.type.dir_okay, f"{where}: -o/--output is a FILE"
        if "--out" in names:
            assert isinstance(opt.type, click.Path), f"{where}: --out DIR is a path"
            assert not opt.type.file_okay or path in OUT_ALSO_OLD_FILE, f"{where}: --out is a folder (DIR)"
        if "--quiet" in names or "-q" in names:
            assert {"-q", "--quiet"} <= set(names), f"{where}: both -q and --quiet: {names}"
            assert opt.is_flag and opt.name == "quiet"
        if "--json" in names:
            assert opt.is_flag and opt.name == "as_json", f"{where}: --json is a flag"
        if opt.name in SAME_THING:
            assert _long(opt) == [SAME_THING[opt.name]], f"{where}: {opt.name} is spelled {SAME_THING[opt.name]}"
    for arg in (p for p in cmd.params if isinstance(p, click.Argument)):
        if isinstance(arg, clitools.HiddenArgument):
            assert arg.name and arg.name.startswith(("deprecated_", "legacy_")), f"{where}: hidden {arg.name}"
            assert not arg.required, f"{where}: an old positional spelling is optional"
            continue
        # output paths and policy files are options; input files (FILES..., PATHS...) may be positional
        assert arg.name not in {"out", "output", "dest", "policy_paths"}, f"{where}: positional {arg.name}"


@pytest.mark.parametrize("path", sorted(PROGRESS), ids=lambda p: " ".join(p))
def test_commands_with_progress_take_quiet(path: tuple[str, ...]) -> None:
    names = {n for o in _options(COMMANDS[path]) if not o.hidden for n in o.opts + o.secondary_opts}
    assert {"-q", "--quiet"} <= names


def test_policy_files_are_one_option_everywhere() -> None:
    for path in [("policy", "check"), ("policy", "test"), ("policy", "compare"), ("enforce",)]:
        opts = {o.name: o for o in _options(COMMANDS[path]) if not o.hidden}
        assert _long(opts["policy_paths"]) == ["--policies"] and opts["policy_paths"].multiple, path
        params = COMMANDS[path].params
        assert not [a for a in params if isinstance(a, click.Argument) and not isinstance(a, clitools.HiddenArgument)]


def test_help_hides_old_spellings() -> None:
    runner = CliRunner()
    for args, old in [
        (["policy", "check", "--help"], "PATHS"),
        (["intel", "export", "--help"], "LEGACY_OUT"),
        (["serve", "--help"], "--webhook-secret-env"),
    ]:
        res = runner.invoke(cli, args)
        assert res.exit_code == 0 and old not in res.output and "DEPRECATED" not in res.output, args


# -- --json on an empty database -------------------------------------------------------------------------------------
JSON_COMMANDS = [
    p
    for p, c in COMMANDS.items()
    if p[0] != "share"
    and any(o.name == "as_json" for o in _options(c))
    and not any(p_.required for p_ in c.params)
    # eval evaluates the vendored data set (minutes; its --json is one indented document); analyze train
    # simulates and analyzes a dozen platforms (minutes; tests/test_account_model.py runs it small)
    and p not in {("eval",), ("analyze", "train")}
]


def _run_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().out


@pytest.mark.parametrize("path", sorted(LIST_COMMANDS), ids=lambda p: " ".join(p))
def test_list_commands_print_one_items_document_on_an_empty_database(
    path: tuple[str, ...], db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run_json(["--db", db_url, *path, "--json"], capsys)
    assert code == EXIT_OK
    doc = json.loads(out)  # one document: JSON lines or nothing at all would not parse
    assert isinstance(doc, dict) and isinstance(doc["items"], list)
    if path != ("models", "list"):  # the shipped model is registered on first use
        assert doc["items"] == []


@pytest.mark.parametrize(
    "path",
    sorted(JSON_COMMANDS),
    ids=lambda p: " ".join(p),
)
def test_every_json_command_prints_one_document(
    path: tuple[str, ...], sqlite_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run on an empty database (from the checkout, for ./policies): exit 0 prints one JSON object; an error
    (e.g. `models compare` with no candidate) prints no half document on stdout."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("STORMWATCH_POLICIES", raising=False)
    code, out = _run_json(["--db", sqlite_url, *path, "--json"], capsys)
    if code == EXIT_OK:
        assert isinstance(json.loads(out), dict), out[:200]
    else:
        assert out.strip() == "" or isinstance(json.loads(out), dict), out[:200]


def test_json_items() -> None:
    runner = CliRunner()

    @click.command()
    @clitools.json_option()
    def listing(as_json: bool) -> None:
        clitools.json_items([], total=0)
        clitools.json_items({"n": i} for i in range(2))

    res = runner.invoke(listing, ["--json"])
    first, second = res.output.splitlines()
    assert json.loads(first) == {"items": [], "total": 0}
    assert json.loads(second) == {"items": [{"n": 0}, {"n": 1}]}


# -- the generic alias helpers ---------------------------------------------------------------------------------------
@click.command("toy")
@clitools.output_option()
@clitools.deprecated_alias("--dest", target="output", new="-o/--output FILE", type=click.Path(dir_okay=False))
@clitools.deprecated_argument("`toy NAME...`", target="names", new="--name NAME", nargs=-1)
@click.option("--name", "names", multiple=True)
@clitools.quiet_option()
def toy(output: Path | None, names: tuple[str, ...], quiet: bool) -> None:
    click.echo(json.dumps({"output": None if output is None else str(output), "names": list(names), "quiet": quiet}))


def _toy(*args: str) -> tuple[int, dict[str, Any] | None, str]:
    res = CliRunner().invoke(toy, list(args))
    return res.exit_code, (json.loads(res.stdout) if res.exit_code == 0 else None), res.stderr


def test_deprecated_alias_warns_and_fills_the_new_option() -> None:
    assert _toy("-o", "a.txt", "--name", "x", "-q") == (0, {"output": "a.txt", "names": ["x"], "quiet": True}, "")
    code, out, err = _toy("--dest", "a.txt")
    assert code == 0 and out == {"output": "a.txt", "names": [], "quiet": False}
    assert err.startswith("warning: --dest is deprecated") and "use -o/--output FILE" in err
    code, out, err = _toy("x", "y")
    assert code == 0 and out is not None and out["names"] == ["x", "y"]
    assert "`toy NAME...` is deprecated" in err and "use --name NAME" in err


def test_deprecated_alias_and_new_spelling_together_is_a_usage_error() -> None:
    code, _, err = _toy("--dest", "a.txt", "-o", "b.txt")
    assert code == EXIT_USAGE and "not both" in err
    code, _, err = _toy("x", "--name", "y")
    assert code == EXIT_USAGE and "not both" in err


def test_hidden_argument_and_alias_are_not_in_help() -> None:
    res = CliRunner().invoke(toy, ["--help"])
    assert res.exit_code == 0
    assert "--dest" not in res.output and "NAME..." not in res.output.splitlines()[0]
    assert "-o, --output FILE" in res.output and "-q, --quiet" in res.output


def test_deprecated_alias_keeps_the_type_check() -> None:
    code, _, err = _toy("--dest", str(REPO))  # a folder where a FILE is meant
    assert code == EXIT_USAGE and "directory" in err


# -- the old spellings of real commands ------------------------------------------------------------------------------
def test_policy_check_positional_paths_still_work_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: x\nnot: [a policy\n", encoding="utf-8")
    assert main(["policy", "check", "--policies", str(POLICY)]) == EXIT_OK
    assert "deprecated" not in capsys.readouterr().err
    assert main(["policy", "check", str(POLICY)]) == EXIT_OK
    assert "`policy check PATH...` is deprecated" in capsys.readouterr().err
    assert main(["policy", "check", str(bad)]) == EXIT_INPUT  # the old spelling checks what it names
    err = capsys.readouterr().err
    assert "deprecated" in err and str(bad) in err
    assert main(["policy", "check", str(bad), "--policies", str(POLICY)]) == EXIT_USAGE


def test_intel_export_output_spellings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", f"sqlite:///{tmp_path / 'sw.db'}"]
    new, old = tmp_path / "new.json", tmp_path / "old.json"
    assert main([*db, "intel", "export", "-o", str(new), "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    assert json.loads(captured.out)["destination"] == str(new) and captured.err == ""
    assert json.loads(new.read_text())["type"] == "bundle"
    assert main([*db, "intel", "export", str(old)]) == EXIT_OK  # positional OUT: one more release
    assert "`intel export OUT` (positional) is deprecated" in capsys.readouterr().err
    assert json.loads(old.read_text())["type"] == "bundle"
    assert main([*db, "intel", "export", "--format", "misp-feed", "--out", str(tmp_path / "feed")]) == EXIT_OK
    assert (tmp_path / "feed" / "manifest.json").exists() and "deprecated" not in capsys.readouterr().err
    assert main([*db, "intel", "export", "--format", "misp-feed", str(tmp_path / "feed2")]) == EXIT_OK
    assert "use --out DIR" in capsys.readouterr().err and (tmp_path / "feed2" / "manifest.json").exists()
    assert main([*db, "share", "export", str(tmp_path / "share.json")]) == EXIT_OK  # old group, old OUT
    err = capsys.readouterr().err
    assert "`stormwatch share` is deprecated" in err and "(positional) is deprecated" in err
    for argv in (
        [],  # nowhere to write
        ["--out", str(tmp_path / "d")],  # stix is a file
        ["--format", "misp-feed", "-o", str(tmp_path / "f.json")],  # a feed is a folder
        [str(old), "-o", str(new)],  # both spellings
    ):
        assert main([*db, "intel", "export", *argv]) == EXIT_USAGE, argv


@pytest.fixture
def quick_train(monkeypatch: pytest.MonkeyPatch) -> None:
    """`stormwatch train` without the training: the output handling is what these tests are about."""
    import stormwatch.detect.cli as detect_cli
    import stormwatch.detect.evaluate as evaluate
    import stormwatch.detect.train as train

    monkeypatch.setattr(detect_cli, "read_rows", lambda paths: [])
    monkeypatch.setattr(train, "train_artifact", lambda rows, progress: {"version": "first_tier-test+0"})
    monkeypatch.setattr(train, "serialize", lambda art: b"artifact")
    monkeypatch.setattr(evaluate, "finalize_artifact", lambda art, rows: None)


@pytest.mark.usefixtures("quick_train")
def test_train_output_spellings(tmp_path: Path) -> None:
    from stormwatch.detect.cli import train_command

    runner = CliRunner()
    res = runner.invoke(train_command, ["-o", str(tmp_path / "a.json.gz"), "-q"])
    assert res.exit_code == 0 and (tmp_path / "a.json.gz").read_bytes() == b"artifact" and res.stderr == ""
    res = runner.invoke(train_command, ["--out", str(tmp_path / "models"), "--quiet"])
    assert res.exit_code == 0 and (tmp_path / "models" / "first_tier-test+0.json.gz").exists()
    assert "deprecated" not in res.stderr
    res = runner.invoke(train_command, ["--out", str(tmp_path / "old.json.gz")])  # the old --out FILE
    assert res.exit_code == 0 and (tmp_path / "old.json.gz").read_bytes() == b"artifact"
    assert "`train --out FILE` is deprecated" in res.stderr
    res = runner.invoke(train_command, ["--out", str(tmp_path / "old.json.gz"), "-o", str(tmp_path / "b.json.gz")])
    assert res.exit_code == EXIT_USAGE and "not both" in res.stderr
    res = runner.invoke(train_command, ["--out", str(tmp_path / "models"), "-o", str(tmp_path / "b.json.gz")])
    assert res.exit_code == EXIT_USAGE and not (tmp_path / "b.json.gz").exists()


def test_train_target(tmp_path: Path) -> None:
    from stormwatch.detect.cli import train_target

    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"")
    assert train_target("a.json.gz", None) == ("a.json.gz", None)
    assert train_target(None, str(tmp_path / "dir")) == (None, str(tmp_path / "dir"))
    assert train_target(None, str(tmp_path / "new")) == (None, str(tmp_path / "new"))  # a new folder
    assert train_target(None, str(tmp_path / "file")) == (str(tmp_path / "file"), None)  # an existing file
    assert train_target(None, str(tmp_path / "m.json")) == (str(tmp_path / "m.json"), None)
    assert train_target(None, None) == (None, None)


def test_serve_secret_env_spellings(capsys: pytest.CaptureFixture[str]) -> None:
    """`serve --webhook-secret-env` is the old name of `--secret-env` (as enforce and actions spell it). Both stop
    at the loopback check here, before any server starts; only the old one warns."""
    assert main(["serve", "--host", "192.0.2.1", "--secret-env", "X"]) == EXIT_CONFIG
    assert "deprecated" not in capsys.readouterr().err
    assert main(["serve", "--host", "192.0.2.1", "--webhook-secret-env", "X"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "--webhook-secret-env is deprecated" in err and "use --secret-env NAME" in err
    assert main(["serve", "--webhook-secret-env", "X", "--secret-env", "Y"]) == EXIT_USAGE


def test_short_quiet_on_simulate_and_classify(tmp_path: Path) -> None:
    from stormwatch.simulate.cli import simulate_command

    res = CliRunner().invoke(simulate_command, ["--out", str(tmp_path / "s"), "--accounts", "20", "--days", "1", "-q"])
    assert res.exit_code == 0 and res.stdout == "" and (tmp_path / "s" / "events.jsonl").exists()
