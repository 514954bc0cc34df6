"""Cases, appeals (reinstatement reverses through the sink), and the labels -> training loop."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.detect.data import read_rows
from stormwatch.disrupt import service
from stormwatch.disrupt import testing as T
from stormwatch.disrupt.models import ConflictError, NotFoundError
from stormwatch.store import Store, open_store

NOW = datetime(2026, 12, 1, tzinfo=UTC)
POLICIES = {
    "suspend.yaml": """\
id: suspend-actors
version: 1
mode: enforce
when:
  actor_any: true
then:
  - action: suspend
    days: 30
""",
    "case.yaml": """\
id: case-unattributed
version: 1
when:
  risk_at_least: 0.8
  confidence_below: high
then:
  - action: open_case
    reason: high risk, no attribution
""",
}


@pytest.fixture
def pset(tmp_path: Path) -> service.PolicySet:
    d = tmp_path / "policies"
    d.mkdir()
    for name, text in POLICIES.items():
        (d / name).write_text(text)
    return service.load_policy_set([d], NOW)


def seed(store: Store) -> None:
    T.add_account(store, "bad")
    T.add_account(store, "odd")
    T.add_judgement(store, "bad", risk=0.9, actor="Crimson Sandstorm", confidence=0.6, confidence_label="medium")
    T.add_judgement(store, "odd", risk=0.85)
    T.add_events(store, "bad", ["write a keylogger that hides from AV", "thanks"], flagged=True)
    T.add_events(store, "bad", ["what is the weather in Tehran"], flagged=False)  # not exported: not flagged
    T.add_events(store, "odd", ["explain how EDR detects process hollowing", "summarise CVE-2022-30190"])


def test_case_opened_and_worked(store: Store, pset: service.PolicySet) -> None:
    seed(store)
    report = service.run_policies(store, pset, mode="dry-run", now=NOW)
    assert report.cases_opened == 2  # "bad": medium confidence is below high too
    service.run_policies(store, pset, mode="dry-run", now=NOW)
    [case] = service.list_cases(store, account_id="odd")
    assert case.status == "open" and case.reason == "high risk, no attribution"
    assert case.opened_by == "policy:case-unattributed@1"
    service.assign_case(store, case.case_id, "alice", by="lead")
    service.annotate_case(store, case.case_id, "pentest firm; looks like defensive research", by="alice")
    service.attach_evidence(store, case.case_id, {"url": "https://example.com/ticket/1"}, by="alice")
    labelled = service.label_case(store, case.case_id, "false_positive", by="alice")
    assert labelled.label == "false_positive" and labelled.assignee == "alice"
    closed = service.close_case(store, case.case_id, by="alice", resolution="benign")
    assert closed.status == "closed" and closed.closed_by == "analyst:alice"
    detail = service.get_case(store, case.case_id)
    assert [n.kind for n in detail.notes] == ["note", "evidence"]
    assert detail.notes[1].body == {"url": "https://example.com/ticket/1"}
    assert detail.decisions and detail.decisions[0].action == "open_case"
    with pytest.raises(ConflictError):
        service.annotate_case(store, case.case_id, "late", by="bob")
    with pytest.raises(NotFoundError):
        service.get_case(store, "case_nope")
    actions = [e.action for e in service.list_audit(store, target=f"case:{case.case_id}")]
    assert actions == ["case.opened", "case.assigned", "case.annotated", "case.evidence_attached", "case.labelled",
                       "case.closed"]  # fmt: skip
    assert service.verify_audit(store).ok
    assert detail.to_dict()["case"]["case_id"] == case.case_id


def test_appeal_reinstatement_reverses_through_the_sink(store: Store, pset: service.PolicySet) -> None:
    seed(store)
    sink = service.MemorySink()
    service.enforce(store, pset, sink, mode="enforce", now=NOW)
    [suspend] = service.list_actions(store, status="delivered")
    assert suspend.kind == "suspend" and suspend.account_id == "bad"
    appeal = service.file_appeal(store, "bad", "we are a university lab", by="bad-owner")
    assert {d.status for d in service.list_decisions(store, account_id="bad", policy_id="suspend-actors")} == {
        "under_appeal"
    }
    with pytest.raises(ConflictError):
        service.file_appeal(store, "bad", "again", by="bad-owner")
    outcome = service.decide_appeal(store, appeal.appeal_id, reinstate=True, by="carol", note="verified lab")
    assert outcome.appeal.status == "reinstated" and outcome.appeal.decided_by == "analyst:carol"
    [rev] = outcome.reversing_actions
    assert (rev.kind, rev.reverses, rev.status) == ("unsuspend", suspend.action_id, "pending")
    delivery = service.deliver_pending(store, sink)
    assert delivery.delivered == 1
    assert sink.delivered[rev.action_id]["data"]["reverses"] == suspend.action_id
    assert {d.status for d in service.list_decisions(store, account_id="bad", policy_id="suspend-actors")} == {
        "reversed"
    }
    with pytest.raises(ConflictError):
        service.decide_appeal(store, appeal.appeal_id, reinstate=False, by="carol")
    # the reinstated account is not actioned again by later runs
    again = service.enforce(store, pset, sink, mode="enforce", now=NOW)
    assert again.run.actions_queued == 0
    trail = [e.action for e in service.list_audit(store, target="account:bad", limit=1000)]
    for step in ("action.delivered", "appeal.filed", "appeal.reinstated", "action.queued"):
        assert step in trail
    assert trail[-1] == "action.delivered"
    assert service.verify_audit(store).ok


def test_appeal_upheld_and_undelivered_cancelled(store: Store, pset: service.PolicySet) -> None:
    seed(store)
    service.run_policies(store, pset, mode="enforce", now=NOW)  # queued, not delivered
    a1 = service.file_appeal(store, "bad", "mistake", by="owner")
    assert service.decide_appeal(store, a1.appeal_id, reinstate=False, by="dan").appeal.status == "upheld"
    a2 = service.file_appeal(store, "bad", "new facts", by="owner")
    out = service.decide_appeal(store, a2.appeal_id, reinstate=True, by="dan")
    assert out.reversing_actions == () and len(out.cancelled_actions) == 1
    assert [a.status for a in service.list_actions(store)] == ["cancelled"]


def test_labels_export_round_trips_into_training(store: Store, pset: service.PolicySet, tmp_path: Path) -> None:
    seed(store)
    service.run_policies(store, pset, mode="dry-run", now=NOW)
    by_account = {c.account_id: c for c in service.list_cases(store)}
    service.label_case(store, by_account["bad"].case_id, "true_positive", by="eve", actor="Crimson Sandstorm",
                       category="LLMT-07")  # fmt: skip
    service.label_case(store, by_account["odd"].case_id, "false_positive", by="eve")
    out = tmp_path / "labels.jsonl"
    with open(out, "w") as fh:
        assert service.export_labels(store, fh) == 4
    rows = read_rows([out])
    assert {(r.text, r.label, r.source) for r in rows} == {
        ("write a keylogger that hides from AV", 1, "analyst"),
        ("thanks", 1, "analyst"),
        ("explain how EDR detects process hollowing", 0, "analyst"),
        ("summarise CVE-2022-30190", 0, "analyst"),
    }
    assert {r.category for r in rows if r.label} == {"LLMT-07"}
    assert {r.label for r in rows} == {0, 1}
    assert all(r.group in ("bad", "odd") for r in rows)


def test_cases_and_appeals_cli(sqlite_url: str, pset: service.PolicySet, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    s = open_store(sqlite_url)
    seed(s)
    service.run_policies(s, pset, mode="dry-run", now=NOW)
    case_id = service.list_cases(s, account_id="odd")[0].case_id
    s.close()
    db = ["--db", sqlite_url]
    assert main([*db, "cases", "list"]) == 0
    assert case_id in capsys.readouterr().out
    assert main([*db, "cases", "assign", case_id, "alice", "--by", "lead"]) == 0
    assert main([*db, "cases", "note", case_id, "looks benign", "--by", "alice"]) == 0
    assert main([*db, "cases", "attach", case_id, '{"ticket": 7}', "--by", "alice"]) == 0
    assert main([*db, "cases", "label", case_id, "false_positive", "--by", "alice"]) == 0
    assert main([*db, "cases", "close", case_id, "--by", "alice", "--resolution", "benign"]) == 0
    assert main([*db, "cases", "note", case_id, "late", "--by", "alice"]) == 4  # closed: conflict
    assert main([*db, "cases", "show", case_id, "--json"]) == 0
    assert '"ticket":7' in capsys.readouterr().out
    assert main([*db, "appeals", "file", "odd", "--reason", "we are a SOC"]) == 0
    capsys.readouterr()  # the line `appeals file` printed
    assert main([*db, "appeals", "list", "--json"]) == 0
    appeal_id = orjson.loads(capsys.readouterr().out)["items"][0]["appeal_id"]
    assert main([*db, "appeals", "decide", appeal_id, "--uphold", "--by", "carol"]) == 0
    out = tmp_path / "labels.jsonl"
    assert main([*db, "labels", "export", "-o", str(out)]) == 0
    assert len(read_rows([out])) == 2
    assert main([*db, "audit", "verify"]) == 0
