"""Cohorts (analyze.cohorts): bursts of new, short-lived accounts on one network asking malicious
questions are corroboration to enforce; old accounts, spread-out arrivals, accounts still active at
the end of the data, one organisation's accounts and bursts without enough malicious members are not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stormwatch.analyze import params as P
from stormwatch.analyze.cohorts import find_cohorts, judgement_labels, network_key, top_scores
from stormwatch.analyze.judge import analyze_graph, build_graph, link_graph
from stormwatch.analyze.risk import RiskInputs, judge
from stormwatch.result import AccountFacts, AccountGraph, AccountState, Observation

T0 = datetime(2024, 3, 1, tzinfo=UTC)
NOW = "2024-05-01T00:00:00.000000Z"


def ts(days: float) -> str:
    return (T0 + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def state(a: str, top: float, n: int = 2) -> AccountState:
    feats = {
        "content": {"score": top * 0.8, "top_events": [{"event_id": f"e-{a}", "score": top}]},
        "ttp_mass": {"LLMT-02": top},
        "hours_utc": [1] * 48,
        "languages": {"en": 1.0},
    }
    return AccountState(a, n, top * 0.8, 1, 0, feats)


def throwaway(a: str, day: float, ip: str, top: float, *, org: str | None = None, signed_up: float = 0.5,
              span: float = 0.5) -> tuple[AccountFacts, Observation, AccountState]:  # fmt: skip
    """An account signed up ``signed_up`` days before its first request on ``day``, used for ``span`` days."""
    facts = AccountFacts(a, ts(day - signed_up), signup_ip=ip, org_id=org)
    return facts, Observation(a, "ip", ip, ts(day), ts(day + span)), state(a, top)


def graph(rows: list[tuple[AccountFacts, Observation, AccountState]], end_day: float = 40.0) -> AccountGraph:
    """``rows`` plus an ordinary long-lived account active until ``end_day`` (the end of the data)."""
    regular = "acct_regular"
    base = (AccountFacts(regular, ts(-300), signup_ip="192.0.2.10"),
            Observation(regular, "ip", "192.0.2.10", ts(0), ts(end_day)), state(regular, 0.1, 40))  # fmt: skip
    rows = [*rows, base]
    return AccountGraph(tuple(r[0] for r in rows), tuple(r[1] for r in rows), tuple(r[2] for r in rows))


def burst(n: int = 4, gap: float = 3.0, tops: tuple[float, ...] = (0.95, 0.9, 0.6, 0.4), **kw: Any) -> list[Any]:
    """``n`` throwaway accounts on 203.0.0.0/16 (each its own address), ``gap`` days apart."""
    return [throwaway(f"acct_t{k}", 5 + gap * k, f"203.0.{k}.{10 + k}", tops[k % len(tops)], **kw) for k in range(n)]


def judged(g: AccountGraph) -> dict[str, Any]:
    return {j.account_id: j for j in analyze_graph(g, "v", now=NOW).judgements}


def cohorts_of(g: AccountGraph) -> Any:
    gr = build_graph(g)
    return find_cohorts(g, gr.index, top_scores(g.states, gr.index, len(gr.accounts))), gr


def test_a_burst_of_throwaway_accounts_is_a_cohort_and_corroborates_enforce() -> None:
    g = graph(burst())
    js = judged(g)
    for a in ("acct_t0", "acct_t1", "acct_t2"):  # top request >= COHORT_ENFORCE_SCORE
        j = js[a]
        assert j.level == "enforce", (a, j.explanation)
        assert "cohort of new accounts" in j.explanation["corroboration"]
        co = j.explanation["cohort"]
        assert co["size"] == 4 and co["networks"] == ["203.0.0.0/16"] and co["strong_members"] == 2
        assert [m["account_id"] for m in co["members"]] == ["acct_t0", "acct_t1", "acct_t2", "acct_t3"]
        assert not co["held_by_organisation"]
    # a member whose own top request is below the enforce line reaches review, with the cohort shown
    assert js["acct_t3"].level == "review" and "cohort" in js["acct_t3"].explanation
    assert js["acct_regular"].level == "none" and "cohort" not in js["acct_regular"].explanation


def test_without_the_cohort_the_same_accounts_are_not_enforced() -> None:
    """The accounts alone (no intel, no links, 1-2 requests) are at most review: the cohort is what enforces."""
    g = graph(burst(gap=20.0))  # arrivals 20 days apart: no chain
    js = judged(g)
    assert all("cohort" not in js[f"acct_t{k}"].explanation for k in range(4))
    assert all(js[f"acct_t{k}"].level != "enforce" for k in range(4))


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (burst(signed_up=30.0), "accounts signed up a month before their first request"),
        (burst(span=P.COHORT_SPAN_DAYS + 3), "accounts used for longer than the span"),
        (burst(tops=(0.95, 0.6, 0.6, 0.6)), "only one member with a request >= COHORT_STRONG_SCORE"),
        (burst(n=5, tops=(0.95, 0.9, 0.35, 0.35, 0.35)), "fewer than half the members at the enforce line"),
        (burst(n=2), "two accounts are not a cohort"),
        (burst(tops=(0.95, 0.9, 0.2, 0.2)), "low scorers are no members: two left"),
    ],
)
def test_what_is_not_a_cohort(rows: list[Any], why: str) -> None:
    co, _gr = cohorts_of(graph(rows))
    assert co.cohorts == [], why


def test_accounts_still_active_at_the_end_of_the_data_are_not_candidates() -> None:
    """Short-lived only because the data ends: the burst's last request is within COHORT_IDLE_DAYS of the end."""
    rows = burst(gap=0.1)
    end = 5 + 0.1 * 3 + 0.5 + P.COHORT_IDLE_DAYS / 2  # every member's last request is too recent
    co, _gr = cohorts_of(graph(rows, end_day=end))
    assert co.cohorts == []
    co, _gr = cohorts_of(graph(rows, end_day=end + P.COHORT_IDLE_DAYS))
    assert len(co.cohorts) == 1


def test_an_account_still_active_at_the_end_extends_an_established_cohort() -> None:
    """The burst goes on as the data ends: a new throwaway on the cohort's network, within the gap of its
    last member and still active, joins it (and is enforced on its own score); it never forms one."""
    rows = burst()  # first requests on days 5, 8, 11, 14, each used half a day; the data ends on day 30
    late = throwaway("acct_late", 27.0, "203.0.9.9", 0.9, span=2.0)  # last request a day before the end
    other = throwaway("acct_other", 27.0, "198.51.100.7", 0.9, span=2.0)  # the same, another network
    g = graph([*rows, late, other], end_day=30.0)
    co, gr = cohorts_of(g)
    assert len(co.cohorts) == 1
    c = co.cohorts[0]
    assert [gr.accounts[m] for m in c.members] == ["acct_t0", "acct_t1", "acct_t2", "acct_t3", "acct_late"]
    assert c.still_active == 1
    js = judged(g)
    assert js["acct_late"].level == "enforce", js["acct_late"].explanation
    assert js["acct_late"].explanation["cohort"]["still_active_members"] == 1
    assert js["acct_other"].level != "enforce" and "cohort" not in js["acct_other"].explanation
    # one that arrived inside the burst's window joins too, in its place in the order of first requests
    mid = throwaway("acct_mid", 12.0, "203.0.9.8", 0.9, span=7.0)  # days 12-19, the data ends on day 20
    co, gr = cohorts_of(graph([*burst(), mid], end_day=20.0))
    assert [[gr.accounts[m] for m in c.members] for c in co.cohorts] == [
        ["acct_t0", "acct_t1", "acct_t2", "acct_mid", "acct_t3"]
    ]
    # beyond the gap of the cohort's last member it does not join
    g = graph([*burst(), throwaway("acct_late", 14 + P.COHORT_GAP_DAYS + 1, "203.0.9.9", 0.9, span=1.0)],
              end_day=14 + P.COHORT_GAP_DAYS + 2.5)  # fmt: skip
    co, gr = cohorts_of(g)
    assert [[gr.accounts[m] for m in c.members] for c in co.cohorts] == [["acct_t0", "acct_t1", "acct_t2", "acct_t3"]]
    # still-active accounts alone form nothing, however many
    rows = [throwaway(f"acct_n{k}", 27.0 + 0.3 * k, f"203.0.{k}.9", 0.95, span=2.0) for k in range(4)]
    co, _gr = cohorts_of(graph(rows, end_day=30.0))
    assert co.cohorts == []


def test_accounts_show_says_how_many_members_are_still_active(capsys: Any) -> None:
    from stormwatch.analyze.cli import _show_account

    rows = burst()
    g = graph([*rows, throwaway("acct_late", 27.0, "203.0.9.9", 0.9, span=2.0)], end_day=30.0)
    j = judged(g)["acct_late"].to_dict()
    _show_account({**j, "account": None, "timeline": [], "top_requests": [], "evidence": []})
    out = capsys.readouterr().out
    assert "cohort: 5 new, short-lived accounts on 203.0.0.0/16" in out and "1 still active as the data ends" in out
    j = judged(graph(rows))["acct_t0"].to_dict()
    _show_account({**j, "account": None, "timeline": [], "top_requests": [], "evidence": []})
    out = capsys.readouterr().out
    assert "cohort: 4 new" in out and "still active" not in out


def test_one_organisations_accounts_are_held_at_review() -> None:
    rows = burst(org="org_firm")
    js = judged(graph(rows))
    for k in range(4):
        j = js[f"acct_t{k}"]
        assert j.level == "review", j.explanation
        assert j.explanation["cohort"]["held_by_organisation"] is True
        assert "cohort of new accounts" not in j.explanation["corroboration"]


def test_other_networks_do_not_chain_and_a_vpn_users_many_exits_do_not_join() -> None:
    rows = burst()
    rows[1] = throwaway("acct_t1", 8.0, "198.51.100.7", 0.9)  # another provider's range
    co, _gr = cohorts_of(graph(rows))
    assert co.cohorts == []  # t0, t2, t3 remain: only one of them strong
    # a VPN user with many exits, one in the burst's range: its network is its sign-up address's
    rows = burst()
    facts = AccountFacts("acct_vpn", ts(9.5), signup_ip="198.51.100.99")
    extra = [(facts, Observation("acct_vpn", "ip", ip, ts(10), ts(10.5)), state("acct_vpn", 0.95))
             for ip in ("198.51.100.99", "203.0.77.1")]  # fmt: skip
    g = graph(rows)
    g = AccountGraph((*g.accounts, facts), (*g.observations, *(e[1] for e in extra)), (*g.states, extra[0][2]))
    co, gr = cohorts_of(g)
    assert len(co.cohorts) == 1 and co.member(gr.index["acct_vpn"]) is None


def test_network_keys() -> None:
    assert network_key("203.0.113.7") == "203.0.0.0/16"
    assert network_key("2001:db8:1:2::5") == "2001:db8::/32"
    assert network_key("not an address") is None
    assert network_key("") is None


def test_cohorts_join_link_components_into_one_judgement_unit() -> None:
    g = graph(burst())
    gr, link = link_graph(g)
    co = find_cohorts(g, gr.index, top_scores(g.states, gr.index, len(gr.accounts)))
    units = judgement_labels(link.labels, co)
    members = [gr.index[f"acct_t{k}"] for k in range(4)]
    assert len({int(link.labels[m]) for m in members}) == 4  # not linked: four components
    assert len({int(units[m]) for m in members}) == 1
    assert units[gr.index["acct_regular"]] != units[members[0]]


def test_a_new_throwaway_account_rejudges_the_cohort_incrementally() -> None:
    """Two strong throwaway accounts are no cohort; a third arriving makes one: the incremental run
    judges the first two again (their own inputs did not change) and agrees with a full run."""
    from tests.test_analyze_incremental import _incremental_vs_full

    rows = burst(n=3, tops=(0.95, 0.9, 0.7))
    g1 = graph(rows[:2])
    g2 = graph(rows)
    assert cohorts_of(g1)[0].cohorts == [] and len(cohorts_of(g2)[0].cohorts) == 1
    kept = _incremental_vs_full(g1, g2, queued_too=False)
    assert {"acct_t0", "acct_t1", "acct_t2"} <= kept


def test_the_risk_rule() -> None:
    base = dict(content=0.5, rephrases=0, escalations=0, breadth=1, direct_intel=0.0, link_intel=0.0,
                confidence=0.0, behaviour_only=False)  # fmt: skip
    assert judge(RiskInputs(**base, cohort=True, top_score=0.9)).level == "enforce"  # type: ignore[arg-type]
    assert judge(RiskInputs(**base, cohort=True, top_score=0.4)).level == "review"  # type: ignore[arg-type]
    held = judge(RiskInputs(**base, cohort=True, cohort_held=True, top_score=0.9))  # type: ignore[arg-type]
    assert held.level == "review" and held.explanation["corroboration"] == []
    alone = judge(RiskInputs(**{**base, "content": 0.3}, top_score=0.9))  # type: ignore[arg-type]
    assert alone.level == "none"


@pytest.mark.slow
def test_on_a_simulated_platform_one_account_per_task_operations_are_found(tmp_path: Any, capsys: Any) -> None:
    """The simulator's `account-per-task` preset (operations that open a short-lived account per task):
    cohorts enforce some of those accounts (nothing else would: no intel, no links) and hold no benign one."""
    import orjson

    from stormwatch.analyze.account_train import build_platform
    from stormwatch.analyze.stages import model_version
    from stormwatch.store import open_store

    build_platform(tmp_path, "p", 41, 1200, 30, "account-per-task")
    store = open_store(f"sqlite:///{tmp_path / 'p' / 'platform.db'}")
    try:
        inp, version = store.analysis.load_graph(), model_version(store, active=False)
    finally:
        store.close()
    truth = orjson.loads((tmp_path / "p" / "truth.json").read_bytes())["accounts"]
    js = analyze_graph(inp, version, now=NOW, account_model="off").judgements
    in_cohort = [j for j in js if "cohort" in j.explanation]
    assert in_cohort and all(truth[j.account_id]["is_actor"] for j in in_cohort)
    only = ["cohort of new accounts"]
    by_cohort = [j for j in in_cohort if j.level == "enforce" and j.explanation["corroboration"] == only]
    assert len(by_cohort) >= 5, len(by_cohort)
    assert all(truth[j.account_id]["style"] == "account_per_task" for j in by_cohort)
    # the analyst sees the cohort in `accounts show`
    from stormwatch.cli import main

    db = ["--db", f"sqlite:///{tmp_path / 'p' / 'platform.db'}"]
    assert main([*db, "analyze", "--no-score", "--quiet", "--account-model", "off"]) == 0
    capsys.readouterr()
    assert main([*db, "accounts", "show", by_cohort[0].account_id]) == 0
    out = capsys.readouterr().out
    assert "cohort: " in out and "new, short-lived accounts on" in out and "why: one of a burst" in out
