"""The one plugin manager: stores, ingest formats, detectors, sinks, exporters, API extensions, CLI commands.

stormwatch is extended through `pluggy <https://pluggy.readthedocs.io>`_ (the plugin system of
pytest and tox). :class:`Specs` declares one hook per kind of plugin; each hook takes no argument
and returns a mapping ``name -> target``, where a target is a ``"module:attribute"`` string
(imported only when that one entry is used, so ``stormwatch --help`` and ``open_store`` stay
fast) or, for in-process plugins, the object itself::

    # my_pkg/stormwatch_plugin.py
    from stormwatch.plugins import Command, hookimpl

    @hookimpl
    def stormwatch_formats():
        return {"myformat": "my_pkg.fmt:MyFormat"}

    @hookimpl
    def stormwatch_cli_commands():
        return {"mycmd": Command("my_pkg.cli:mycmd", "One line for `stormwatch --help`.")}

    # pyproject.toml of my_pkg
    [project.entry-points.stormwatch]
    my_pkg = "my_pkg.stormwatch_plugin"

The built-ins register exactly the same way: :data:`BUILTIN_PLUGINS` names one ``plugin.py``
module per package (``stormwatch.store.plugin``, ``stormwatch.detect.plugin``, ...), registered
first, so a third-party entry never replaces a built-in of the same name (it is ignored, and
``STORMWATCH_TRACE_PLUGINS=1`` says so). Then come the plugins of the ``stormwatch`` entry-point
group (loaded with pluggy's ``load_setuptools_entrypoints``), then the single entries of the
older per-kind groups (:data:`LEGACY_GROUPS`: ``stormwatch.stores``, ``stormwatch.parsers``,
``stormwatch.detectors``, ``stormwatch.api``), then in-process plugins (:func:`register`,
:func:`register_entries`).

Errors name the plugin: a plugin that cannot be imported or registered, a hook that fails, or an
entry whose target cannot be imported raises :class:`PluginError` (a ``ConfigError``, exit code 3)
with the plugin's name in the message. A built-in that is missing is an error too, never skipped.

This module is the bottom layer: it imports nothing of stormwatch but :mod:`stormwatch.errors`
(the built-in plugin modules are imported by name).
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from stormwatch.errors import ConfigError, StormwatchError

__all__ = [
    "BUILTIN_PLUGINS",
    "ENTRY_POINT_GROUP",
    "KINDS",
    "LEGACY_GROUPS",
    "TRACE_ENV",
    "Command",
    "Entry",
    "PluginError",
    "Specs",
    "entries",
    "generation",
    "get_manager",
    "hookimpl",
    "hookspec",
    "load",
    "register",
    "register_entries",
    "reset",
    "unregister",
]

PROJECT = "stormwatch"
ENTRY_POINT_GROUP = "stormwatch"
TRACE_ENV = "STORMWATCH_TRACE_PLUGINS"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: every kind of plugin; the hook of kind ``k`` is ``stormwatch_<k>``
KINDS: tuple[str, ...] = ("stores", "formats", "detectors", "sinks", "exporters", "api_extensions", "cli_commands")

#: the built-in plugins, registered first and in this order (it is also the order of `stormwatch --help`)
BUILTIN_PLUGINS: tuple[str, ...] = (
    "stormwatch.simulate.plugin",
    "stormwatch.ingest.plugin",
    "stormwatch.store.plugin",
    "stormwatch.detect.plugin",
    "stormwatch.score.plugin",
    "stormwatch.intel.plugin",
    "stormwatch.analyze.plugin",
    "stormwatch.disrupt.plugin",
    "stormwatch.report.plugin",
    "stormwatch.api.plugin",
    "stormwatch.watch.plugin",
)

#: entry-point groups from before the one manager: each entry is one ``name = "module:attr"`` of one kind
LEGACY_GROUPS: dict[str, str] = {
    "stormwatch.stores": "stores",
    "stormwatch.parsers": "formats",
    "stormwatch.detectors": "detectors",
    "stormwatch.api": "api_extensions",
}


class PluginError(ConfigError):
    """A plugin could not be loaded, registered or used; ``plugin`` names it."""

    def __init__(self, message: str, *, plugin: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.plugin = plugin


@dataclass(frozen=True)
class Command:
    """A CLI command: ``target`` is a ``click.Command`` or its ``"module:attribute"``.

    ``help`` is the line `stormwatch --help` shows without importing the command. ``deprecated``
    names the command that replaces this one: the old name keeps working but is not listed.
    """

    target: Any
    help: str = ""
    deprecated: str | None = None


class Specs:
    """The hooks. Each returns ``{name: target}``; a target is ``"module:attribute"`` or the object."""

    @hookspec
    def stormwatch_stores(self) -> Mapping[str, Any]:  # type: ignore[empty-body]
        """URL scheme (``sqlite``, ``postgresql``) -> a Store class, called as ``cls(url)``."""

    @hookspec
    def stormwatch_formats(self) -> Mapping[str, Any]:  # type: ignore[empty-body]
        """Format name -> an ingest ``Format`` class (instantiated without arguments) or instance."""

    @hookspec
    def stormwatch_detectors(self) -> Mapping[str, Any]:  # type: ignore[empty-body]
        """Detector name -> a detector class following ``stormwatch.detect.base.Detector``."""

    @hookspec
    def stormwatch_sinks(self) -> Mapping[str, Any]:  # type: ignore[empty-body]
        """Sink name (``--sink NAME``) -> a factory ``f(*, webhook_url, secret_env, outbox, timeout) -> Sink``."""

    @hookspec
    def stormwatch_exporters(self) -> Mapping[str, Any]:  # type: ignore[empty-body]
        """Intel export format (``intel export --format NAME``) -> ``f(store, policy, out, *, recipient,
        findings) -> dict`` (the summary the CLI prints)."""

    @hookspec
    def stormwatch_api_extensions(self) -> Mapping[str, Any]:  # type: ignore[empty-body]
        """Extension name -> ``install(app: FastAPI) -> None`` (see ``stormwatch.api.extensions``)."""

    @hookspec
    def stormwatch_cli_commands(self) -> Mapping[str, Any]:  # type: ignore[empty-body]
        """Command name -> :class:`Command` (or a ``(target, help)`` pair, or a bare target)."""


@dataclass(frozen=True)
class Entry:
    """One registered name of one kind, and the plugin that registered it."""

    kind: str
    name: str
    target: Any
    plugin: str
    source: str  # "builtin", "entrypoint" or "inprocess"
    help: str = ""
    deprecated: str | None = None

    @property
    def spec(self) -> str:
        """``module:attribute`` of the target (computed for an object target)."""
        if isinstance(self.target, str):
            return self.target
        return f"{getattr(self.target, '__module__', '?')}:{getattr(self.target, '__qualname__', repr(self.target))}"

    def load(self) -> Any:
        """Import the target (once per process: modules are cached) and return it."""
        if not isinstance(self.target, str):
            return self.target
        module, sep, attr = self.target.partition(":")
        try:
            if not sep or not module or not attr:
                raise ValueError("expected 'module:attribute'")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except StormwatchError:
            raise
        except Exception as exc:
            what = "built-in plugin" if self.source == "builtin" else "plugin"
            raise PluginError(
                f"{what} {self.plugin!r} could not load {_singular(self.kind)} {self.name!r} from "
                f"{self.target}: {type(exc).__name__}: {exc}",
                plugin=self.plugin,
                hint=None if self.source == "builtin" else f"fix or uninstall the plugin {self.plugin!r}",
            ) from exc
        _trace(f"load {self.kind}:{self.name} -> {self.target} (plugin {self.plugin})")
        return obj


def _singular(kind: str) -> str:
    return {"api_extensions": "API extension", "cli_commands": "command"}.get(kind, kind.rstrip("s"))


def _trace(msg: str) -> None:
    if os.environ.get(TRACE_ENV):
        print(f"[stormwatch.plugins] {msg}", file=sys.stderr)


# -- the manager ----------------------------------------------------------------------------------
_lock = threading.RLock()
_pm: pluggy.PluginManager | None = None
_sources: dict[str, str] = {}
_generation = 0


def generation() -> int:
    """A number that changes whenever the set of plugins does (for callers that cache loaded entries)."""
    get_manager()
    return _generation


def _bump() -> None:
    global _generation
    _generation += 1


def _register(pm: pluggy.PluginManager, plugin: object, name: str, source: str) -> None:
    try:
        pm.register(plugin, name=name)
    except Exception as exc:
        raise PluginError(f"plugin {name!r} could not be registered: {exc}", plugin=name) from exc
    _sources[name] = source
    _trace(f"registered {source} plugin {name}")


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    from importlib.metadata import entry_points

    eps = entry_points()
    for ep in eps.select(group=ENTRY_POINT_GROUP):
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        try:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=ep.name)
        except Exception as exc:
            raise PluginError(
                f"plugin {ep.name!r} ({ep.value}) failed to load: {type(exc).__name__}: {exc}",
                plugin=ep.name,
                hint=f"fix or uninstall the package that provides the {ENTRY_POINT_GROUP!r} entry point {ep.name!r}",
            ) from exc
        _sources[ep.name] = "entrypoint"
        _trace(f"registered entrypoint plugin {ep.name} ({ep.value})")
    for group, kind in LEGACY_GROUPS.items():
        for ep in eps.select(group=group):
            name = f"{group}:{ep.name}"
            if not pm.has_plugin(name):
                _register(pm, _entries_plugin(kind, {ep.name: ep.value}), name, "entrypoint")


def get_manager() -> pluggy.PluginManager:
    """The process-wide manager: built-ins, then entry points (created on first use)."""
    global _pm
    with _lock:
        if _pm is None:
            _sources.clear()
            pm = pluggy.PluginManager(PROJECT)
            pm.add_hookspecs(Specs)
            for modname in BUILTIN_PLUGINS:
                try:
                    module = importlib.import_module(modname)
                except Exception as exc:
                    raise PluginError(
                        f"built-in plugin {modname!r} cannot be imported: {type(exc).__name__}: {exc}",
                        plugin=modname,
                        hint="the installation is incomplete; reinstall stormwatch",
                    ) from exc
                _register(pm, module, modname, "builtin")
            _load_entry_points(pm)
            try:
                pm.check_pending()
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"plugin {exc.plugin!r}: {exc}", plugin=str(exc.plugin)) from exc
            _pm = pm
            _bump()
        return _pm


def reset() -> None:
    """Forget the manager and every in-process registration (the next use rebuilds it; for tests)."""
    global _pm
    with _lock:
        _pm = None
        _sources.clear()
        _bump()


def register(plugin: object, name: str | None = None) -> str:
    """Register an in-process plugin (a module, class or object with ``@hookimpl`` functions)."""
    with _lock:
        pm = get_manager()
        name = name or pm.get_canonical_name(plugin)
        if pm.has_plugin(name):
            raise PluginError(f"a plugin named {name!r} is already registered", plugin=name)
        _register(pm, plugin, name, "inprocess")
        try:
            pm.check_pending()
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=name)
            raise PluginError(f"plugin {name!r}: {exc}", plugin=name) from exc
        _bump()
        return name


def unregister(name: str) -> None:
    """Remove an in-process plugin by name (no error when there is none)."""
    with _lock:
        pm = get_manager()
        if pm.has_plugin(name):
            pm.unregister(name=name)
            _sources.pop(name, None)
            _bump()


def _entries_plugin(kind: str, table: Mapping[str, Any]) -> object:
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; one of {', '.join(KINDS)}")
    frozen = dict(table)

    def impl() -> Mapping[str, Any]:
        return frozen

    return types.SimpleNamespace(**{f"stormwatch_{kind}": hookimpl(impl)})


def register_entries(kind: str, table: Mapping[str, Any], *, name: str, replace: bool = False) -> str:
    """Register ``{name: target}`` of one kind as an in-process plugin called ``name``."""
    with _lock:
        if replace:
            unregister(name)
        return register(_entries_plugin(kind, table), name)


def _normalise(kind: str, name: str, value: Any, plugin: str, source: str) -> Entry:
    if kind == "cli_commands":
        if isinstance(value, Command):
            return Entry(kind, name, value.target, plugin, source, value.help, value.deprecated)
        if isinstance(value, tuple):
            target, help_ = value
            return Entry(kind, name, target, plugin, source, str(help_))
    return Entry(kind, name, value, plugin, source)


def entries(kind: str) -> dict[str, Entry]:
    """Every registered name of ``kind`` in registration order (built-ins first); nothing is imported."""
    if kind not in KINDS:
        raise ValueError(f"unknown plugin kind {kind!r}; one of {', '.join(KINDS)}")
    pm = get_manager()
    caller = getattr(pm.hook, f"stormwatch_{kind}")
    found: dict[str, Entry] = {}
    for impl in caller.get_hookimpls():  # registration order (pluggy *calls* them last-first)
        plugin = impl.plugin_name
        source = _sources.get(plugin, "inprocess")
        try:
            table = impl.function()
        except Exception as exc:
            raise PluginError(
                f"plugin {plugin!r} failed in stormwatch_{kind}: {type(exc).__name__}: {exc}", plugin=plugin
            ) from exc
        if table is None:
            continue
        if not isinstance(table, Mapping):
            raise PluginError(
                f"plugin {plugin!r}: stormwatch_{kind} must return a mapping, not {type(table).__name__}",
                plugin=plugin,
            )
        for name, value in table.items():
            if name in found:
                _trace(f"{kind}:{name} from {plugin} ignored: already registered by {found[name].plugin}")
                continue
            found[str(name)] = _normalise(kind, str(name), value, plugin, source)
    return found


def load(kind: str, name: str) -> Any:
    """Import and return the target registered as ``name`` of ``kind``; ``KeyError`` if there is none."""
    return entries(kind)[name].load()
