"""``stormwatch cases | appeals | labels``: the analysts' side, over the service layer."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from stormwatch.clitools import echo_json, json_items, open_ctx_store, output_option
from stormwatch.disrupt import service
from stormwatch.errors import InputError

by_option = click.option("--by", "by", required=True, metavar="NAME", help="Who does this (recorded in the audit log).")
json_option = click.option("--json", "as_json", is_flag=True)


def _case_line(c: service.Case) -> str:
    label = f" label={c.label}" + (f"/{c.label_actor}" if c.label_actor else "") if c.label else ""
    who = f" assignee={c.assignee}" if c.assignee else ""
    return f"{c.case_id}  {c.status:6} {c.account_id:24}{who}{label}  {c.reason}"


def _show_case(ctx: click.Context, case: service.Case, as_json: bool) -> None:
    if as_json:
        echo_json(case.to_dict())
    else:
        click.echo(_case_line(case))


@click.group("cases")
def cases_group() -> None:
    """Review cases: list, show, assign, note, attach, label, close."""


@cases_group.command("list")
@click.option("--status", type=click.Choice(["open", "closed"]), default=None)
@click.option("--assignee", metavar="NAME")
@click.option("--account", "account_id", metavar="ID")
@click.option("--limit", default=100, show_default=True)
@json_option
@click.pass_context
def cases_list(
    ctx: click.Context, status: str | None, assignee: str | None, account_id: str | None, limit: int, as_json: bool
) -> None:
    """List cases, oldest first."""
    with open_ctx_store(ctx) as store:
        rows = service.list_cases(store, status=status, assignee=assignee, account_id=account_id, limit=limit)
    if as_json:
        json_items(c.to_dict() for c in rows)
        return
    for c in rows:
        click.echo(_case_line(c))
    if not rows:
        click.echo("no cases")


@cases_group.command("show")
@click.argument("case_id")
@json_option
@click.pass_context
def cases_show(ctx: click.Context, case_id: str, as_json: bool) -> None:
    """A case with its notes, evidence and the account's decisions."""
    with open_ctx_store(ctx) as store:
        detail = service.get_case(store, case_id)
    if as_json:
        echo_json(detail.to_dict())
        return
    click.echo(_case_line(detail.case))
    for n in detail.notes:
        body = n.body if isinstance(n.body, str) else orjson.dumps(n.body).decode()
        click.echo(f"  [{n.kind}] {n.created_at} {n.author}: {body}")
    for d in detail.decisions:
        click.echo(f"  decision {d.decision_id} {d.mode} {d.action} {d.status} by {d.decided_by}")


def _run(ctx: click.Context, fn: object, as_json: bool) -> None:
    with open_ctx_store(ctx) as store:
        assert callable(fn)
        result = fn(store)
    if isinstance(result, service.Case):
        _show_case(ctx, result, as_json)
    elif as_json:
        echo_json(result.to_dict())
    else:
        click.echo(f"note {result.note_id} added to {result.case_id}")


@cases_group.command("assign")
@click.argument("case_id")
@click.argument("assignee")
@by_option
@json_option
@click.pass_context
def cases_assign(ctx: click.Context, case_id: str, assignee: str, by: str, as_json: bool) -> None:
    """Assign a case to an analyst."""
    _run(ctx, lambda s: service.assign_case(s, case_id, assignee, by=by), as_json)


@cases_group.command("note")
@click.argument("case_id")
@click.argument("text")
@by_option
@json_option
@click.pass_context
def cases_note(ctx: click.Context, case_id: str, text: str, by: str, as_json: bool) -> None:
    """Add a note to a case."""
    _run(ctx, lambda s: service.annotate_case(s, case_id, text, by=by), as_json)


@cases_group.command("attach")
@click.argument("case_id")
@click.argument("evidence")
@by_option
@json_option
@click.pass_context
def cases_attach(ctx: click.Context, case_id: str, evidence: str, by: str, as_json: bool) -> None:
    """Attach evidence: a JSON object, a reference (URL, event id), or @FILE holding JSON."""
    raw = Path(evidence[1:]).read_text(encoding="utf-8") if evidence.startswith("@") else evidence
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    if not isinstance(value, dict | str):
        raise InputError("evidence must be a JSON object or a text reference")
    _run(ctx, lambda s: service.attach_evidence(s, case_id, value, by=by), as_json)


@cases_group.command("label")
@click.argument("case_id")
@click.argument("label", type=click.Choice(["true_positive", "false_positive"]))
@click.option("--actor", metavar="NAME", help="The intrusion set, for a true positive.")
@click.option("--category", metavar="CATEGORY", help="Training category (e.g. an LLMT id) for the label export.")
@by_option
@json_option
@click.pass_context
def cases_label(
    ctx: click.Context, case_id: str, label: str, actor: str | None, category: str | None, by: str, as_json: bool
) -> None:
    """Label a case true or false positive (exported by `stormwatch labels export`)."""
    _run(ctx, lambda s: service.label_case(s, case_id, label, by=by, actor=actor, category=category), as_json)


@cases_group.command("close")
@click.argument("case_id")
@click.option("--resolution", default="", help="Why it is closed.")
@by_option
@json_option
@click.pass_context
def cases_close(ctx: click.Context, case_id: str, resolution: str, by: str, as_json: bool) -> None:
    """Close a case."""
    _run(ctx, lambda s: service.close_case(s, case_id, by=by, resolution=resolution), as_json)


# -- appeals -----------------------------------------------------------------------------------------
@click.group("appeals")
def appeals_group() -> None:
    """File and decide appeals; a reinstatement reverses the actions through the same sinks."""


def _appeal_line(a: service.Appeal) -> str:
    decided = f" by {a.decided_by}" if a.decided_by else ""
    return f"{a.appeal_id}  {a.status:10} {a.account_id:24}{decided}  {a.reason}"


@appeals_group.command("file")
@click.argument("account_id")
@click.option("--reason", required=True, help="What the account owner says.")
@click.option("--by", "by", default="", metavar="NAME", help="Who files it (default: the account owner).")
@json_option
@click.pass_context
def appeals_file(ctx: click.Context, account_id: str, reason: str, by: str, as_json: bool) -> None:
    """File an appeal: the account's decisions go back under review and a case opens."""
    with open_ctx_store(ctx) as store:
        appeal = service.file_appeal(store, account_id, reason, by=by or account_id)
    echo_json(appeal.to_dict()) if as_json else click.echo(_appeal_line(appeal))


@appeals_group.command("list")
@click.option("--status", type=click.Choice(["open", "upheld", "reinstated"]), default=None)
@json_option
@click.pass_context
def appeals_list(ctx: click.Context, status: str | None, as_json: bool) -> None:
    """List appeals."""
    with open_ctx_store(ctx) as store:
        rows = service.list_appeals(store, status=status)
    if as_json:
        json_items(a.to_dict() for a in rows)
        return
    for a in rows:
        click.echo(_appeal_line(a))
    if not rows:
        click.echo("no appeals")


@appeals_group.command("decide")
@click.argument("appeal_id")
@click.option("--reinstate/--uphold", "reinstate", required=True, help="Reverse the actions, or keep them.")
@click.option("--note", default="", help="The reasoning, kept in the audit log.")
@by_option
@json_option
@click.pass_context
def appeals_decide(ctx: click.Context, appeal_id: str, reinstate: bool, note: str, by: str, as_json: bool) -> None:
    """Decide an appeal. Reinstating queues reversing actions: deliver them with `stormwatch actions deliver`."""
    with open_ctx_store(ctx) as store:
        outcome = service.decide_appeal(store, appeal_id, reinstate=reinstate, by=by, note=note)
    if as_json:
        echo_json(outcome.to_dict())
        return
    click.echo(_appeal_line(outcome.appeal))
    for a in outcome.reversing_actions:
        click.echo(f"  queued {a.kind} ({a.action_id}) reversing {a.reverses}")
    for aid in outcome.cancelled_actions:
        click.echo(f"  cancelled undelivered action {aid}")
    if outcome.reversing_actions:
        click.echo("deliver the reversals with `stormwatch actions deliver --sink ...`")


# -- labels ------------------------------------------------------------------------------------------
@click.group("labels")
def labels_group() -> None:
    """Analysts' labels as training data."""


@labels_group.command("export")
@output_option(default="-", allow_dash=True, path_type=None, help="Training JSONL file (- for stdout).")
@click.pass_context
def labels_export(ctx: click.Context, output: str) -> None:
    """Write labelled cases' events as training lines that `stormwatch train --data FILE` accepts."""
    with open_ctx_store(ctx) as store:
        if output == "-":
            n = service.export_labels(store, sys.stdout)
        else:
            with open(output, "w", encoding="utf-8") as fh:
                n = service.export_labels(store, fh)
    click.echo(f"{n} labelled lines written to {output}", err=True)
