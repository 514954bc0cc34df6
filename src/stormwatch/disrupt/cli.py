"""``stormwatch policy | enforce | actions | audit``: thin click wrappers over the service layer."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click
import orjson

from stormwatch.clitools import deprecated_argument, echo_json, json_items, json_option, open_ctx_store
from stormwatch.disrupt import service
from stormwatch.disrupt.evaluate import Planned
from stormwatch.errors import EXIT_ERROR, EXIT_INPUT, EXIT_QUARANTINED, InputError

F = TypeVar("F", bound=Callable[..., Any])


def default_policy_paths() -> list[str]:
    env = os.environ.get("STORMWATCH_POLICIES")
    return env.split(os.pathsep) if env else ["policies"]


def policies_option(fn: F) -> F:
    return click.option(
        "--policies",
        "policy_paths",
        multiple=True,
        metavar="PATH",
        help="Policy files or folders (repeatable). Default: $STORMWATCH_POLICIES or ./policies",
    )(fn)


def now_option(fn: F) -> F:
    return click.option(
        "--now", "now", metavar="ISO_TIME", help="Evaluate as of this UTC time (account age, exemption expiry)."
    )(fn)


def parse_now(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InputError(f"--now: not an ISO time: {value!r}", hint="e.g. 2026-11-30T00:00:00Z") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def sink_options(fn: F) -> F:
    opts = [
        click.option("--sink", "sink_kind", default=None, metavar="NAME",
                     help="Where actions go: webhook (HMAC-signed, Standard Webhooks), outbox (a JSONL file), "
                          "or a sink a plugin adds (stormwatch_sinks hook)."),
        click.option("--webhook-url", envvar="STORMWATCH_WEBHOOK_URL", metavar="URL",
                     help="The platform's account-system endpoint [env: STORMWATCH_WEBHOOK_URL]."),
        click.option("--secret-env", default="STORMWATCH_WEBHOOK_SECRET", show_default=True, metavar="NAME",
                     help="Environment variable holding the webhook signing secret (never pass it literally)."),
        click.option("--outbox", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="JSONL outbox file for --sink outbox."),
        click.option("--max-attempts", default=5, show_default=True, type=click.IntRange(1, 100)),
        click.option("--backoff", default=0.5, show_default=True, type=click.FloatRange(0.0),
                     help="First retry delay in seconds; doubles per attempt (with jitter), capped at 30 s."),
        click.option("--timeout", default=10.0, show_default=True, type=click.FloatRange(0.1),
                     help="Seconds to wait for the webhook receiver."),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def build_sink(kw: dict[str, Any], required: bool) -> tuple[service.Sink | None, service.RetryPolicy]:
    retry = service.RetryPolicy(max_attempts=kw["max_attempts"], base_delay=kw["backoff"])
    kind = kw["sink_kind"]
    if kind is None:
        if required:
            raise InputError(
                "no sink given", hint="pass --sink outbox --outbox FILE or --sink webhook --webhook-url URL"
            )
        return None, retry
    sink = service.make_sink(kind, webhook_url=kw["webhook_url"], secret_env=kw["secret_env"],
                             outbox=kw["outbox"], timeout=kw["timeout"])  # fmt: skip
    return sink, retry


def _planned_line(p: Planned, mode: str) -> str:
    target = p.account_id + (f" end_user={p.end_user_id}" if p.end_user_id else "")
    params = " ".join(f"{k}={v}" for k, v in p.params.items() if k != "reason" and k != "message")
    tag = {"planned": mode.upper(), "exempted": "EXEMPT", "superseded": "superseded"}[p.status]
    why = p.evidence.get("exemption") if p.status == "exempted" else "; ".join(p.reasons)
    return f"{tag:10} {p.action:20} {target:28} {p.decided_by}  {params}  ({why})".replace("  ()", "")


# -- policy ------------------------------------------------------------------------------------------
@click.group("policy")
def policy_group() -> None:
    """Validate, test and compare policy files (see docs/disrupt.md)."""


@policy_group.command("check")
@policies_option
@deprecated_argument("`policy check PATH...`", target="policy_paths", new="--policies PATH", nargs=-1)
@now_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_check(ctx: click.Context, policy_paths: tuple[str, ...], now: str | None, as_json: bool) -> None:
    """Validate policy and exemption files; problems are printed as FILE:LINE: severity: FIELD: message."""
    issues = service.check_policies(list(policy_paths) or default_policy_paths(), now=parse_now(now))
    errors = [i for i in issues if i.severity == "error"]
    if as_json:
        echo_json({"ok": not errors, "issues": [i.to_dict() for i in issues]})
    else:
        for i in issues:
            click.echo(str(i), err=i.severity == "error")
        click.echo(f"{len(errors)} error(s), {len(issues) - len(errors)} warning(s)")
    if errors:
        ctx.exit(EXIT_INPUT)


@policy_group.command("test")
@policies_option
@now_option
@click.option("--account", "accounts", multiple=True, metavar="ID", help="Only these accounts.")
@click.option("--shadow/--no-shadow", default=True, help="Also show the shadow policies' decisions.")
@click.option("--all", "show_all", is_flag=True, help="Also list exempted and superseded decisions.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_test(
    ctx: click.Context, policy_paths: tuple[str, ...], now: str | None, accounts: tuple[str, ...],
    shadow: bool, show_all: bool, as_json: bool,
) -> None:  # fmt: skip
    """Run the policies against the stored judgements and show what would happen. Writes nothing."""
    pset = service.load_policy_set(list(policy_paths) or default_policy_paths(), parse_now(now))
    with open_ctx_store(ctx) as store:
        ev = service.test_policies(store, pset, now=parse_now(now), account_ids=list(accounts) or None)
    shadow_ids = {p.id for p in pset.shadow()}
    rows = [p for p in ev.planned if shadow or p.policy_id not in shadow_ids]
    if as_json:
        echo_json({"judgements": ev.judgements, "counts": ev.counts, "decisions": [p.to_dict() for p in rows]})
        return
    for p in rows:
        if show_all or p.status != "superseded":
            click.echo(_planned_line(p, "shadow" if p.policy_id in shadow_ids else "would"))
    click.echo(f"-- {ev.judgements} judgements; " + ", ".join(f"{k} {v}" for k, v in ev.counts.items()))


@policy_group.command("compare")
@policies_option
@click.option("--candidate", "candidates", multiple=True, metavar="PATH",
              help="Candidate policy files (default: the shadow-mode policies among --policies).")  # fmt: skip
@now_option
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def policy_compare(
    ctx: click.Context, policy_paths: tuple[str, ...], candidates: tuple[str, ...], now: str | None, as_json: bool
) -> None:
    """Show what candidate (shadow) policies would do differently from the active ones."""
    active = service.load_policy_set(list(policy_paths) or default_policy_paths(), parse_now(now))
    cand = service.load_policy_set(list(candidates), parse_now(now)) if candidates else active
    with open_ctx_store(ctx) as store:
        cmp = service.compare_policies(store, active, cand, now=parse_now(now))
    if as_json:
        echo_json(cmp.to_dict())
        return
    for d in cmp.only_candidate:
        click.echo(f"+ {d.action:20} {d.account_id} {d.end_user_id or ''}  by {d.candidate}")
    for d in cmp.only_active:
        click.echo(f"- {d.action:20} {d.account_id} {d.end_user_id or ''}  by {d.active}")
    click.echo(
        f"-- {cmp.same} same, {len(cmp.only_candidate)} only candidate (+), {len(cmp.only_active)} only active (-)"
    )


# -- enforce -----------------------------------------------------------------------------------------
@click.command("enforce")
@policies_option
@click.option("--mode", type=click.Choice(["dry-run", "shadow", "enforce"]), default="dry-run", show_default=True,
              help="dry-run: decide and record, act on nothing; shadow: record the shadow policies only; "
              "enforce: deliver actions of enforce-mode policies.")  # fmt: skip
@sink_options
@now_option
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Also list the decisions earlier runs recorded that this run matched again (marked earlier).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def enforce_command(
    ctx: click.Context, /, policy_paths: tuple[str, ...], mode: str, now: str | None, show_all: bool,
    as_json: bool, **kw: Any,
) -> None:  # fmt: skip
    """Evaluate policies, record decisions in the audit log and (with --mode enforce) carry them out.

    Lists the decisions this run recorded (with --all also the earlier ones it matched again).
    """
    pset = service.load_policy_set(list(policy_paths) or default_policy_paths(), parse_now(now))
    sink, retry = build_sink(kw, required=mode == "enforce")
    with open_ctx_store(ctx) as store:
        report = service.enforce(store, pset, sink, mode=mode, retry=retry, now=parse_now(now),
                                 include_earlier=show_all)  # fmt: skip
    if as_json:
        out = report.to_dict()
        if not show_all:
            out["run"].pop("earlier", None)
        echo_json(out)
    else:
        r = report.run
        for d, when in [*((d, "") for d in r.decisions), *((d, "  (earlier)") for d in r.earlier)]:
            if d.status != "superseded":
                tag = "EXEMPT" if d.status == "exempted" else d.mode.upper()
                click.echo(f"{tag:10} {d.action:20} {d.account_id:24} {d.decided_by}{when}")
        click.echo(
            f"{r.run_id} ({r.mode}): {r.judgements} judgements, {r.decisions_new} new decisions "
            f"({r.decisions_existing} already recorded), {r.exempted} exempted, {r.actions_queued} actions queued, "
            f"{r.cases_opened} cases opened"
        )
        if report.delivery:
            _echo_delivery(report.delivery)
        if report.audit_head:
            click.echo(f"audit head: seq {report.audit_head.seq} {report.audit_head.entry_hash}")
    if report.delivery and report.delivery.dead_lettered:
        ctx.exit(EXIT_QUARANTINED)


def _echo_delivery(d: service.DeliveryReport) -> None:
    click.echo(
        f"delivery via {d.sink}: {d.delivered} delivered, {d.retried} retries, {d.dead_lettered} dead-lettered, "
        f"{d.pending} still pending"
    )
    if d.dead_lettered:
        click.echo("some actions are dead letters: fix the receiver, then `stormwatch actions retry`", err=True)


# -- actions -----------------------------------------------------------------------------------------
@click.group("actions")
def actions_group() -> None:
    """List actions, deliver pending ones and retry dead letters."""


@actions_group.command("list")
@click.option("--status", type=click.Choice(["pending", "delivered", "dead", "cancelled"]), default=None)
@click.option("--account", "account_id", metavar="ID")
@click.option("--limit", default=100, show_default=True)
@json_option('One JSON document: {"items": [action, ...]}.')
@click.pass_context
def actions_list(ctx: click.Context, status: str | None, account_id: str | None, limit: int, as_json: bool) -> None:
    """List actions (idempotency key, kind, target, status, attempts, last error)."""
    with open_ctx_store(ctx) as store:
        rows = service.list_actions(store, status=status, account_id=account_id, limit=limit)
    if as_json:
        json_items(a.to_dict() for a in rows)
        return
    for a in rows:
        err = f"  last error: {a.last_error}" if a.last_error else ""
        target = a.account_id + (f" end_user={a.end_user_id}" if a.end_user_id else "")
        click.echo(f"{a.action_id}  {a.status:9} {a.kind:20} {target}  attempts={a.attempts}{err}")
    if not rows:
        click.echo("no actions")


def _delivery(ctx: click.Context, kw: dict[str, Any], fn: Callable[..., service.DeliveryReport], as_json: bool) -> None:
    sink, retry = build_sink(kw, required=True)
    assert sink is not None
    with open_ctx_store(ctx) as store:
        report = fn(store, sink, retry=retry)
    if as_json:
        echo_json(report.to_dict())
    else:
        _echo_delivery(report)
    if report.dead_lettered:
        ctx.exit(EXIT_QUARANTINED)


@actions_group.command("deliver")
@sink_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def actions_deliver(ctx: click.Context, /, as_json: bool, **kw: Any) -> None:
    """Deliver pending actions (e.g. reinstatements queued by `appeals decide`)."""
    _delivery(ctx, kw, service.deliver_pending, as_json)


@actions_group.command("retry")
@sink_options
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def actions_retry(ctx: click.Context, /, as_json: bool, **kw: Any) -> None:
    """Requeue every dead-lettered action and deliver it again."""
    _delivery(ctx, kw, service.retry_dead_letters, as_json)


# -- audit -------------------------------------------------------------------------------------------
@click.group("audit")
def audit_group() -> None:
    """Read and verify the hash-chained audit log."""


@audit_group.command("list")
@click.option("--target", metavar="TARGET", help="e.g. account:acct_1 or case:case_ab12")
@click.option("--limit", default=100, show_default=True)
@click.option("--offset", default=0, show_default=True)
@json_option('One JSON document: {"items": [entry, ...]}.')
@click.pass_context
def audit_list(ctx: click.Context, target: str | None, limit: int, offset: int, as_json: bool) -> None:
    """Audit entries in order: seq, time, who/what, action, target, versions."""
    with open_ctx_store(ctx) as store:
        rows = service.list_audit(store, target=target, limit=limit, offset=offset)
    if as_json:
        json_items(e.to_dict() for e in rows)
        return
    for e in rows:
        ver = f" rule={e.rule_version}" if e.rule_version else ""
        click.echo(f"{e.seq:6} {e.ts} {e.actor:40} {e.action:22} {e.target}{ver}")


@audit_group.command("verify")
@click.option("--anchor", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A head written by `stormwatch audit anchor`: also detects a rewritten or cut chain.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def audit_verify(ctx: click.Context, anchor: Path | None, as_json: bool) -> None:
    """Recompute the hash chain; name the first changed, removed or reordered entry. Exit 1 if broken."""
    anchored = None
    if anchor is not None:
        try:
            obj = orjson.loads(anchor.read_bytes())
            anchored = service.AuditAnchor(int(obj["seq"]), str(obj["entry_hash"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{anchor}: not an audit anchor ({exc})") from exc
    with open_ctx_store(ctx) as store:
        result = service.verify_audit(store, anchor=anchored)
    if as_json:
        echo_json(result.to_dict())
    elif result.ok:
        click.echo(f"audit log OK: {result.message}")
    else:
        click.echo(f"audit log BROKEN at seq {result.first_bad_seq} ({result.problem}): {result.message}", err=True)
    if not result.ok:
        ctx.exit(EXIT_ERROR)


@audit_group.command("anchor")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.pass_context
def audit_anchor(ctx: click.Context, output: Path) -> None:
    """Write the chain head (seq, hash) to a file kept outside the database."""
    with open_ctx_store(ctx) as store:
        head = service.audit_head(store)
    output.write_bytes(orjson.dumps(head.to_dict()) + b"\n")
    click.echo(f"anchored seq {head.seq} {head.entry_hash} in {output}")
