"""Policy files: every malformed shape is refused with its file:line:field; conditions, allowlists and
end-user blocks decide what the policies plan; `policy check` reports it with exit 4."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from stormwatch.cli import main
from stormwatch.disrupt import service
from stormwatch.disrupt import testing as T
from stormwatch.disrupt.policy import check_paths, load_file
from stormwatch.errors import InputError
from stormwatch.store import Store

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode() if isinstance(text, str) else text)
    return p


def _policy(when: str, then: str = "  - action: warn\n", extra: str = "") -> str:
    return f"id: p1\nversion: 1\n{extra}when:\n{when}then:\n{then}"


BAD = [
    # (what, text, line, field, message fragment)
    ("root is a list", "- a\n- b\n", 1, "", "expected a mapping"),
    ("id given twice", "id: a\nid: b\nversion: 1\nwhen:\n  flagged: true\nthen: [warn]\n", 2, "id", "given twice"),
    ("id is a mapping", "id: {x: 1}\nversion: 1\nwhen:\n  flagged: true\nthen: [warn]\n", 1, "id", "expected a str"),
    ("bool for a number", _policy("  risk_at_least: yes\n"), 4, "when.risk_at_least", "got True"),
    ("risk out of range", _policy("  risk_at_least: 1.5\n"), 4, "when.risk_at_least", "must be in [0, 1]"),
    ("confidence out of range", _policy("  confidence_at_least: 2\n"), 4, "when.confidence_at_least",
     "must be in [0, 1]"),
    ("confidence unknown label", _policy("  confidence_below: certain\n"), 4, "when.confidence_below", "one of low"),
    ("cluster actor wrong type", _policy("  in_cluster_with_actor: 3\n"), 4, "when.in_cluster_with_actor",
     "expected a bool"),
    ("negative age", _policy("  account_age_days_at_most: -1\n"), 4, "when.account_age_days_at_most",
     "must be 0 or more"),
    ("empty actor list", _policy("  actor_in: []\n"), 4, "when.actor_in", "the list is empty"),
    ("actor list is a scalar", _policy("  ttps_any: LLMT-01\n"), 4, "when.ttps_any", "expected a list"),
    ("unknown condition", _policy("  moon_phase: full\n"), 4, "when.moon_phase", "unknown field"),
    ("then not a list", _policy("  flagged: true\n", "  action: warn\n"), 6, "then", "non-empty list"),
    ("action is a list", _policy("  flagged: true\n", "  - [warn]\n"), 6, "then[0]", "expected an action mapping"),
    ("action key missing", _policy("  flagged: true\n", "  - days: 3\n"), 6, "then[0].action", "missing"),
    ("unknown action", _policy("  flagged: true\n", "  - action: shame\n"), 6, "then[0].action", "unknown action"),
    ("zero days", _policy("  flagged: true\n", "  - action: suspend\n    days: 0\n"), 7, "then[0].days",
     "positive number"),
    ("unknown action param", _policy("  flagged: true\n", "  - action: warn\n    loud: true\n"), 7, "then[0].loud",
     "unknown field"),
    ("unless not a mapping", _policy("  flagged: true\n", extra="unless: [a]\n"), 3, "unless", "expected a mapping"),
    ("unless unknown key", _policy("  flagged: true\n", extra="unless:\n  ips: [1.2.3.4]\n"), 4, "unless.ips",
     "unknown field"),
    ("bad kind", "kind: recipe\nid: p\n", 1, "kind", "expected policy or exemptions"),
    ("exemptions not a list", "kind: exemptions\nexemptions: {a: 1}\n", 1, "exemptions", "expected a list"),
    ("exemption names two targets",
     "kind: exemptions\nexemptions:\n  - account_id: a\n    org_id: o\n    reason: r\n    granted_by: g\n"
     "    expires: 2030-01-01\n", 3, "exemptions[0]", "exactly one of"),
    ("exemption bad date",
     "kind: exemptions\nexemptions:\n  - account_id: a\n    reason: r\n    granted_by: g\n    expires: someday\n",
     6, "exemptions[0].expires", "YYYY-MM-DD"),
    ("exemption unknown action",
     "kind: exemptions\nexemptions:\n  - account_id: a\n    reason: r\n    granted_by: g\n    expires: 2030-01-01\n"
     "    actions: [shame]\n", 7, "exemptions[0].actions", "unknown action 'shame'"),
    ("exemption missing reason",
     "kind: exemptions\nexemptions:\n  - account_id: a\n    granted_by: g\n    expires: 2030-01-01\n",
     3, "exemptions[0].reason", "required"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "text", "line", "fld", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_file_is_refused_with_its_location(
    tmp_path: Path, what: str, text: str, line: int, fld: str, message: str
) -> None:
    path = _write(tmp_path, "bad.yaml", text)
    policies, exemptions, issues = load_file(path, NOW)
    errors = [i for i in issues if i.severity == "error"]
    assert any(i.line == line and i.field == fld and message in i.message for i in errors), (what, issues)
    assert policies == [] and exemptions == []
    with pytest.raises(InputError, match=re.escape(f"bad.yaml:{line}: error: {fld}: ")):
        service.load_policy_set([path], NOW)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.yaml", "", "the file is empty"),
        ("latin1.yaml", b"id: caf\xe9\n", "not UTF-8 text"),
    ],
)
def test_unreadable_files_are_issues_not_crashes(tmp_path: Path, name: str, content: str | bytes, message: str) -> None:
    path = _write(tmp_path, name, content)
    _, _, issues = load_file(path, NOW)
    assert [(i.severity, i.line, i.message) for i in issues] == [("error", None, message)]
    assert str(issues[0]) == f"{path}: error: : {message}"


def test_missing_file_and_empty_folder(tmp_path: Path) -> None:
    _, issues = check_paths([tmp_path / "nope.yaml"], NOW)
    assert len(issues) == 1 and issues[0].message.startswith("cannot read:")
    empty = tmp_path / "empty"
    empty.mkdir()
    _, issues = check_paths([empty], NOW)
    assert [(i.file, i.message) for i in issues] == [(str(empty), "no policy files found")]
    with pytest.raises(InputError, match="no policy files found"):
        service.load_policy_set([empty], NOW)


def test_valid_shapes_load_with_their_values(tmp_path: Path) -> None:
    text = (
        "id: p1\nversion: 2\nmode: shadow\nwhen:\n  in_cluster_with_actor: [Crimson Sandstorm]\n"
        "  confidence_below: 0.5\nunless:\n  orgs: [org-1]\nthen:\n  - terminate\n"
    )
    [pol], _, issues = load_file(_write(tmp_path, "ok.yml", text), NOW)
    assert issues == []
    assert pol.ref == "policy:p1@2" and pol.version == "2" and pol.mode == "shadow"
    assert pol.when == {"in_cluster_with_actor": ("Crimson Sandstorm",), "confidence_below": 0.5}
    assert pol.unless == {"orgs": ("org-1",)} and [a.kind for a in pol.then] == ["terminate"]


def test_policy_check_cli_json_and_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good"
    good.mkdir()
    _write(good, "a.yaml", _policy("  flagged: true\n"))
    _write(good, "x.yaml", "kind: exemptions\nexemptions:\n  - account_id: a\n    reason: r\n    granted_by: g\n"
                           "    expires: 2020-01-01\n")  # fmt: skip
    assert main(["policy", "check", "--policies", str(good), "--now", "2026-12-01T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "expired on 2020-01-01" in out and "0 error(s), 1 warning(s)" in out
    bad = _write(tmp_path, "bad.yaml", _policy("  risk_at_least: 1.5\n"))
    assert main(["policy", "check", "--policies", str(bad), "--json"]) == 4
    doc = orjson.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [(i["line"], i["field"]) for i in doc["issues"]] == [(4, "when.risk_at_least")]
    assert main(["policy", "check", "--policies", str(bad)]) == 4
    captured = capsys.readouterr()
    assert f"{bad}:4: error: when.risk_at_least: must be in [0, 1]" in captured.err
    assert "1 error(s), 0 warning(s)" in captured.out
    assert main(["policy", "check", "--policies", str(good), "--now", "yesterday"]) == 4
    assert "--now: not an ISO time: 'yesterday'" in capsys.readouterr().err


def test_policy_check_reads_the_env_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _write(tmp_path, "bad.yaml", _policy("  risk_at_least: 7\n"))
    monkeypatch.setenv("STORMWATCH_POLICIES", str(tmp_path))
    assert main(["policy", "check"]) == 4
    assert "bad.yaml:4" in capsys.readouterr().err


# -- evaluation over stored judgements ----------------------------------------------------------------
def _pset(tmp_path: Path, *texts: str) -> service.PolicySet:
    d = tmp_path / "pol"
    d.mkdir(exist_ok=True)
    for i, t in enumerate(texts):
        _write(d, f"p{i}.yaml", t.replace("id: p1", f"id: p{i}"))
    return service.load_policy_set([d], NOW)


def _planned(store: Store, pset: service.PolicySet) -> dict[tuple[str, str, str | None], str]:
    ev = service.test_policies(store, pset, now=NOW)
    return {(p.account_id, p.action, p.end_user_id): p.status for p in ev.planned}


def test_cluster_actor_conditions(store: Store, tmp_path: Path) -> None:
    for a in ("m1", "m2", "solo"):
        T.add_account(store, a)
    T.add_cluster(store, "c1", ["m1", "m2"], actor="Crimson Sandstorm", confidence=0.8, confidence_label="high")
    T.add_cluster(store, "c2", ["m2"])
    T.add_judgement(store, "m1", risk=0.5, cluster_id="c1")
    T.add_judgement(store, "m2", risk=0.5, cluster_id="c2")
    T.add_judgement(store, "solo", risk=0.5)
    named = _policy("  in_cluster_with_actor: [crimson sandstorm]\n")
    anyone = _policy("  in_cluster_with_actor: true\n", "  - action: require_verification\n")
    nobody = _policy("  in_cluster_with_actor: false\n", "  - action: rate_limit\n    rpm: 5\n")
    got = _planned(store, _pset(tmp_path, named, anyone, nobody))
    assert got == {
        ("m1", "warn", None): "superseded",  # milder than require_verification on the same account
        ("m1", "require_verification", None): "planned",
        ("m2", "rate_limit", None): "planned",
        ("solo", "rate_limit", None): "planned",
    }


def test_account_age_flagged_and_numeric_confidence(store: Store, tmp_path: Path) -> None:
    T.add_account(store, "new", created_at="2026-11-25T00:00:00Z")
    T.add_account(store, "old", created_at="2020-01-01T00:00:00")  # no zone: read as UTC
    T.add_account(store, "nodate", created_at="")
    T.add_judgement(store, "new", risk=0.9, actor="Emerald Sleet", confidence=0.8)  # no label: ranked by number
    T.add_judgement(store, "old", risk=0.9, actor="Emerald Sleet", confidence=0.3)
    T.add_judgement(store, "nodate", risk=0.9, flagged=False)
    young = _policy("  account_age_days_at_most: 30\n")
    sure = _policy("  confidence_at_least: high\n", "  - action: suspend\n")
    calm = _policy("  flagged: false\n", "  - action: open_case\n")
    ev = service.test_policies(store, _pset(tmp_path, young, sure, calm), now=NOW)
    got = {(p.account_id, p.action): p for p in ev.planned}
    assert set(got) == {("new", "warn"), ("new", "suspend"), ("nodate", "open_case")}
    assert "account created 2026-11-25, <= 30 days" in got["new", "warn"].reasons
    assert got["nodate", "open_case"].reasons == ("not flagged",)
    assert ev.counts == {"open_case/planned": 1, "suspend/planned": 1, "warn/superseded": 1}


def test_allowlists_name_why_the_account_is_spared(store: Store, tmp_path: Path) -> None:
    T.add_account(store, "a1")
    T.add_account(store, "a2", org_id="org-red")
    T.add_account(store, "a3", email_domain="Uni.Example")
    T.add_account(store, "a4")
    for a in ("a1", "a2", "a3", "a4"):
        T.add_judgement(store, a, risk=0.9)
    text = _policy(
        "  risk_at_least: 0.5\n",
        extra="unless:\n  accounts: [a1]\n  orgs: [org-red]\n  email_domains: [uni.example]\n",
    )
    ev = service.test_policies(store, _pset(tmp_path, text), now=NOW)
    why = {p.account_id: (p.status, p.evidence.get("exemption")) for p in ev.planned}
    assert why == {
        "a1": ("exempted", "allowlisted account in p0"),
        "a2": ("exempted", "allowlisted org org-red in p0"),
        "a3": ("exempted", "allowlisted email domain uni.example in p0"),
        "a4": ("planned", None),
    }


def test_block_end_user_only_targets_users_over_the_floor(store: Store, tmp_path: Path) -> None:
    T.add_account(store, "acct")
    T.add_judgement(store, "acct", risk=0.9)
    T.add_events(store, "acct", ["bad 1", "bad 2"], end_user_id="eu-many", flagged=True)
    T.add_events(store, "acct", ["bad 3"], end_user_id="eu-once", flagged=True)
    T.add_events(store, "acct", ["fine"], end_user_id="eu-clean", flagged=False)
    text = _policy("  end_users_at_least: 2\n", "  - action: block_end_user\n    min_flagged: 2\n")
    ev = service.test_policies(store, _pset(tmp_path, text), now=NOW)
    [p] = ev.planned
    assert (p.action, p.end_user_id, p.status) == ("block_end_user", "eu-many", "planned")
    assert p.evidence["flagged_events"] == 2
    assert p.reasons == ("3 distinct end users >= 2",)
    run = service.run_policies(store, _pset(tmp_path, text), mode="dry-run", now=NOW)
    assert run.decisions_new == 1 and run.actions_queued == 0  # dry-run acts on nothing


def test_numeric_confidence_thresholds_are_accepted_and_compared_as_numbers(store: Store, tmp_path: Path) -> None:
    # docs/disrupt.md: "number in [0, 1] or low/medium/high" (a number used to be refused as an unknown label)
    for a, conf in (("sure", 0.9), ("unsure", 0.4)):
        T.add_account(store, a)
        T.add_judgement(store, a, risk=0.9, actor="Emerald Sleet", confidence=conf, confidence_label="medium")
    T.add_account(store, "anon")
    T.add_judgement(store, "anon", risk=0.9)
    at_least = _policy("  confidence_at_least: 0.75\n", "  - action: suspend\n")
    below = _policy("  confidence_below: 0.5\n", "  - action: open_case\n")
    pset = _pset(tmp_path, at_least, below)
    assert [p.when for p in pset.policies] == [{"confidence_at_least": 0.75}, {"confidence_below": 0.5}]
    got = _planned(store, pset)
    assert got == {("sure", "suspend", None): "planned", ("unsure", "open_case", None): "planned",
                   ("anon", "open_case", None): "planned"}  # fmt: skip
