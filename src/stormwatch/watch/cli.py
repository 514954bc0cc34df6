"""``stormwatch watch``: the long-running monitor (docs/watch.md)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from stormwatch.errors import ConfigError

__all__ = ["watch_command"]


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("stormwatch")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def _policy_paths(given: tuple[Path, ...]) -> list[Path]:
    """The policies the enforce stage reads: the setting, else $STORMWATCH_POLICIES, else ./policies if it exists."""
    if given:
        return list(given)
    env = os.environ.get("STORMWATCH_POLICIES")
    if env:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [Path("policies")] if Path("policies").is_dir() else []


def _slack_url(path: Path | None) -> str | None:
    from stormwatch.watch.settings import SLACK_URL_ENV, read_secret_file

    if path is not None:
        return read_secret_file(path, "Slack webhook URL")
    return os.environ.get(SLACK_URL_ENV) or None


@click.command("watch")
@click.option("--once", is_flag=True, help="Run one cycle and exit (cron, tests); exit 1 if a stage failed.")
@click.option(
    "--interval",
    type=click.FloatRange(0, min_open=True),
    metavar="S",
    help="Run a cycle at least every S seconds.  [default: 300]",
)
@click.option(
    "--min-interval",
    type=click.FloatRange(0, min_open=True),
    metavar="S",
    help="New events start a cycle, at most every S seconds.  [default: 10]",
)
@click.option(
    "--poll",
    type=click.FloatRange(0, min_open=True),
    metavar="S",
    help="Look for new events every S seconds.  [default: 2]",
)
@click.option(
    "--mode",
    type=click.Choice(["dry-run", "shadow", "enforce"]),
    default=None,
    help="The enforce stage's mode, as `stormwatch enforce --mode`; a policy still acts only in its own "
    "mode.  [default: dry-run]",
)
@click.option(
    "--policies",
    "policy_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    metavar="PATH",
    help="Policy files or folders (repeatable). Default: [watch] policies, $STORMWATCH_POLICIES, "
    "or ./policies if it exists (else no enforce stage).",
)
@click.option(
    "--sink",
    "sink_kind",
    default=None,
    metavar="NAME",
    help="Where enforce-mode actions go: webhook, outbox or a plugin's sink.",
)
@click.option(
    "--webhook-url",
    envvar="STORMWATCH_WEBHOOK_URL",
    metavar="URL",
    help="For --sink webhook [env: STORMWATCH_WEBHOOK_URL].",
)
@click.option(
    "--secret-env",
    default=None,
    metavar="NAME",
    help="Environment variable holding the webhook signing secret.  [default: STORMWATCH_WEBHOOK_SECRET]",
)
@click.option(
    "--outbox", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help="For --sink outbox: a JSONL file."
)
@click.option("--notify-sink", metavar="NAME", help="Also send new enforce/review decisions through this sink.")
@click.option(
    "--notify-outbox", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE", help="For --notify-sink outbox."
)
@click.option("--notify-webhook-url", metavar="URL", help="For --notify-sink webhook (signed with --secret-env).")
@click.option(
    "--slack-webhook-url-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="File holding a Slack-compatible incoming-webhook URL (a secret; or set STORMWATCH_SLACK_WEBHOOK_URL).",
)
@click.option("--console-url", metavar="URL", help="Base URL of the console, for links in notifications.")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Serve GET /healthz and /metrics here ('' for none; not with --once).  [default: 127.0.0.1:9464]",
)
@click.option("--allow-remote", is_flag=True, help="Allow --listen on an address other than loopback.")
@click.option(
    "--metrics-no-auth", is_flag=True, help="Serve /healthz and /metrics without a token (loopback addresses only)."
)
@click.option(
    "--intel-interval",
    type=click.FloatRange(0, min_open=True),
    metavar="S",
    help="Pull partner intel ([[watch.intel]]) at most every S seconds.  [default: 900]",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(3),
    metavar="S",
    help="How long the active watcher's lease lasts unless renewed.  [default: 120]",
)
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Scoring processes.  [default: 1]")
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="stormwatch.toml path ([watch] and [analyze]; default ./stormwatch.toml if present).",
)
@click.option(
    "--log-level", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"])
)
@click.option("-q", "--quiet", "quiet", is_flag=True, help="No progress bars (the log stays).")
@click.pass_context
def watch_command(
    ctx: click.Context, /, once: bool, config: Path | None, log_level: str, quiet: bool, allow_remote: bool,
    metrics_no_auth: bool, **opts: Any,
) -> None:  # fmt: skip
    """Run score -> analyze -> enforce -> notify -> intel sync as events arrive, or on a schedule.

    One watcher per database is active (a lease in the database); another waits on standby and
    takes over when the first stops. SIGTERM/SIGINT finish the current stage and exit 0. Health and
    Prometheus metrics are served on loopback, behind an API token (`stormwatch token create`).
    """
    from stormwatch.analyze.settings import load_settings as load_analyze_settings
    from stormwatch.disrupt.enforce import RetryPolicy
    from stormwatch.disrupt.sinks import make_sink
    from stormwatch.watch.loop import Watcher
    from stormwatch.watch.metrics import WatchMetrics
    from stormwatch.watch.notify import Channel, LogChannel, SinkChannel, SlackChannel, SlackWebhook
    from stormwatch.watch.settings import load_settings

    _configure_logging(log_level)
    renamed = {"sink_kind": "sink", "policy_paths": "policies"}
    settings = load_settings(config, **{renamed.get(k, k): v for k, v in opts.items()})
    analyze_settings = load_analyze_settings(config)
    policies = _policy_paths(settings.policies)
    sink = None
    if settings.sink:
        sink = make_sink(settings.sink, webhook_url=settings.webhook_url, secret_env=settings.secret_env,
                         outbox=settings.outbox)  # fmt: skip
    if settings.mode == "enforce" and sink is None:
        raise ConfigError("--mode enforce needs a sink", hint="pass --sink outbox --outbox FILE or --sink webhook")
    metrics = WatchMetrics()
    channels: list[Channel] = [
        LogChannel(lambda n: metrics.decisions.labels(n.level).inc(), console_url=settings.console_url)
    ]
    if settings.notify_sink:
        notify_sink = make_sink(settings.notify_sink, webhook_url=settings.notify_webhook_url,
                                secret_env=settings.secret_env, outbox=settings.notify_outbox)  # fmt: skip
        channels.append(SinkChannel(notify_sink, console_url=settings.console_url))
    slack_url = _slack_url(settings.slack_webhook_url_file)
    if slack_url:
        channels.append(SlackChannel(SlackWebhook(slack_url), console_url=settings.console_url))
    db_url = ctx.obj.get("db_url") if ctx.obj else None
    watcher = Watcher(
        db_url, settings, metrics, channels=channels, sink=sink,
        retry=RetryPolicy(wait=False), policy_paths=policies, analyze_settings=analyze_settings,
        progress=not quiet and sys.stderr.isatty(),
    )  # fmt: skip
    server = None
    if settings.listen and not once:
        from stormwatch.watch.server import WatchServer

        try:
            server = WatchServer(
                settings.listen, db_url=db_url, metrics=metrics, health=watcher.health, no_auth=metrics_no_auth,
                allow_remote=allow_remote,
            )  # fmt: skip
        except OSError as exc:
            raise ConfigError(f"cannot listen on {settings.listen}: {exc.strerror or exc}") from exc
        server.start()
    elif metrics_no_auth and not settings.listen:
        raise ConfigError("--metrics-no-auth without --listen")
    logging.getLogger("stormwatch.watch").info(
        "watch: mode %s, policies %s, notify %s, intel sources %d, every %.0f s (new events: %.0f s)",
        settings.mode, ", ".join(map(str, policies)) or "none (no enforce stage)",
        ", ".join(c.name for c in channels), len(settings.intel), settings.interval, settings.min_interval,
    )  # fmt: skip
    try:
        code = watcher.run(once=once)
    finally:
        if server is not None:
            server.stop()
    ctx.exit(code)
