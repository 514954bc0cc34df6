"""``stormwatch simulate``: the click command (registered in the main CLI group by the lead)."""

from __future__ import annotations

from pathlib import Path

import click
import orjson

from stormwatch.simulate.core import SimSummary, simulate
from stormwatch.simulate.settings import PRESETS, SettingsError, SimSettings

MAX_SETTINGS_BYTES = 1 << 20


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
        f"  settings: {s.settings_family}"
        + (f"  (actor styles: {', '.join(f'{k} {v}' for k, v in s.styles.items())})" if s.styles else ""),
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
@click.option(
    "--randomize",
    is_flag=True,
    help="Draw the generator settings from the seed (domain randomisation; training ranges).",
)
@click.option(
    "--preset",
    type=click.Choice(sorted(PRESETS)),
    default=None,
    help="A named held-out settings family (outside the --randomize ranges).",
)
@click.option(
    "--settings",
    "settings_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="JSON object of settings (keys of SimSettings; missing keys keep defaults).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("-q", "--quiet", "quiet", is_flag=True, help="No progress bar, no summary.")
def _simulate_cmd(
    out: Path,
    seed: int,
    accounts: int,
    days: int,
    events: int | None,
    randomize: bool,
    preset: str | None,
    settings_file: Path | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Simulate an AI platform's usage log with benign users and state-affiliated actors."""
    settings = _settings(seed, randomize, preset, settings_file)
    summary = simulate(
        out,
        seed=seed,
        accounts=accounts,
        days=days,
        target_events=events,
        progress=not (quiet or as_json),
        settings=settings,
    )
    if as_json:
        click.echo(orjson.dumps(summary.to_dict()).decode())
    elif not quiet:
        click.echo(_human(summary))


def _settings(seed: int, randomize: bool, preset: str | None, settings_file: Path | None) -> SimSettings | None:
    chosen = [n for n, v in (("--randomize", randomize), ("--preset", preset), ("--settings", settings_file)) if v]
    if len(chosen) > 1:
        raise click.UsageError(f"use at most one of --randomize, --preset, --settings (got {', '.join(chosen)})")
    if randomize:
        return SimSettings.randomized(seed)
    if preset:
        return SimSettings.preset(preset)
    if settings_file is None:
        return None
    with open(settings_file, "rb") as fh:
        raw = fh.read(MAX_SETTINGS_BYTES + 1)
    if len(raw) > MAX_SETTINGS_BYTES:
        raise click.BadParameter(f"{settings_file}: larger than {MAX_SETTINGS_BYTES} bytes", param_hint="--settings")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"{settings_file}: not JSON: {exc}", param_hint="--settings") from None
    if isinstance(data, dict) and isinstance(data.get("settings"), dict) and "generator" in data:
        data = data["settings"]  # a truth.json: reproduce that run's settings
    try:
        return SimSettings.from_dict(data, where=str(settings_file))
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--settings") from None


simulate_command = click.command("simulate")(_simulate_cmd)
