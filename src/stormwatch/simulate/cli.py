"""``stormwatch simulate``: the click command (registered in the main CLI group by the lead)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from stormwatch.simulate.core import SimSummary, simulate


def _human(s: SimSummary) -> str:
    lines = [
        f"simulated {s.accounts} accounts over {s.days} days ({s.start} .. {s.end}), seed {s.seed}",
        f"  benign accounts: {s.benign_accounts}  (" + ", ".join(f"{k} {v}" for k, v in s.personas.items()) + ")",
        f"  actor accounts:  {s.actor_accounts} in {s.operations} operations  ("
        + ", ".join(f"{k} {v}" for k, v in s.actors.items())
        + ")",
        f"  actor accounts named in intel: {s.actor_accounts_named_in_intel}/{s.actor_accounts}",
        f"  events: {s.events}  (actor {s.actor_events}, malicious {s.malicious_events}, refused {s.refused_events})",
        f"  intel indicators: {s.intel_indicators}",
        "  files: " + ", ".join(Path(p).name for p in s.files.values()) + f"  in {s.out_dir}",
        f"  wall time: {s.wall_s:.1f} s",
    ]
    return "\n".join(lines)


@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write events.jsonl, accounts.jsonl, intel.stix.json, truth.json ...",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed => same files).")
@click.option(
    "--accounts",
    type=click.IntRange(min=20),
    default=2000,
    show_default=True,
    help="Number of accounts (benign + actor).",
)
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True, help="Days simulated.")
@click.option(
    "--events",
    "events",
    type=click.IntRange(min=1),
    default=None,
    help="Target total event count (scales per-account volume).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-q", "--quiet", "quiet", is_flag=True, help="No progress bar, no summary.")
def _simulate_cmd(
    out: Path, seed: int, accounts: int, days: int, events: int | None, as_json: bool, quiet: bool
) -> None:
    """Simulate an AI platform's usage log with benign users and state-affiliated actors."""
    summary = simulate(
        out, seed=seed, accounts=accounts, days=days, target_events=events, progress=not (quiet or as_json)
    )
    if as_json:
        click.echo(orjson.dumps(summary.to_dict()).decode())
    elif not quiet:
        click.echo(_human(summary))


simulate_command = click.command("simulate")(_simulate_cmd)
