"""The watcher's built-in plugin: the ``watch`` command."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "watch": Command(
            "stormwatch.watch.cli:watch_command",
            "Run score, analyze, enforce, notify and intel sync continuously (health, metrics).",
        ),
    }
