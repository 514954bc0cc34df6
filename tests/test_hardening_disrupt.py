"""Hardening of enforcement and the cluster views.

* two concurrent ``stormwatch enforce`` processes deliver each action once (SQLite and PostgreSQL),
  against the real reference receiver on 127.0.0.1;
* a webhook receiver answering 3xx is a failed delivery; the redirect target gets nothing;
* a second ``enforce`` run lists only what it decided itself;
* ``clusters list`` names no actor below the low confidence band; ``clusters show`` names each
  indicator once, with the members that hit it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

import test_enforce
from stormwatch.cli import main
from stormwatch.disrupt import service
from stormwatch.disrupt import testing as T
from stormwatch.store import Store, open_store
from test_enforce import SECRET, Receiver, seed

policies = test_enforce.policies  # the same fixtures as the enforce suite
receiver = test_enforce.receiver

FAST = service.RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05)


def _cli(db: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "stormwatch", "--db", db, *args]


# -- 1. concurrent enforce runs ---------------------------------------------------------------------
def test_concurrent_enforce_runs_deliver_each_action_once(db_url: str, policies: Path, receiver: Receiver) -> None:
    n = 16
    s = open_store(db_url)
    seed(s, n)
    s.close()
    receiver.start("--delay", "0.05")  # stretch the runs so that they overlap
    env = {**os.environ, "STORMWATCH_WEBHOOK_SECRET": SECRET}
    cmd = _cli(db_url, "enforce", "--policies", str(policies), "--mode", "enforce", "--sink", "webhook",
               "--webhook-url", receiver.url, "--json")  # fmt: skip
    runs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in runs]
    for p, (_, err) in zip(runs, outs, strict=True):
        assert p.returncode == 0, err.decode()
    reports = [orjson.loads(out) for out, _ in outs]
    # decisions: each recorded by exactly one of the runs
    assert sum(r["run"]["decisions_new"] for r in reports) == n
    # deliveries: each action sent once in all, and claimed by one run only
    assert sum(r["delivery"]["delivered"] for r in reports) == n
    applied = receiver.applied()
    assert len(applied) == len(set(applied)) == n, Counter(applied).most_common(3)
    assert Counter(receiver.received()).most_common(1)[0][1] == 1  # no action was even sent twice
    s = open_store(db_url)
    try:
        actions = service.list_actions(s, limit=1000)
        assert len(actions) == n and all(a.status == "delivered" for a in actions)
        assert {a.action_id for a in actions} == set(applied)
        audit = service.list_audit(s, limit=10_000)
        delivered = Counter(e.evidence["action_id"] for e in audit if e.action == "action.delivered")
        assert set(delivered) == set(applied) and set(delivered.values()) == {1}
        queued = Counter(e.evidence["action_id"] for e in audit if e.action == "action.queued")
        assert len(queued) == n and set(queued.values()) == {1}
        assert sum(e.action.startswith("decision.") for e in audit) == n
        assert len(service.list_decisions(s, limit=1000)) == n
    finally:
        s.close()
    verify = subprocess.run(_cli(db_url, "audit", "verify"), capture_output=True, timeout=60)
    assert verify.returncode == 0, verify.stderr.decode()
    assert b"chain intact" in verify.stdout


def test_claims_of_a_dead_process_are_taken_over(sqlite_url: str, policies: Path) -> None:
    """A run that died holding claims does not block the next run until the lease expires."""
    s = open_store(sqlite_url)
    try:
        seed(s, 3)
        service.run_policies(s, service.load_policy_set([policies]), mode="enforce")
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait(timeout=30)
        s.execute(
            "UPDATE disrupt_actions SET claimed_by = ?, lease_until = '2999-01-01T00:00:00.000000Z'",
            (f"{socket.gethostname()}:{dead.pid}:deadbeef",),
        )
        s.commit()
        live = f"{socket.gethostname()}:{os.getpid()}:otherrun"  # a live run elsewhere in this process
        first = service.list_actions(s)[0].action_id
        s.execute("UPDATE disrupt_actions SET claimed_by = ? WHERE action_id = ?", (live, first))
        s.commit()
        sink = service.MemorySink()
        report = service.deliver_pending(s, sink, retry=FAST)
        assert report.delivered == 2 and first not in sink.delivered and report.pending == 1
        s.execute("UPDATE disrupt_actions SET lease_until = '2000-01-01T00:00:00.000000Z'")  # its lease expired
        s.commit()
        again = service.deliver_pending(s, sink, retry=FAST)
        assert again.delivered == 1 and first in sink.delivered and again.pending == 0
        delivered = [e for e in service.list_audit(s, limit=1000) if e.action == "action.delivered"]
        assert len(delivered) == 3
    finally:
        s.close()


def test_delivery_without_the_claim_writes_nothing(sqlite_url: str, policies: Path) -> None:
    """A run whose claim was taken over (lease expired) neither marks the action nor audits it."""
    s = open_store(sqlite_url)
    try:
        seed(s, 1)
        service.run_policies(s, service.load_policy_set([policies]), mode="enforce")

        class Slow:
            name = "slow"
            timeout = 0.0

            def send(self, action: Any) -> None:  # another run takes the action over meanwhile
                s.execute("UPDATE disrupt_actions SET claimed_by = 'elsewhere:1:x' WHERE action_id = ?",
                          (action.action_id,))  # fmt: skip
                s.commit()

        report = service.deliver_pending(s, Slow(), retry=FAST)
        assert report.delivered == 0 and report.errors and "claim" in report.errors[0]
        assert service.list_actions(s)[0].status == "pending"
        assert not [e for e in service.list_audit(s, limit=1000) if e.action == "action.delivered"]
    finally:
        s.close()


# -- 2. redirects are failures ------------------------------------------------------------------------
class _Recorder(BaseHTTPRequestHandler):
    hits: list[tuple[str, dict[str, str]]]
    redirect_to: str = ""
    status: int = 302

    def log_message(self, format: str, *args: object) -> None:
        return

    def _any(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        type(self).hits.append((self.command, dict(self.headers.items())))
        if self.redirect_to:
            self.send_response(self.status)
            self.send_header("Location", self.redirect_to)
        else:
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_PUT = _any


def _serve(redirect_to: str = "", status: int = 302) -> tuple[HTTPServer, type[_Recorder]]:
    handler = type("H", (_Recorder,), {"hits": [], "redirect_to": redirect_to, "status": status})
    server = HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, handler


@pytest.mark.parametrize(("status", "where", "attempts"), [
    (302, "absolute", FAST.max_attempts),  # temporary: retried, then dead-lettered
    (307, "relative", FAST.max_attempts),
    (308, "absolute", 1),  # permanent: dead-lettered at once (fix the URL, then `actions retry`)
])  # fmt: skip
def test_webhook_redirect_is_a_failed_delivery(
    store: Store, policies: Path, status: int, where: str, attempts: int
) -> None:
    target, target_h = _serve()
    try:
        tport = target.server_address[1]
        location = f"http://user:pw@127.0.0.1:{tport}/elsewhere?token=s3cr3t" if where == "absolute" else "/else"
        redirecting, redirect_h = _serve(location, status)
        try:
            seed(store, 1)
            url = f"http://127.0.0.1:{redirecting.server_address[1]}/hooks"
            sink = service.WebhookSink(url, SECRET, timeout=5)
            report = service.enforce(store, service.load_policy_set([policies]), sink, mode="enforce", retry=FAST)
        finally:
            redirecting.shutdown()
            redirecting.server_close()
    finally:
        target.shutdown()
        target.server_close()
    assert report.delivery is not None
    assert report.delivery.delivered == 0 and report.delivery.dead_lettered == 1
    assert [h[0] for h in redirect_h.hits] == ["POST"] * attempts  # never followed, not even to itself
    assert target_h.hits == []  # neither the body nor the signature went to the redirect target
    (action,) = service.list_actions(store)
    assert action.status == "dead" and action.attempts == attempts
    err = action.last_error or ""
    assert f"HTTP {status}" in err and "redirects are not followed" in err
    assert "s3cr3t" not in err and "pw" not in err  # the Location's credentials and query are not kept
    assert not [e for e in service.list_audit(store, limit=1000) if e.action == "action.delivered"]


# -- 3. a second run lists only its own decisions -----------------------------------------------------
def test_second_enforce_run_lists_only_new_decisions(
    sqlite_url: str, policies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = open_store(sqlite_url)
    seed(s, 2)
    s.close()
    args = ["--db", sqlite_url, "enforce", "--policies", str(policies)]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert first.count("acct_0") == 2 and "2 new decisions" in first
    assert main(args) == 0
    second = capsys.readouterr().out
    assert "acct_0" not in second, second
    assert "0 new decisions (2 already recorded)" in second
    assert main([*args, "--json"]) == 0
    again = orjson.loads(capsys.readouterr().out)
    assert again["run"]["decisions"] == [] and again["run"]["decisions_existing"] == 2
    assert "earlier" not in again["run"]
    # --all also lists the earlier decisions this run matched again, marked as such
    assert main([*args, "--all"]) == 0
    listed = capsys.readouterr().out
    assert listed.count("(earlier)") == 2
    assert main([*args, "--all", "--json"]) == 0
    full = orjson.loads(capsys.readouterr().out)
    assert full["run"]["decisions"] == [] and len(full["run"]["earlier"]) == 2
    assert {d["account_id"] for d in full["run"]["earlier"]} == {"acct_00", "acct_01"}
    # a new judgement: the next run lists that one only
    s = open_store(sqlite_url)
    seed(s, 3)
    s.close()
    assert main(args) == 0
    third = capsys.readouterr().out
    assert "acct_02" in third and "acct_00" not in third and "1 new decisions" in third


# -- 4. clusters list / show ----------------------------------------------------------------------------
def _hit(account: str, indicator: str, value: str) -> dict[str, Any]:
    return {
        "kind": "indicator_hit",
        "indicator_id": indicator,
        "indicator_name": "FB relay",
        "intrusion_sets": ["Forest Blizzard"],
        "account_id": account,
        "observable": {"kind": "ip", "value": value},
        "n": 3,
        "first_ts": "2026-11-01T00:00:00Z",
        "last_ts": "2026-11-02T00:00:00Z",
        "degree": 3,
        "strength": 0.8,
        "text": f"ip {value} matches indicator FB relay (3 account(s) share it; strength 0.80)",
    }


@pytest.fixture
def clustered(sqlite_url: str) -> str:
    s = open_store(sqlite_url)
    try:
        members = ["acct_a", "acct_b", "acct_c"]
        for m in members:
            T.add_account(s, m)
            T.add_judgement(s, m, risk=0.4, flagged=False, cluster_id="cl_low")
        T.add_judgement(s, "acct_x", risk=0.9, actor="Emerald Sleet", confidence=0.9, confidence_label="high",
                        cluster_id="cl_high")  # fmt: skip
        T.add_judgement(s, "acct_y", risk=0.9, actor="Emerald Sleet", confidence=0.9, confidence_label="high",
                        cluster_id="cl_high")  # fmt: skip
        T.add_cluster(s, "cl_low", members, actor="Forest Blizzard", confidence=0.0, confidence_label=None)
        T.add_cluster(s, "cl_high", ["acct_x", "acct_y"], actor="Emerald Sleet", confidence=0.9,
                      confidence_label="high")  # fmt: skip
        ind = "indicator--11111111-1111-4111-8111-111111111111"
        other = "indicator--22222222-2222-4222-8222-222222222222"
        hits = [_hit(m, ind, "203.0.113.7") for m in members] + [_hit("acct_b", other, "198.51.100.9")]
        evidence = {"link_kinds": {"ip": 3}, "indicator_hits": hits, "behaviour": None, "members_with_hits": 3}
        s.execute("UPDATE clusters SET evidence = ? WHERE cluster_id = 'cl_low'", (orjson.dumps(evidence).decode(),))
        s.commit()
    finally:
        s.close()
    return sqlite_url


def test_clusters_list_names_no_actor_below_low(clustered: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", clustered]
    assert main([*db, "clusters", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "Forest Blizzard" not in lines["cl_low"] and "unattributed" in lines["cl_low"]
    assert "Emerald Sleet" in lines["cl_high"] and "0.90 high" in lines["cl_high"]
    assert main([*db, "clusters", "list", "--json"]) == 0
    rows = {r["cluster_id"]: r for r in orjson.loads(capsys.readouterr().out)["items"]}
    low = rows["cl_low"]
    assert low["actor"] is None and low["confidence_label"] is None
    assert low["candidate"]["actor"] == "Forest Blizzard" and low["candidate"]["confidence"] == 0.0
    assert "not an attribution" in low["candidate"]["note"]
    assert rows["cl_high"]["actor"] == "Emerald Sleet" and rows["cl_high"].get("candidate") is None


def test_clusters_show_names_each_indicator_once(clustered: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", clustered]
    assert main([*db, "clusters", "show", "cl_low"]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0]
    assert "unattributed" in header and "candidate Forest Blizzard" in header and "not an attribution" in header
    ind_lines = [line for line in out.splitlines() if "indicator--" in line]
    assert len(ind_lines) == 2, out  # one line per indicator, not one per member
    main_ind = next(line for line in ind_lines if "1111" in line)
    assert "ip 203.0.113.7" in main_ind and "FB relay" in main_ind
    assert "acct_a, acct_b, acct_c" in main_ind and "3 member(s)" in main_ind
    other = next(line for line in ind_lines if "2222" in line)
    assert "ip 198.51.100.9" in other and "acct_b" in other and "acct_a" not in other
    assert main([*db, "clusters", "show", "cl_low", "--json"]) == 0
    d = orjson.loads(capsys.readouterr().out)
    assert d["actor"] is None and d["candidate"]["actor"] == "Forest Blizzard"
    grouped = {g["indicator_id"]: g for g in d["indicators"]}
    assert grouped["indicator--11111111-1111-4111-8111-111111111111"]["members"] == ["acct_a", "acct_b", "acct_c"]
    assert grouped["indicator--11111111-1111-4111-8111-111111111111"]["observable"] == {
        "kind": "ip", "value": "203.0.113.7"}  # fmt: skip
    assert main([*db, "clusters", "show", "cl_high"]) == 0
    high = capsys.readouterr().out.splitlines()[0]
    assert "actor Emerald Sleet (0.90 high)" in high and "candidate" not in high


def test_the_clusters_api_names_no_actor_below_low(clustered: str) -> None:
    from fastapi.testclient import TestClient

    from stormwatch.api import Role, create_app
    from stormwatch.api.tokens import create_token

    s = open_store(clustered)
    try:
        token = create_token(s, name="reader", role=Role.READ_ONLY)[0]
    finally:
        s.close()
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(clustered)) as client:
        items = {c["cluster_id"]: c for c in client.get("/api/v1/clusters", headers=auth).json()["items"]}
        assert items["cl_low"]["actor"] is None and items["cl_low"]["candidate"]["actor"] == "Forest Blizzard"
        assert items["cl_high"]["actor"] == "Emerald Sleet" and items["cl_high"]["candidate"] is None
        one = client.get("/api/v1/clusters/cl_low", headers=auth).json()
        assert one["actor"] is None and "not an attribution" in one["candidate"]["note"]
        # filtering by actor finds only clusters that are attributed to it
        by_fb = client.get("/api/v1/clusters", params={"actor": "Forest Blizzard"}, headers=auth).json()
        assert by_fb["items"] == []
        by_es = client.get("/api/v1/clusters", params={"actor": "Emerald Sleet"}, headers=auth).json()
        assert [c["cluster_id"] for c in by_es["items"]] == ["cl_high"]
