"""Enforcement: outbox/webhook sinks, retries, dead letters, and crash safety against a real receiver.

The receiver is ``python -m stormwatch.disrupt.receiver`` in a subprocess on 127.0.0.1: it checks
signatures and keeps a fsynced ledger of applied ``webhook-id`` values (its dedupe store). The
tests kill it (and the sender) mid-run and check that every action is applied exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.disrupt import service
from stormwatch.disrupt import testing as T
from stormwatch.disrupt.models import Action
from stormwatch.disrupt.sinks import DeliveryError, OutboxSink, sign, verify_signature
from stormwatch.store import Store, open_store

SECRET = "whsec_" + "c2VjcmV0LWtleS1mb3ItdGVzdHM="  # base64 of "secret-key-for-tests"
POLICY = """\
id: terminate-actors
version: 1
mode: enforce
when:
  actor_any: true
  confidence_at_least: high
then:
  - action: terminate
"""
FAST = service.RetryPolicy(max_attempts=30, base_delay=0.05, max_delay=0.3)


def seed(store: Store, n: int) -> None:
    for i in range(n):
        T.add_account(store, f"acct_{i:02d}")
        T.add_judgement(
            store, f"acct_{i:02d}", risk=0.9, actor="Emerald Sleet", confidence=0.9, confidence_label="high"
        )


@pytest.fixture
def policies(tmp_path: Path) -> Path:
    d = tmp_path / "policies"
    d.mkdir()
    (d / "terminate-actors.yaml").write_text(POLICY)
    return d


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """``python -m stormwatch.disrupt.receiver`` on 127.0.0.1: a ledger of applied ids and a log of every request."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.ledger = tmp / "ledger.jsonl"
        self.log = tmp / "received.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/stormwatch"

    def start(self, *extra: str) -> Receiver:
        env = {**os.environ, "STORMWATCH_WEBHOOK_SECRET": SECRET}
        cmd = [sys.executable, "-m", "stormwatch.disrupt.receiver", "--port", str(self.port),
               "--ledger", str(self.ledger), "--log", str(self.log), *extra]  # fmt: skip
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.02)
        raise RuntimeError("receiver did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def applied(self) -> list[str]:
        if not self.ledger.exists():
            return []
        return [orjson.loads(line)["id"] for line in self.ledger.read_bytes().splitlines() if line.strip()]

    def received(self) -> list[str]:
        return self.log.read_text().split() if self.log.exists() else []


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    r = Receiver(tmp_path)
    yield r
    r.stop()


def webhook(r: Receiver, secret: str = SECRET) -> service.WebhookSink:
    return service.WebhookSink(r.url, secret, timeout=5)


def assert_exactly_once(store: Store, r: Receiver, n: int) -> None:
    applied = r.applied()
    assert len(applied) == len(set(applied)) == n, Counter(applied).most_common(3)
    delivered = {a.action_id for a in service.list_actions(store, status="delivered", limit=1000)}
    assert delivered == set(applied)
    assert service.verify_audit(store).ok


# -- signatures --------------------------------------------------------------------------------------
def test_signature_round_trip() -> None:
    body = b'{"id":"act_1"}'
    ts = int(time.time())
    headers = {
        "webhook-id": "act_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(SECRET, "act_1", ts, body),
    }
    assert headers["webhook-signature"].startswith("v1,")
    assert verify_signature(SECRET, headers, body)
    assert not verify_signature(SECRET, headers, body + b" ")
    assert not verify_signature("whsec_b3RoZXI=", headers, body)
    stale = {**headers, "webhook-timestamp": str(ts - 1000)}
    assert not verify_signature(SECRET, {**stale, "webhook-signature": sign(SECRET, "act_1", ts - 1000, body)}, body)


def test_webhook_secret_never_in_repr(receiver: Receiver) -> None:
    assert "c2Vj" not in repr(webhook(receiver))


# -- retries and dead letters --------------------------------------------------------------------------
def test_backoff_grows_and_is_capped() -> None:
    r = service.RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=0.0)
    assert [r.delay(n) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    j = service.RetryPolicy(base_delay=1.0, jitter=0.5)
    assert all(1.0 <= j.delay(1) <= 1.5 for _ in range(50))


def test_retry_then_deliver(store: Store, policies: Path) -> None:
    seed(store, 1)
    sink = service.MemorySink(fail=2)
    report = service.enforce(store, service.load_policy_set([policies]), sink, mode="enforce", retry=FAST)
    assert report.delivery is not None
    assert (report.delivery.delivered, report.delivery.retried, report.delivery.dead_lettered) == (1, 2, 0)
    assert [a.attempts for a in service.list_actions(store)] == [3]


class Refusing:
    name = "refusing"

    def send(self, action: Action) -> None:
        raise DeliveryError("HTTP 400", retryable=False)


def test_permanent_failure_dead_letters_then_retry_drains(store: Store, policies: Path) -> None:
    seed(store, 2)
    report = service.enforce(store, service.load_policy_set([policies]), Refusing(), mode="enforce", retry=FAST)
    assert report.delivery is not None and report.delivery.dead_lettered == 2
    dead = service.list_actions(store, status="dead")
    assert len(dead) == 2 and all(a.attempts == 1 and a.last_error == "HTTP 400" for a in dead)
    assert sum(e.action == "action.dead_lettered" for e in service.list_audit(store, limit=1000)) == 2
    sink = service.MemorySink()
    again = service.retry_dead_letters(store, sink, retry=FAST)
    assert again.delivered == 2 and len(sink.delivered) == 2
    assert service.list_actions(store, status="dead") == []


# -- the JSONL outbox ----------------------------------------------------------------------------------
def test_outbox_never_writes_twice(store: Store, policies: Path, tmp_path: Path) -> None:
    seed(store, 3)
    pset = service.load_policy_set([policies])
    outbox = tmp_path / "outbox.jsonl"
    service.run_policies(store, pset, mode="enforce")
    first = service.list_actions(store)[0]
    OutboxSink(outbox).send(first)  # delivered, then "killed" before the database was updated
    with open(outbox, "ab") as fh:
        fh.write(b'{"id":"act_half-written')  # a line cut by a crash
    service.enforce(store, pset, OutboxSink(outbox), mode="enforce", retry=FAST)
    service.enforce(store, pset, OutboxSink(outbox), mode="enforce", retry=FAST)
    lines = [orjson.loads(x) for x in outbox.read_bytes().splitlines()]
    assert len(lines) == 3 and len({x["id"] for x in lines}) == 3
    assert {x["type"] for x in lines} == {"stormwatch.action.terminate"}
    assert all(a.status == "delivered" for a in service.list_actions(store))


# -- the real receiver ---------------------------------------------------------------------------------
def test_webhook_delivers_signed_once(store: Store, policies: Path, receiver: Receiver) -> None:
    receiver.start()
    seed(store, 3)
    pset = service.load_policy_set([policies])
    service.enforce(store, pset, webhook(receiver), mode="enforce", retry=FAST)
    service.enforce(store, pset, webhook(receiver), mode="enforce", retry=FAST)  # nothing new
    assert_exactly_once(store, receiver, 3)
    assert len(receiver.received()) == 3


def test_bad_signature_is_dead_lettered(store: Store, policies: Path, receiver: Receiver) -> None:
    receiver.start()
    seed(store, 1)
    report = service.enforce(store, service.load_policy_set([policies]), webhook(receiver, "whsec_d3Jvbmc="),
                             mode="enforce", retry=FAST)  # fmt: skip
    assert report.delivery is not None and report.delivery.dead_lettered == 1
    assert receiver.applied() == []
    assert "HTTP 401" in (service.list_actions(store)[0].last_error or "")


def test_receiver_killed_and_restarted_mid_run(store: Store, policies: Path, receiver: Receiver) -> None:
    seed(store, 10)  # 10 actions
    receiver.start("--die-after", "3")  # dies after applying the 3rd, before answering

    def restart() -> None:
        assert receiver.proc is not None
        receiver.proc.wait(timeout=30)
        time.sleep(0.3)  # some deliveries hit a closed port meanwhile
        receiver.start()

    t = threading.Thread(target=restart)
    t.start()
    report = service.enforce(store, service.load_policy_set([policies]), webhook(receiver), mode="enforce", retry=FAST)
    t.join()
    assert report.delivery is not None and report.delivery.delivered == 10 and report.delivery.retried >= 1
    assert_exactly_once(store, receiver, 10)
    received = Counter(receiver.received())
    assert sorted(received.values())[-1] == 2  # the unanswered one came again and was recognised


def test_receiver_down_then_actions_retry(sqlite_url: str, policies: Path, receiver: Receiver) -> None:
    s = open_store(sqlite_url)
    seed(s, 2)
    s.close()
    env = {"STORMWATCH_TEST_SECRET": SECRET}
    args = ["--db", sqlite_url, "enforce", "--policies", str(policies), "--mode", "enforce", "--sink", "webhook",
            "--webhook-url", receiver.url, "--secret-env", "STORMWATCH_TEST_SECRET", "--max-attempts", "2",
            "--backoff", "0.01"]  # fmt: skip
    os.environ.update(env)
    try:
        assert main(args) == 10  # finished, but everything is a dead letter
        s = open_store(sqlite_url)
        assert len(service.list_actions(s, status="dead")) == 2
        s.close()
        receiver.start()
        retry = ["--db", sqlite_url, "actions", "retry", "--sink", "webhook", "--webhook-url", receiver.url,
                 "--secret-env", "STORMWATCH_TEST_SECRET"]  # fmt: skip
        assert main(retry) == 0
        assert main(retry) == 0  # nothing left
    finally:
        os.environ.pop("STORMWATCH_TEST_SECRET")
    s = open_store(sqlite_url)
    assert_exactly_once(s, receiver, 2)
    s.close()


def test_sender_killed_mid_run(sqlite_url: str, policies: Path, receiver: Receiver) -> None:
    s = open_store(sqlite_url)
    seed(s, 20)  # 20 actions
    s.close()
    receiver.start("--delay", "0.1")
    cmd = [sys.executable, "-m", "stormwatch", "--db", sqlite_url, "enforce", "--policies", str(policies),
           "--mode", "enforce", "--sink", "webhook", "--webhook-url", receiver.url]  # fmt: skip
    env = {**os.environ, "STORMWATCH_WEBHOOK_SECRET": SECRET}
    sender = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(receiver.applied()) < 4 and time.monotonic() < deadline:
        time.sleep(0.02)
    sender.send_signal(signal.SIGKILL)
    sender.wait()
    s = open_store(sqlite_url)
    delivered = service.list_actions(s, status="delivered", limit=1000)
    assert 0 < len(delivered) < 20
    assert {a.action_id for a in delivered} <= set(receiver.applied())  # never marked before the 2xx
    s.close()
    again = subprocess.run(cmd, env=env, capture_output=True, timeout=60)
    assert again.returncode == 0, again.stderr
    s = open_store(sqlite_url)
    assert_exactly_once(s, receiver, 20)
    s.close()
