"""Notifications of new ``enforce``/``review`` decisions: the log, the action sinks, a Slack webhook.

A notification says which account, the level and the actor named, and links to the console page
``/console/accounts/<id>``. It carries no prompt text and no personal data (no e-mail, org,
end user, IP or evidence): whoever reads it opens the console to see more.

Each channel keeps its own rows in ``watch_notifications`` (:mod:`stormwatch.store.repos.watch`):
a decision is queued once per channel, claimed, sent and marked ``sent``, so a restarted watcher
(or a second one) never sends it again. A failed send is retried with backoff, then given up
(``dead``) after :data:`MAX_ATTEMPTS`.

Channels:

* ``log``: always on; one line per decision on the watcher's log (and the
  ``stormwatch_decisions_total{level}`` metric).
* ``sink:<name>``: any action sink (``outbox``, ``webhook``, a plugin's): each decision goes as an
  action of kind ``notify`` (``type: stormwatch.action.notify``) whose ``action_id`` is the
  notification id, so a receiver's dedupe applies as for actions.
* ``slack``: a Slack-compatible incoming webhook, one message (``text`` + ``blocks``) per batch of
  up to :data:`SLACK_BATCH` decisions. The URL is a secret: it is never logged, and errors name
  only its host. Redirects are never followed.
"""

from __future__ import annotations

import logging
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import orjson

from stormwatch.disrupt.models import Action, iso, utcnow
from stormwatch.disrupt.sinks import DeliveryError, Sink
from stormwatch.errors import ConfigError
from stormwatch.store import Store
from stormwatch.store.repos.watch import Notification, watch_repo

__all__ = [
    "Channel",
    "LogChannel",
    "SinkChannel",
    "SlackChannel",
    "SlackWebhook",
    "console_link",
    "notify_channel",
    "slack_message",
]

log = logging.getLogger("stormwatch.watch")

MAX_ATTEMPTS = 8
SLACK_BATCH = 20
QUEUE_LIMIT = 500  # decisions queued per channel per cycle (the rest the next cycle)
CLAIM_LIMIT = 100  # decisions sent per channel per cycle
LEASE_S = 120.0


def console_link(account_id: str, console_url: str | None = None) -> str:
    path = "/console/accounts/" + quote(account_id, safe="")
    return (console_url.rstrip("/") + path) if console_url else path


def _mrkdwn(text: str) -> str:
    """Slack's three escapes (``&``, ``<``, ``>``): an id or actor name cannot become a link or mention."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_message(items: Sequence[Notification], console_url: str | None = None) -> dict[str, Any]:
    """The incoming-webhook body: a plain ``text`` fallback and one ``blocks`` section per decision."""
    counts = {lv: sum(1 for n in items if n.level == lv) for lv in ("enforce", "review")}
    summary = ", ".join(f"{n} {lv}" for lv, n in counts.items() if n)
    word = "decision" if len(items) == 1 else "decisions"
    text = f"stormwatch: {len(items)} new {word} ({summary})"
    blocks: list[dict[str, Any]] = [{"type": "header", "text": {"type": "plain_text", "text": text[:150]}}]
    for n in items:
        link = console_link(n.account_id, console_url)
        shown = f"<{_mrkdwn(link)}|open in console>" if console_url else f"`{_mrkdwn(link)}`"
        actor = _mrkdwn(n.actor) if n.actor else "none attributed"
        blocks.append(
            {
                "type": "section",
                "text": {
                    "type": "mrkdwn",
                    "text": f"*{n.level.upper()}* account `{_mrkdwn(n.account_id)}` · actor: {actor} · {shown}",
                },
            }
        )
    return {"text": text, "blocks": blocks}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


class SlackWebhook:
    """POSTs JSON to a Slack-compatible incoming webhook. The URL is secret: ``repr`` and errors show its host."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("the Slack webhook URL must be an http(s) URL (its value is not shown)")
        self._url = url
        self.host = parts.hostname
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SlackWebhook(host={self.host!r})"

    def post(self, body: dict[str, Any]) -> None:
        """Send one message or raise :class:`DeliveryError` (``retryable`` False for a permanent refusal)."""
        data = orjson.dumps(body)
        req = urllib.request.Request(
            self._url,
            data=data,
            headers={"Content-Type": "application/json", "User-Agent": "stormwatch-watch"},
            method="POST",
        )
        try:
            with _OPENER.open(req, timeout=self.timeout) as resp:
                status = int(resp.status)
                resp.read(4096)
        except urllib.error.HTTPError as exc:
            status = int(exc.code)
            exc.close()
        except (urllib.error.URLError, OSError) as exc:
            reason: object = getattr(exc, "reason", exc)
            if isinstance(reason, BaseException):
                why = getattr(reason, "strerror", None)
                reason = type(reason).__name__ + (f" ({why})" if why else "")
            raise DeliveryError(f"slack webhook at {self.host}: cannot reach it: {reason}") from None
        if 200 <= status < 300:
            return
        if 300 <= status < 400:
            raise DeliveryError(
                f"slack webhook at {self.host}: HTTP {status}, a redirect (not followed: configure the final URL)",
                retryable=False,
            )
        retryable = status >= 500 or status in (408, 425, 429)
        raise DeliveryError(f"slack webhook at {self.host}: HTTP {status}", retryable=retryable)


class Channel(Protocol):
    @property
    def name(self) -> str: ...

    def send(self, items: Sequence[Notification]) -> list[tuple[list[Notification], DeliveryError | None]]:
        """Send ``items``; return each group sent together with its error (None: delivered)."""
        ...


@dataclass
class LogChannel:
    """One log line per decision; the decision metric counts here (once per decision, across restarts)."""

    on_decision: Callable[[Notification], None]
    console_url: str | None = None
    name: str = "log"

    def send(self, items: Sequence[Notification]) -> list[tuple[list[Notification], DeliveryError | None]]:
        for n in items:
            log.info(
                "decision: %s account %s actor %s %s",
                n.level,
                n.account_id,
                n.actor or "-",
                console_link(n.account_id, self.console_url),
            )
            self.on_decision(n)
        return [(list(items), None)]


@dataclass
class SinkChannel:
    """Decisions as ``notify`` actions through an action sink."""

    sink: Sink
    console_url: str | None = None

    @property
    def name(self) -> str:
        return f"sink:{self.sink.name}"

    def action(self, n: Notification) -> Action:
        params = {"level": n.level, "actor": n.actor, "link": console_link(n.account_id, self.console_url)}
        return Action(
            action_id=n.notification_id, decision_id=None, kind="notify", account_id=n.account_id, end_user_id=None,
            params=params, status="pending", attempts=n.attempts, last_error=None, next_attempt_at=None,
            created_at=n.created_at, delivered_at=None, sink=None,
        )  # fmt: skip

    def send(self, items: Sequence[Notification]) -> list[tuple[list[Notification], DeliveryError | None]]:
        out: list[tuple[list[Notification], DeliveryError | None]] = []
        for n in items:
            try:
                self.sink.send(self.action(n))
            except DeliveryError as exc:
                out.append(([n], exc))
            else:
                out.append(([n], None))
        return out


@dataclass
class SlackChannel:
    webhook: SlackWebhook
    console_url: str | None = None
    name: str = "slack"

    def send(self, items: Sequence[Notification]) -> list[tuple[list[Notification], DeliveryError | None]]:
        out: list[tuple[list[Notification], DeliveryError | None]] = []
        for i in range(0, len(items), SLACK_BATCH):
            batch = list(items[i : i + SLACK_BATCH])
            try:
                self.webhook.post(slack_message(batch, self.console_url))
            except DeliveryError as exc:
                out.append((batch, exc))
            else:
                out.append((batch, None))
        return out


def _claimer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _dead_claimers(claimers: Sequence[str]) -> list[str]:
    host, out = socket.gethostname(), []
    for c in claimers:
        parts = c.rsplit(":", 2)
        if len(parts) == 3 and parts[0] == host and parts[1].isdigit():
            pid = int(parts[1])
            if pid != os.getpid() and not _alive(pid):
                out.append(c)
    return out


def _backoff(attempts: int) -> float:
    return float(min(600.0, 5.0 * 2 ** max(0, attempts)))


@dataclass
class ChannelReport:
    queued: int = 0
    sent: int = 0
    failed: int = 0
    errors: tuple[str, ...] = ()


def notify_channel(store: Store, channel: Channel) -> ChannelReport:
    """Queue the channel's new decisions, then claim, send and record them (one pass)."""
    repo = watch_repo(store)
    now = utcnow()
    new = repo.new_decisions(channel.name, limit=QUEUE_LIMIT)
    if new:
        repo.queue(channel.name, new, now=iso(now))
    report = ChannelReport(queued=len(new))
    me = _claimer()
    take_over = _dead_claimers(repo.live_claimers(channel.name, now=iso(now)))
    claimed = repo.claim(
        channel.name, me, now=iso(now), lease_until=iso(now + timedelta(seconds=LEASE_S)), limit=CLAIM_LIMIT,
        take_over=take_over,
    )  # fmt: skip
    if not claimed:
        return report
    errors: list[str] = []
    for group, err in channel.send(claimed):
        ids = [n.notification_id for n in group]
        if err is None:
            report.sent += repo.mark_sent(channel.name, me, ids, sent_at=iso(utcnow()))
            continue
        attempts = max(n.attempts for n in group) + 1
        nxt = iso(utcnow() + timedelta(seconds=_backoff(attempts)))
        repo.record_failure(
            channel.name, me, ids, error=str(err), next_attempt_at=nxt,
            max_attempts=MAX_ATTEMPTS if err.retryable else 1,
        )  # fmt: skip
        report.failed += len(group)
        errors.append(str(err))
    report.errors = tuple(errors[-5:])
    return report
