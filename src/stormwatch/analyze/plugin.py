"""Analysis's built-in plugin: ``stormwatch analyze``, ``accounts`` and ``clusters``."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "analyze": Command(
            "stormwatch.analyze.cli:analyze_group", "Judge accounts, link them into clusters, attribute actors."
        ),
        "accounts": Command(
            "stormwatch.analyze.cli:accounts_group", "Judged accounts: export, show timeline and evidence."
        ),
        "clusters": Command("stormwatch.analyze.cli:clusters_group", "Clusters of linked accounts: list, show."),
    }
