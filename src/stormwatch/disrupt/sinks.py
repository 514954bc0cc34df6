"""Action sinks: where decided actions are delivered. One small protocol, three implementations.

* :class:`WebhookSink` POSTs each action to the platform's account system, signed the Standard
  Webhooks way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64
  HMAC-SHA256 of "id.timestamp.body">``) plus ``Idempotency-Key``. The receiver must apply each
  ``webhook-id`` at most once (the delivery is at-least-once; docs/disrupt.md has the contract).
  Redirects are never followed: a 3xx is a failed delivery (the signed body and its headers go to
  the configured URL only).
* :class:`OutboxSink` appends one JSON line per action to a file (fsynced) and is its own receiver:
  it never writes an id twice, even after a crash between the write and the database update.
* :class:`MemorySink` keeps payloads in a list: the reference implementation for tests and plugins.

Signing (:func:`sign`, the sink) and verifying (:func:`verify_signature`, the reference receiver) use
the maintained ``standardwebhooks`` library (the Standard Webhooks reference implementation), not a
hand-written HMAC; ``benchmarks/bench_webhooks.py`` measured it against the former code. A
``whsec_<base64>`` secret is base64-decoded; any other secret is used as its UTF-8 bytes, as before.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson
from standardwebhooks import Webhook, WebhookVerificationError
from standardwebhooks.webhooks import EmptyWebhookSecretError

from stormwatch.disrupt.models import Action
from stormwatch.errors import ConfigError, StormwatchError


class DeliveryError(StormwatchError):
    """A sink could not deliver; ``retryable`` False sends the action straight to the dead letters."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Sink(Protocol):
    name: str

    def send(self, action: Action) -> None:
        """Deliver ``action`` or raise :class:`DeliveryError`. Must be safe to call twice for one id."""
        ...


def payload(action: Action) -> dict[str, Any]:
    """The JSON body every sink delivers (``type`` names the action: ``stormwatch.action.suspend``)."""
    return {
        "id": action.action_id,
        "type": f"stormwatch.action.{action.kind}",
        "created_at": action.created_at,
        "data": {
            "action_id": action.action_id,
            "kind": action.kind,
            "account_id": action.account_id,
            "end_user_id": action.end_user_id,
            "params": action.params,
            "decision_id": action.decision_id,
            "reverses": action.reverses,
        },
    }


def secret_bytes(secret: str) -> bytes:
    """``whsec_<base64>`` secrets (Standard Webhooks) are base64-decoded; others are used as UTF-8."""
    if secret.startswith("whsec_"):  # unpadded base64 is accepted, as the library does
        return base64.b64decode(secret.removeprefix("whsec_") + "==")
    return secret.encode()


def _webhook(secret: str) -> Webhook:
    return Webhook(secret_bytes(secret))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one delivery: ``v1,<base64 HMAC-SHA256 of "id.ts.body">``."""
    return _webhook(secret).sign(msg_id, datetime.fromtimestamp(timestamp, UTC), body)


def verify_signature(secret: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> bool:
    """What a receiver does: check the signature and that the timestamp is recent.

    The library accepts timestamps up to 5 minutes away; ``tolerance_s`` can only narrow that.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        ts = int(lower["webhook-timestamp"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - ts) > tolerance_s:
        return False
    try:
        _webhook(secret).verify(body, lower, json_parse=False)
    except (WebhookVerificationError, EmptyWebhookSecretError, binascii.Error, ValueError):
        return False
    return True


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Answer a 3xx with an ``HTTPError`` instead of following it (with the signature) elsewhere."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())
_PERMANENT_REDIRECTS = (301, 308)


def _where(location: str | None) -> str:
    """A redirect target without credentials or query (neither goes to logs or the database)."""
    if not location:
        return "no Location"
    try:
        parts = urlsplit(location)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:  # e.g. a port that is not a number
        return "an unparsable Location"
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")) or "?"


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, secret: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"webhook URL must be http(s): {url!r}")
        if not secret:
            raise ConfigError("the webhook secret is empty", hint="set the variable named by --secret-env")
        self.url = url
        try:
            self._signer = _webhook(secret)
        except (binascii.Error, ValueError, EmptyWebhookSecretError) as exc:
            raise ConfigError("the webhook secret is not valid: a whsec_ secret must be non-empty base64") from exc
        self.timeout = timeout

    def __repr__(self) -> str:  # never show the secret
        return f"WebhookSink({self.url!r})"

    def send(self, action: Action) -> None:
        body = orjson.dumps(payload(action), option=orjson.OPT_SORT_KEYS)
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "stormwatch-disrupt",
            "webhook-id": action.action_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": self._signer.sign(action.action_id, datetime.fromtimestamp(ts, UTC), body),
            "Idempotency-Key": action.action_id,
        }
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        location = None
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                status = int(resp.status)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            location = exc.headers.get("Location") if exc.headers else None
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"cannot reach {self.url}: {reason}") from exc
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise DeliveryError(
                f"{self.url} answered HTTP {status} (a redirect to {_where(location)}; redirects are not followed: "
                "set the webhook URL to the final address)",
                retryable=status not in _PERMANENT_REDIRECTS,
            )
        retryable = status >= 500 or status in (408, 409, 425, 429)
        raise DeliveryError(f"{self.url} answered HTTP {status}", retryable=retryable)


class OutboxSink:
    """A JSONL file of actions; each line is :func:`payload`. Appends are fsynced and locked."""

    name = "outbox"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise ConfigError(f"folder {self.path.parent} does not exist (outbox {self.path})")

    def _written_ids(self, fh: Any) -> set[str]:
        fh.seek(0)
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut by a crash was never delivered: drop it
            fh.truncate(end)
            data = data[:end]
        ids = set()
        for line in data.splitlines():
            if line.strip():
                ids.add(str(orjson.loads(line)["id"]))
        return ids

    def send(self, action: Action) -> None:
        try:
            with open(self.path, "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                if action.action_id in self._written_ids(fh):
                    return
                fh.seek(0, os.SEEK_END)
                fh.write(orjson.dumps(payload(action), option=orjson.OPT_SORT_KEYS) + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise DeliveryError(f"cannot write outbox {self.path}: {exc.strerror}") from exc


class MemorySink:
    """Keeps delivered payloads by id (deduplicated); ``fail`` makes the next N sends fail."""

    name = "memory"

    def __init__(self, fail: int = 0) -> None:
        self.delivered: dict[str, dict[str, Any]] = {}
        self.calls = 0
        self.fail = fail

    def send(self, action: Action) -> None:
        self.calls += 1
        if self.fail > 0:
            self.fail -= 1
            raise DeliveryError("memory sink told to fail")
        self.delivered.setdefault(action.action_id, payload(action))


def webhook_sink(*, webhook_url: str | None = None, secret_env: str | None = None, timeout: float = 10.0,
                 **_: Any) -> Sink:  # fmt: skip
    """``--sink webhook``: the secret is read from the env var named (never passed literally)."""
    if not webhook_url:
        raise ConfigError("--sink webhook needs --webhook-url", hint="or set STORMWATCH_WEBHOOK_URL")
    env = secret_env or "STORMWATCH_WEBHOOK_SECRET"
    secret = os.environ.get(env)
    if not secret:
        raise ConfigError(f"the webhook secret variable {env} is not set", hint=f"export {env}=whsec_...")
    return WebhookSink(webhook_url, secret, timeout=timeout)


def outbox_sink(*, outbox: str | Path | None = None, **_: Any) -> Sink:
    """``--sink outbox``."""
    if not outbox:
        raise ConfigError("--sink outbox needs --outbox FILE")
    return OutboxSink(outbox)


def memory_sink(**_: Any) -> Sink:
    return MemorySink()


def make_sink(
    kind: str,
    *,
    webhook_url: str | None = None,
    secret_env: str | None = None,
    outbox: str | Path | None = None,
    timeout: float = 10.0,
) -> Sink:
    """Build a sink from CLI-style options: ``kind`` names a sink plugin (hook ``stormwatch_sinks``;
    the built-ins webhook, outbox and memory are in :mod:`stormwatch.disrupt.plugin`)."""
    from stormwatch.plugins import entries

    table = entries("sinks")
    if kind not in table:
        raise ConfigError(f"unknown sink {kind!r}", hint=f"use one of: {', '.join(sorted(table))}")
    factory = table[kind].load()
    sink: Sink = factory(webhook_url=webhook_url, secret_env=secret_env, outbox=outbox, timeout=timeout)
    return sink
