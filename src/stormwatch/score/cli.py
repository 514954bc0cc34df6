"""``stormwatch score`` and ``stormwatch models ...``."""

from __future__ import annotations

from pathlib import Path

import click

from stormwatch.clitools import echo_json, json_items, json_option, open_ctx_store
from stormwatch.errors import InputError


@click.command("score")
@click.option("--workers", type=int, default=None, help="Scoring processes (default: up to 2).")
@click.option(
    "--preset",
    type=click.Choice(["strict", "balanced", "permissive"]),
    default=None,
    help="Threshold preset for `flagged` (default: settings, else balanced).",
)
@click.option("--json", "as_json", is_flag=True)
@click.option("--quiet", "-q", is_flag=True)
@click.pass_context
def score_command(ctx: click.Context, workers: int | None, preset: str | None, as_json: bool, quiet: bool) -> None:
    """Score stored events not yet scored, by the active model and every candidate (shadow).

    Incremental: re-running scores only new events; a newly registered model version scores
    everything it has not seen. `stormwatch analyze` runs this stage first.

    The model registry decides the detectors (`stormwatch models list`). A database with no active
    model starts with the settings' detectors ([detect] detectors in stormwatch.toml,
    STORMWATCH_DETECTORS; default: the cascade, or the first tier when the encoder extra is missing);
    `stormwatch models add-cascade` switches a database that scores with the first tier.
    """
    from stormwatch.detect.settings import load_settings
    from stormwatch.score.scoring import score_new_events

    with open_ctx_store(ctx) as store:
        summary = score_new_events(
            store, progress=not (quiet or as_json), workers=workers, settings=load_settings(preset=preset)
        )
    if as_json:
        echo_json(summary.to_dict())
        return
    for m in summary.models:
        click.echo(
            f"{m.status:9} {m.version}: scored {m.scored:,} new events, {m.flagged:,} flagged, "
            f"{m.conversations:,} with conversation context"
        )
    click.echo(f"({summary.seconds:.1f} s)")


@click.group("models")
def models_group() -> None:
    """Detection model versions: list, add a candidate (a first-tier artifact, or the cascade), compare in
    shadow, promote."""


@models_group.command("list")
@json_option('One JSON document: {"items": [model, ...]}, each with its scored_events.')
@click.pass_context
def models_list(ctx: click.Context, as_json: bool) -> None:
    """Registered model versions and their status."""
    from stormwatch.score.models import ensure_active, list_models

    with open_ctx_store(ctx) as store:
        ensure_active(store)
        models = list_models(store)
        counts = store.detections.counts_by_model()
    if as_json:
        json_items({**m.to_dict(), "scored_events": int(counts.get(m.version, 0))} for m in models)
        return
    for m in models:
        click.echo(f"{m.status:9} {m.version:40} scored {int(counts.get(m.version, 0)):>10,}  {m.path or ''}")


@models_group.command("add")
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option("--active", "make_active", is_flag=True, help="Make it active at once (default: candidate).")
@click.option("--json", "as_json", is_flag=True, help="Print the registered model as one JSON object.")
@click.pass_context
def models_add(ctx: click.Context, artifact: Path, make_active: bool, as_json: bool) -> None:
    """Register a model built by `stormwatch train -o ARTIFACT` (as a shadow candidate).

    An artifact with the same content as the active model (same version) leaves the active model as it is.
    """
    from stormwatch.score.models import register_artifact

    with open_ctx_store(ctx) as store:
        entry = register_artifact(store, artifact, "active" if make_active else "candidate")
    if as_json:
        echo_json(entry.to_dict())
    elif entry.status == "active" and not make_active:
        click.echo(f"{entry.version} is already the active model (same content); nothing to add")
    else:
        click.echo(f"registered {entry.version} as {entry.status}; `stormwatch score` scores it on stored events")


@models_group.command("add-cascade")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="First-tier artifact (default: the one shipped).")  # fmt: skip
@click.option("--encoder", "encoder_path", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None,
              help="Encoder artifact folder, with its combiner.json (default: the shipped one).")  # fmt: skip
@click.option("--active", "make_active", is_flag=True, help="Make it active at once (default: candidate).")
@click.option("--json", "as_json", is_flag=True, help="Print the registered model as one JSON object.")
@click.pass_context
def models_add_cascade(
    ctx: click.Context, model_path: Path | None, encoder_path: Path | None, make_active: bool, as_json: bool
) -> None:
    """Register the cascade (first tier -> gate -> encoder -> combiner) as a shadow candidate.

    The way a database that scores with the first tier switches to the cascade: add it, run
    `stormwatch score` (both score the stored events), `stormwatch models compare`, then
    `stormwatch models promote VERSION`. Needs the encoder extra (pip install 'stormwatch[encoder]');
    a missing encoder artifact is an input error naming its path (exit 4).
    """
    from stormwatch.score.models import register_detectors

    with open_ctx_store(ctx) as store:
        entry = register_detectors(
            store,
            "cascade",
            "active" if make_active else "candidate",
            model_path=model_path,
            encoder_path=encoder_path,
        )
    if as_json:
        echo_json(entry.to_dict())
    elif entry.status == "active" and not make_active:
        click.echo(f"{entry.version} is already the active model; nothing to add")
    else:
        click.echo(f"registered {entry.version} as {entry.status}; `stormwatch score` scores it on stored events")


@models_group.command("compare")
@click.option("--candidate", metavar="VERSION", help="Default: the newest candidate.")
@click.option("--top", default=10, show_default=True, help="How many of the largest differences to list.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_compare(ctx: click.Context, candidate: str | None, top: int, as_json: bool) -> None:
    """Where and how a candidate's judgements differ from the active model's, on the same events."""
    from stormwatch.score.compare import compare_models, format_comparison
    from stormwatch.score.models import ensure_active, list_models

    with open_ctx_store(ctx) as store:
        active = ensure_active(store)
        if candidate is None:
            cands = list_models(store, "candidate")
            if not cands:
                raise InputError("no candidate model registered", hint="stormwatch models add PATH")
            candidate = cands[-1].version
        result = compare_models(store, active.version, candidate, top=top)
    if result.both_scored == 0:
        click.echo("no event is scored by both models yet: run `stormwatch score` first", err=True)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(format_comparison(result))


@models_group.command("promote")
@click.argument("version")
@click.pass_context
def models_promote(ctx: click.Context, version: str) -> None:
    """Make VERSION the active model (the previous active one is retired)."""
    from stormwatch.score.models import get_model, register

    with open_ctx_store(ctx) as store:
        entry = get_model(store, version)
        if entry is None:
            raise InputError(f"no model version {version!r}", hint="see `stormwatch models list`")
        register(
            store,
            name=entry.name,
            version=entry.version,
            kind=entry.kind,
            status="active",
            metadata=entry.metadata,
        )
    click.echo(f"{version} is now active")
