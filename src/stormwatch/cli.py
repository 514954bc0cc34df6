"""The ``stormwatch`` command line.

Commands are loaded lazily from ``module:attribute`` specs so that ``stormwatch --help`` stays
fast and a command's heavy imports are paid only when it runs. ``main(argv)`` can be called from
tests and returns the exit code (table in :mod:`stormwatch.errors`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import orjson

from stormwatch import __version__
from stormwatch.errors import EXIT_ERROR, EXIT_OK, EXIT_QUARANTINED, StormwatchError

#: name -> (module:attribute, one-line help shown by `stormwatch --help` without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("stormwatch.demo:demo_command", "Run the whole pipeline on a simulated platform."),
    "simulate": ("stormwatch.simulate.cli:simulate_command", "Write a month of a simulated AI platform."),
    "ingest": ("stormwatch.cli:ingest_command", "Load usage logs into the store, in any supported format."),
    "quarantine": ("stormwatch.cli:quarantine_group", "Inspect records that could not be loaded."),
    "db": ("stormwatch.cli:db_group", "Database schema and status."),
    "classify": ("stormwatch.detect.cli:classify_command", "Score prompts for misuse on the LLM-TTP taxonomy."),
    "score": ("stormwatch.pipeline.cli:score_command", "Score stored events (active model + shadow candidates)."),
    "models": ("stormwatch.pipeline.cli:models_group", "Model versions: list, add, compare in shadow, promote."),
    "train": ("stormwatch.detect.cli:train_command", "Rebuild the first-tier detection model."),
    "eval": ("stormwatch.detect.cli:eval_command", "Evaluate detectors on labelled prompts."),
    "intel": (
        "stormwatch.intel.cli:intel_group",
        "Partner threat intelligence: import, export, pull (STIX 2.1, TAXII 2.1, MISP).",
    ),
    "analyze": ("stormwatch.analyze.cli:analyze_group", "Judge accounts, link them into clusters, attribute actors."),
    "accounts": ("stormwatch.analyze.cli:accounts_group", "Judged accounts: export, show timeline and evidence."),
    "clusters": ("stormwatch.analyze.cli:clusters_group", "Clusters of linked accounts: list, show."),
    "policy": ("stormwatch.disrupt.cli:policy_group", "Validate, test and compare enforcement policies."),
    "enforce": ("stormwatch.disrupt.cli:enforce_command", "Decide (dry-run/shadow) or carry out policy actions."),
    "actions": ("stormwatch.disrupt.cli:actions_group", "List, deliver and retry enforcement actions."),
    "audit": ("stormwatch.disrupt.cli:audit_group", "List and verify the hash-chained audit log."),
    "cases": ("stormwatch.disrupt.cli_cases:cases_group", "Review cases: assign, note, attach, label, close."),
    "appeals": ("stormwatch.disrupt.cli_cases:appeals_group", "File and decide appeals; reinstate accounts."),
    "labels": ("stormwatch.disrupt.cli_cases:labels_group", "Export analysts' labels as training data."),
    "serve": ("stormwatch.api.cli:serve_command", "Run the HTTP API (authenticated, loopback by default)."),
    "token": ("stormwatch.api.cli:token_group", "Create, list and revoke API tokens."),
    "share": ("stormwatch.share.cli:share_group", "Share intel: STIX/TAXII/MISP export, TAXII server, pull."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in COMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, _, attr = entry[0].partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd


def echo_json(obj: Any) -> None:
    click.echo(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode())


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="stormwatch")
@click.option(
    "--db",
    "db_url",
    envvar="STORMWATCH_DB",
    metavar="URL",
    help="Database URL: sqlite:///path.db (default sqlite:///stormwatch.db) or postgresql://... [env: STORMWATCH_DB]",
)
@click.pass_context
def cli(ctx: click.Context, db_url: str | None) -> None:
    """stormwatch: find, link, attribute and disrupt state-affiliated misuse of an AI service.

    \b
    Typical flow:
      stormwatch simulate --out sim/ --seed 1     # a month of a simulated platform
      stormwatch ingest sim/events.jsonl --accounts sim/accounts.jsonl
      stormwatch quarantine list                  # what could not be loaded, and why
      stormwatch classify prompts.jsonl -o scores.jsonl

    Exit codes: 0 ok, 1 error, 2 usage, 3 configuration, 4 bad input, 5 database,
    10 finished but some records were quarantined.
    """
    ctx.ensure_object(dict)
    ctx.obj["db_url"] = db_url


def open_ctx_store(ctx: click.Context) -> Any:
    from stormwatch.store import open_store

    return open_store(ctx.obj.get("db_url") if ctx.obj else None)


@click.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--accounts",
    "accounts",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Account records (JSONL, canonical account schema). Repeatable.",
)
@click.option(
    "--format",
    "format_name",
    metavar="NAME",
    help="Format of FILES; sniffed per file when left out. One of: canonical, openai_batch, openai_http_log, litellm.",
)
@click.option(
    "--account",
    "default_account",
    metavar="ID",
    help="Account to attribute records to when the format names none (Batch files: the batch owner).",
)
@click.option(
    "--batch-ts",
    metavar="TIME",
    help="OpenAI Batch files: the batch's created_at (RFC 3339 or epoch seconds), the time of requests "
    "whose output has none (failed, expired or missing outputs).",
)
@click.option("--batch-size", default=20000, show_default=True, help="Records per database transaction.")
@click.option(
    "--max-record-bytes",
    default=16 * 1024 * 1024,
    show_default=True,
    help="Longer records are quarantined whole instead of parsed.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Processes parsing canonical JSONL (default: cores, at most 2; 1 = no extra process).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_context
def ingest_command(
    ctx: click.Context,
    files: tuple[Path, ...],
    accounts: tuple[Path, ...],
    format_name: str | None,
    default_account: str | None,
    batch_ts: str | None,
    batch_size: int,
    max_record_bytes: int,
    workers: int | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Load usage logs into the store, in any supported format.

    Idempotent on event_id: loading the same file twice stores nothing new. Records that cannot
    be loaded go to the quarantine (see `stormwatch quarantine list`) and the command exits 10.
    """
    from stormwatch.ingest.formats.base import FormatOptions
    from stormwatch.ingest.runner import batch_time, ingest

    extra = {} if batch_ts is None else {"batch_ts": batch_time(batch_ts)}
    with open_ctx_store(ctx) as store:
        summary = ingest(
            store,
            list(files),
            format_name=format_name,
            accounts_paths=list(accounts),
            options=FormatOptions(default_account=default_account, max_record_bytes=max_record_bytes, extra=extra),
            batch_size=batch_size,
            progress=not (quiet or as_json),
            workers=workers,
        )
    if as_json:
        echo_json(summary.to_dict())
    else:
        rate = summary.read / summary.seconds if summary.seconds else 0.0
        click.echo(
            f"ingest {summary.run_id}: read {summary.read:,}  stored {summary.stored:,}  "
            f"duplicates {summary.duplicates:,}  quarantined {summary.quarantined:,}  "
            f"({summary.seconds:.1f} s, {rate:,.0f} records/s)"
        )
        if accounts:
            click.echo(
                f"accounts: read {summary.accounts_read:,}  stored {summary.accounts_stored:,}  "
                f"quarantined {summary.accounts_quarantined:,}"
            )
        if summary.any_quarantined:
            click.echo("some records were quarantined: see `stormwatch quarantine list`", err=True)
    if summary.any_quarantined:
        ctx.exit(EXIT_QUARANTINED)


@click.group("quarantine")
def quarantine_group() -> None:
    """Inspect records that could not be loaded."""


@quarantine_group.command("list")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only this ingest run.")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, raw record included.")
@click.pass_context
def quarantine_list(ctx: click.Context, run_id: str | None, limit: int, offset: int, as_json: bool) -> None:
    """List quarantined records: where they came from (file:line), the field and the reason."""
    with open_ctx_store(ctx) as store:
        rows = store.list_quarantine(run_id=run_id, limit=limit, offset=offset)
        total = store.count_quarantine(run_id)
    if as_json:
        for r in rows:
            echo_json(
                {
                    "id": r.id,
                    "run_id": r.run_id,
                    "kind": r.kind,
                    "source": r.source,
                    "line": r.line,
                    "field": r.field,
                    "reason": r.reason,
                    "raw": r.raw.decode("utf-8", "replace"),
                    "created_at": r.created_at,
                }
            )
        return
    if not rows:
        click.echo("quarantine is empty" if total == 0 else f"no rows at offset {offset} (total {total})")
        return
    for r in rows:
        where = f"{r.source}:{r.line}" if r.line is not None else r.source
        field = f" [{r.field}]" if r.field else ""
        preview = r.raw[:80].decode("utf-8", "replace").replace("\n", " ")
        click.echo(f"#{r.id} {where}{field} {r.reason}\n    {preview}{'...' if len(r.raw) > 80 else ''}")
    click.echo(f"-- {len(rows)} of {total} shown")


@click.group("db")
def db_group() -> None:
    """Database schema and status."""


@db_group.command("migrate")
@click.pass_context
def db_migrate(ctx: click.Context) -> None:
    """Apply pending schema migrations (every command also does this on start)."""
    from stormwatch.store import open_store, resolve_db_url

    store = open_store(ctx.obj.get("db_url"), migrate=False)
    try:
        applied = store.migrate()
        click.echo(
            f"{resolve_db_url(ctx.obj.get('db_url'))}: schema version {store.schema_version()}"
            + (f" (applied {applied})" if applied else " (up to date)")
        )
    finally:
        store.close()


@db_group.command("info")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def db_info(ctx: click.Context, as_json: bool) -> None:
    """Show the schema version and row counts."""
    with open_ctx_store(ctx) as store:
        info = {
            "url": store.url,
            "schema_version": store.schema_version(),
            "events": store.count_events(),
            "accounts": store.count_accounts(),
            "quarantined": store.count_quarantine(),
        }
    if as_json:
        echo_json(info)
    else:
        for k, v in info.items():
            click.echo(f"{k:15} {v}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of exiting."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="stormwatch", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_ERROR
    except StormwatchError as exc:
        click.echo(f"error: {exc}", err=True)
        if exc.hint:
            click.echo(f"hint: {exc.hint}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        return EXIT_OK
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
