"""The ``stormwatch`` command line.

Commands come from the plugin manager (:mod:`stormwatch.plugins`, hook ``stormwatch_cli_commands``;
the built-ins are in each package's ``plugin.py``) as ``module:attribute`` specs, so that
``stormwatch --help`` stays fast and a command's heavy imports are paid only when it runs.
``main(argv)`` can be called from tests and returns the exit code (table in :mod:`stormwatch.errors`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from stormwatch import __version__, plugins
from stormwatch.errors import EXIT_ERROR, EXIT_INPUT, EXIT_OK, StormwatchError


def commands() -> dict[str, plugins.Entry]:
    """Every command, built-in or plugin (``stormwatch_cli_commands`` hook), nothing imported yet."""
    return plugins.entries("cli_commands")


class LazyGroup(click.Group):
    """Lists commands from the plugin manager and imports one only when it runs.

    A command registered with ``deprecated=NEW`` (an old name kept for one release) works but is
    not listed.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(commands())

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, e.help) for name, e in commands().items() if not e.deprecated]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = commands().get(cmd_name)
        if entry is None:
            return None
        cmd = entry.load()
        if not isinstance(cmd, click.Command):
            raise plugins.PluginError(
                f"plugin {entry.plugin!r}: command {cmd_name!r} ({entry.spec}) is not a click command",
                plugin=entry.plugin,
            )
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
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        # a file named on the command line or in the environment: say which, no traceback
        click.echo(f"error: {exc.filename or exc}: {exc.strerror or exc}", err=True)
        return EXIT_INPUT
    return rv if isinstance(rv, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
