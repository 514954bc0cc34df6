"""The one plugin manager (stormwatch.plugins): built-ins, in-process and entry-point plugins, errors."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click
import pytest

from stormwatch import plugins
from stormwatch.cli import main
from stormwatch.errors import EXIT_CONFIG, EXIT_OK, ConfigError
from stormwatch.plugins import Command, PluginError, hookimpl


@pytest.fixture(autouse=True)
def fresh_manager() -> Iterator[None]:
    plugins.reset()
    yield
    plugins.reset()


# -- a third-party plugin, registered in-process ----------------------------------------------------
class EchoFormat:
    """A do-nothing ingest format: sniffs files that start with ``ECHO``."""

    name = "echo"

    def sniff(self, head: bytes, path: Path) -> float:
        return 1.0 if head.startswith(b"ECHO") else 0.0

    def parse(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter(())


class TinyDetector:
    name = "tiny"

    def __init__(self, *, level: float = 0.5) -> None:
        self.level = level


class MemStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.migrated = False

    def migrate(self) -> None:
        self.migrated = True


class ListSink:
    name = "list"

    def __init__(self, opts: dict[str, Any]) -> None:
        self.opts = opts

    def send(self, action: Any) -> None:  # pragma: no cover - never delivered here
        pass


@click.command("hello")
@click.option("--who", default="world")
def hello_command(who: str) -> None:
    click.echo(f"hello {who}")


class ThirdParty:
    @hookimpl
    def stormwatch_formats(self) -> Mapping[str, Any]:
        return {"echo": EchoFormat}

    @hookimpl
    def stormwatch_detectors(self) -> Mapping[str, Any]:
        return {"tiny": TinyDetector, "keyword": TinyDetector}  # "keyword" is a built-in: the built-in wins

    @hookimpl
    def stormwatch_stores(self) -> Mapping[str, Any]:
        return {"mem": MemStore}

    @hookimpl
    def stormwatch_sinks(self) -> Mapping[str, Any]:
        return {"list": lambda **opts: ListSink(opts)}

    @hookimpl
    def stormwatch_exporters(self) -> Mapping[str, Any]:
        return {"csv": "json:dumps"}

    @hookimpl
    def stormwatch_api_extensions(self) -> Mapping[str, Any]:
        return {"third": lambda app: None}

    @hookimpl
    def stormwatch_cli_commands(self) -> Mapping[str, Any]:
        return {
            "hello": Command(hello_command, "Say hello (a plugin command)."),
            "hi": Command(hello_command, "old name", deprecated="hello"),
        }


def test_builtins_register_through_the_manager() -> None:
    pm = plugins.get_manager()
    for name in plugins.BUILTIN_PLUGINS:
        assert pm.has_plugin(name)
    assert set(plugins.entries("stores")) >= {"sqlite", "postgresql", "postgres"}
    assert set(plugins.entries("formats")) == {"canonical", "openai_batch", "openai_http_log", "litellm", "otlp"}
    assert list(plugins.entries("detectors")) == ["first_tier", "keyword", "embedding", "judge", "encoder", "cascade"]
    assert set(plugins.entries("sinks")) == {"webhook", "outbox", "memory"}
    assert set(plugins.entries("exporters")) == {"stix", "misp-feed"}
    assert "taxii" in plugins.entries("api_extensions")
    cmds = plugins.entries("cli_commands")
    assert list(cmds)[:2] == ["demo", "simulate"] and cmds["share"].deprecated == "intel"
    assert all(e.source == "builtin" for e in cmds.values())


def test_every_builtin_command_target_is_a_click_command() -> None:
    for name, entry in plugins.entries("cli_commands").items():
        assert isinstance(entry.load(), click.Command), name


@pytest.mark.parametrize("kind", [k for k in plugins.KINDS if k != "cli_commands"])
def test_every_builtin_target_loads(kind: str) -> None:
    """A module moved without its plugin entry is caught here (a missing built-in is an error)."""
    pytest.importorskip("fastapi")
    for name, entry in plugins.entries(kind).items():
        assert entry.source == "builtin"
        assert callable(entry.load()), f"{kind}:{name}"


def test_in_process_plugin_reaches_every_kind(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stormwatch.api.extensions import load_extensions
    from stormwatch.detect.base import available_detectors, get_detector
    from stormwatch.disrupt.sinks import make_sink
    from stormwatch.ingest.formats import formats, get_format, sniff_format
    from stormwatch.store import open_store

    assert "echo" not in formats()
    name = plugins.register(ThirdParty(), "third-party")
    assert name == "third-party"
    assert isinstance(get_format("echo"), EchoFormat)  # the formats cache follows the registration
    f = tmp_path / "x.log"
    f.write_bytes(b"ECHO 1\n")
    assert sniff_format(f).name == "echo"
    det = get_detector("tiny", level=0.9)
    assert isinstance(det, TinyDetector) and det.level == 0.9
    assert available_detectors()["keyword"] == "stormwatch.detect.base:KeywordDetector"  # built-in kept
    assert available_detectors()["tiny"].endswith(":TinyDetector")
    store: Any = open_store("mem://somewhere")
    assert isinstance(store, MemStore) and store.migrated and store.url == "mem://somewhere"
    sink: Any = make_sink("list", outbox="o.jsonl")
    assert isinstance(sink, ListSink) and sink.opts["outbox"] == "o.jsonl"
    assert plugins.load("exporters", "csv") is json.dumps
    assert [n for n, _ in load_extensions()][-1] == "third"

    assert main(["--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "hello" in out and "Say hello" in out and " hi " not in out  # the old name is hidden
    assert main(["hello", "--who", "plugins"]) == EXIT_OK
    assert main(["hi"]) == EXIT_OK  # ...but it works
    assert capsys.readouterr().out.splitlines() == ["hello plugins", "hello world"]

    plugins.unregister("third-party")
    with pytest.raises(KeyError):
        get_detector("tiny")
    assert "echo" not in formats()


def test_register_twice_and_register_entries() -> None:
    plugins.register(ThirdParty(), "dup")
    with pytest.raises(PluginError, match="'dup' is already registered"):
        plugins.register(ThirdParty(), "dup")
    plugins.register_entries("exporters", {"one": "json:dumps"}, name="x")
    plugins.register_entries("exporters", {"two": "json:loads"}, name="x", replace=True)
    assert "one" not in plugins.entries("exporters") and plugins.load("exporters", "two") is json.loads
    with pytest.raises(ValueError, match="unknown plugin kind"):
        plugins.register_entries("nope", {}, name="y")
    with pytest.raises(ValueError, match="unknown plugin kind"):
        plugins.entries("nope")


def test_unknown_names_keep_their_error_types() -> None:
    from stormwatch.detect.base import get_detector
    from stormwatch.disrupt.sinks import make_sink
    from stormwatch.errors import InputError
    from stormwatch.ingest.formats import get_format
    from stormwatch.store import open_store

    with pytest.raises(KeyError):
        get_detector("nope")
    with pytest.raises(InputError, match="unknown format"):
        get_format("nope")
    with pytest.raises(ConfigError, match="unsupported database URL"):
        open_store("nope://x")
    with pytest.raises(ConfigError, match="unknown sink") as err:
        make_sink("nope")
    assert "memory, outbox, webhook" in (err.value.hint or "")


# -- errors name the plugin ---------------------------------------------------------------------------
class Broken:
    @hookimpl
    def stormwatch_detectors(self) -> Mapping[str, Any]:
        raise RuntimeError("boom")


class NotAMapping:
    @hookimpl
    def stormwatch_stores(self) -> Any:
        return ["sqlite"]


class Typo:
    @hookimpl
    def stormwatch_detector(self) -> Mapping[str, Any]:  # no such hook
        return {}


class BadTargets:
    @hookimpl
    def stormwatch_detectors(self) -> Mapping[str, Any]:
        return {"ghost": "no_such_module_xyz:Ghost", "noclass": "json:dumps", "nocolon": "json"}

    @hookimpl
    def stormwatch_cli_commands(self) -> Mapping[str, Any]:
        return {"ghost": ("no_such_module_xyz:cmd", "ghost"), "notcmd": "json:dumps"}

    @hookimpl
    def stormwatch_api_extensions(self) -> Mapping[str, Any]:
        return {"notcallable": "json:__name__"}

    @hookimpl
    def stormwatch_formats(self) -> Mapping[str, Any]:
        return {"nameless": "json:JSONDecoder"}


def test_a_failing_hook_names_the_plugin() -> None:
    plugins.register(Broken(), "broken-plugin")
    with pytest.raises(PluginError, match="'broken-plugin' failed in stormwatch_detectors: RuntimeError: boom"):
        plugins.entries("detectors")
    plugins.unregister("broken-plugin")
    plugins.register(NotAMapping(), "list-plugin")
    with pytest.raises(PluginError, match="'list-plugin': stormwatch_stores must return a mapping"):
        plugins.entries("stores")


def test_an_unknown_hook_is_refused() -> None:
    with pytest.raises(PluginError, match="typo-plugin") as err:
        plugins.register(Typo(), "typo-plugin")
    assert err.value.plugin == "typo-plugin"
    assert not plugins.get_manager().has_plugin("typo-plugin")


def test_bad_targets_name_the_plugin(capsys: pytest.CaptureFixture[str]) -> None:
    from stormwatch.api.extensions import load_extensions
    from stormwatch.detect.base import get_detector
    from stormwatch.ingest.formats import formats

    plugins.register(BadTargets(), "bad-targets")
    with pytest.raises(PluginError, match=r"plugin 'bad-targets' could not load detector 'ghost'.*ModuleNotFound"):
        get_detector("ghost")
    with pytest.raises(PluginError, match=r"'bad-targets': detector 'noclass'.*not a class"):
        get_detector("noclass")
    with pytest.raises(PluginError, match="expected 'module:attribute'"):
        get_detector("nocolon")
    with pytest.raises(PluginError, match="not callable"):
        load_extensions()
    with pytest.raises(PluginError, match=r"'bad-targets': format 'nameless'.*has no name"):
        formats()
    assert main(["ghost"]) == EXIT_CONFIG
    assert "plugin 'bad-targets' could not load command 'ghost'" in capsys.readouterr().err
    assert main(["notcmd"]) == EXIT_CONFIG
    assert "is not a click command" in capsys.readouterr().err


def test_a_missing_builtin_is_an_error_never_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from stormwatch.ingest import plugin as ingest_plugin
    from stormwatch.ingest.formats import formats

    monkeypatch.setitem(ingest_plugin.FORMATS, "gone", "stormwatch.ingest.formats.gone:GoneFormat")
    plugins.reset()
    with pytest.raises(PluginError, match=r"built-in plugin 'stormwatch.ingest.plugin' could not load format 'gone'"):
        formats()
    monkeypatch.delitem(ingest_plugin.FORMATS, "gone")

    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", (*plugins.BUILTIN_PLUGINS, "stormwatch.gone.plugin"))
    plugins.reset()
    with pytest.raises(PluginError, match=r"built-in plugin 'stormwatch\.gone\.plugin' cannot be imported") as err:
        plugins.get_manager()
    assert err.value.plugin == "stormwatch.gone.plugin" and err.value.exit_code == EXIT_CONFIG


def test_trace_logs_loads(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from stormwatch.detect.base import get_detector

    monkeypatch.setenv(plugins.TRACE_ENV, "1")
    plugins.register(ThirdParty(), "third-party")
    get_detector("keyword")
    err = capsys.readouterr().err
    assert "[stormwatch.plugins] registered builtin plugin stormwatch.detect.plugin" in err
    assert "load detectors:keyword -> stormwatch.detect.base:KeywordDetector" in err
    assert "detectors:keyword from third-party ignored: already registered by stormwatch.detect.plugin" in err


# -- third-party plugins through entry points ---------------------------------------------------------
def _fake_distribution(root: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    dist = root / f"{name}-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    for mod, src in modules.items():
        (root / f"{mod}.py").write_text(textwrap.dedent(src))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


PLUGIN_MODULE = """
    from stormwatch.plugins import Command, hookimpl

    class Upper:
        name = "upper"
        def sniff(self, head, path):
            return 0.0

    @hookimpl
    def stormwatch_formats():
        return {"upper": "sw_fake_plugin:Upper"}

    @hookimpl
    def stormwatch_cli_commands():
        return {"fake-cmd": Command("sw_fake_plugin:cmd", "A command from an installed plugin.")}

    import click

    @click.command("fake-cmd")
    def cmd():
        click.echo("fake ran")
"""


def test_entry_point_plugin_and_legacy_groups(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stormwatch.api.extensions import load_extensions
    from stormwatch.detect.base import get_detector
    from stormwatch.ingest.formats import get_format

    _fake_distribution(
        site,
        "sw_fake",
        """
        [stormwatch]
        fake = sw_fake_plugin

        [stormwatch.detectors]
        legacy_kw = stormwatch.detect.base:KeywordDetector

        [stormwatch.api]
        legacy_ext = sw_fake_legacy:install

        [stormwatch.stores]
        fakedb = sw_fake_legacy:Store
        """,
        {
            "sw_fake_plugin": PLUGIN_MODULE,
            "sw_fake_legacy": "def install(app):\n    pass\n\nclass Store:\n    def __init__(self, url):\n"
            "        self.url = url\n",
        },
    )
    importlib.invalidate_caches()
    plugins.reset()
    pm = plugins.get_manager()
    assert pm.has_plugin("fake") and pm.has_plugin("stormwatch.detectors:legacy_kw")
    assert get_format("upper").name == "upper"
    assert type(get_detector("legacy_kw")).__name__ == "KeywordDetector"
    assert plugins.entries("detectors")["legacy_kw"].source == "entrypoint"
    names = [n for n, _ in load_extensions()]
    assert "legacy_ext" in names and "legacy_ext" not in [n for n, _ in load_extensions(entry_point_plugins=False)]
    from stormwatch.store import open_store

    assert type(open_store("fakedb://x", migrate=False)).__name__ == "Store"
    assert main(["--help"]) == EXIT_OK
    assert "A command from an installed plugin." in capsys.readouterr().out
    assert main(["fake-cmd"]) == EXIT_OK
    assert capsys.readouterr().out == "fake ran\n"


def test_a_broken_entry_point_plugin_is_named(site: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fake_distribution(
        site,
        "sw_broken",
        """
        [stormwatch]
        brokenplug = sw_broken_plugin
        """,
        {"sw_broken_plugin": "raise ImportError('needs libfoo')\n"},
    )
    importlib.invalidate_caches()
    plugins.reset()
    with pytest.raises(
        PluginError, match=r"plugin 'brokenplug' \(sw_broken_plugin\) failed to load: ImportError"
    ) as err:
        plugins.get_manager()
    assert err.value.plugin == "brokenplug" and "brokenplug" in (err.value.hint or "")
    plugins.reset()
    assert main(["--help"]) == EXIT_CONFIG
    assert "brokenplug" in capsys.readouterr().err


def test_a_broken_legacy_entry_is_named_when_used(site: Path) -> None:
    from stormwatch.detect.base import get_detector

    _fake_distribution(site, "sw_legacy_broken", "[stormwatch.detectors]\nbad = sw_missing_mod:Det\n", {})
    importlib.invalidate_caches()
    plugins.reset()
    with pytest.raises(PluginError, match=r"plugin 'stormwatch.detectors:bad' could not load detector 'bad'") as err:
        get_detector("bad")
    assert "uninstall" in (err.value.hint or "")


# -- `stormwatch --help` stays light -------------------------------------------------------------------
HEAVY = (
    "numpy", "scipy", "sklearn", "fastapi", "uvicorn", "stix2", "yaml", "orjson", "psycopg",
    "stormwatch.store.base", "stormwatch.store.sql", "stormwatch.detect.base", "stormwatch.api.app",
    "stormwatch.simulate.core", "stormwatch.ingest.formats", "stormwatch.intel.cli", "stormwatch.disrupt.cli",
)  # fmt: skip


def test_help_imports_no_heavy_module() -> None:
    code = (
        "import contextlib, io, json, sys\n"
        "from stormwatch.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = main(['--help'])\n"
        "print(json.dumps({'rc': rc, 'modules': sorted(sys.modules), 'help': out.getvalue()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout)
    assert result["rc"] == EXIT_OK and "simulate" in result["help"]
    loaded = set(result["modules"])
    assert not [m for m in HEAVY if m in loaded]
