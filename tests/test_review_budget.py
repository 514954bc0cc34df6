"""Issue 12, item 3: precision-first levels, the review budget and its ranked queue, exemptions.

* ``enforce`` needs corroboration (an intel hit, intel over strong links, a coordinated cluster);
  without any of it an account reaches ``review`` at most, whatever its score;
* the review budget (a fraction of active accounts or a count) ranks the accounts at ``review`` by
  risk: ``review_rank`` 1 = first, ``within_budget``; accounts beyond it stay at ``review``;
* exemptions (the ``kind: exemptions`` files disrupt reads) are never enforced, are shown in
  ``accounts show`` and the export, and are counted;
* ``accounts export`` carries level, review_rank, within_budget, exempt and exemption.

End to end on a small simulated platform (first-tier scoring, about 2 s), then the pure
``analyze_graph`` on its account graph with other budgets and exemptions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from stormwatch.analyze import params as P
from stormwatch.analyze.exemptions import Exemption, load_exemptions, match_exemption
from stormwatch.analyze.judge import analyze_graph
from stormwatch.analyze.review import DEFAULT_BUDGET, ReviewBudget, rank_review_queue
from stormwatch.analyze.risk import NO_CORROBORATION, RiskInputs, judge
from stormwatch.analyze.settings import load_settings
from stormwatch.cli import main
from stormwatch.errors import ConfigError, InputError
from stormwatch.result import AccountFacts, AccountGraph, AnalysisResult, Judgement
from stormwatch.store import Store, open_store

REPO = Path(__file__).resolve().parents[1]
NOW = "2024-02-01T00:00:00.000000Z"


# -- the budget ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fraction", "count"),
    [("0.005", 0.005, None), (0.005, 0.005, None), ("0.5%", 0.005, None), ("200", None, 200), (200, None, 200),
     ("1.0", 1.0, None), ("0", None, 0)],
)  # fmt: skip
def test_budget_is_a_fraction_or_a_count(text: Any, fraction: float | None, count: int | None) -> None:
    b = ReviewBudget.parse(text)
    assert (b.fraction, b.count) == (fraction, count)


@pytest.mark.parametrize("text", ["abc", "1.5", "-3", "0.0", "", True, "150%"])
def test_budget_rejects_nonsense(text: Any) -> None:
    with pytest.raises(InputError, match="review budget"):
        ReviewBudget.parse(text)


def test_budget_size() -> None:
    assert DEFAULT_BUDGET == ReviewBudget(fraction=P.REVIEW_BUDGET) == ReviewBudget(fraction=0.005)
    assert DEFAULT_BUDGET.size(3030) == 16  # 15.15 rounded up: a started review slot is a slot
    assert DEFAULT_BUDGET.size(1000) == 5 and DEFAULT_BUDGET.size(199) == 1 and DEFAULT_BUDGET.size(0) == 0
    assert ReviewBudget(count=200).size(10) == 200
    assert ReviewBudget(fraction=0.01).size(1_000_000) == 10_000
    assert DEFAULT_BUDGET.describe() == "0.5% of active accounts" and ReviewBudget(count=2).describe() == "2 accounts"


def test_queue_is_ranked_by_score_then_id() -> None:
    places = rank_review_queue([("b", 0.7), ("a", 0.7), ("c", 0.9), ("d", 0.1)], 2)
    assert [(a, p.rank, p.within_budget) for a, p in sorted(places.items(), key=lambda kv: kv[1].rank)] == [
        ("c", 1, True), ("a", 2, True), ("b", 3, False), ("d", 4, False),
    ]  # fmt: skip
    assert rank_review_queue([], 5) == {}


# -- precision first: no corroboration, no enforce -------------------------------------------------


def _inputs(**kw: Any) -> RiskInputs:
    base: dict[str, Any] = dict(
        content=0.95, rephrases=8, escalations=3, breadth=3, direct_intel=0.0, link_intel=0.0,
        confidence=0.9, behaviour_only=False, coordinated=False, corroborated=True,
    )  # fmt: skip
    return RiskInputs(**{**base, **kw})


def test_no_corroboration_caps_at_review_whatever_the_score() -> None:
    """A confident attribution with no intel, no link to intel and no coordinated cluster is not enforced."""
    res = judge(_inputs())
    assert res.level == "review" and res.risk >= 0.9
    assert res.explanation["corroboration"] == [] and res.explanation["reasons"] == [NO_CORROBORATION]
    assert judge(_inputs(direct_intel=0.6)).level == "enforce"
    assert judge(_inputs(link_intel=0.4)).explanation["corroboration"] == ["intel over strong links"]
    assert judge(_inputs(link_intel=0.4)).level == "enforce"
    coordinated = judge(_inputs(confidence=0.0, coordinated=True))
    assert coordinated.level == "enforce" and coordinated.explanation["corroboration"] == ["coordinated cluster"]
    # behaviour alone (no intel) never enforces, nor does content with retries
    assert judge(_inputs(confidence=0.45, behaviour_only=True)).level == "review"
    assert judge(_inputs(confidence=0.0)).level == "review"


def test_a_quiet_member_of_a_coordinated_cluster_reaches_review() -> None:
    """An operation's linked cluster is enforced member by member where each member's own content
    reaches 0.5; a member that asked nothing malicious is not enforced, but it is not left at none
    either: it reaches review (ranked by the account model), with the reason."""
    quiet = dict(content=0.2, rephrases=0, escalations=0, breadth=0, confidence=0.0)
    alone = judge(_inputs(**quiet))
    assert alone.level == "none"
    member = judge(_inputs(**quiet, coordinated=True))
    assert member.level == "review" and member.explanation["corroboration"] == ["coordinated cluster"]
    assert "a quiet member of a coordinated cluster" in member.explanation["reasons"][0]
    assert judge(_inputs(**{**quiet, "content": 0.6}, coordinated=True)).level == "enforce"


def test_more_evidence_never_lowers_the_level() -> None:
    """An attribution through shared network infrastructure that the account's own activity does not
    corroborate holds it at review, but only when neither a coordinated cluster nor a cohort enforces
    it: the same account without the intel would be enforced, so with it it must be too."""
    base = dict(content=0.6, direct_intel=0.02, corroborated=False)
    assert judge(_inputs(**base)).level == "review"  # the attribution alone: review, with its reason
    assert "network infrastructure" in judge(_inputs(**base)).explanation["reasons"][0]
    for extra in ({"coordinated": True}, {"cohort": True, "top_score": 0.81}):
        without_intel = judge(_inputs(**{**base, "confidence": 0.0, "direct_intel": 0.0, **extra}))
        with_intel = judge(_inputs(**{**base, **extra}))
        assert without_intel.level == with_intel.level == "enforce", extra
    # a cohort an organisation holds is not corroboration: the uncorroborated attribution keeps review
    assert judge(_inputs(**base, cohort=True, cohort_held=True, top_score=0.9)).level == "review"
    # every combination of the evidence flags: adding one never lowers the level
    rank = {"none": 0, "review": 1, "enforce": 2}
    flags = ("coordinated", "cohort", "corroborated")
    for mask in range(8):
        kw = {f: bool(mask >> k & 1) for k, f in enumerate(flags)}
        level = rank[judge(_inputs(**{**base, **kw}, top_score=0.81)).level]
        for f in flags:
            if not kw[f]:
                more = rank[judge(_inputs(**{**base, **kw, f: True}, top_score=0.81)).level]
                assert more >= level, (kw, f)


# -- the records -----------------------------------------------------------------------------------

EX = {"match": "org_id", "value": "org_acme", "reason": "pentest firm", "granted_by": "t&s", "expires": "2027-01-01"}


def test_judgement_carries_rank_budget_and_exemption() -> None:
    j = Judgement("a", 0.7, "review", review_rank=3, within_budget=False)
    assert Judgement.from_dict(orjson.loads(orjson.dumps(j.to_dict()))) == j
    d = j.to_dict()
    assert (d["review_rank"], d["within_budget"], d["exempt"], d["exemption"]) == (3, False, False, None)
    e = Judgement("b", 0.9, "review", exemption=EX)
    assert e.exempt and e.to_dict()["exemption"]["reason"] == "pentest firm"
    assert Judgement.from_dict(e.to_dict()) == e
    old = {"account_id": "c", "risk": 0.2, "level": "none"}  # a result written before the queue existed
    assert Judgement.from_dict(old).review_rank is None and not Judgement.from_dict(old).exempt


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"level": "enforce", "exemption": EX}, "never enforced"),
        ({"level": "enforce", "review_rank": 1, "within_budget": True}, "only given at level review"),
        ({"level": "review", "review_rank": 0, "within_budget": True}, "review_rank must be"),
        ({"level": "review", "review_rank": 2}, "within_budget"),
        ({"level": "review", "within_budget": True}, "without a review_rank"),
        ({"level": "review", "exemption": {"match": "org_id"}}, "with a reason"),
    ],
)
def test_judgement_rejects_contradictions(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        Judgement("a", 0.5, **kwargs)


def test_store_keeps_rank_budget_and_exemption(store: Store) -> None:
    """Migration 0009 and the repository, on both backends."""
    ranked = Judgement("a1", 0.8, "review", review_rank=1, within_budget=True, analyzed_at=NOW)
    exempt = Judgement("a2", 0.95, "review", exemption=EX, analyzed_at=NOW)
    plain = Judgement("a3", 0.1, "none", analyzed_at=NOW)
    store.analysis.write(AnalysisResult((ranked, exempt, plain), analyzed_at=NOW))
    store.commit()
    got = {j.account_id: j for j in store.analysis.judgements()}
    assert got == {"a1": ranked, "a2": exempt, "a3": plain}


# -- exemption files -------------------------------------------------------------------------------


def _exemptions_file(path: Path, entries: list[dict[str, str]]) -> Path:
    lines = ["kind: exemptions", "description: test", "exemptions:"]
    for e in entries:
        first = True
        for k, v in e.items():
            lines.append(f"  {'- ' if first else '  '}{k}: {v}")
            first = False
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_the_disrupt_exemptions_file_is_read_the_same(tmp_path: Path) -> None:
    """One list serves both: the repository's example file gives the entries disrupt's parser gives."""
    from stormwatch.disrupt.policy import load_file

    ours = load_exemptions([REPO / "policies" / "exemptions.yaml"])
    _, theirs, issues = load_file(REPO / "policies" / "exemptions.yaml", datetime(2026, 1, 1, tzinfo=UTC))
    assert not issues
    assert [(e.match, e.value, e.reason, e.granted_by, e.expires) for e in ours] == [
        (next(k for k in ("account_id", "org_id", "email_domain") if getattr(t, k)),
         t.account_id or t.org_id or t.email_domain, t.reason, t.granted_by, t.expires)
        for t in theirs
    ]  # fmt: skip
    assert ours[0].source.endswith("exemptions.yaml:7")
    # a folder: the exemptions files in it, the policy files beside them skipped
    assert load_exemptions([REPO / "policies"]) == ours


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"reason": "r", "granted_by": "g", "expires": "2027-01-01"}, "exactly one of account_id"),
        ({"account_id": "a", "org_id": "o", "reason": "r", "granted_by": "g", "expires": "2027-01-01"}, "exactly one"),
        ({"account_id": "a", "granted_by": "g", "expires": "2027-01-01"}, "reason: required"),
        ({"account_id": "a", "reason": "r", "granted_by": "g", "expires": "soon"}, "expected a date"),
        ({"account_id": "a", "reason": "r", "granted_by": "g", "expires": "2027-01-01", "why": "x"}, "unknown field"),
    ],
)
def test_a_bad_exemption_names_file_line_and_field(tmp_path: Path, entry: dict[str, str], message: str) -> None:
    f = _exemptions_file(tmp_path / "ex.yaml", [{"account_id": "ok", "reason": "r", "granted_by": "g",
                                                 "expires": "2027-01-01"}, entry])  # fmt: skip
    with pytest.raises(InputError, match=message) as info:
        load_exemptions([f])
    assert f"{f}:8: exemptions[1]" in str(info.value)


def test_a_named_policy_file_is_not_an_exemptions_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an exemptions file"):
        load_exemptions([REPO / "policies" / "suspend-medium-confidence-attribution.yaml"])
    with pytest.raises(InputError, match="no such exemptions file"):
        load_exemptions([tmp_path / "missing.yaml"])


def test_matching_by_account_org_and_domain() -> None:
    d = date(2026, 1, 1)
    ex = (
        Exemption("org_id", "org_acme", "Acme Security red team", "t&s", date(2027, 1, 1)),
        Exemption("email_domain", "Lab.Example.edu", "university lab", "t&s", date(2027, 1, 1)),
        Exemption("account_id", "acct_old", "expired contract", "t&s", date(2025, 1, 1)),
    )
    assert match_exemption(ex, "x", AccountFacts("x", org_id="org_acme"), d) is ex[0]
    assert match_exemption(ex, "y", AccountFacts("y", email_domain="lab.example.EDU"), d) is ex[1]
    assert match_exemption(ex, "acct_old", AccountFacts("acct_old"), d) is None  # expired
    assert match_exemption(ex, "acct_old", None, date(2024, 6, 1)) is ex[2]  # ... but active before
    assert match_exemption(ex, "z", None, d) is None


def test_settings_file_and_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings().review_budget == DEFAULT_BUDGET and load_settings().exemptions == ()
    toml = tmp_path / "conf" / "stormwatch.toml"
    toml.parent.mkdir()
    toml.write_text('[analyze]\nreview_budget = 200\nexemptions = ["ex.yaml"]\n', encoding="utf-8")
    s = load_settings(toml)
    assert s.review_budget == ReviewBudget(count=200) and s.exemptions == (tmp_path / "conf" / "ex.yaml",)
    s = load_settings(toml, review_budget="0.01", exemptions=["other.yaml"])  # options win
    assert s.review_budget == ReviewBudget(fraction=0.01) and s.exemptions == (Path("other.yaml"),)
    toml.write_text("[analyze]\nreview_budget = 'lots'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="review_budget"):
        load_settings(toml)
    toml.write_text("[analyze]\nbudget = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings(toml)


# -- end to end on a simulated platform ------------------------------------------------------------


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """simulate (200 accounts, 7 days) -> ingest -> intel import -> analyze with first-tier scoring."""
    from stormwatch.simulate import simulate

    base = tmp_path_factory.mktemp("review-budget")
    out = base / "sim"
    simulate(out, seed=7, accounts=200, days=7, progress=False)
    db = f"sqlite:///{base / 'rb.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STORMWATCH_DETECTORS", "first_tier")
        mp.chdir(base)  # no stormwatch.toml of the checkout
        assert main(["--db", db, "ingest", str(out / "events.jsonl"), "--accounts", str(out / "accounts.jsonl"),
                     "-q"]) == 0  # fmt: skip
        assert main(["--db", db, "intel", "import", str(out / "intel.stix.json")]) == 0
        assert main(["--db", db, "analyze", "--quiet"]) == 0
    store = open_store(db)
    try:
        graph = store.analysis.load_graph()
        stored = store.analysis.result()
    finally:
        store.close()
    facts = {a.account_id: a for a in graph.accounts}
    yield {"dir": base, "db": db, "graph": graph, "stored": stored, "facts": facts}


def _by_id(result: AnalysisResult) -> dict[str, Judgement]:
    return {j.account_id: j for j in result.judgements}


def _active(graph: AccountGraph) -> int:
    return sum(s.n_events > 0 for s in graph.states)


def _check_queue(result: AnalysisResult, budget: int) -> list[Judgement]:
    queue = sorted((j for j in result.judgements if j.review_rank is not None), key=lambda j: j.review_rank or 0)
    review = [j for j in result.judgements if j.level == "review" and not j.exempt]
    assert len(queue) == len(review) and len(queue) >= 5, "every review account is ranked, none dropped"
    assert [j.review_rank for j in queue] == list(range(1, len(queue) + 1))

    # ordered by the account model's calibrated probability (risk without a model; issue 12 item 1)
    def score(j: Judgement) -> float:
        return float(j.explanation.get("account_model", {}).get("probability", j.risk))

    assert [(-score(j), j.account_id) for j in queue] == sorted((-score(j), j.account_id) for j in queue)
    assert [j.within_budget for j in queue] == [r <= budget for r in range(1, len(queue) + 1)]
    assert all(j.level == "review" for j in queue)
    assert all(j.review_rank is None and j.within_budget is None for j in result.judgements if j.level != "review")
    assert result.stats["review_budget"] == budget
    assert result.stats["review_within_budget"] == min(budget, len(queue))
    return queue


def test_default_budget_is_half_a_percent_of_active_accounts(platform: dict[str, Any]) -> None:
    stored: AnalysisResult = platform["stored"]  # `analyze` without settings
    active = _active(platform["graph"])
    res = analyze_graph(platform["graph"], "m", now=NOW)
    assert res.stats["active_accounts"] == active > 100
    queue = _check_queue(res, math.ceil(0.005 * active))
    assert queue[0].explanation["review_queue"]["budget_rule"] == "0.5% of active accounts"
    assert {j.account_id: (j.level, j.review_rank, j.within_budget) for j in stored.judgements} == {
        j.account_id: (j.level, j.review_rank, j.within_budget) for j in res.judgements
    }


def test_budget_as_count_and_as_fraction(platform: dict[str, Any]) -> None:
    graph: AccountGraph = platform["graph"]
    by_count = analyze_graph(graph, "m", now=NOW, review_budget=ReviewBudget.parse("3"))
    queue = _check_queue(by_count, 3)
    assert [j.within_budget for j in queue[:4]] == [True, True, True, False]
    by_fraction = analyze_graph(graph, "m", now=NOW, review_budget=ReviewBudget.parse("0.05"))
    _check_queue(by_fraction, math.ceil(0.05 * _active(graph)))
    # the budget changes who is within it, never a level, a risk or the order
    a, b = _by_id(by_count), _by_id(by_fraction)
    assert all((a[k].level, a[k].risk, a[k].review_rank) == (b[k].level, b[k].risk, b[k].review_rank) for k in a)


def test_every_enforced_account_is_corroborated(platform: dict[str, Any]) -> None:
    stored: AnalysisResult = platform["stored"]
    enforced = [j for j in stored.judgements if j.level == "enforce"]
    assert enforced
    assert all(j.explanation["corroboration"] for j in enforced)
    for j in stored.judgements:
        if not j.explanation["corroboration"]:
            assert j.level in ("none", "review")


def _exempt_two(platform: dict[str, Any], path: Path) -> tuple[Path, str, str]:
    """An exemptions file holding two enforced accounts: one by account id, one by its e-mail domain."""
    stored: AnalysisResult = platform["stored"]
    facts: dict[str, AccountFacts] = platform["facts"]
    enforced = sorted((j for j in stored.judgements if j.level == "enforce"), key=lambda j: (-j.risk, j.account_id))
    by_id = enforced[0].account_id
    by_domain = next(
        j.account_id
        for j in enforced[1:]
        if (dom := facts[j.account_id].email_domain) and dom not in P.WEBMAIL
        and sum(f.email_domain == dom for f in facts.values()) == 1
    )  # fmt: skip
    _exemptions_file(path, [
        {"account_id": by_id, "reason": "Acme Security red team, contract 42", "granted_by": "t&s@example.com",
         "expires": "2099-12-31"},
        {"email_domain": str(facts[by_domain].email_domain).upper(), "reason": "university malware lab",
         "granted_by": "t&s@example.com", "expires": "2099-12-31"},
        {"account_id": by_domain, "reason": "expired", "granted_by": "t&s@example.com", "expires": "2020-01-01"},
    ])  # fmt: skip
    return path, by_id, by_domain


def test_exempt_accounts_are_never_enforced_and_counted(platform: dict[str, Any], tmp_path: Path) -> None:
    path, by_id, by_domain = _exempt_two(platform, tmp_path / "ex.yaml")
    base = _by_id(analyze_graph(platform["graph"], "m", now=NOW))
    res = analyze_graph(platform["graph"], "m", now=NOW, exemptions=load_exemptions([path]))
    j = _by_id(res)
    for acct, reason in ((by_id, "Acme Security red team, contract 42"), (by_domain, "university malware lab")):
        assert base[acct].level == "enforce"
        assert j[acct].level == "review" and not j[acct].flagged and j[acct].exempt
        assert (j[acct].exemption or {}).get("reason") == reason
        assert j[acct].review_rank is None and j[acct].within_budget is None  # not in the queue
        assert "held back from enforce" in j[acct].explanation["reasons"][0]
        assert (j[acct].exemption or {}).get("held_back") is True
    assert (j[by_domain].exemption or {}).get("match") == "email_domain"
    assert res.stats["exempt"] == 2 and res.stats["exempt_held_back"] == 2
    assert res.counts()["enforce"] == sum(x.level == "enforce" for x in base.values()) - 2
    assert not any(x.exempt and x.level == "enforce" for x in res.judgements)
    # nothing else moved
    assert all(j[a].level == base[a].level for a in base if a not in (by_id, by_domain))
    # expired at the analysis time: no longer held
    later = _by_id(
        analyze_graph(platform["graph"], "m", now="2100-01-02T00:00:00Z", exemptions=load_exemptions([path]))
    )
    assert later[by_id].level == "enforce" and not later[by_id].exempt


def test_cli_budget_exemptions_show_and_export(
    platform: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    path, by_id, _ = _exempt_two(platform, tmp_path / "ex.yaml")
    db = f"sqlite:///{tmp_path / 'copy.db'}"
    (tmp_path / "copy.db").write_bytes((platform["dir"] / "rb.db").read_bytes())
    capsys.readouterr()
    assert main(["--db", db, "analyze", "--no-score", "--json", "--review-budget", "4", "--exemptions", str(path)]) == 0
    summary = orjson.loads(capsys.readouterr().out)
    assert summary["review_budget"] == 4 and summary["review_within_budget"] == 4
    assert summary["exempt"] == 2 and summary["exempt_held_back"] == 2
    assert summary["review_budget_rule"] == "4 accounts"

    out = tmp_path / "accounts.jsonl"
    assert main(["--db", db, "accounts", "export", "-o", str(out)]) == 0
    rows = {r["account_id"]: r for r in map(orjson.loads, out.read_bytes().splitlines())}
    assert {"level", "review_rank", "within_budget", "exempt", "exemption"} <= set(next(iter(rows.values())))
    ranked = sorted((r for r in rows.values() if r["review_rank"]), key=lambda r: r["review_rank"])
    assert [r["within_budget"] for r in ranked[:5]] == [True] * 4 + [False]
    assert rows[by_id]["exempt"] is True and rows[by_id]["level"] == "review" and rows[by_id]["review_rank"] is None
    assert rows[by_id]["exemption"]["reason"] == "Acme Security red team, contract 42"
    assert not any(r["exempt"] and r["flagged"] for r in rows.values())

    capsys.readouterr()
    assert main(["--db", db, "accounts", "show", by_id]) == 0
    shown = capsys.readouterr().out
    assert f"EXEMPT (held back from enforce): account_id {by_id}: Acme Security red team, contract 42" in shown
    assert "granted by t&s@example.com until 2099-12-31" in shown
    assert main(["--db", db, "accounts", "show", ranked[0]["account_id"]]) == 0
    assert f"review queue: rank 1 of {len(ranked)}, within the review budget (budget 4)" in capsys.readouterr().out
    assert main(["--db", db, "accounts", "show", ranked[4]["account_id"]]) == 0
    assert "rank 5 of" in (text := capsys.readouterr().out) and "outside the review budget" in text

    # stormwatch.toml [analyze] sets the budget; the option wins over it; a bad option is a usage error
    (tmp_path / "stormwatch.toml").write_text("[analyze]\nreview_budget = '2'\n", encoding="utf-8")
    assert main(["--db", db, "analyze", "--no-score", "--json"]) == 0
    assert orjson.loads(capsys.readouterr().out)["review_within_budget"] == 2
    assert main(["--db", db, "analyze", "--no-score", "--json", "--review-budget", "0.5%"]) == 0
    assert orjson.loads(capsys.readouterr().out)["review_budget_rule"] == "0.5% of active accounts"
    assert main(["--db", db, "analyze", "--no-score", "--review-budget", "lots"]) == 2
    # a budget smaller than the queue's likely actors is said, with the count the JSON carries
    capsys.readouterr()
    assert main(["--db", db, "analyze", "--no-score", "--full", "--json", "--review-budget", "1"]) == 0
    beyond = orjson.loads(capsys.readouterr().out)["review_likely_beyond_budget"]
    assert main(["--db", db, "analyze", "--no-score", "--full", "--review-budget", "1"]) == 0
    text = capsys.readouterr().out
    assert beyond >= 1  # this platform's queue holds more than one likely actor
    assert f"warning: {beyond:,} more account(s) beyond the review budget" in text
    assert main(["--db", db, "analyze", "--no-score", "--json", "--review-budget", "100%"]) == 0
    assert orjson.loads(capsys.readouterr().out)["review_likely_beyond_budget"] == 0
    # analyze eval reports the review-budget recall
    assert main(["--db", db, "analyze", "eval", "--truth", str(platform["dir"] / "sim" / "truth.json"), "--json"]) == 0
    ev = orjson.loads(capsys.readouterr().out)
    assert ev["review_within_budget"] >= 1 and 0.0 <= ev["recall_enforce_or_within_budget"] <= 1.0
    assert ev["recall_enforce_or_within_budget"] >= ev["recall"]


def test_run_graph_takes_the_same_settings(platform: dict[str, Any], tmp_path: Path) -> None:
    path, by_id, _ = _exempt_two(platform, tmp_path / "ex.yaml")
    graph = tmp_path / "graph.json"
    graph.write_bytes(orjson.dumps(platform["graph"].to_dict()))
    out = tmp_path / "result.json"
    args = ["analyze", "run-graph", str(graph), "-o", str(out), "--review-budget", "3", "--exemptions", str(path)]
    assert main(args) == 0
    res = AnalysisResult.from_dict(orjson.loads(out.read_bytes()))
    _check_queue(res, 3)
    assert _by_id(res)[by_id].exempt and _by_id(res)[by_id].level == "review"
