"""``stormwatch watch`` settings: the ``[watch]`` section of ``stormwatch.toml``, then the command line.

Sources, later ones winning: defaults < ``stormwatch.toml`` ``[watch]`` (current directory, or the
path given with ``--config``) < explicit options. Secrets are never settings values: the Slack
webhook URL comes from a file (``slack_webhook_url_file``) or ``STORMWATCH_SLACK_WEBHOOK_URL``, a
TAXII password or token from the file or environment variable a source names::

    [watch]
    interval = 300                 # run a cycle at least this often (seconds)
    min_interval = 10              # new events start a cycle, at most this often
    poll = 2                       # look for new events this often
    mode = "dry-run"               # dry-run | shadow | enforce (each policy still acts only in its own mode)
    policies = ["policies"]        # files or folders; relative to this file's folder
    sink = "outbox"                # where enforce-mode actions go (as `stormwatch enforce --sink`)
    outbox = "actions.jsonl"
    notify_sink = "outbox"         # new enforce/review decisions through a sink, too
    notify_outbox = "notifications.jsonl"
    slack_webhook_url_file = "/run/secrets/slack-webhook-url"
    console_url = "https://stormwatch.internal"   # links: <console_url>/console/accounts/<id>
    listen = "127.0.0.1:9464"      # /healthz and /metrics; "" for none
    intel_interval = 900           # partner intel pulls at most this often

    [[watch.intel]]                # a partner TAXII 2.1 collection to pull (repeatable)
    taxii = "https://peer.example/taxii2/api1/"
    collection = "findings"
    user = "partner"
    password_file = "/run/secrets/peer-password"   # or password_env, token_file, token_env
    allow_redirect_hosts = []
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from stormwatch.errors import ConfigError

__all__ = ["IntelSource", "WatchSettings", "load_settings", "read_secret_file"]

MODES = ("dry-run", "shadow", "enforce")
SLACK_URL_ENV = "STORMWATCH_SLACK_WEBHOOK_URL"
_MAX_SECRET_BYTES = 4096

_SCALARS: dict[str, type | tuple[type, ...]] = {
    "interval": (int, float),
    "min_interval": (int, float),
    "poll": (int, float),
    "mode": str,
    "sink": str,
    "outbox": str,
    "webhook_url": str,
    "secret_env": str,
    "notify_sink": str,
    "notify_outbox": str,
    "notify_webhook_url": str,
    "slack_webhook_url_file": str,
    "console_url": str,
    "listen": str,
    "intel_interval": (int, float),
    "lease_seconds": (int, float),
    "workers": int,
}
_PATHS = ("outbox", "notify_outbox", "slack_webhook_url_file")
_INTEL_KEYS = (
    "taxii", "collection", "user", "password_env", "password_file", "token_env", "token_file",
    "allow_redirect_hosts", "page_size", "max_seconds",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class IntelSource:
    """A partner TAXII collection the intel stage pulls (credentials are read when it runs)."""

    taxii: str
    collection: str
    user: str | None = None
    password_env: str | None = None
    password_file: Path | None = None
    token_env: str | None = None
    token_file: Path | None = None
    allow_redirect_hosts: tuple[str, ...] = ()
    page_size: int = 500
    max_seconds: float = 300.0

    def credentials(self) -> tuple[str | None, str | None]:
        """``(password, token)`` from their files or environment variables (never logged)."""
        password = _secret(self.password_file, self.password_env, "password")
        token = _secret(self.token_file, self.token_env, "token")
        return password, token


@dataclass(frozen=True, slots=True)
class WatchSettings:
    interval: float = 300.0
    min_interval: float = 10.0
    poll: float = 2.0
    mode: str = "dry-run"
    policies: tuple[Path, ...] = ()  # empty: $STORMWATCH_POLICIES or ./policies when it exists
    sink: str | None = None
    outbox: Path | None = None
    webhook_url: str | None = None
    secret_env: str | None = None
    notify_sink: str | None = None
    notify_outbox: Path | None = None
    notify_webhook_url: str | None = None
    slack_webhook_url_file: Path | None = None
    console_url: str | None = None
    listen: str = "127.0.0.1:9464"
    intel_interval: float = 900.0
    lease_seconds: float = 120.0
    workers: int = 1
    intel: tuple[IntelSource, ...] = field(default_factory=tuple)

    def check(self) -> WatchSettings:
        """Raise ConfigError naming the setting that is out of range."""
        for name in ("interval", "min_interval", "poll", "intel_interval", "lease_seconds"):
            if float(getattr(self, name)) <= 0:
                raise ConfigError(f"watch setting {name}: must be positive, got {getattr(self, name)}")
        if self.lease_seconds < 3:
            raise ConfigError(f"watch setting lease_seconds: at least 3, got {self.lease_seconds}")
        if self.mode not in MODES:
            raise ConfigError(f"watch setting mode: {self.mode!r}; one of {', '.join(MODES)}")
        if self.workers < 1:
            raise ConfigError(f"watch setting workers: at least 1, got {self.workers}")
        if self.console_url and not self.console_url.startswith(("http://", "https://")):
            raise ConfigError(f"watch setting console_url: an http(s) URL, got {self.console_url!r}")
        return self


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a small secret file (bounded read); the message names the file, never the value."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    if len(data) > _MAX_SECRET_BYTES:
        raise ConfigError(f"{path}: the {what} file is larger than {_MAX_SECRET_BYTES} bytes")
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the {what} file is not UTF-8") from exc
    if not value or "\n" in value:
        raise ConfigError(f"{path}: the {what} file must hold one line")
    return value


def _secret(path: Path | None, env: str | None, what: str) -> str | None:
    if path is not None:
        return read_secret_file(path, what)
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"the {what} variable {env} is not set")
        return value
    return None


def _where(file: Path, key: str) -> str:
    return f"{file}: [watch] {key}"


def _intel(file: Path, raw: Any) -> tuple[IntelSource, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{_where(file, 'intel')}: expected [[watch.intel]] tables")
    out = []
    for i, item in enumerate(raw):
        where = _where(file, f"intel[{i}]")
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table")
        unknown = sorted(set(item) - set(_INTEL_KEYS))
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown setting; expected one of {', '.join(_INTEL_KEYS)}")
        for key in ("taxii", "collection"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise ConfigError(f"{where}.{key}: required (a string)")
        if not str(item["taxii"]).startswith(("http://", "https://")):
            raise ConfigError(f"{where}.taxii: an http(s) URL, got {item['taxii']!r}")
        for key in ("user", "password_env", "password_file", "token_env", "token_file"):
            if key in item and not isinstance(item[key], str):
                raise ConfigError(f"{where}.{key}: expected a string")
        hosts = item.get("allow_redirect_hosts", [])
        if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
            raise ConfigError(f"{where}.allow_redirect_hosts: expected a list of host[:port] strings")

        def rel(key: str, item: dict[str, Any] = item) -> Path | None:
            if key not in item:
                return None
            p = Path(item[key])
            return p if p.is_absolute() else file.parent / p

        page_size = item.get("page_size", 500)
        max_seconds = item.get("max_seconds", 300.0)
        if not isinstance(page_size, int) or isinstance(page_size, bool) or page_size < 1:
            raise ConfigError(f"{where}.page_size: a positive integer")
        if not isinstance(max_seconds, int | float) or isinstance(max_seconds, bool) or max_seconds <= 0:
            raise ConfigError(f"{where}.max_seconds: a positive number")
        out.append(
            IntelSource(
                taxii=item["taxii"],
                collection=item["collection"],
                user=item.get("user"),
                password_env=item.get("password_env"),
                password_file=rel("password_file"),
                token_env=item.get("token_env"),
                token_file=rel("token_file"),
                allow_redirect_hosts=tuple(hosts),
                page_size=page_size,
                max_seconds=float(max_seconds),
            )
        )
    return tuple(out)


def _section(file: Path) -> dict[str, Any]:
    try:
        with open(file, "rb") as fh:
            doc = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{file}: not TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror or exc}") from exc
    section = doc.get("watch", {})
    if not isinstance(section, dict):
        raise ConfigError(f"{file}: [watch] must be a table")
    return dict(section)


def load_settings(path: str | Path | None = None, **overrides: Any) -> WatchSettings:
    """Merge the sources (module doc). ``overrides`` are the options given (None: not given)."""
    file = Path(path) if path is not None else Path("stormwatch.toml")
    if path is not None and not file.is_file():
        raise ConfigError(f"{file}: no such settings file")
    values: dict[str, Any] = {}
    if file.is_file():
        section = _section(file)
        allowed = (*_SCALARS, "policies", "intel")
        unknown = sorted(set(section) - set(allowed))
        if unknown:
            raise ConfigError(f"{_where(file, unknown[0])}: unknown setting; expected one of {', '.join(allowed)}")
        for key, kind in _SCALARS.items():
            if key not in section:
                continue
            value: Any = section[key]
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ConfigError(f"{_where(file, key)}: expected a {getattr(kind, '__name__', 'number')}")
            if key in _PATHS:
                p = Path(str(value))
                value = p if p.is_absolute() else file.parent / p
            values[key] = float(value) if kind == (int, float) else value
        if "policies" in section:
            listed = section["policies"]
            listed = [listed] if isinstance(listed, str) else listed
            if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
                raise ConfigError(f"{_where(file, 'policies')}: expected a path or a list of paths")
            values["policies"] = tuple(p if p.is_absolute() else file.parent / p for p in (Path(x) for x in listed))
        if "intel" in section:
            values["intel"] = _intel(file, section["intel"])
    settings = WatchSettings(**values)
    given = {k: v for k, v in overrides.items() if v is not None and v != ()}
    if "policies" in given:
        given["policies"] = tuple(Path(p) for p in given["policies"])
    for key in ("interval", "min_interval", "poll", "intel_interval", "lease_seconds"):
        if key in given:
            given[key] = float(given[key])
    return replace(settings, **given).check()
