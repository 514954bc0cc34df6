"""``stormwatch analyze``, ``stormwatch accounts`` and ``stormwatch clusters``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from stormwatch.cli import echo_json, open_ctx_store
from stormwatch.errors import InputError

__all__ = ["accounts_group", "analyze_group", "clusters_group"]


@click.group("analyze", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
@click.option("--full", is_flag=True, help="Recompute every account's features, not only those with new events.")
@click.option(
    "--no-score",
    "no_score",
    is_flag=True,
    help="Do not run the scoring stage first; use the stored detections of the last scored model.",
)
@click.pass_context
def analyze_group(ctx: click.Context, as_json: bool, quiet: bool, full: bool, no_score: bool) -> None:
    """Judge accounts, link them into clusters and attribute clusters to actors.

    Scores new events first, then recomputes the features of accounts with new events (all with
    --full), matches partner intel, links accounts through rare shared infrastructure, attributes
    clusters and writes a risk, a level (none / review / enforce) and the evidence per account.
    """
    if ctx.invoked_subcommand is not None:
        return
    from stormwatch.analyze.pipeline import analyze

    with open_ctx_store(ctx) as store:
        s = analyze(store, full=full, progress=not (quiet or as_json), score=not no_score)
    if as_json:
        echo_json(s.to_dict())
        return
    click.echo(
        f"analyze ({s.model_version}): {s.events_scanned:,} events scanned, {s.accounts_recomputed:,} accounts"
        f" recomputed, {s.accounts:,} judged in {s.seconds.get('total', 0):.1f} s"
    )
    click.echo(
        f"intel hits {s.intel_hits:,} on {s.intel_hit_accounts:,} accounts; clusters {s.clusters:,};"
        f" attributed {s.attributed:,}; enforce {s.enforce:,}; review {s.review:,}"
    )


@analyze_group.command("eval")
@click.option(
    "--truth",
    "truth",
    required=True,
    type=click.Path(path_type=Path, exists=True, dir_okay=False),
    help="The simulator's truth.json.",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def analyze_eval(ctx: click.Context, truth: Path, as_json: bool) -> None:
    """Measure the stored judgements against a simulator's ground truth."""
    from stormwatch.analyze.evaluate import evaluate

    with open_ctx_store(ctx) as store:
        res = evaluate(store, truth)
    if as_json:
        echo_json(res)
        return
    for k, v in res.items():
        if isinstance(v, list):
            v = f"{len(v)}" + (f": {', '.join(v[:10])}" if v else "")
        click.echo(f"{k:40} {v}")


@click.group("accounts")
def accounts_group() -> None:
    """Judged accounts: export them, show one."""


@accounts_group.command("export")
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="JSONL file.")
@click.option("--flagged-only", is_flag=True, help="Only accounts flagged for enforcement.")
@click.option("--level", type=click.Choice(["none", "review", "enforce"]), help="Only this level.")
@click.pass_context
def accounts_export(ctx: click.Context, output: Path, flagged_only: bool, level: str | None) -> None:
    """Write one JSON line per account: account_id, risk, flagged, cluster_id, actor, confidence,
    ttps, evidence (plus level, actor_ref and confidence_label)."""
    from stormwatch.analyze.report import export_rows

    store = open_ctx_store(ctx)
    n = 0
    try:
        with output.open("wb") as fh:
            for row in export_rows(store, flagged_only=flagged_only, level=level):
                fh.write(orjson.dumps(row) + b"\n")
                n += 1
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror or exc}") from exc
    finally:
        store.close()
    click.echo(f"{n:,} accounts written to {output}", err=True)


def _show_account(d: dict[str, Any]) -> None:
    click.echo(f"account {d['account_id']}  risk {d['risk']:.2f}  level {d['level']}  cluster {d['cluster_id'] or '-'}")
    if d["actor"]:
        click.echo(
            f"actor {d['actor']} ({d['actor_ref'] or 'behaviour profile'})  confidence"
            f" {d['confidence']:.2f} {d['confidence_label']}"
        )
    if d.get("account"):
        click.echo("record  " + "  ".join(f"{k}={v}" for k, v in d["account"].items() if v))
    click.echo("timeline (events per day):")
    click.echo("  " + "  ".join(f"{t['day'][5:]}:{t['events']}" for t in d["timeline"]) or "  -")
    click.echo("top scored requests:")
    for r in d["top_requests"]:
        click.echo(f"  {r['score']:.3f}  {r['top_ttp'] or '-':8} {r['ts']}  {r['event_id']}")
    click.echo("evidence:")
    for e in d["evidence"]:
        click.echo(f"  [{e['kind']}] {e['text']}")
    for reason in d["explanation"].get("reasons", []):
        click.echo(f"why: {reason}")


@accounts_group.command("show")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def accounts_show(ctx: click.Context, account_id: str, as_json: bool) -> None:
    """An account's judgement, timeline, top-scored requests, infrastructure and evidence."""
    from stormwatch.analyze.report import account_detail

    with open_ctx_store(ctx) as store:
        d = account_detail(store, account_id)
    if d is None:
        raise InputError(f"no judgement for account {account_id!r}", hint="run `stormwatch analyze` first")
    if as_json:
        echo_json(d)
    else:
        _show_account(d)


@click.group("clusters")
def clusters_group() -> None:
    """Clusters of linked accounts."""


@clusters_group.command("list")
@click.option("--min-size", default=2, show_default=True)
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def clusters_list(ctx: click.Context, min_size: int, limit: int, as_json: bool) -> None:
    """Clusters, those with accounts flagged for enforcement first."""
    from stormwatch.analyze.report import list_clusters

    with open_ctx_store(ctx) as store:
        rows = list_clusters(store, min_size=min_size, limit=limit)
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        label = r["confidence_label"] or "below low"
        conf = f"{r['confidence']:.2f} {label}" if r["confidence"] is not None else "-"
        click.echo(
            f"{r['cluster_id']}  size {r['size']:4}  flagged {r['flagged_accounts']:4}  "
            f"actor {r['actor'] or '-'} ({conf})"
        )


@clusters_group.command("show")
@click.argument("cluster_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def clusters_show(ctx: click.Context, cluster_id: str, as_json: bool) -> None:
    """A cluster's members, the link edges that made it, and its attribution evidence."""
    from stormwatch.analyze.report import cluster_detail

    with open_ctx_store(ctx) as store:
        d = cluster_detail(store, cluster_id)
    if d is None:
        raise InputError(f"no cluster {cluster_id!r}", hint="see `stormwatch clusters list`")
    if as_json:
        echo_json(d)
        return
    conf = f"{d['confidence']:.2f} {d['confidence_label']}" if d["confidence"] is not None else "-"
    click.echo(f"cluster {d['cluster_id']}  size {d['size']}  actor {d['actor'] or '-'} ({conf})")
    for m in d["members"]:
        click.echo(f"  {m['account_id']}  risk {m['risk']:.2f}  {m['level']:7}  {m['actor'] or ''}")
    click.echo("edges:")
    for e in d["edges"][:50]:
        click.echo(f"  {e['account_a']} -- {e['account_b']}  {e['kind']} {e['value']}  w={e['weight']:.2f}")
    for h in d["evidence"].get("indicator_hits", [])[:20]:
        click.echo(f"  [indicator_hit] {h['text']} ({h['indicator_id']})")
