"""``stormwatch intel``: partner intelligence. More subcommands (export, pull) attach to the group."""

from __future__ import annotations

from pathlib import Path

import click

from stormwatch.cli import echo_json, open_ctx_store

__all__ = ["intel_group"]


@click.group("intel")
def intel_group() -> None:
    """Partner threat intelligence (STIX 2.1)."""


@intel_group.command("import")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.pass_context
def intel_import(ctx: click.Context, files: tuple[Path, ...], as_json: bool) -> None:
    """Load STIX 2.1 bundles: identities, intrusion-sets, threat-actors, indicators, relationships,
    marking-definitions.

    Idempotent; a newer version of an object (by `modified`) replaces the stored one; revoked
    indicators stop matching. Unsupported indicator patterns are listed with their ids. A malformed
    bundle stops with the file and object id and stores nothing of that file (exit 4).
    """
    from stormwatch.intel.importer import import_files

    with open_ctx_store(ctx) as store:
        summary = import_files(store, list(files))
    if as_json:
        echo_json(summary.to_dict())
        return
    d = summary.to_dict()
    o, ind = d["objects"], d["indicators"]
    click.echo(
        f"objects: read {o['read']}  new {o['new']}  updated {o['updated']}  unchanged {o['unchanged']}"
        f"  older (ignored) {o['older_ignored']}"
    )
    click.echo("  " + "  ".join(f"{k} {v}" for k, v in o["by_type"].items()))
    click.echo(f"indicators: supported {ind['supported']}  unsupported {ind['unsupported']}  revoked {ind['revoked']}")
    for u in ind["unsupported_list"]:
        click.echo(f"  unsupported {u['id']}: {u['reason']}")


def _attach_sharing_commands() -> None:
    """``intel export`` / ``intel pull`` / ``intel misp-import`` live in the sharing package."""
    from stormwatch.share.cli import export_command, misp_import_command, pull_command

    for cmd in (export_command, pull_command, misp_import_command):
        intel_group.add_command(cmd)


_attach_sharing_commands()
