"""``stormwatch serve`` and ``stormwatch token create|list|revoke``."""

from __future__ import annotations

import getpass
import ipaddress
import json
import logging
import os
import sys
from datetime import timedelta
from typing import Any

import click

from stormwatch.api.roles import Role
from stormwatch.clitools import deprecated_alias, echo_json, json_items, json_option, open_ctx_store
from stormwatch.errors import ConfigError

LOOPBACK_NAMES = {"localhost", "ip6-localhost", "ip6-loopback"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cli_actor() -> str:
    """How the audit log names whoever runs ``stormwatch token`` from a shell."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name for this uid (a container)
        return "cli:unknown"


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger("stormwatch")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to bind.")
@click.option("--db", "db_url", metavar="URL", help="Database URL (overrides the global --db).")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow binding to an address other than loopback. Put a TLS-terminating proxy in front.",
)
@click.option("--pool-size", default=4, show_default=True, type=click.IntRange(1, 64), help="DB connections.")
@click.option(
    "--sink",
    metavar="NAME",
    help="Where POST /actions/retry delivers enforcement actions: webhook, outbox or a plugin's sink "
    "(left out: that route answers 503).",
)
@click.option("--webhook-url", envvar="STORMWATCH_WEBHOOK_URL", metavar="URL", help="For --sink webhook.")
@click.option(
    "--secret-env",
    "webhook_secret_env",
    metavar="NAME",
    help="Environment variable holding the webhook signing secret [default: STORMWATCH_WEBHOOK_SECRET].",
)
@deprecated_alias("--webhook-secret-env", target="webhook_secret_env", new="--secret-env NAME", metavar="NAME")
@click.option("--outbox", type=click.Path(), metavar="FILE", help="For --sink outbox: a JSONL file.")
@click.option(
    "--max-body-mb",
    default=8,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="Largest request body for API routes, in MiB (larger: 413). TAXII envelopes may be 64 MiB.",
)
@click.option(
    "--auth-failure-limit",
    default=20,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="Failed authentications allowed per client address per minute before 429 (0: no limit).",
)
@click.option(
    "--screening-policy",
    type=click.Path(exists=True, dir_okay=False),
    envvar="STORMWATCH_SCREENING_POLICY",
    metavar="FILE",
    help="kind: screening policy of the LiteLLM guardrail route (default: warn only; docs/online.md).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Server processes sharing the port (uvicorn workers), each with its own connections and "
    "event writer. More than 1 uses more cores: see docs/online.md.",
)
@click.option(
    "--token-cache-s",
    "token_cache_s",
    default=5.0,
    show_default=True,
    type=click.FloatRange(0, 300),
    help="Seconds a token verified on the screening routes (/v1/moderations, the LiteLLM guardrail) "
    "is trusted without the database; a revocation takes effect there within this time (0: never cached).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    help="Level of the request log and errors (stderr).",
)
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str,
    port: int,
    db_url: str | None,
    allow_remote: bool,
    pool_size: int,
    sink: str | None,
    webhook_url: str | None,
    webhook_secret_env: str | None,
    outbox: str | None,
    max_body_mb: int,
    auth_failure_limit: int,
    screening_policy: str | None,
    workers: int,
    token_cache_s: float,
    log_level: str,
) -> None:
    """Run the HTTP API (OpenAPI document at /api/v1/openapi.json).

    Every route needs an API token (`stormwatch token create`). The server speaks plain HTTP and
    binds to loopback only unless --allow-remote is given; to serve other machines, put a
    TLS-terminating reverse proxy in front of it.
    """
    if not is_loopback(host) and not allow_remote:
        raise ConfigError(
            f"refusing to listen on {host}: it is not a loopback address",
            hint="tokens would cross the network in clear text; pass --allow-remote and put a "
            "TLS-terminating proxy in front",
        )
    import uvicorn

    config = {
        "url": db_url or (ctx.obj.get("db_url") if ctx.obj else None),
        "pool_size": pool_size,
        "sink": sink,
        "webhook_url": webhook_url,
        "webhook_secret_env": webhook_secret_env,
        "outbox": outbox,
        "max_body_mb": max_body_mb,
        "auth_failure_limit": auth_failure_limit,
        "token_cache_s": token_cache_s,
        "screening_policy": screening_policy,
        "log_level": log_level,
    }
    # Build the app here even with --workers, so a bad URL, sink or policy fails before the server
    # starts; this also opens (and migrates) the database once, before any worker opens it.
    app = _build_app(config)
    _configure_logging(log_level)
    click.echo(
        f"stormwatch API on http://{host}:{port}/api/v1"
        + (f" ({workers} worker processes)" if workers > 1 else "")
        + " (Ctrl-C to stop)",
        err=True,
    )
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # our access log names the token id and never the query string or headers
        "log_level": log_level,
        "server_header": False,
        "proxy_headers": False,
    }
    if workers == 1:
        uvicorn.run(app, **options)
        return
    app.state.store_pool.close()
    # Each worker process builds its own app from this configuration (worker_app): its own store
    # pool, its own event writer (durable before it answers, as with one process), its own token
    # cache and failed-login throttle. SQLite in WAL mode with a busy timeout lets their writers
    # take turns.
    os.environ[_WORKER_CONFIG_ENV] = json.dumps(config)
    uvicorn.run(f"{__name__}:worker_app", factory=True, workers=workers, **options)


_WORKER_CONFIG_ENV = "STORMWATCH_SERVE_WORKER_CONFIG"


#: how long a thread holding the GIL may run before one waiting for it gets its turn (Python's default
#: is 5 ms). The event loop hands each screened request's events to the writer thread and waits for
#: its commit: with the default, two hand-offs under load could each wait up to 5 ms, which is what
#: a request's p99 is made of. ``STORMWATCH_SWITCH_INTERVAL_MS`` overrides it.
SWITCH_INTERVAL_MS = 0.5


def _set_switch_interval() -> None:
    raw = os.environ.get("STORMWATCH_SWITCH_INTERVAL_MS", "").strip()
    try:
        ms = float(raw) if raw else SWITCH_INTERVAL_MS
    except ValueError:
        raise ConfigError(f"STORMWATCH_SWITCH_INTERVAL_MS={raw!r} is not a number of milliseconds") from None
    if not 0.05 <= ms <= 100:
        raise ConfigError(f"STORMWATCH_SWITCH_INTERVAL_MS={raw!r}: give 0.05 to 100 milliseconds")
    sys.setswitchinterval(ms / 1000.0)


def _build_app(config: dict[str, Any]) -> Any:
    """The app of ``stormwatch serve``, from its options (the database opened and migrated)."""
    from stormwatch.api.app import create_app
    from stormwatch.api.guard import RequestLimits

    _set_switch_interval()
    action_sink = None
    if config["sink"] is not None:
        from stormwatch.disrupt.sinks import make_sink

        action_sink = make_sink(
            config["sink"],
            webhook_url=config["webhook_url"],
            secret_env=config["webhook_secret_env"],
            outbox=config["outbox"],
        )
    limits = RequestLimits(
        max_body_bytes=config["max_body_mb"] * 1024 * 1024,
        auth_failure_limit=config["auth_failure_limit"],
        token_cache_ttl_s=config["token_cache_s"],
    )
    app = create_app(config["url"], pool_size=config["pool_size"], action_sink=action_sink, limits=limits)
    if config["screening_policy"] is not None:
        from stormwatch.api.screening import load_screening_policy

        app.state.screening_policy = load_screening_policy(config["screening_policy"])
    # Open (and migrate) the database now, so a bad URL fails before the server starts.
    pool = app.state.store_pool
    pool.release(pool.acquire())
    return app


def worker_app() -> Any:
    """The app of one ``stormwatch serve --workers N`` worker process (uvicorn calls it)."""
    config = json.loads(os.environ[_WORKER_CONFIG_ENV])
    _configure_logging(config["log_level"])
    return _build_app(config)


@click.group("token")
def token_group() -> None:
    """Create, list and revoke API tokens (stored hashed; shown once)."""


@token_group.command("create")
@click.option("--name", required=True, help="Who or what will use the token.")
@click.option(
    "--role",
    required=True,
    type=click.Choice([r.value for r in Role]),
    help="read-only: GET routes; analyst: + case work, filing appeals; admin: everything.",
)
@click.option("--scope", "scopes", multiple=True, help="Narrow the role to these permissions. Repeatable.")
@click.option("--expires", "expires_days", type=click.IntRange(1, 3650), metavar="DAYS", help="Lifetime.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (token included).")
@click.pass_context
def token_create(
    ctx: click.Context,
    name: str,
    role: str,
    scopes: tuple[str, ...],
    expires_days: int | None,
    as_json: bool,
) -> None:
    """Make a token and print it once: it is stored only as a hash and cannot be shown again."""
    from stormwatch.api.tokens import create_token

    with open_ctx_store(ctx) as store:
        token, info = create_token(
            store,
            name=name,
            role=role,
            scopes=scopes,
            expires_in=None if expires_days is None else timedelta(days=expires_days),
            created_by=_cli_actor(),
        )
    if as_json:
        echo_json({**info.to_dict(), "token": token})
        return
    click.echo(token)
    expiry = f", expires {info.expires_at}" if info.expires_at else ""
    click.echo(
        f"token {info.token_id} ({info.name}, {info.role.value}{expiry}): copy it now, it is not shown again",
        err=True,
    )


@token_group.command("list")
@json_option('One JSON document: {"items": [token, ...]} (never the secret).')
@click.pass_context
def token_list(ctx: click.Context, as_json: bool) -> None:
    """List tokens: id, name, role, status, dates (never the secret)."""
    from stormwatch.api.tokens import list_tokens

    with open_ctx_store(ctx) as store:
        tokens = list_tokens(store)
    if as_json:
        json_items(t.to_dict() for t in tokens)
        return
    if not tokens:
        click.echo("no tokens: make one with `stormwatch token create --name NAME --role ROLE`")
        return
    for t in tokens:
        d = t.to_dict()
        scopes = f" scopes={','.join(t.scopes)}" if t.scopes else ""
        click.echo(
            f"{t.token_id}  {d['status']:8} {t.role.value:9} {t.name}{scopes}  created {t.created_at}"
            + (f"  expires {t.expires_at}" if t.expires_at else "")
            + (f"  last used {t.last_used_at}" if t.last_used_at else "")
        )


@token_group.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke the token TOKEN_ID (its first 8 characters after sw_).

    A running server refuses it on the next request, except on the screening routes
    (/v1/moderations, the LiteLLM guardrail), which trust a verified token for `serve
    --token-cache-s` seconds (5 by default): there it is refused within that time.
    """
    from stormwatch.api.tokens import revoke_token

    with open_ctx_store(ctx) as store:
        info = revoke_token(store, token_id, by=_cli_actor())
    click.echo(f"token {info.token_id} ({info.name}) revoked at {info.revoked_at}")
