"""The report package's built-in plugin: ``stormwatch report``."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "report": Command(
            "stormwatch.report.cli:report_command",
            "Write a transparency report (html, pdf, md, json) with k-suppressed aggregates.",
        )
    }
