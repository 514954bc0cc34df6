"""``stormwatch intel ...``: threat intelligence in and out (STIX 2.1, TAXII 2.1, MISP) from the shell.

``stormwatch intel ...`` is the same group under its old name (hidden, deprecated: it warns).
"""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from stormwatch.clitools import (
    HiddenArgument,
    echo_json,
    open_ctx_store,
    out_dir_option,
    output_option,
    warn_deprecated,
)
from stormwatch.errors import EXIT_QUARANTINED
from stormwatch.store import Store


def _store(ctx: click.Context) -> Store:
    from stormwatch.store import open_store

    return open_store(ctx.find_root().obj.get("db_url") if ctx.find_root().obj else None)


def _echo(obj: object) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode())


@click.command("export")
@click.argument("legacy_out", required=False, cls=HiddenArgument, type=click.Path(path_type=Path))
@output_option(help="--format stix: the STIX 2.1 bundle file to write.")
@out_dir_option(help="--format misp-feed: the MISP feed folder to write.")
@click.option(
    "--format",
    "fmt",
    default="stix",
    show_default=True,
    callback=lambda _ctx, _param, value: _exporter(value),
    help="stix: one STIX 2.1 bundle file (-o FILE); misp-feed: a MISP feed folder (--out DIR); or an exporter "
    "a plugin adds (stormwatch_exporters hook).",
)
@click.option("--recipient", metavar="NAME", help="Recipient in the sharing policy (none: no TLP:RED at all).")
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(path_type=Path),
    envvar="STORMWATCH_SHARE_POLICY",
    help="Sharing policy TOML [env: STORMWATCH_SHARE_POLICY]; default: the closed built-in policy.",
)
@click.option(
    "--findings",
    "findings_path",
    type=click.Path(path_type=Path),
    help="Export these findings (JSON) instead of the analysis tables.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def export_command(
    ctx: click.Context,
    legacy_out: Path | None,
    output: Path | None,
    out: Path | None,
    fmt: str,
    recipient: str | None,
    policy_path: Path | None,
    findings_path: Path | None,
    as_json: bool,
) -> None:
    """Write what stormwatch found as a STIX 2.1 bundle (-o FILE) or a MISP feed (--format misp-feed --out DIR)
    through the sharing policy."""
    dest = export_destination(fmt, legacy_out, output, out)
    from stormwatch import plugins
    from stormwatch.intel.findings import Findings
    from stormwatch.intel.sharing_policy import load_policy

    policy = load_policy(policy_path)
    findings = Findings.from_dict(orjson.loads(findings_path.read_bytes())) if findings_path else None
    with _store(ctx) as store:
        exporter = plugins.load("exporters", fmt)
        res = exporter(store, policy, dest, recipient=recipient, findings=findings)
    if as_json:
        _echo(res)
    else:
        click.echo(
            f"wrote {res['destination']}: {res['objects']} STIX objects, {res['clusters']} actor clusters "
            f"({res['clusters_withheld']} withheld by policy), highest marking {res['max_tlp'] or '-'}"
        )


def _exporter(name: str) -> str:
    """``--format``: a built-in exporter or one a plugin registered (``stormwatch_exporters`` hook)."""
    from stormwatch import plugins

    known = plugins.entries("exporters")
    if name not in known:
        raise click.BadParameter(f"{name!r} is not an exporter; choose from {', '.join(sorted(known))}")
    return name


def export_destination(fmt: str, legacy_out: Path | None, output: Path | None, out: Path | None) -> Path:
    """Where ``intel export`` writes: ``-o FILE`` for stix, ``--out DIR`` for misp-feed. The positional OUT
    of earlier releases still works for one release, with a deprecation warning."""
    new = "-o/--output FILE" if fmt == "stix" else "--out DIR" if fmt == "misp-feed" else "-o FILE or --out DIR"
    if legacy_out is not None:
        warn_deprecated("`intel export OUT` (positional)", new)
        if output is not None or out is not None:
            raise click.UsageError(f"give {new} or the old positional OUT, not both")
        return legacy_out
    if fmt not in ("stix", "misp-feed"):  # a plugin's exporter: a file or a folder, as it documents
        if (output is None) == (out is None):
            raise click.UsageError(f"--format {fmt}: give one of -o/--output FILE or --out DIR")
        return output if output is not None else out  # type: ignore[return-value]
    if fmt == "stix":
        if out is not None:
            raise click.UsageError("--format stix writes one file: give -o/--output FILE, not --out DIR")
        if output is None:
            raise click.UsageError("give -o/--output FILE (the STIX bundle to write)")
        return output
    if output is not None:
        raise click.UsageError("--format misp-feed writes a folder: give --out DIR, not -o/--output FILE")
    if out is None:
        raise click.UsageError("give --out DIR (the MISP feed folder to write)")
    return out


@click.command("pull")
@click.option("--taxii", "url", required=True, metavar="URL", help="The partner's TAXII 2.1 API root URL.")
@click.option("--collection", required=True, metavar="ID")
@click.option("--user", metavar="NAME", help="HTTP Basic user.")
@click.option("--password", envvar="STORMWATCH_TAXII_PASSWORD", help="[env: STORMWATCH_TAXII_PASSWORD]")
@click.option("--token", envvar="STORMWATCH_TAXII_TOKEN", help="Bearer token [env: STORMWATCH_TAXII_TOKEN].")
@click.option("--page-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option(
    "--max-pages",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Stop after this many pages (a later run resumes from the checkpoint).",
)
@click.option(
    "--max-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    help="Stop after this long (a later run resumes from the checkpoint).",
)
@click.option(
    "--max-response-mb",
    type=click.IntRange(min=1),
    default=64,
    show_default=True,
    help="Refuse a response body larger than this (read as a stream, never buffered past it).",
)
@click.option(
    "--allow-redirect-host",
    "allow_redirect_hosts",
    multiple=True,
    metavar="HOST[:PORT]",
    help="Follow redirects to this host too (repeatable); by default only within the URL's scheme/host/port.",
)
@click.option("--no-import", is_flag=True, help="Only store the objects; do not run the intel import.")
@click.option("--insecure", is_flag=True, help="Do not verify TLS certificates.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def pull_command(
    ctx: click.Context,
    url: str,
    collection: str,
    user: str | None,
    password: str | None,
    token: str | None,
    page_size: int,
    max_pages: int,
    max_seconds: float,
    max_response_mb: int,
    allow_redirect_hosts: tuple[str, ...],
    no_import: bool,
    insecure: bool,
    as_json: bool,
) -> None:
    """Take a partner's TAXII collection in (checkpointed: a re-run fetches only what is new)."""
    from stormwatch.intel.pull import PullLimits, pull

    try:
        limits = PullLimits(
            max_response_bytes=max_response_mb * 1024 * 1024,
            max_pages=max_pages,
            max_seconds=max_seconds,
            allow_redirect_hosts=allow_redirect_hosts,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--allow-redirect-host") from None
    with _store(ctx) as store:
        s = pull(
            store,
            url,
            collection,
            user=user,
            password=password,
            token=token,
            page_size=page_size,
            verify=not insecure,
            import_into_intel=not no_import,
            limits=limits,
        )
    if as_json:
        _echo(s.to_dict())
    else:
        click.echo(
            f"pulled {s.objects} objects ({s.new} new) in {s.pages} pages"
            f"{' (resumed)' if s.resumed else ''}; imported into intel: {s.imported}"
            + (f"; rejected {len(s.rejected)}" if s.rejected else "")
        )
        if s.import_error:
            click.echo(f"intel import failed: {s.import_error}", err=True)
    if s.stopped:
        click.echo(f"{url}: {s.stopped}", err=True)
    if s.rejected or s.import_error:
        ctx.exit(EXIT_QUARANTINED)


@click.command("misp-import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def misp_import_command(ctx: click.Context, paths: tuple[Path, ...], as_json: bool) -> None:
    """Import MISP events (event JSON files or feed directories) into intel."""
    from stormwatch.intel.service import import_misp

    with _store(ctx) as store:
        res = import_misp(store, list(paths))
    if as_json:
        _echo(res)
    else:
        click.echo(f"imported {res['events']} MISP events as {res['stix_objects']} STIX objects")


@click.group("taxii")
def taxii_group() -> None:
    """Administer the TAXII 2.1 server's collections and permissions."""


@taxii_group.command("add-collection")
@click.argument("title")
@click.option("--root", default="api1", show_default=True)
@click.option("--description")
@click.option("--alias")
@click.option("--id", "collection_id", help="Collection id (default: a new UUID).")
@click.pass_context
def add_collection(
    ctx: click.Context, title: str, root: str, description: str | None, alias: str | None, collection_id: str | None
) -> None:
    """Create a collection; prints its id."""
    from stormwatch.intel.taxii.server import create_collection

    with _store(ctx) as store:
        click.echo(
            create_collection(
                store, title, root=root, description=description, alias=alias, collection_id=collection_id
            )
        )


@taxii_group.command("grant")
@click.argument("collection_id")
@click.argument("principal")
@click.option("--read/--no-read", default=True, show_default=True)
@click.option("--write/--no-write", default=False, show_default=True)
@click.option("--red-named", is_flag=True, help="Name the principal for TLP:RED objects posted here.")
@click.pass_context
def grant_command(
    ctx: click.Context, collection_id: str, principal: str, read: bool, write: bool, red_named: bool
) -> None:
    """Let PRINCIPAL (an API token name, or '*') read / write a collection."""
    from stormwatch.intel.taxii.server import grant

    with _store(ctx) as store:
        grant(store, collection_id, principal, read=read, write=write, red_named=red_named)


@taxii_group.command("publish")
@click.argument("collection_id")
@click.option("--recipient", metavar="NAME")
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), envvar="STORMWATCH_SHARE_POLICY")
@click.option("--findings", "findings_path", type=click.Path(path_type=Path))
@click.pass_context
def publish_command(
    ctx: click.Context, collection_id: str, recipient: str | None, policy_path: Path | None, findings_path: Path | None
) -> None:
    """Export through the policy into a collection (TLP:RED only readable by the recipient's principals)."""
    from stormwatch.intel.findings import Findings
    from stormwatch.intel.service import publish
    from stormwatch.intel.sharing_policy import load_policy

    findings = Findings.from_dict(orjson.loads(findings_path.read_bytes())) if findings_path else None
    with _store(ctx) as store:
        p = publish(store, load_policy(policy_path), collection_id, recipient=recipient, findings=findings)
    click.echo(f"published {p.status['success_count']} objects to {collection_id} ({p.red_objects} TLP:RED)")


@taxii_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5080, show_default=True)
@click.option(
    "--user",
    "users",
    multiple=True,
    metavar="NAME:PASSWORD",
    help="Standalone credentials (repeatable); inside `stormwatch serve` the API tokens are used.",
)
@click.pass_context
def serve_command(ctx: click.Context, host: str, port: int, users: tuple[str, ...]) -> None:
    """Run the TAXII 2.1 server alone (mounted at /taxii2/), for a test peer or a small deployment."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from stormwatch.intel.taxii.app import StorePool, create_taxii_app, static_authenticator

    table = dict(u.split(":", 1) for u in users if ":" in u)
    if not table:
        raise click.UsageError("give at least one --user NAME:PASSWORD")
    pool = StorePool(ctx.find_root().obj.get("db_url") if ctx.find_root().obj else None)
    app = Starlette(routes=[Mount("/taxii2", app=create_taxii_app(pool, static_authenticator(table)))])
    uvicorn.run(app, host=host, port=port, log_level="warning")


@click.group("intel")
def intel_group() -> None:
    """Threat intelligence in and out: STIX 2.1 import/export, TAXII 2.1 server and pull, MISP."""


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


intel_group.add_command(export_command)
intel_group.add_command(pull_command)
intel_group.add_command(misp_import_command)
intel_group.add_command(taxii_group)


class _DeprecatedAlias(click.Group):
    """``stormwatch share``: the ``intel`` group under its old name, for one release."""

    def invoke(self, ctx: click.Context) -> object:
        click.echo("warning: `stormwatch share` is deprecated; use `stormwatch intel`", err=True)
        return super().invoke(ctx)


share_group = _DeprecatedAlias("share", commands=intel_group.commands, help="Deprecated name of `intel`.", hidden=True)
