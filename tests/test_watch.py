"""`stormwatch watch` (issue 13 item 5): live watcher processes against a SQLite store.

The live test ingests a small simulated platform in two halves while a watcher runs, and checks
that decisions appear, the metrics move, a local Slack-compatible receiver gets each new decision
exactly once (across a restart and with a second watcher on standby), SIGTERM exits 0, and a
failing stage (a partner TAXII server that does not answer) is counted while the loop goes on.
The lease and notification tables are also checked on both backends, the Slack message for what it
must not carry, and the webhook for the redirect it must not follow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from stormwatch.cli import main
from stormwatch.disrupt.sinks import DeliveryError
from stormwatch.result import Judgement
from stormwatch.store import Store, open_store
from stormwatch.store.repos.watch import NewDecision, notification_id, watch_repo
from stormwatch.watch.notify import SlackWebhook, slack_message

ROOT = Path(__file__).resolve().parents[1]
STORMWATCH = str(Path(sys.executable).parent / "stormwatch")
POLICIES = ROOT / "policies"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or pred}")


class Receiver:
    """A Slack-compatible incoming webhook: records every JSON body POSTed to its secret path."""

    def __init__(self, path: str = "/services/T000/B000/s3cr3tpath", redirect_to: str | None = None) -> None:
        self.path = path
        self.bodies: list[dict[str, Any]] = []
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                outer.hits += 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.end_headers()
                    return
                if self.path != outer.path:
                    self.send_response(404)
                    self.end_headers()
                    return
                outer.bodies.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def decisions(self) -> list[str]:
        """Every decision announced, as 'LEVEL account', in order (one line per blocks section)."""
        out = []
        for body in self.bodies:
            for block in body["blocks"][1:]:
                text = block["text"]["text"]
                out.append(f"{text.split('*')[1]} {text.split('`')[1]}")
        return out

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# -- the store: lease and notifications, on every backend ---------------------------------------------------------
def test_lease_is_exclusive_expires_and_is_taken_from_the_dead(store: Store) -> None:
    repo = watch_repo(store)
    t0, t1, t2 = "2026-12-01T00:00:00.000000Z", "2026-12-01T00:01:00.000000Z", "2026-12-01T00:02:00.000000Z"
    assert repo.acquire_lease("watch", "a", now=t0, lease_until=t1)
    assert not repo.acquire_lease("watch", "b", now=t0, lease_until=t1)  # held and unexpired
    assert repo.acquire_lease("watch", "a", now=t0, lease_until=t1)  # re-taking one's own lease is a renewal
    assert repo.lease("watch") is not None and repo.lease("watch").holder == "a"  # type: ignore[union-attr]
    assert repo.acquire_lease("watch", "b", now=t2, lease_until="2026-12-01T00:03:00.000000Z")  # a's expired
    assert not repo.renew_lease("watch", "a", now=t2, lease_until=t2)  # a lost it
    assert repo.renew_lease("watch", "b", now=t2, lease_until="2026-12-01T00:09:00.000000Z")
    assert repo.acquire_lease("watch", "a", now=t2, lease_until=t2, take_over=["b"])  # b known dead
    assert not repo.release_lease("watch", "b") and repo.release_lease("watch", "a")
    assert repo.lease("watch") is None


def test_notifications_are_queued_once_and_claimed_by_one(store: Store) -> None:
    for i, level in enumerate(["enforce", "review", "review", "none"]):
        rank = {"review_rank": i, "within_budget": i == 1} if level == "review" else {}
        store.analysis.put_judgement(Judgement(f"acct_{i}", 0.9, level, actor="Forest Blizzard", **rank))  # type: ignore[arg-type]
    store.commit()
    repo = watch_repo(store)
    new = repo.new_decisions("slack", limit=10)
    # enforce always; review only within the review budget; never level none
    assert [(d.account_id, d.level) for d in new] == [("acct_0", "enforce"), ("acct_1", "review")]
    now = "2026-12-01T00:00:00.000000Z"
    repo.queue("slack", new, now=now)
    repo.queue("slack", [*new, NewDecision("acct_0", "enforce", None)], now=now)  # again: nothing new
    assert repo.new_decisions("slack", limit=10) == [] and len(repo.new_decisions("log", limit=10)) == 2
    a = repo.claim("slack", "a", now=now, lease_until="2026-12-01T00:05:00.000000Z", limit=10)
    b = repo.claim("slack", "b", now=now, lease_until="2026-12-01T00:05:00.000000Z", limit=10)
    assert len(a) == 2 and b == []  # claimed by one
    assert a[0].notification_id == notification_id("acct_0", "enforce")
    ids = [n.notification_id for n in a]
    assert repo.mark_sent("slack", "b", ids, sent_at=now) == 0  # not b's claim
    assert repo.record_failure("slack", "a", ids[1:], error="HTTP 503", next_attempt_at=now, max_attempts=3) == 1
    assert repo.mark_sent("slack", "a", ids[:1], sent_at=now) == 1
    assert repo.count("slack") == {"sent": 1, "pending": 1}
    again = repo.claim("slack", "b", now=now, lease_until="2026-12-01T00:05:00.000000Z", limit=10)
    assert [n.account_id for n in again] == ["acct_1"] and again[0].attempts == 1
    assert repo.record_failure("slack", "b", [again[0].notification_id], error="gone", next_attempt_at=now,
                               max_attempts=1) == 1  # fmt: skip
    assert repo.count("slack") == {"sent": 1, "dead": 1}
    # a judgement that escalates from review to enforce is a new decision
    store.analysis.put_judgement(Judgement("acct_1", 0.95, "enforce", actor="Forest Blizzard"))
    store.commit()
    assert [(d.account_id, d.level) for d in repo.new_decisions("slack", limit=10)] == [("acct_1", "enforce")]


# -- the Slack message and webhook --------------------------------------------------------------------------------
def test_slack_message_names_account_level_actor_link_and_nothing_else() -> None:
    from stormwatch.store.repos.watch import Notification

    n = [
        Notification("acct_<!here>", "enforce", "slack", "ntf_1", "Forest & <Blizzard>", "pending", 0, None, "t", None),
        Notification("acct_2", "review", "slack", "ntf_2", None, "pending", 0, None, "t", None),
    ]
    msg = slack_message(n, "https://console.example")
    assert set(msg) == {"text", "blocks"} and msg["text"] == "stormwatch: 2 new decisions (1 enforce, 1 review)"
    first = msg["blocks"][1]["text"]["text"]
    assert "*ENFORCE*" in first and "acct_&lt;!here&gt;" in first and "Forest &amp; &lt;Blizzard&gt;" in first
    assert "<https://console.example/console/accounts/acct_%3C%21here%3E|open in console>" in first
    assert "<!here>" not in json.dumps(msg)  # an id cannot mention a channel
    assert "none attributed" in msg["blocks"][2]["text"]["text"]
    relative = slack_message(n[1:])["blocks"][1]["text"]["text"]
    assert "`/console/accounts/acct_2`" in relative


def test_slack_webhook_never_follows_a_redirect_nor_shows_its_url() -> None:
    target = Receiver(path="/elsewhere")
    redirecting = Receiver(redirect_to=target.url)
    try:
        hook = SlackWebhook(redirecting.url)
        with pytest.raises(DeliveryError) as info:
            hook.post({"text": "x"})
        assert not info.value.retryable and "redirect" in str(info.value)
        assert "s3cr3tpath" not in str(info.value) and "s3cr3tpath" not in repr(hook)
        assert redirecting.hits == 1 and target.hits == 0
        closed = SlackWebhook(f"http://127.0.0.1:{free_port()}/services/s3cr3tpath")
        with pytest.raises(DeliveryError) as info:
            closed.post({"text": "x"})
        assert info.value.retryable and "s3cr3tpath" not in str(info.value)
    finally:
        target.close()
        redirecting.close()


# -- live watchers ------------------------------------------------------------------------------------------------
def metrics(port: int, token: str | None) -> dict[str, float]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def health(port: int, token: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/healthz", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
        return doc


def status_of(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}, method=method), timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


class Watch:
    def __init__(self, db: str, log: Path, *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = log
        cmd = [STORMWATCH, "--db", db, "watch", "--listen", f"127.0.0.1:{self.port}", "--interval", "1",
               "--min-interval", "0.3", "--poll", "0.2", "--lease-seconds", "6", "-q", *args]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("STORMWATCH_")}
        with open(log, "ab") as err:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=log.parent)

    def up(self, token: str) -> None:
        def answers() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                return bool(health(self.port, token))
            except OSError:
                return False

        wait_for(answers, 20, "the watcher to answer /healthz")

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)


def split_events(sim: Path, out: Path) -> tuple[Path, Path]:
    lines = (sim / "events.jsonl").read_text().splitlines(keepends=True)
    half = len(lines) // 2
    a, b = out / "events-1.jsonl", out / "events-2.jsonl"
    a.write_text("".join(lines[:half]))
    b.write_text("".join(lines[half:]))
    return a, b


def test_live_watchers_decide_notify_once_and_stop_cleanly(tmp_path: Path, receiver: Receiver) -> None:
    from stormwatch.simulate import simulate

    sim = tmp_path / "sim"
    simulate(sim, seed=3, accounts=60, days=3, progress=False)
    first, second = split_events(sim, tmp_path)
    db = f"sqlite:///{tmp_path / 'sw.db'}"
    assert main(["--db", db, "intel", "import", str(sim / "intel.stix.json")]) == 0
    store = open_store(db)
    from stormwatch.api.tokens import create_token

    token = create_token(store, name="prometheus", role="read-only", scopes=["metrics"])[0]
    other = create_token(store, name="api-only", role="admin", scopes=["read"])[0]
    store.close()
    url_file = tmp_path / "slack.url"
    url_file.write_text(receiver.url + "\n")
    url_file.chmod(0o600)
    dead_port = free_port()  # a partner TAXII server that does not answer: the intel stage fails every time
    (tmp_path / "stormwatch.toml").write_text(
        f'[watch]\nintel_interval = 0.5\n[[watch.intel]]\ntaxii = "http://127.0.0.1:{dead_port}/taxii2/api1/"\n'
        'collection = "findings"\n'
    )
    common = ["--policies", str(POLICIES), "--slack-webhook-url-file", str(url_file),
              "--notify-sink", "outbox", "--notify-outbox", str(tmp_path / "notify.jsonl")]  # fmt: skip
    log = tmp_path / "watch.log"
    a = Watch(db, log, *common, "--config", str(tmp_path / "stormwatch.toml"))
    b: Watch | None = None
    try:
        a.up(token)
        base = f"http://127.0.0.1:{a.port}"
        # every route is authenticated: no token, a wrong token, a token scoped to something else
        assert status_of(base + "/metrics") == 401 and status_of(base + "/nowhere") == 401
        assert status_of(base + "/metrics", {"Authorization": "Bearer sw_" + "x" * 43}) == 401
        assert status_of(base + "/healthz", {"Authorization": f"Bearer {other}"}) == 403
        assert status_of(base + "/metrics", {"Authorization": f"Bearer {token}"}, method="POST") == 405
        assert status_of(base + "/nowhere", {"Authorization": f"Bearer {token}"}) == 404
        assert metrics(a.port, token)["stormwatch_leader"] == 1

        # a small platform's first half arrives: decisions appear, the metrics and Slack see them
        assert main(["--db", db, "ingest", str(first), "--accounts", str(sim / "accounts.jsonl"), "-q"]) == 0
        n_first = len(first.read_text().splitlines())
        m = wait_for(lambda: (x := metrics(a.port, token))["stormwatch_decisions_total{level=enforce}"] > 0
                     and x["stormwatch_events_in_total"] == n_first and x, 30, "decisions")  # fmt: skip
        wait_for(lambda: receiver.bodies, 10, "the Slack message")
        assert set(receiver.bodies[0]) == {"text", "blocks"}
        # the failing intel stage is counted, the loop goes on, health says which stage fails
        m = wait_for(lambda: (x := metrics(a.port, token))["stormwatch_errors_total{stage=intel}"] >= 2 and x,
                     30, "intel errors")  # fmt: skip
        cycles = m["stormwatch_cycles_total"]
        wait_for(lambda: metrics(a.port, token)["stormwatch_cycles_total"] > cycles, 10, "more cycles")
        h = health(a.port, token)
        assert h["status"] == "degraded" and h["failing_stages"] == ["intel"] and h["leader"] is True
        assert metrics(a.port, token)["stormwatch_errors_total{stage=analyze}"] == 0

        # a second watcher on the same store waits on standby
        b = Watch(db, log, *common)
        b.up(token)
        assert health(b.port, token)["status"] == "standby" and metrics(b.port, token)["stormwatch_leader"] == 0

        # the second half arrives; then the active watcher is stopped and the standby takes over
        assert main(["--db", db, "ingest", str(second), "-q"]) == 0
        wait_for(lambda: metrics(a.port, token)["stormwatch_events_pending"] == 0
                 and metrics(a.port, token)["stormwatch_events_in_total"] > m["stormwatch_events_in_total"],
                 30, "the second half analysed")  # fmt: skip
        assert a.terminate() == 0
        wait_for(lambda: metrics(b.port, token)["stormwatch_leader"] == 1, 20, "the standby to take over")
        wait_for(lambda: metrics(b.port, token)["stormwatch_cycles_total"] >= 2, 20, "the new leader's cycles")
        assert b.terminate() == 0
        sent_before = len(receiver.decisions())

        # a restart (one cycle; run from a folder without the stormwatch.toml) finds nothing new to announce
        res = subprocess.run([STORMWATCH, "--db", db, "watch", "--once", "-q", *common], cwd=sim,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert res.returncode == 0, res.stderr[-3000:]
        assert receiver.url not in res.stderr and "s3cr3tpath" not in log.read_text()  # the secret URL is never logged
    finally:
        for w in (a, b):
            if w is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    announced = receiver.decisions()
    assert len(announced) == sent_before, "the restart or the standby announced again"
    assert len(announced) == len(set(announced)) and announced, announced  # each decision exactly once
    store = open_store(db)
    try:
        judged = {
            f"{j.level.upper()} {j.account_id}"
            for j in store.analysis.judgements()
            if j.level == "enforce" or (j.level == "review" and j.within_budget is not False)
        }
        assert judged <= set(announced)  # every current decision was announced (and none twice, above)
        assert watch_repo(store).count("slack") == {"sent": len(announced)}
    finally:
        store.close()
    outbox = [json.loads(line) for line in (tmp_path / "notify.jsonl").read_text().splitlines()]
    assert len(outbox) == len(announced) and {o["type"] for o in outbox} == {"stormwatch.action.notify"}
    assert all(set(o["data"]["params"]) == {"level", "actor", "link"} for o in outbox)


def test_once_exits_1_when_a_stage_fails_and_bad_settings_are_named(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'sw.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMWATCH_")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([STORMWATCH, "--db", db, "watch", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    bad = tmp_path / "bad-policies"
    bad.mkdir()
    (bad / "p.yaml").write_text("id: p\nversion: 1\nwhen: {risk_at_least: 2}\nthen: [{action: warn}]\n")
    res = run("--once", "--policies", str(bad))
    assert res.returncode == 1 and "stage enforce failed" in res.stderr, res.stderr[-2000:]
    res = run("--listen", "0.0.0.0:9", "--interval", "1")
    assert res.returncode == 3 and "not a loopback address" in res.stderr
    res = run("--listen", "0.0.0.0:9", "--allow-remote", "--metrics-no-auth")
    assert res.returncode == 3 and "loopback" in res.stderr
    (tmp_path / "stormwatch.toml").write_text("[watch]\nintervall = 3\n")
    res = run("--once")
    assert res.returncode == 3 and "stormwatch.toml: [watch] intervall: unknown setting" in res.stderr
    res = run("--once", "--mode", "enforce", "--config", str(tmp_path / "none.toml"))
    assert res.returncode == 3 and "none.toml: no such settings file" in res.stderr


def test_metrics_without_a_token_only_when_asked_and_sigint_stops_cleanly(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'sw.db'}"
    w = Watch(db, tmp_path / "watch.log", "--metrics-no-auth")
    try:
        base = f"http://127.0.0.1:{w.port}"
        wait_for(lambda: w.proc.poll() is None and _leader(base + "/healthz"), 20, "the watcher to lead")
        assert status_of(base + "/healthz") == 200 and status_of(base + "/metrics") == 200
        assert status_of(base + "/nowhere") == 404
        w.proc.send_signal(signal.SIGINT)
        assert w.proc.wait(timeout=20) == 0
    finally:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()
    assert "lease 'watch' released" in (tmp_path / "watch.log").read_text()


def _leader(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return bool(json.loads(resp.read())["leader"])
    except OSError:
        return False


def test_once_enforces_in_each_policys_mode_and_two_at_once_act_once(tmp_path: Path) -> None:
    from stormwatch.simulate import simulate

    sim = tmp_path / "sim"
    simulate(sim, seed=3, accounts=60, days=3, progress=False)
    db = f"sqlite:///{tmp_path / 'sw.db'}"
    assert main(["--db", db, "ingest", str(sim / "events.jsonl"), "--accounts", str(sim / "accounts.jsonl"), "-q"]) == 0
    assert main(["--db", db, "intel", "import", str(sim / "intel.stix.json")]) == 0
    pol = tmp_path / "policies"
    pol.mkdir()
    (pol / "warn.yaml").write_text(
        "id: warn\nversion: 1\nmode: dry-run\nwhen: {actor_any: true}\nthen: [{action: warn}]\n"
    )
    (pol / "limit.yaml").write_text(
        "id: limit\nversion: 1\nmode: enforce\nwhen: {actor_any: true}\nthen: [{action: rate_limit, rpm: 5}]\n"
    )
    outbox = tmp_path / "actions.jsonl"
    cmd = [STORMWATCH, "--db", db, "watch", "--once", "-q", "--mode", "enforce", "--policies", str(pol),
           "--sink", "outbox", "--outbox", str(outbox)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("STORMWATCH_")}
    procs = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert outbox.exists(), outs
    kinds = [json.loads(line)["data"]["kind"] for line in outbox.read_text().splitlines()]
    assert kinds and set(kinds) == {"rate_limit"}  # the dry-run policy decided, acted on nothing
    assert subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, timeout=120).returncode == 0
    assert [json.loads(line)["data"]["kind"] for line in outbox.read_text().splitlines()] == kinds  # nothing again
    store = open_store(db)
    try:
        from stormwatch.disrupt import service

        decisions = service.list_decisions(store, limit=10_000)
        assert {(d.policy_id, d.mode) for d in decisions} == {("limit", "enforce"), ("warn", "dry-run")}
        assert len(kinds) == len({d.account_id for d in decisions if d.policy_id == "limit"})  # one action each
    finally:
        store.close()
