"""The simulator's built-in plugin: ``stormwatch demo`` and ``stormwatch simulate``.

``demo`` (``stormwatch.demo``, the top layer) runs the whole pipeline on a simulated platform; it
is listed here, first, as a string, so nothing below the top imports it.
"""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "demo": Command("stormwatch.demo:demo_command", "Run the whole pipeline on a simulated platform."),
        "simulate": Command("stormwatch.simulate.cli:simulate_command", "Write a month of a simulated AI platform."),
    }
