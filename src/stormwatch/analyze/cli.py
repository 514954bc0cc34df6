"""``stormwatch analyze``, ``stormwatch accounts`` and ``stormwatch clusters``.

Why this module is long: it holds every ``analyze`` subcommand's options and output (run, eval,
train, run-graph, engine options), which share option definitions and the JSON/human rendering; the
work itself lives in the modules it calls.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from stormwatch.analyze.attribution import BELOW_LOW as _BELOW_LOW
from stormwatch.analyze.attribution import public_attribution
from stormwatch.analyze.engines.options import engine_options
from stormwatch.analyze.params import CONFIDENCE_LABELS, MODEL_REVIEW_PROBABILITY
from stormwatch.clitools import echo_json, json_items, json_option, open_ctx_store, output_option
from stormwatch.errors import InputError

__all__ = ["accounts_group", "analyze_group", "clusters_group"]


def _parse_budget(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    from stormwatch.analyze.review import ReviewBudget

    if value is None:
        return None
    try:
        return ReviewBudget.parse(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from exc


def _budget_option(fn: Any) -> Any:
    return click.option(
        "--review-budget",
        "review_budget",
        metavar="FRACTION|COUNT",
        default=None,
        callback=_parse_budget,
        help="How many review accounts are within the review budget: a fraction of active accounts (0.005),"
        " a percentage (0.5%) or a count (200). Default: [analyze] review_budget in stormwatch.toml, else 0.005.",
    )(fn)


def _exemptions_option(fn: Any) -> Any:
    return click.option(
        "--exemptions",
        "exemption_paths",
        multiple=True,
        type=click.Path(path_type=Path, exists=True),
        help="Exemptions file (kind: exemptions, as disrupt reads) or a folder holding them; repeatable."
        " Exempt accounts are never enforced. Default: [analyze] exemptions in stormwatch.toml.",
    )(fn)


def _account_model_option(fn: Any) -> Any:
    return click.option(
        "--account-model",
        "account_model",
        metavar="VERSION|DIR|off",
        default=None,
        help="The account model that orders the review queue: a shipped version, a model folder"
        " (`analyze train`), or off (order by risk). Default: [analyze] account_model in stormwatch.toml,"
        " else $STORMWATCH_ACCOUNT_MODEL, else the newest shipped one.",
    )(fn)


def _settings(
    config: Path | None, review_budget: Any, exemption_paths: tuple[Path, ...], account_model: str | None = None
) -> Any:
    from stormwatch.analyze.settings import load_settings

    return load_settings(config, review_budget=review_budget, exemptions=exemption_paths, account_model=account_model)


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
@_budget_option
@_exemptions_option
@_account_model_option
@click.option(
    "--config", "config", type=click.Path(path_type=Path, dir_okay=False), default=None, help="stormwatch.toml path."
)
@engine_options
@click.pass_context
def analyze_group(
    ctx: click.Context,
    as_json: bool,
    quiet: bool,
    full: bool,
    no_score: bool,
    review_budget: Any,
    exemption_paths: tuple[Path, ...],
    account_model: str | None,
    config: Path | None,
    engine: str = "local",
    master: str | None = None,
    events: str | None = None,
    partitions: int | None = None,
    spark_conf: dict[str, str] | None = None,
) -> None:
    """Judge accounts, link them into clusters and attribute clusters to actors.

    Scores new events first, then recomputes the features of accounts with new events (all with
    --full), matches partner intel, links accounts through rare shared infrastructure, attributes
    clusters and writes a risk, a level (none / review / enforce) and the evidence per account.
    Accounts at review are ranked into the review queue by the account model's calibrated
    probability (--account-model; by risk without one); the first --review-budget of them are
    within the budget. Exempt accounts (--exemptions) are never enforced.
    """
    if ctx.invoked_subcommand is not None:
        return
    from stormwatch.analyze.pipeline import analyze

    settings = _settings(config, review_budget, exemption_paths, account_model)
    with open_ctx_store(ctx) as store:
        if engine != "local":  # the spark engine (docs/scale.md)
            from stormwatch.analyze.engines import run_engine

            s = run_engine(
                engine, store, settings=settings, master=master, events=events, partitions=partitions, conf=spark_conf
            )
        else:
            s = analyze(store, full=full, progress=not (quiet or as_json), score=not no_score, settings=settings)
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
        + (f" ({s.raised_by_model:,} raised from none by the account model)" if s.raised_by_model else "")
    )
    click.echo(
        f"review budget {s.review_budget:,} = {s.review_budget_rule} ({s.active_accounts:,} active):"
        f" {s.review_within_budget:,} within it; exempt {s.exempt:,} ({s.exempt_held_back:,} held back from enforce)"
    )
    if s.review_likely_beyond_budget:
        click.echo(
            f"warning: {s.review_likely_beyond_budget:,} more account(s) beyond the review budget have an account-model"
            f" probability >= {MODEL_REVIEW_PROBABILITY:g}: the budget is smaller than the queue's likely actors"
            " (raise it with --review-budget, or review past it)"
        )
    if s.score_scale:
        m, r = s.score_scale["model_presets"], s.score_scale["reference_presets"]
        click.echo(
            "request scores mapped onto the reference scale: "
            + ", ".join(f"{k} {m[k]:.3f} -> {r[k]:.3f}" for k in ("strict", "balanced", "permissive"))
        )


@analyze_group.command("graph")
@output_option(help="The account graph (JSON) to write; stdout when left out.")
@click.pass_context
def analyze_graph_command(ctx: click.Context, output: Path | None) -> None:
    """Write the account graph analysis reads (accounts, observations, features, intel hits) as JSON.

    Run `stormwatch analyze` first: the graph holds the features it computed. `analyze run-graph` judges
    such a file without a database, so another engine or a test can feed the same algorithms.
    """
    with open_ctx_store(ctx) as store:
        data = orjson.dumps(store.analysis.load_graph().to_dict(), option=orjson.OPT_SORT_KEYS)
    if output is None:
        click.echo(data.decode())
    else:
        output.write_bytes(data + b"\n")


@analyze_group.command("run-graph")
@click.argument("graph", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@output_option(help="The analysis result (JSON) to write; stdout when left out.")
@click.option("--model-version", default="graph", show_default=True, help="Recorded as the result's model version.")
@_budget_option
@_exemptions_option
@_account_model_option
@click.option(
    "--config", "config", type=click.Path(path_type=Path, dir_okay=False), default=None, help="stormwatch.toml path."
)
def analyze_run_graph(
    graph: Path,
    output: Path | None,
    model_version: str,
    review_budget: Any,
    exemption_paths: tuple[Path, ...],
    account_model: str | None,
    config: Path | None,
) -> None:
    """Link, attribute and judge the accounts of an account-graph file; print or write the analysis result.

    Pure: no database is read or written. The same graph (and settings) give the same result.
    """
    from stormwatch.analyze.exemptions import load_exemptions
    from stormwatch.analyze.judge import analyze_graph
    from stormwatch.result import AccountGraph

    settings = _settings(config, review_budget, exemption_paths, account_model)
    exemptions = load_exemptions(settings.exemptions)

    try:
        doc = orjson.loads(graph.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{graph}: not JSON: {exc}") from exc
    result = analyze_graph(
        AccountGraph.from_dict(doc),
        model_version,
        review_budget=settings.review_budget,
        exemptions=exemptions,
        account_model=settings.account_model,
        account_model_shadow=settings.account_model_shadow,
    )
    data = orjson.dumps(result.to_dict(), option=orjson.OPT_SORT_KEYS)
    if output is None:
        click.echo(data.decode())
    else:
        output.write_bytes(data + b"\n")


@analyze_group.command("train")
@click.option(
    "--model", "which", type=click.Choice(["account"]), default="account", show_default=True, help="Which model."
)
@click.option(
    "--runs", default=12, show_default=True, type=click.IntRange(2, 200), help="Simulated training platforms."
)
@click.option(
    "--accounts",
    default=3000,
    show_default=True,
    type=click.IntRange(100, 200_000),
    help="Mean accounts per platform (each run draws 0.5x-1.5x).",
)
@click.option("--seed", default=1000, show_default=True, type=int, help="First training seed.")
@click.option(
    "--held-out-runs", default=3, show_default=True, type=click.IntRange(0, 50), help="Held-out randomised platforms."
)
@click.option(
    "--preset",
    "presets",
    multiple=True,
    help="Held-out simulator presets (repeatable). Default: every preset; `--preset none` for none.",
)
@click.option("--rounds", default=250, show_default=True, type=click.IntRange(10, 5000), help="Boosting rounds.")
@click.option(
    "--out",
    "out",
    type=click.Path(path_type=Path, file_okay=False),
    default=Path("account-models"),
    show_default=True,
    help="Folder for account-VERSION/ and VERSION.report.json (the package's data/model ships it and"
    " makes it the default).",
)
@click.option(
    "--work",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the simulated platforms here (default: a temporary folder).",
)
@click.option(
    "--reuse", is_flag=True, help="With --work: analyze platforms already built there again instead of simulating."
)
@click.option(
    "--drop",
    "drop",
    multiple=True,
    metavar="FEATURE",
    help="Leave a feature out (repeatable). Default: the recipe's list (model card); `--drop none` keeps all.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
def analyze_train(
    which: str,
    runs: int,
    accounts: int,
    seed: int,
    held_out_runs: int,
    presets: tuple[str, ...],
    rounds: int,
    out: Path,
    work: Path | None,
    reuse: bool,
    drop: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Train the account model: simulate --runs platforms with randomised settings, analyze each
    (first-tier scores, rule-based risk), fit boosted trees on the accounts at review or enforce,
    calibrate on out-of-fold logits, and evaluate on held-out seeds and simulator presets.

    Needs the train extra (LightGBM). Writes account-VERSION/ (model.json, manifest.json with its
    sha256) and VERSION.report.json. See docs/model-card-account.md.
    """
    from stormwatch.analyze.account_train import DROP, train

    del which  # one model today
    chosen: list[str] | None = None if not presets else [p for p in presets if p.lower() != "none"]

    def say(msg: str) -> None:
        if not quiet:
            click.echo(msg, err=True)

    report = train(
        out,
        runs=runs,
        accounts=accounts,
        seed=seed,
        held_out_runs=held_out_runs,
        held_out_presets=chosen,
        rounds=rounds,
        work=work,
        reuse=reuse,
        drop=DROP if not drop else tuple(d for d in drop if d.lower() != "none"),
        say=say,
    )
    if as_json:
        echo_json(report)
        return
    click.echo(f"account model {report['version']} -> {report['folder']} ({report['seconds']:.0f} s)")
    for name, res in report["held_out"].items():
        m, r = res["model"], res["risk"]
        click.echo(
            f"  {name:28} AP {m['ap']} (risk {r['ap']})  budget recall {m['budget_recall']} (risk {r['budget_recall']})"
            f"  enforce precision {m['enforce_precision']}"
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
        elif isinstance(v, dict):
            v = ", ".join(f"{name} {n}" for name, n in v.items()) or "-"
        click.echo(f"{k:40} {v}")


@click.group("accounts")
def accounts_group() -> None:
    """Judged accounts: export them, show one."""


@accounts_group.command("export")
@output_option(required=True, help="JSONL file, one account a line.")
@click.option("--flagged-only", is_flag=True, help="Only accounts flagged for enforcement.")
@click.option("--level", type=click.Choice(["none", "review", "enforce"]), help="Only this level.")
@click.pass_context
def accounts_export(ctx: click.Context, output: Path, flagged_only: bool, level: str | None) -> None:
    """Write one JSON line per account: account_id, risk, flagged, level, cluster_id, actor, actor_ref,
    confidence, confidence_label, ttps, evidence, review_rank (1 = first in the review queue),
    within_budget, exempt and exemption (who, reason, granted_by, expires), and account_model (version,
    calibrated probability, logit and top per-feature contributions; null when no model scored it)."""
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
    if d.get("review_rank") is not None:
        q = d.get("explanation", {}).get("review_queue", {})
        of = f" of {q['of']:,}" if q.get("of") else ""
        budget = f" (budget {q['budget']:,})" if q.get("budget") is not None else ""
        where = "within the review budget" if d["within_budget"] else "outside the review budget"
        click.echo(f"review queue: rank {d['review_rank']:,}{of}, {where}{budget}")
    am = d.get("explanation", {}).get("account_model") or {}
    if am.get("version"):
        top = ", ".join(
            f"{c['feature']}={c['value']:g} ({c['contribution']:+.2f})" for c in am.get("top_contributions", [])[:4]
        )
        trees = " (candidate trees)" if am.get("trees") == "candidates at none" else ""
        click.echo(
            f"account model {am['version']}{trees}: probability {am['probability']:.3f}; most weight: {top or '-'}"
        )
    ex = d.get("exemption")
    if ex:
        click.echo(
            f"EXEMPT{' (held back from enforce)' if ex.get('held_back') else ''}: {ex['match']} {ex['value']}:"
            f" {ex['reason']} (granted by {ex['granted_by']} until {ex['expires']}; {ex.get('source') or '-'})"
        )
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
    co = d["explanation"].get("cohort")
    if co:
        click.echo(
            f"cohort: {co['size']} new, short-lived accounts on {', '.join(co['networks']) or '-'} from"
            f" {co['window'][0]} to {co['window'][1]}, {co['strong_members']} with a request >= 0.8"
            + (f"; {n} still active as the data ends" if (n := co.get("still_active_members")) else "")
            + ("; one organisation's accounts: held at review" if co.get("held_by_organisation") else "")
        )
    for reason in d["explanation"].get("reasons", []):
        click.echo(f"why: {reason}")


def _printable(text: str) -> str:
    """``text`` with control and format characters (terminal escapes, bidi overrides in a prompt)
    shown as ``\\xNN`` / ``\\uNNNN``, so printing it cannot drive the analyst's terminal."""

    def one(c: str) -> str:
        if c in "\n\t" or c.isprintable():
            return c
        return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"

    return "".join(one(c) for c in text)


def _show_texts(texts: list[dict[str, Any]]) -> None:
    click.echo(f"text of the top {len(texts)} requests (each read is recorded in the audit log):")
    for r in texts:
        best = max((d["score"] for d in r["detections"]), default=None)
        score = "-" if best is None else f"{best:.3f}"
        click.echo(f"--- {r['event_id']}  {r['ts']}  score {score}")
        click.echo(_printable(r["text"]) or "(no user text)")


@accounts_group.command("show")
@click.argument("account_id")
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--text",
    "with_text",
    is_flag=True,
    help="Also print the prompt text of the top-scored requests (recorded in the audit log).",
)
@click.option(
    "--limit",
    default=5,
    show_default=True,
    type=click.IntRange(1, 100),
    help="With --text: how many requests.",
)
@click.pass_context
def accounts_show(ctx: click.Context, account_id: str, as_json: bool, with_text: bool, limit: int) -> None:
    """An account's judgement, timeline, top-scored requests, infrastructure and evidence.

    With --text, also the user text of its top-scored requests, so an analyst can judge them;
    each event read is appended to the audit log (event.text.read, actor cli:<user>).
    """
    from stormwatch.analyze.report import account_detail

    texts: list[dict[str, Any]] = []
    with open_ctx_store(ctx) as store:
        d = account_detail(store, account_id)
        if d is not None and with_text:
            ids = store.audit.top_event_ids(account_id, limit=limit)
            reads = store.audit.read_events(ids, actor=_cli_actor(), via="cli")  # audited, committed first
            texts = [r.to_dict() for r in reads if r is not None]
    if d is None:
        raise InputError(f"no judgement for account {account_id!r}", hint="run `stormwatch analyze` first")
    if as_json:
        echo_json({**d, "texts": texts} if with_text else d)
    else:
        _show_account(d)
        if with_text:
            _show_texts(texts)


@click.group("clusters")
def clusters_group() -> None:
    """Clusters of linked accounts."""


@clusters_group.command("list")
@click.option("--min-size", default=2, show_default=True)
@click.option("--limit", default=100, show_default=True)
@json_option('One JSON document: {"items": [cluster, ...]}.')
@click.pass_context
def clusters_list(ctx: click.Context, min_size: int, limit: int, as_json: bool) -> None:
    """Clusters, those with accounts flagged for enforcement first."""
    from stormwatch.analyze.report import list_clusters

    with open_ctx_store(ctx) as store:
        rows = list_clusters(store, min_size=min_size, limit=limit)
    rows = [public_attribution(r) for r in rows]
    if as_json:
        json_items(rows)
        return
    for r in rows:
        click.echo(f"{r['cluster_id']}  size {r['size']:4}  flagged {r['flagged_accounts']:4}  {_actor_text(r)}")


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
    d = {**public_attribution(d), "indicators": _indicators(d["evidence"].get("indicator_hits", []))}
    if as_json:
        echo_json(d)
        return
    click.echo(f"cluster {d['cluster_id']}  size {d['size']}  {_actor_text(d, candidate=True)}")
    beh = d["evidence"].get("behaviour") or {}
    if beh.get("profiles_fitted") and not d["actor"]:  # fits actor profiles, too alike (or too weakly) to name one
        fits = ", ".join(f"{f['actor']} {f['score']:.2f}" for f in beh["profiles_fitted"])
        click.echo(f"  behaviour fits {fits}: {beh.get('not_named', 'no actor named')}")
    for m in d["members"]:
        named = m["actor"] if m["actor"] and confidence_label(m["confidence"]) else ""
        click.echo(f"  {m['account_id']}  risk {m['risk']:.2f}  {m['level']:7}  {named}".rstrip())
    click.echo("edges:")
    for e in d["edges"][:50]:
        click.echo(f"  {e['account_a']} -- {e['account_b']}  {e['kind']} {e['value']}  w={e['weight']:.2f}")
    if d["indicators"]:
        click.echo("indicators (each once, with the members that hit it):")
    for g in d["indicators"][:20]:
        obs = g["observable"]
        sets = f"  sets {', '.join(g['intrusion_sets'])}" if g["intrusion_sets"] else ""
        click.echo(
            f"  {obs['kind']} {obs['value']}  indicator {g['indicator_name'] or '-'} ({g['indicator_id']}){sets}"
            f"  hit by {len(g['members'])} member(s): {', '.join(g['members'])}"
        )


def _cli_actor() -> str:
    """How the audit log names whoever reads event text from a shell (as ``stormwatch token`` does)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "cli:unknown"


def confidence_label(conf: float | None) -> str | None:
    """The band of a confidence (as ``analyze.attribution.confidence_label``; None below low)."""
    return next((label for floor, label in CONFIDENCE_LABELS if conf is not None and conf >= floor), None)


def _actor_text(row: dict[str, Any], *, candidate: bool = False) -> str:
    if row["actor"]:
        conf = f"{row['confidence']:.2f} {row['confidence_label']}" if row["confidence"] is not None else "-"
        return f"actor {row['actor']} ({conf})"
    c = row.get("candidate")
    if candidate and c:
        conf = f"{c['confidence']:.2f}" if c["confidence"] is not None else "-"
        return f"unattributed (candidate {c['actor']} at {conf}: {_BELOW_LOW})"
    return "unattributed"


def _indicators(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Indicator hits grouped by indicator and observable: each indicator once, with the members that hit it."""
    groups: dict[tuple[str, str, str], dict[str, Any]] = {}
    for h in hits:
        obs = h.get("observable") or {}
        key = (str(h.get("indicator_id")), str(obs.get("kind")), str(obs.get("value")))
        g = groups.setdefault(key, {
            "indicator_id": h.get("indicator_id"), "indicator_name": h.get("indicator_name"),
            "observable": {"kind": obs.get("kind"), "value": obs.get("value")},
            "intrusion_sets": list(h.get("intrusion_sets") or []), "members": [],
            "strength": h.get("strength"), "degree": h.get("degree"),
        })  # fmt: skip
        if h.get("account_id") and h["account_id"] not in g["members"]:
            g["members"].append(h["account_id"])
    out = list(groups.values())
    for g in out:
        g["members"].sort()
    return sorted(out, key=lambda g: (-len(g["members"]), str(g["indicator_id"]), str(g["observable"]["value"])))
