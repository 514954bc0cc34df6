"""The ``stormwatch`` command line.

Commands are loaded lazily from ``module:attribute`` specs so that ``stormwatch --help`` stays
fast and a command's heavy imports are paid only when it runs. ``main(argv)`` can be called from
tests and returns the exit code (table in :mod:`stormwatch.errors`).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

import click

from stormwatch import __version__
from stormwatch.errors import EXIT_ERROR, EXIT_OK, StormwatchError

#: name -> (module:attribute, one-line help shown by `stormwatch --help` without importing it)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("stormwatch.demo:demo_command", "Run the whole pipeline on a simulated platform."),
    "simulate": ("stormwatch.simulate.cli:simulate_command", "Write a month of a simulated AI platform."),
    "ingest": ("stormwatch.ingest.cli:ingest_command", "Load usage logs into the store, in any supported format."),
    "quarantine": ("stormwatch.ingest.cli:quarantine_group", "Inspect records that could not be loaded."),
    "db": ("stormwatch.store.cli:db_group", "Database schema and status."),
    "classify": ("stormwatch.detect.cli:classify_command", "Score prompts for misuse on the LLM-TTP taxonomy."),
    "score": ("stormwatch.score.cli:score_command", "Score stored events (active model + shadow candidates)."),
    "models": ("stormwatch.score.cli:models_group", "Model versions: list, add, compare in shadow, promote."),
    "train": ("stormwatch.detect.cli:train_command", "Rebuild the first-tier detection model."),
    "eval": ("stormwatch.detect.cli:eval_command", "Evaluate detectors on labelled prompts."),
    "intel": (
        "stormwatch.intel.cli:intel_group",
        "Threat intelligence in and out: STIX 2.1, TAXII 2.1 server and pull, MISP.",
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
    "share": ("stormwatch.intel.cli:share_group", "(deprecated: use `intel`)"),
}


#: old names kept for one release: they work, warn, and are not listed
DEPRECATED = {"share": "intel"}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in COMMANDS if name not in DEPRECATED])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, _, attr = entry[0].partition(":")
        cmd = getattr(importlib.import_module(module), attr)
        assert isinstance(cmd, click.Command)
        return cmd


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
