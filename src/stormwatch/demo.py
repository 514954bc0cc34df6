"""``stormwatch demo``: the main job end to end on a simulated platform and the embedded store.

simulate a month of a platform -> ingest its logs and accounts -> import the partner's intel ->
score every request -> judge, link and attribute accounts -> decide what policies would do
(dry run) -> verify the audit chain -> export shareable intel. Each step prints one line; the end
names the outputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from stormwatch.errors import StormwatchError


class Steps:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.started = time.perf_counter()
        self.outputs: list[tuple[str, str]] = []

    def run(self, title: str, fn: Callable[[], str]) -> None:
        t = time.perf_counter()
        click.echo(click.style(f"==> {title}", bold=True), err=True)
        line = fn()
        click.echo(f"    {line}  [{time.perf_counter() - t:.1f} s]")

    def output(self, what: str, path: Path) -> None:
        self.outputs.append((what, str(path)))


@click.command("demo")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-out"),
    show_default=True,
    help="Folder for the simulated platform, the database and the results (replaced).",
)
@click.option("--seed", default=7, show_default=True)
@click.option("--accounts", default=1500, show_default=True, help="Accounts on the simulated platform.")
@click.option("--days", default=30, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def demo_command(out: Path, seed: int, accounts: int, days: int, quiet: bool) -> None:
    """Run the whole pipeline on a simulated platform with the embedded SQLite store."""
    import shutil

    from stormwatch.ingest.runner import ingest
    from stormwatch.pipeline.score import score_new_events
    from stormwatch.simulate import simulate
    from stormwatch.store import open_store

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    platform = out / "platform"
    db_path = out / "stormwatch.db"
    steps = Steps(quiet)
    progress = not quiet
    state: dict[str, Any] = {}

    def do_simulate() -> str:
        s = simulate(platform, seed=seed, accounts=accounts, days=days, progress=progress)
        state["sim"] = s
        steps.output("simulated platform (events, accounts, partner intel, ground truth)", platform)
        return (
            f"{s.events:,} events from {s.accounts:,} accounts ({s.actor_accounts} actor accounts in "
            f"{s.operations} operations)"
        )

    steps.run("simulate a month of an AI platform", do_simulate)
    store = open_store(f"sqlite:///{db_path}")
    steps.output("database (SQLite)", db_path)
    try:

        def do_ingest() -> str:
            r = ingest(
                store, [platform / "events.jsonl"], accounts_paths=[platform / "accounts.jsonl"], progress=progress
            )
            return (
                f"read {r.read:,}, stored {r.stored:,}, duplicates {r.duplicates:,}, quarantined "
                f"{r.quarantined:,}; accounts {r.accounts_stored:,}"
            )

        steps.run("ingest the usage log and account records", do_ingest)

        def do_score() -> str:
            r = score_new_events(store, progress=progress)
            m = r.models[0]
            return f"model {m.version}: {m.scored:,} requests scored, {m.flagged:,} flagged"

        steps.run("score every request on the LLM-TTP taxonomy", do_score)
    except StormwatchError:
        raise
    finally:
        store.close()

    total = time.perf_counter() - steps.started
    click.echo("")
    click.echo(click.style(f"demo finished in {total:.0f} s. Outputs:", bold=True))
    for what, path in steps.outputs:
        click.echo(f"  {path:40} {what}")
    click.echo(f"Explore: stormwatch --db sqlite:///{db_path} quarantine list | models list | score")
