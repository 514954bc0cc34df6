"""Policy files: the shipped corpus, errors with file:line:field, evaluation, exemptions, modes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from stormwatch.cli import main
from stormwatch.disrupt import service
from stormwatch.disrupt import testing as T
from stormwatch.disrupt.policy import check_paths, load_file, policy_files
from stormwatch.errors import InputError
from stormwatch.store import Store

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 1, tzinfo=UTC)

TERMINATE = """\
id: terminate-actors
version: 1
mode: enforce
priority: 100
apply_to: cluster
when:
  actor_any: true
  confidence_at_least: high
then:
  - action: terminate
"""


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


# -- the shipped corpus ----------------------------------------------------------------------------
SHIPPED = policy_files([REPO / "policies"])


def test_shipped_policies_exist() -> None:
    assert len(SHIPPED) >= 5


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_file_is_valid(path: Path) -> None:
    policies, exemptions, issues = load_file(path, NOW)
    assert [i for i in issues if i.severity == "error"] == []
    assert policies or exemptions
    for p in policies:
        assert path.stem.startswith(p.id), "file name starts with the policy id"
        assert p.mode in ("dry-run", "shadow"), "shipped policies never enforce by default"
        assert p.description
        assert p.rule_version.startswith("sha256:")


def test_shipped_ids_unique_and_check_clean() -> None:
    pset, issues = check_paths([REPO / "policies"], NOW)
    assert [i for i in issues if i.severity == "error"] == []
    assert len({p.id for p in pset.policies}) == len(pset.policies)


def test_rule_version_changes_with_the_text(tmp_path: Path) -> None:
    a = load_file(write(tmp_path, "a.yaml", TERMINATE), NOW)[0][0]
    b = load_file(write(tmp_path, "b.yaml", TERMINATE + "description: edited\n"), NOW)[0][0]
    assert a.rule_version != b.rule_version


# -- errors name file, line and field ----------------------------------------------------------------
BAD = [
    ("unknown top-level field", TERMINATE + "colour: red\n", 11, "colour"),
    ("unknown condition", TERMINATE.replace("  actor_any: true", "  actor_anything: true"), 7, "when.actor_anything"),
    ("bad confidence label", TERMINATE.replace("confidence_at_least: high", "confidence_at_least: sure"), 8,
     "when.confidence_at_least"),
    ("risk out of range", TERMINATE.replace("  actor_any: true", "  risk_at_least: 1.5"), 7, "when.risk_at_least"),
    ("unknown action", TERMINATE.replace("action: terminate", "action: nuke"), 10, "then[0].action"),
    ("missing required param", TERMINATE.replace("action: terminate", "action: rate_limit"), 10, "then[0].rpm"),
    ("bad mode", TERMINATE.replace("mode: enforce", "mode: maybe"), 3, "mode"),
    ("wrong type", TERMINATE.replace("priority: 100", "priority: high"), 4, "priority"),
    ("missing then", TERMINATE.split("then:")[0], 1, "then"),
    ("bad apply_to", TERMINATE.replace("apply_to: cluster", "apply_to: org"), 5, "apply_to"),
    ("empty when", TERMINATE.replace("  actor_any: true\n  confidence_at_least: high\n", "  {}\n").replace(
        "when:\n  {}", "when: {}"), 6, "when"),
    ("yaml syntax", TERMINATE.replace("priority: 100", "priority: 100: 3"), 4, ""),
]  # fmt: skip


@pytest.mark.parametrize(("what", "text", "line", "field"), BAD, ids=[b[0] for b in BAD])
def test_bad_policy_rejected_with_location(tmp_path: Path, what: str, text: str, line: int, field: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    _, issues = check_paths([path], NOW)
    errors = [i for i in issues if i.severity == "error"]
    assert errors, what
    assert any(i.file == str(path) and i.line == line and i.field == field for i in errors), errors
    with pytest.raises(InputError, match=r"bad\.yaml"):
        service.load_policy_set([path], NOW)


def test_duplicate_ids_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", TERMINATE)
    write(tmp_path, "b.yaml", TERMINATE)
    issues = service.check_policies([tmp_path], now=NOW)
    assert any(i.field == "id" and "also used" in i.message for i in issues)


def test_exemption_errors_and_expiry_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "ex.yaml",
        "kind: exemptions\nexemptions:\n  - account_id: a\n    reason: r\n    granted_by: g\n    expires: 2020-01-01\n"
        "  - account_id: b\n    reason: r\n",
    )
    issues = service.check_policies([path], now=NOW)
    assert any(i.severity == "warning" and i.field == "exemptions[0].expires" and i.line == 3 for i in issues)
    assert any(i.severity == "error" and i.field == "exemptions[1].expires" and i.line == 7 for i in issues)


def test_policy_check_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "bad.yaml", TERMINATE.replace("action: terminate", "action: nuke"))
    assert main(["policy", "check", "--policies", str(path)]) == 4
    err = capsys.readouterr().err
    assert f"{path}:10: error: then[0].action: unknown action 'nuke'" in err
    assert main(["policy", "check", "--policies", str(REPO / "policies")]) == 0


# -- evaluation ---------------------------------------------------------------------------------------
def seed_cluster(store: Store) -> None:
    for a in ("a1", "a2", "pro", "lone"):
        T.add_account(store, a, email_domain="lab.example.org" if a == "pro" else "mail.example")
    T.add_cluster(store, "c1", ["a1", "a2", "pro"], actor="Forest Blizzard", confidence=0.9, confidence_label="high")
    T.add_judgement(store, "a1", risk=0.95, actor="Forest Blizzard", confidence=0.9, confidence_label="high",
                    cluster_id="c1", ttps={"LLMT-01": 0.7, "LLMT-02": 0.01})  # fmt: skip
    T.add_judgement(store, "a2", risk=0.4, cluster_id="c1", flagged=False)
    T.add_judgement(store, "pro", risk=0.97, actor="Forest Blizzard", confidence=0.9, confidence_label="high",
                    cluster_id="c1")  # fmt: skip
    T.add_judgement(store, "lone", risk=0.85)


def exemption(tmp: Path, expires: str) -> Path:
    return write(
        tmp,
        "exemptions.yaml",
        "kind: exemptions\nexemptions:\n  - account_id: pro\n    reason: verified malware researcher\n"
        f"    granted_by: t-and-s\n    expires: {expires}\n",
    )


def test_cluster_scope_and_exemption(store: Store, tmp_path: Path) -> None:
    seed_cluster(store)
    write(tmp_path, "t.yaml", TERMINATE)
    exemption(tmp_path, "2027-01-31")
    pset = service.load_policy_set([tmp_path], NOW)
    ev = service.test_policies(store, pset, now=NOW)
    got = {(p.account_id, p.action): p.status for p in ev.planned}
    assert got == {("a1", "terminate"): "planned", ("a2", "terminate"): "planned", ("pro", "terminate"): "exempted"}
    pro = next(p for p in ev.planned if p.account_id == "pro")
    assert "verified malware researcher" in pro.evidence["exemption"]


def test_security_professional_with_exemption_never_enforced(store: Store, tmp_path: Path) -> None:
    seed_cluster(store)
    write(tmp_path, "t.yaml", TERMINATE)
    exemption(tmp_path, "2027-01-31")
    pset = service.load_policy_set([tmp_path], NOW)
    sink = service.MemorySink()
    for _ in range(2):
        service.enforce(store, pset, sink, mode="enforce", now=NOW)
    assert {p["data"]["account_id"] for p in sink.delivered.values()} == {"a1", "a2"}
    assert service.list_actions(store, account_id="pro") == []
    [d] = service.list_decisions(store, account_id="pro")
    assert d.status == "exempted" and d.mode == "enforce"
    assert any(e.action == "decision.exempted" for e in service.list_audit(store, target="account:pro"))


def test_expired_exemption_is_enforced(store: Store, tmp_path: Path) -> None:
    seed_cluster(store)
    write(tmp_path, "t.yaml", TERMINATE)
    exemption(tmp_path, "2026-11-30")  # the day before NOW
    pset = service.load_policy_set([tmp_path], NOW)
    sink = service.MemorySink()
    service.enforce(store, pset, sink, mode="enforce", now=NOW)
    assert "pro" in {p["data"]["account_id"] for p in sink.delivered.values()}


def test_allowlist_and_conditions(store: Store, tmp_path: Path) -> None:
    seed_cluster(store)
    write(tmp_path, "p.yaml", """\
id: recon
version: "2"
when:
  ttps_any: [LLMT-01, LLMT-02]
  account_age_days_at_most: 400
  actor_in: [forest blizzard]
unless:
  email_domains: [lab.example.org]
then:
  - action: rate_limit
    rpm: 5
  - warn
""")  # fmt: skip
    pset = service.load_policy_set([tmp_path], NOW)
    ev = service.test_policies(store, pset, now=NOW)
    assert {(p.account_id, p.action, p.status) for p in ev.planned} == {
        ("a1", "rate_limit", "planned"),
        ("a1", "warn", "superseded"),  # rate_limit is the more severe account action
    }
    p = next(p for p in ev.planned if p.action == "rate_limit")
    assert p.params == {"rpm": 5} and p.policy_version == "2"
    assert "TTPs ['LLMT-01']" in p.reasons  # LLMT-02's mass is below the floor


def test_modes_dry_run_records_and_acts_on_nothing(store: Store, tmp_path: Path) -> None:
    seed_cluster(store)
    write(tmp_path, "t.yaml", TERMINATE)
    pset = service.load_policy_set([tmp_path], NOW)
    r1 = service.run_policies(store, pset, mode="dry-run", now=NOW)
    assert r1.decisions_new == 3 and r1.actions_queued == 0
    assert service.list_actions(store) == []
    r2 = service.run_policies(store, pset, mode="dry-run", now=NOW)
    assert r2.decisions_new == 0 and r2.decisions_existing == 3
    # a policy whose own mode is dry-run never acts, even in an enforce run
    write(tmp_path, "t.yaml", TERMINATE.replace("mode: enforce", "mode: dry-run"))
    pset = service.load_policy_set([tmp_path], NOW)
    r3 = service.run_policies(store, pset, mode="enforce", now=NOW, include_earlier=True)
    assert r3.actions_queued == 0 and r3.decisions == () and {d.mode for d in r3.earlier} == {"dry-run"}


def test_shadow_mode_and_compare(store: Store, tmp_path: Path) -> None:
    seed_cluster(store)
    write(tmp_path, "t.yaml", TERMINATE)
    write(tmp_path, "s.yaml", """\
id: case-unattributed
version: 1
mode: shadow
when:
  risk_at_least: 0.8
  confidence_below: high
then:
  - action: open_case
""")  # fmt: skip
    pset = service.load_policy_set([tmp_path], NOW)
    r = service.run_policies(store, pset, mode="shadow", now=NOW)
    assert [(d.account_id, d.mode) for d in r.decisions] == [("lone", "shadow")]
    assert service.list_cases(store) == []  # shadow decisions open nothing
    cmp = service.compare_policies(store, pset, pset, now=NOW)
    assert [(d.account_id, d.action) for d in cmp.only_candidate] == [("lone", "open_case")]
    assert cmp.only_active == () and cmp.same == 3


def test_policy_test_and_compare_cli(sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stormwatch.store import open_store

    s = open_store(sqlite_url)
    seed_cluster(s)
    s.close()
    write(tmp_path, "t.yaml", TERMINATE)
    base = ["--db", sqlite_url]
    assert main([*base, "policy", "test", "--policies", str(tmp_path), "--now", "2026-12-01T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "terminate" in out and "EXEMPT" not in out and "a2" in out
    assert main([*base, "policy", "test", "--policies", str(tmp_path), "--json"]) == 0
    assert '"judgements":4' in capsys.readouterr().out
    assert main([*base, "policy", "compare", "--policies", str(tmp_path), "--candidate", str(tmp_path)]) == 0
    assert "0 only candidate" in capsys.readouterr().out
