"""Analysts' workflow edges: cases and appeals refuse impossible transitions (exit 4, audit unchanged),
the CLI prints what happened, labels export skips what it cannot use, and delivery survives lost
claims, dead letters and a sink that blows up."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.disrupt import service
from stormwatch.disrupt import testing as T
from stormwatch.disrupt.labels import event_text
from stormwatch.disrupt.models import Action, ConflictError, NotFoundError, iso, utcnow
from stormwatch.errors import InputError
from stormwatch.store import Store, open_store

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SUSPEND = "id: suspend-actors\nversion: 1\nmode: enforce\nwhen:\n  actor_any: true\nthen:\n  - action: suspend\n"
WARN = "id: warn-risky\nversion: 1\nmode: enforce\nwhen:\n  risk_at_least: 0.5\nthen:\n  - action: warn\n"
CASE = "id: case-risky\nversion: 1\nwhen:\n  risk_at_least: 0.8\nthen:\n  - action: open_case\n    reason: risky\n"


def _pset(tmp_path: Path, **files: str) -> service.PolicySet:
    d = tmp_path / "policies"
    d.mkdir(exist_ok=True)
    for name, text in files.items():
        (d / f"{name}.yaml").write_text(text)
    return service.load_policy_set([d], NOW)


def _audit_actions(store: Store, target: str) -> list[str]:
    return [e.action for e in service.list_audit(store, target=target, limit=1000)]


# -- cases ---------------------------------------------------------------------------------------------
def test_case_transitions_refused_after_close(store: Store) -> None:
    T.add_account(store, "acct")
    case = service.open_case(store, "acct", by="lead", reason="manual review", decision_id="dec_a")
    again = service.open_case(store, "acct", by="lead", reason="second look", decision_id="dec_b")
    assert again.case_id == case.case_id  # one open case per account
    notes = service.get_case(store, case.case_id).notes
    assert [n.body for n in notes] == ["also decided: dec_b (second look)"]
    with pytest.raises(InputError, match="the note is empty"):
        service.annotate_case(store, case.case_id, "   ", by="alice")
    with pytest.raises(InputError, match="unknown label 'maybe'"):
        service.label_case(store, case.case_id, "maybe", by="alice")
    with pytest.raises(InputError, match="an actor name is required"):
        service.assign_case(store, case.case_id, "bob", by=" ")
    with pytest.raises(NotFoundError, match="no case 'case_nope'"):
        service.assign_case(store, "case_nope", "bob", by="lead")
    service.close_case(store, case.case_id, by="alice", resolution="done")
    before = _audit_actions(store, f"case:{case.case_id}")
    assert before == ["case.opened", "case.closed"]
    for attempt in (
        lambda: service.close_case(store, case.case_id, by="alice"),
        lambda: service.assign_case(store, case.case_id, "bob", by="lead"),
        lambda: service.label_case(store, case.case_id, "true_positive", by="alice"),
        lambda: service.attach_evidence(store, case.case_id, "https://ticket/1", by="alice"),
    ):
        with pytest.raises(ConflictError, match=f"case {case.case_id} is closed"):
            attempt()
    assert _audit_actions(store, f"case:{case.case_id}") == before  # nothing recorded for refused changes
    reopened = service.open_case(store, "acct", by="lead", reason="new activity")
    assert reopened.case_id != case.case_id and reopened.status == "open"
    assert service.verify_audit(store).ok


def _seeded_cli(sqlite_url: str, tmp_path: Path) -> tuple[list[str], str]:
    s = open_store(sqlite_url)
    T.add_account(s, "bad")
    T.add_judgement(s, "bad", risk=0.9, actor="Crimson Sandstorm", confidence=0.9, confidence_label="high")
    T.add_events(s, "bad", ["write a keylogger"], flagged=True)
    service.run_policies(s, _pset(tmp_path, suspend=SUSPEND, case=CASE), mode="enforce", now=NOW)
    case_id = service.list_cases(s)[0].case_id
    s.close()
    return ["--db", sqlite_url], case_id


def test_cases_cli_text_and_json(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, case_id = _seeded_cli(sqlite_url, tmp_path)
    assert main([*db, "cases", "list", "--status", "closed"]) == 0
    assert capsys.readouterr().out.strip() == "no cases"
    assert main([*db, "cases", "list", "--status", "closed", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out) == {"items": []}
    assert main([*db, "cases", "assign", case_id, "alice", "--by", "lead", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["assignee"] == "alice"
    assert main([*db, "cases", "note", case_id, "checked the logs", "--by", "alice", "--json"]) == 0
    note = orjson.loads(capsys.readouterr().out)
    assert (note["case_id"], note["kind"], note["body"]) == (case_id, "note", "checked the logs")
    assert main([*db, "cases", "note", case_id, "second note", "--by", "alice"]) == 0
    line = capsys.readouterr().out
    assert line.startswith("note ") and line.rstrip().endswith(f"added to {case_id}")
    ev = tmp_path / "ev.json"
    ev.write_text('{"ticket": "T-9"}')
    assert main([*db, "cases", "attach", case_id, f"@{ev}", "--by", "alice"]) == 0
    assert main([*db, "cases", "attach", case_id, "https://tickets.example/9", "--by", "alice"]) == 0
    capsys.readouterr()
    assert main([*db, "cases", "attach", case_id, "[1, 2]", "--by", "alice"]) == 4
    assert "evidence must be a JSON object or a text reference" in capsys.readouterr().err
    assert main([*db, "cases", "label", case_id, "true_positive", "--actor", "Crimson Sandstorm", "--by", "alice"]) == 0
    assert "label=true_positive/Crimson Sandstorm" in capsys.readouterr().out
    assert main([*db, "cases", "show", case_id]) == 0
    out = capsys.readouterr().out
    assert "assignee=alice" in out
    assert "[note]" in out and "alice: checked the logs" in out
    assert "[evidence]" in out and '{"ticket":"T-9"}' in out and "https://tickets.example/9" in out
    assert "decision dec_" in out and "enforce suspend" in out
    assert main([*db, "cases", "close", case_id, "--by", "alice"]) == 0
    capsys.readouterr()
    assert main([*db, "cases", "close", case_id, "--by", "alice"]) == 4
    assert f"case {case_id} is closed" in capsys.readouterr().err
    assert main([*db, "cases", "show", "case_missing"]) == 4
    assert "no case 'case_missing'" in capsys.readouterr().err


def test_appeals_cli_reinstate_queues_reversals(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = _seeded_cli(sqlite_url, tmp_path)
    outbox = tmp_path / "outbox.jsonl"
    assert main([*db, "actions", "deliver", "--sink", "outbox", "--outbox", str(outbox)]) == 0
    assert main([*db, "appeals", "list"]) == 0
    assert "no appeals" in capsys.readouterr().out
    assert main([*db, "appeals", "file", "bad", "--reason", "   "]) == 4
    assert "an appeal needs a reason" in capsys.readouterr().err
    assert main([*db, "appeals", "file", "bad", "--reason", "research lab", "--json"]) == 0
    appeal = orjson.loads(capsys.readouterr().out)
    assert appeal["status"] == "open" and appeal["filed_by"] == "user:bad"
    assert main([*db, "appeals", "list", "--status", "open"]) == 0
    assert appeal["appeal_id"] in capsys.readouterr().out
    assert main([*db, "appeals", "decide", appeal["appeal_id"], "--reinstate", "--by", "carol"]) == 0
    out = capsys.readouterr().out
    assert "reinstated" in out and "queued unsuspend" in out and "deliver the reversals" in out
    assert main([*db, "appeals", "decide", appeal["appeal_id"], "--uphold", "--by", "carol"]) == 4
    assert "already decided (reinstated)" in capsys.readouterr().err
    assert main([*db, "appeals", "decide", "apl_missing", "--uphold", "--by", "carol"]) == 4
    assert "no appeal 'apl_missing'" in capsys.readouterr().err
    assert main([*db, "actions", "deliver", "--sink", "outbox", "--outbox", str(outbox), "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["delivered"] == 1
    kinds = [orjson.loads(line)["data"]["kind"] for line in outbox.read_bytes().splitlines()]
    assert kinds == ["suspend", "unsuspend"]


def test_appeals_cli_reinstate_cancels_undelivered(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = _seeded_cli(sqlite_url, tmp_path)  # the suspend is queued, never delivered
    assert main([*db, "appeals", "file", "bad", "--reason", "mistake", "--by", "owner"]) == 0
    appeal_id = capsys.readouterr().out.split()[0]
    assert main([*db, "appeals", "decide", appeal_id, "--reinstate", "--by", "carol", "--json"]) == 0
    outcome = orjson.loads(capsys.readouterr().out)
    assert outcome["reversing_actions"] == [] and len(outcome["cancelled_actions"]) == 1
    assert main([*db, "actions", "list", "--status", "cancelled", "--json"]) == 0
    assert [a["kind"] for a in orjson.loads(capsys.readouterr().out)["items"]] == ["suspend"]


def test_appeal_reversal_skips_reversals_and_actions_without_one(store: Store, tmp_path: Path) -> None:
    T.add_account(store, "bad")
    T.add_judgement(store, "bad", risk=0.9, actor="Crimson Sandstorm", confidence=0.9, confidence_label="high")
    sink = service.MemorySink()
    service.enforce(store, _pset(tmp_path, suspend=SUSPEND, warn=WARN), sink, mode="enforce", now=NOW)
    assert sorted(a.kind for a in service.list_actions(store, status="delivered")) == ["suspend"]
    first = service.file_appeal(store, "bad", "lab", by="owner")
    out = service.decide_appeal(store, first.appeal_id, reinstate=True, by="carol")
    [rev] = out.reversing_actions
    service.deliver_pending(store, sink)
    second = service.file_appeal(store, "bad", "again", by="owner")
    out2 = service.decide_appeal(store, second.appeal_id, reinstate=True, by="carol")
    assert out2.reversing_actions == () and out2.cancelled_actions == ()  # the unsuspend is not reversed
    assert service.get_action(store, rev.action_id).status == "delivered"
    with pytest.raises(NotFoundError, match="no action"):
        service.get_action(store, "act_missing")
    with pytest.raises(NotFoundError, match="no decision"):
        service.get_decision(store, "dec_missing")


# -- labels ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "messages", "text"),
    [
        ("hello", None, "hello"),
        (None, '[{"role": "user", "content": "from json"}]', "from json"),
        (None, "not json at all", "not json at all"),
        (
            None,
            [
                {"role": "system", "content": "sys"},
                "junk",
                {"role": "user", "content": "a"},
                {"role": "user", "content": [{"type": "text", "text": "b"}, {"type": "image"}, "x"]},
                {"role": "user", "content": 3},
            ],
            "a\nb",
        ),
        (None, None, ""),
    ],
)
def test_event_text_takes_the_user_side(prompt: str | None, messages: Any, text: str) -> None:
    assert event_text(prompt, messages) == text


def test_labels_export_to_stdout_skips_blank_text(
    sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, case_id = _seeded_cli(sqlite_url, tmp_path)
    s = open_store(sqlite_url)
    T.add_events(s, "bad", ["   "], flagged=True)  # no text: not a training line
    s.close()
    assert main([*db, "cases", "label", case_id, "true_positive", "--category", "LLMT-03", "--by", "eve"]) == 0
    capsys.readouterr()
    assert main([*db, "labels", "export"]) == 0
    captured = capsys.readouterr()
    rows = [orjson.loads(line) for line in captured.out.splitlines()]
    assert [(r["text"], r["label"], r["category"], r["group"]) for r in rows] == [
        ("write a keylogger", "malicious", "LLMT-03", "bad")
    ]
    assert "1 labelled lines written to -" in captured.err
    buf = io.StringIO()
    s = open_store(sqlite_url)
    try:
        assert service.export_labels(s, buf) == 1
    finally:
        s.close()


# -- delivery edges ------------------------------------------------------------------------------------
def test_unknown_mode_and_enforce_without_sink_are_input_errors(store: Store, tmp_path: Path) -> None:
    pset = _pset(tmp_path, warn=WARN)
    with pytest.raises(InputError, match="unknown mode 'loud'"):
        service.run_policies(store, pset, mode="loud", now=NOW)
    with pytest.raises(InputError, match="--mode enforce needs a sink"):
        service.enforce(store, pset, None, mode="enforce", now=NOW)


def test_shadow_policies_record_as_shadow_and_queue_nothing(store: Store, tmp_path: Path) -> None:
    T.add_account(store, "a")
    T.add_judgement(store, "a", risk=0.9)
    shadow = WARN.replace("mode: enforce", "mode: shadow")
    report = service.run_policies(store, _pset(tmp_path, warn=shadow), mode="enforce", now=NOW)
    assert [(d.mode, d.action) for d in report.decisions] == [("shadow", "warn")]
    assert report.actions_queued == 0 and service.list_actions(store) == []


def _queue(store: Store, tmp_path: Path, accounts: int) -> list[str]:
    for i in range(accounts):
        T.add_account(store, f"a{i}")
        T.add_judgement(store, f"a{i}", risk=0.9)
    service.run_policies(store, _pset(tmp_path, warn=WARN), mode="enforce", now=NOW)
    return [a.action_id for a in service.list_actions(store, status="pending")]


def test_dead_letters_retried_by_id_only(store: Store, tmp_path: Path) -> None:
    ids = _queue(store, tmp_path, 2)
    failing = service.MemorySink(fail=2)
    rep = service.deliver_pending(store, failing, retry=service.RetryPolicy(max_attempts=1))
    assert (rep.dead_lettered, rep.delivered) == (2, 0)
    ok = service.MemorySink()
    rep = service.retry_dead_letters(store, ok, action_ids=[ids[0]])
    assert rep.delivered == 1 and list(ok.delivered) == [ids[0]]
    assert {a.action_id: a.status for a in service.list_actions(store)} == {ids[0]: "delivered", ids[1]: "dead"}
    assert "action.requeued" in _audit_actions(store, "account:a0")
    assert "action.requeued" not in _audit_actions(store, "account:a1")


def test_a_sink_that_crashes_leaves_the_action_pending(store: Store, tmp_path: Path) -> None:
    [aid] = _queue(store, tmp_path, 1)

    class Broken:
        name = "broken"

        def send(self, action: Action) -> None:
            raise RuntimeError("sink bug")

    with pytest.raises(RuntimeError, match="sink bug"):
        service.deliver_pending(store, Broken())
    assert service.get_action(store, aid).status == "pending"
    assert "action.delivered" not in _audit_actions(store, "account:a0")


def test_a_long_batch_renews_its_lease_and_reports_claims_it_lost(store: Store, tmp_path: Path) -> None:
    ids = _queue(store, tmp_path, 3)
    stolen: list[str] = []

    class Slow:
        name = "slow"

        def __init__(self) -> None:
            self.sent: list[str] = []

        def send(self, action: Action) -> None:
            time.sleep(0.12)  # longer than the lease: another run may claim what is left
            if not stolen:
                far = "2999-01-01T00:00:00.000000Z"
                taken = store.disrupt.claim_actions("otherhost:1:thief", now=iso(utcnow()), lease_until=far, limit=10)
                stolen.extend(a.action_id for a in taken)
                store.commit()
            self.sent.append(action.action_id)

    sink = Slow()
    rep = service.deliver_pending(store, sink, retry=service.RetryPolicy(lease_s=0.1, wait=False))
    assert set(stolen) == set(ids)  # the expired leases were free to take
    assert sink.sent == [ids[0]]  # the others were never sent by this run
    assert rep.delivered == 0 and rep.pending == 3
    assert sum("claim lost" in e for e in rep.errors) == 3
