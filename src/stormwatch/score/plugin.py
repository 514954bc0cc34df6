"""Scoring's built-in plugin: ``stormwatch score`` and ``stormwatch models``."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "score": Command(
            "stormwatch.score.cli:score_command", "Score stored events (active model + shadow candidates)."
        ),
        "models": Command(
            "stormwatch.score.cli:models_group", "Model versions: list, add, compare in shadow, promote."
        ),
    }
