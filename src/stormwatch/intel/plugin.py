"""Intel's built-in plugin: the STIX and MISP-feed exporters and ``stormwatch intel`` (``share``: old name)."""

from __future__ import annotations

from collections.abc import Mapping

from stormwatch.plugins import Command, hookimpl

#: ``intel export --format NAME`` -> ``f(store, policy, out, *, recipient, findings) -> dict``
EXPORTERS: dict[str, str] = {
    "stix": "stormwatch.intel.service:export_stix_file",
    "misp-feed": "stormwatch.intel.service:export_misp_feed",
}


@hookimpl
def stormwatch_exporters() -> Mapping[str, str]:
    return EXPORTERS


@hookimpl
def stormwatch_cli_commands() -> Mapping[str, Command]:
    return {
        "intel": Command(
            "stormwatch.intel.cli:intel_group",
            "Threat intelligence in and out: STIX 2.1, TAXII 2.1 server and pull, MISP.",
        ),
        "share": Command("stormwatch.intel.cli:share_group", "(deprecated: use `intel`)", deprecated="intel"),
    }
