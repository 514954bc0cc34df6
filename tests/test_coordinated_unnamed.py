"""A coordinated cluster needs to fit *an* actor's profile, not to name one (issue 12, analyze.judge).

Two operations of one country (Charcoal Typhoon and Salmon Typhoon: Chinese, UTC+8, overlapping
TTPs) can fit equally well; behaviour alone then names neither (the margin rule of attribution), but
linked accounts asking malicious questions on that profile are still an operation. Before session
2026-12-05 (d) such a cluster stayed at ``review``; an organisation's accounts and clusters that fit
no profile still do."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from stormwatch.analyze.judge import analyze_graph
from stormwatch.result import AccountFacts, AccountGraph, AccountState

T0 = datetime(2024, 3, 1, tzinfo=UTC)
NOW = "2024-05-01T00:00:00.000000Z"
# malicious asks split evenly over LLMT-01, 02 and 10: Charcoal and Salmon Typhoon fit it alike
TTPS = {"LLMT-01": 12.0, "LLMT-02": 12.0, "LLMT-10": 12.0}


def ts(days: float) -> str:
    return (T0 + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


def hours(utc_offset: float) -> list[int]:
    """40 requests in local office hours (10:00-16:00) at ``utc_offset``, as half-hour UTC bins."""
    out = [0] * 48
    for k in range(40):
        local = 10.0 + (k % 12) * 0.5
        out[int(((local - utc_offset) % 24) * 2)] += 1
    return out


def member(
    a: str, *, device: str, lang: str, utc_offset: float, org: str | None = None, ttps: dict[str, float] = TTPS
) -> tuple[Any, Any]:
    feats = {
        "content": {"score": 0.97, "top_events": [{"event_id": f"e-{a}", "score": 0.99}]},
        "ttp_mass": ttps,
        "hours_utc": hours(utc_offset),
        "languages": {lang: 1.0},
        "volume": {"events": 40},
    }
    facts = AccountFacts(a, ts(-200), device_id=device, signup_ip=f"198.51.100.{len(a)}", org_id=org)
    return facts, AccountState(a, 40, 0.97, 3, 0, feats)


def judge(rows: list[tuple[Any, Any]]) -> Any:
    graph = AccountGraph(tuple(r[0] for r in rows), (), tuple(r[1] for r in rows))
    return analyze_graph(graph, "v", now=NOW)


def test_a_cluster_two_profiles_fit_alike_is_coordinated_without_a_name() -> None:
    res = judge([member(f"acct_zh{k}", device="dev-zh", lang="zh", utc_offset=8.0) for k in range(4)])
    levels = {j.account_id: j.level for j in res.judgements}
    assert set(levels.values()) == {"enforce"}, levels
    for j in res.judgements:
        assert j.explanation["corroboration"] == ["coordinated cluster"]
        assert j.actor is None  # behaviour alone names no actor here
    (cluster,) = res.clusters
    assert cluster.actor is None and cluster.evidence.behaviour is not None
    fitted = cluster.evidence.behaviour["profiles_fitted"]
    assert {f["actor"] for f in fitted[:2]} == {"Charcoal Typhoon", "Salmon Typhoon"}
    assert abs(fitted[0]["score"] - fitted[1]["score"]) < 0.1 and fitted[0]["score"] >= 0.5
    assert "no actor named" in cluster.evidence.behaviour["not_named"]


def test_what_stays_at_review() -> None:
    # the same accounts on no actor's profile (English, American office hours, TTPs no profile lists)
    other = {"LLMT-09": 12.0, "LLMT-13": 12.0}
    res = judge([member(f"acct_en{k}", device="dev-en", lang="en", utc_offset=-5.0, ttps=other) for k in range(4)])
    assert {j.level for j in res.judgements} == {"review"}
    # one organisation's accounts on the profile: a security firm's signature as much as an operation's
    res = judge([member(f"acct_org{k}", device="dev-org", lang="zh", utc_offset=8.0, org="org-1") for k in range(4)])
    assert {j.level for j in res.judgements} == {"review"}
    # two linked accounts are not a cluster of three
    res = judge([member(f"acct_two{k}", device="dev-two", lang="zh", utc_offset=8.0) for k in range(2)])
    assert {j.level for j in res.judgements} == {"review"}


def test_clusters_show_says_which_profiles_it_fits(tmp_path: Any, capsys: Any) -> None:
    from stormwatch.cli import main
    from stormwatch.store import open_store

    res = judge([member(f"acct_zh{k}", device="dev-zh", lang="zh", utc_offset=8.0) for k in range(4)])
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with open_store(url) as store:
        store.analysis.write(res)
        store.commit()
    (cluster,) = res.clusters
    assert main(["--db", url, "clusters", "show", cluster.cluster_id]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "behaviour fits" in ln)
    assert "Charcoal Typhoon" in line and "Salmon Typhoon" in line and "no actor named" in line
    assert out.splitlines()[0].endswith("unattributed")
