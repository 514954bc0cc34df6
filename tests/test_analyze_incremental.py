"""Incremental analysis gives the same result as a full run; two analyze runs at once do not collide.

A small simulated platform is ingested in several batches split by time. After each batch the
incremental ``analyze`` result is compared with ``analyze --full`` on a copy of the same database:
levels, risks, clusters (as partitions, with their actors), actors, confidences, evidence and
review ranks must be the same.
"""

from __future__ import annotations

import itertools
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from stormwatch.analyze.pipeline import AnalyzeSummary, analyze
from stormwatch.cli import main
from stormwatch.store import open_store


def _split(events: Path, out: Path, cuts: list[float]) -> list[Path]:
    """``events.jsonl`` (sorted by time) cut into batches at the given shares of its lines."""
    lines = events.read_bytes().splitlines(keepends=True)
    bounds = [0, *(int(len(lines) * c) for c in cuts), len(lines)]
    paths = []
    for k, (a, b) in enumerate(itertools.pairwise(bounds)):
        p = out / f"batch{k}.jsonl"
        p.write_bytes(b"".join(lines[a:b]))
        paths.append(p)
    return paths


def _snapshot(url: str) -> dict[str, Any]:
    store = open_store(url)
    try:
        res = store.analysis.result()
        judgements = {}
        for j in res.judgements:
            d = j.to_dict()
            d.pop("analyzed_at")
            judgements[j.account_id] = d
        clusters = {}
        for c in res.clusters:
            d = c.to_dict()
            d.pop("updated_at")
            d["members"] = sorted(d["members"])
            clusters[c.cluster_id] = d
        links = sorted(e.to_dict().items().__repr__() for e in res.links)
        fps = store.analysis.fingerprints()
    finally:
        store.close()
    return {"judgements": judgements, "clusters": clusters, "links": links, "fingerprints": fps}


def _assert_same(inc: dict[str, Any], full: dict[str, Any]) -> None:
    ji, jf = inc["judgements"], full["judgements"]
    assert set(ji) == set(jf)
    for a in jf:
        x, y = ji[a], jf[a]
        assert abs(x.pop("risk") - y.pop("risk")) <= 1e-9, a
        assert x == y, a
    partition = {tuple(c["members"]) for c in full["clusters"].values()}
    assert {tuple(c["members"]) for c in inc["clusters"].values()} == partition
    assert inc["clusters"] == full["clusters"]
    assert inc["links"] == full["links"]
    assert inc["fingerprints"] == full["fingerprints"]


def _run(url: str, *, full: bool = False, score: bool = True) -> AnalyzeSummary:
    store = open_store(url)
    try:
        return analyze(store, full=full, progress=False, score=score)
    finally:
        store.close()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from stormwatch.simulate import simulate

    out = tmp_path_factory.mktemp("sim")
    simulate(out, seed=7, accounts=160, days=8, progress=False)
    return out


def test_incremental_runs_equal_full_runs(platform: Path, tmp_path: Path) -> None:
    batches = _split(platform / "events.jsonl", tmp_path, [0.55, 0.75, 0.9, 0.99])
    url = f"sqlite:///{tmp_path / 'inc.db'}"
    accounts = str(platform / "accounts.jsonl")
    modes = []
    for k, batch in enumerate(batches):
        args = ["--db", url, "ingest", str(batch), "-q"] + (["--accounts", accounts] if k == 0 else [])
        assert main(args) == 0
        if k == 1:  # new intel between runs: the hits move
            assert main(["--db", url, "intel", "import", str(platform / "intel.stix.json")]) == 0
        s = _run(url)
        modes.append((s.mode, s.full_reason, s.accounts_judged, s.accounts))
        copy = tmp_path / f"full{k}.db"
        shutil.copy(tmp_path / "inc.db", copy)
        f = _run(f"sqlite:///{copy}", full=True, score=False)
        assert f.mode == "full"
        _assert_same(_snapshot(url), _snapshot(f"sqlite:///{copy}"))
        same = ("enforce", "review", "clusters", "attributed", "intel_hit_accounts", "active_accounts",
                "review_budget", "review_within_budget", "review_likely_beyond_budget", "exempt",
                "accounts")  # fmt: skip
        assert {k2: getattr(s, k2) for k2 in same} == {k2: getattr(f, k2) for k2 in same}
    assert modes[0][0] == "full" and modes[0][1] == "first run"
    assert modes[1][0] == "full"  # the first intel import: a new intrusion-set has hits (a global input)
    incremental = [m for m in modes[2:] if m[0] == "incremental"]
    assert len(incremental) == 3, modes
    # the last batch (1 % of the events) judges a small part of the platform again
    assert modes[-1][2] < 0.5 * modes[-1][3], modes
    # nothing new: only the components of the accounts in the review queue (or enforced) are judged again
    again = _run(url)
    assert again.mode == "incremental" and again.events_scanned == 0
    assert again.enforce + again.review <= again.accounts_judged < again.accounts


def test_changed_account_record_and_removed_link(platform: Path, tmp_path: Path) -> None:
    """An account record update that moves a device id re-links every account that shared it."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert main(["--db", url, "ingest", str(platform / "events.jsonl"), "--accounts",
                 str(platform / "accounts.jsonl"), "-q"]) == 0  # fmt: skip
    assert main(["--db", url, "intel", "import", str(platform / "intel.stix.json")]) == 0
    _run(url)
    store = open_store(url)
    try:
        clusters = store.analysis.clusters(members=True)
        big = max(clusters, key=lambda c: c.size)
        victim = big.members[0]
        # move the victim's linking fields to fresh values: its cluster must lose it
        store._execute(  # type: ignore[attr-defined]
            "UPDATE accounts SET device_id = 'dev-new', payment_fingerprint = 'pay-new', phone_hash = NULL,"
            " signup_ip = '203.0.113.250', org_id = NULL WHERE account_id = ?",
            (victim,),
        )
        store.commit()
    finally:
        store.close()
    s = _run(url, score=False)
    assert s.mode == "incremental"
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    _run(f"sqlite:///{tmp_path / 'b.db'}", full=True, score=False)
    _assert_same(_snapshot(url), _snapshot(f"sqlite:///{tmp_path / 'b.db'}"))


def test_another_account_model_means_a_full_run(platform: Path, tmp_path: Path) -> None:
    """The active account model's candidate trees decide which accounts at none reach review in
    every component: choosing another model (or none) is a global input, and the run is full."""
    from stormwatch.analyze.settings import AnalyzeSettings

    url = f"sqlite:///{tmp_path / 'm.db'}"
    assert main(["--db", url, "ingest", str(platform / "events.jsonl"), "--accounts",
                 str(platform / "accounts.jsonl"), "-q"]) == 0  # fmt: skip
    assert _run(url).mode == "full"
    assert _run(url, score=False).mode == "incremental"

    def run(model: str) -> AnalyzeSummary:
        store = open_store(url)
        try:
            return analyze(store, progress=False, score=False, settings=AnalyzeSettings(account_model=model))
        finally:
            store.close()

    off = run("off")
    assert (off.mode, off.full_reason) == ("full", "global inputs changed") and off.raised_by_model == 0
    assert run("off").mode == "incremental"
    assert run("account-1.0+60fe1edbd750").mode == "full"  # a shipped model without candidate trees


def test_two_analyze_runs_at_once_do_not_collide(platform: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    batches = _split(platform / "events.jsonl", tmp_path, [0.8])
    assert main(["--db", url, "ingest", str(batches[0]), "--accounts", str(platform / "accounts.jsonl"), "-q"]) == 0
    assert main(["--db", url, "intel", "import", str(platform / "intel.stix.json")]) == 0
    _run(url)
    assert main(["--db", url, "ingest", str(batches[1]), "-q"]) == 0
    results: list[AnalyzeSummary] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(_run(url))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(results) == 2
    # the new events were analysed exactly once: the second run found nothing left to scan
    assert sorted(r.events_scanned > 0 for r in results) == [False, True], [r.events_scanned for r in results]
    shutil.copy(tmp_path / "c.db", tmp_path / "d.db")
    _run(f"sqlite:///{tmp_path / 'd.db'}", full=True, score=False)
    _assert_same(_snapshot(url), _snapshot(f"sqlite:///{tmp_path / 'd.db'}"))


def test_analysis_state_on_every_backend(db_url: str) -> None:
    """Fingerprints, run state, the upsert write and the lock on SQLite and PostgreSQL."""
    from stormwatch.result import Cluster, Judgement, LinkEdge

    store = open_store(db_url)
    try:
        store.migrate()
        store.analysis.lock(5)
        store.analysis.put_fingerprints({"a": "1", "b": "2"}, replace=True)
        store.analysis.put_fingerprints({"b": "3", "c": "4"}, remove=["a"])
        store.analysis.set_state("k", "v1")
        store.analysis.set_state("k", "v2")
        j = [Judgement("a", 0.2), Judgement("b", 0.9, level="enforce", cluster_id="cl_1")]
        c = Cluster("cl_1", ("b", "c"), flagged_accounts=1)
        store.analysis.write_changes(j, [c], [LinkEdge("cl_1", "b", "c", "device", "d1", 0.9)])
        store.commit()
        store.analysis.write_changes([Judgement("b", 0.1)], [], [], remove_accounts=["a"], remove_clusters=["cl_1"])
        store.commit()
        assert store.analysis.fingerprints() == {"b": "3", "c": "4"}
        assert store.analysis.state("k") == "v2" and store.analysis.state("missing") is None
        assert [x.account_id for x in store.analysis.judgements()] == ["b"]
        assert store.analysis.clusters() == [] and store.analysis.links() == []
        assert store.analysis.result_counts()["accounts"] == 1
        assert store.analysis.judgements_at(("none",)) == ["b"]
    finally:
        store.close()


def test_summary_says_what_was_judged(platform: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'f.db'}"
    assert main(["--db", url, "ingest", str(platform / "events.jsonl"), "--accounts",
                 str(platform / "accounts.jsonl"), "-q"]) == 0  # fmt: skip
    assert main(["--db", url, "analyze", "--json", "--quiet"]) in (0, 10)
    assert main(["--db", url, "analyze", "--json", "--quiet", "--no-score"]) in (0, 10)
    store = open_store(url)
    try:
        assert store.analysis.state("global_fingerprint")
    finally:
        store.close()
    s = orjson.loads(orjson.dumps(_run(url, score=False).to_dict()))
    assert s["mode"] == "incremental" and s["events_scanned"] == 0


# -- the same property on random account graphs, in memory (no database) -------------------------------


def _random_graph(rng: Any, n: int, *, extra: int = 0, base: Any = None) -> Any:
    """A random platform: devices, payment cards, IPs (a few shared by many accounts, used at different
    times), orgs; content scores; indicator hits. ``base`` + ``extra`` new accounts and changes."""
    from stormwatch.result import AccountFacts, AccountGraph, AccountState, IntelHit, Observation

    def day(d: int) -> str:
        return f"2024-01-{1 + d:02d}T00:00:00Z" if d < 31 else f"2024-02-{d - 30:02d}T00:00:00Z"

    ips = [f"198.51.100.{k}" for k in range(14)]
    ip_p = np.array([9.0, 6.0, 3.0] + [1.0] * 11)
    ip_p /= ip_p.sum()

    def account(i: int) -> tuple[Any, list[Any], Any]:
        a = f"acct_{i:04d}"
        dev = f"dev{rng.integers(0, n // 2)}" if rng.random() < 0.7 else None
        pay = f"pay{rng.integers(0, n // 2)}" if rng.random() < 0.3 else None
        org = f"org{rng.integers(0, 4)}" if rng.random() < 0.3 else None
        facts = AccountFacts(a, day(int(rng.integers(0, 10))), dev, pay, None, None, "example.org", org)
        obs = []
        for _ in range(int(rng.integers(1, 4))):
            d0 = int(rng.integers(0, 50))
            obs.append(
                Observation(a, "ip", str(rng.choice(ips, p=ip_p)), day(d0), day(min(58, d0 + int(rng.integers(0, 5)))))
            )
        content = float(rng.choice([0.05, 0.3, 0.6, 0.85, 0.95]))
        feats = {"content": {"score": content}, "ttp_mass": {"LLMT-01": 2.0 * content}, "hours_utc": [1] * 48,
                 "languages": {"en": 1.0}, "escalations": int(rng.integers(0, 2))}  # fmt: skip
        state = AccountState(
            a, int(rng.integers(1, 50)), content, int(rng.integers(0, 3)), int(rng.integers(0, 2)), feats
        )
        return facts, obs, state

    if base is None:
        rows = [account(i) for i in range(n)]
    else:
        facts0, obs0, states0 = base
        rows = list(zip(facts0, obs0, states0, strict=True))
        for _ in range(max(1, n // 10)):  # old accounts with new activity: new IPs, new features
            k = int(rng.integers(0, len(rows)))
            f, o, s = rows[k]
            _f2, o2, s2 = account(k)
            rows[k] = (f, o + o2[:1], s2)
        k = int(rng.integers(0, len(rows)))  # one account record changes its device
        f, o, s = rows[k]
        rows[k] = (AccountFacts(f.account_id, f.created_at, f"dev-moved{k}", *[getattr(f, x) for x in
                   ("payment_fingerprint", "phone_hash", "signup_ip", "email_domain", "org_id")]), o, s)  # fmt: skip
        rows += [account(len(rows) + i) for i in range(extra)]
    facts, obs, states = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    hit_accounts = [facts[i].account_id for i in range(0, len(facts), 9)]
    hits = tuple(IntelHit(a, "indicator--1", "ip", "198.51.100.0", 1, None, None, 3, 0.7, ("intrusion-set--1",))
                 for a in hit_accounts)  # fmt: skip
    sets = ({"type": "intrusion-set", "id": "intrusion-set--1", "name": "Test Set"},)
    graph = AccountGraph(tuple(facts), tuple(x for o in obs for x in o), tuple(states), hits, sets,
                         {"indicator--1": "bad ip"})  # fmt: skip
    return graph, (facts, obs, states)


def _view(judgements: Any, clusters: Any) -> tuple[dict[str, Any], dict[frozenset[str], Any]]:
    js = {}
    for j in judgements:
        d = j.to_dict()
        d.pop("analyzed_at")
        js[j.account_id] = d
    cs = {}
    for c in clusters:
        d = c.to_dict()
        d.pop("updated_at")
        cs[frozenset(d.pop("members"))] = d
    return js, cs


def _incremental_vs_full(g1: Any, g2: Any, queued_too: bool = True) -> set[str]:
    """Judge ``g1`` in full, then ``g2`` incrementally (keeping ``g1``'s judgements of the components
    whose fingerprint did not change) and in full; assert both agree. Returns the accounts judged again."""
    from datetime import date

    from stormwatch.analyze.cohorts import find_cohorts, judgement_labels, top_scores
    from stormwatch.analyze.incremental import account_fingerprints, plan_keep
    from stormwatch.analyze.judge import analyze_graph, link_graph

    def units(g: Any, gr: Any, link: Any) -> Any:  # as analyze.pipeline.judge_step: components joined by cohorts
        top = top_scores(g.states, gr.index, len(gr.accounts))
        return judgement_labels(link.labels, find_cohorts(g, gr.index, top))

    now, today = "2025-03-01T00:00:00.000000Z", date(2025, 3, 1)
    gr1, l1 = link_graph(g1)
    first = analyze_graph(g1, "v", now=now, graph=gr1, link=l1)
    stored = dict(zip(gr1.accounts, account_fingerprints(g1, gr1, l1, (), today, units(g1, gr1, l1)), strict=True))
    gr2, l2 = link_graph(g2)
    u2 = units(g2, gr2, l2)
    fps = account_fingerprints(g2, gr2, l2, (), today, u2)
    queued = [j.account_id for j in first.judgements if j.level in ("review", "enforce")] if queued_too else []
    keep = plan_keep(gr2.accounts, u2, fps, stored, queued)
    part = analyze_graph(g2, "v", now=now, graph=gr2, link=l2, keep=keep)
    full = analyze_graph(g2, "v", now=now, graph=gr2, link=l2)
    kept = {a for a, k in zip(gr2.accounts, keep.tolist(), strict=True) if k}
    merged_j = [j for j in first.judgements if j.account_id not in kept] + list(part.judgements)
    merged_c = [c for c in first.clusters if not set(c.members) & kept] + list(part.clusters)
    assert _view(merged_j, merged_c) == _view(full.judgements, full.clusters)
    return kept


def test_incremental_equals_full_on_random_graphs() -> None:
    """Property: judging again only the components whose fingerprint changed (plus the review queue's)
    and keeping the rest gives the full run's judgements and clusters, on random graphs where values
    gain accounts (rarity weights move), accounts move devices and new accounts arrive."""
    partial_runs = 0
    for seed in range(12):
        rng = np.random.default_rng(seed)
        g1, raw = _random_graph(rng, 50)
        g2, _ = _random_graph(rng, 50, extra=6, base=raw)
        kept = _incremental_vs_full(g1, g2)
        partial_runs += len(kept) < len(g2.account_ids())
    assert partial_runs >= 6  # most runs judged only part of the graph again


def test_a_value_gaining_accounts_rejudges_every_component_linked_through_it() -> None:
    """Eight accounts share an IP at the same time (full weight: linked). A ninth user, a year later,
    does not join them (no overlap in time) but lowers the IP's rarity weight: the eight keep their
    cluster, yet their link weights change although none of their own inputs did."""
    from datetime import UTC, datetime, timedelta

    from stormwatch.result import AccountFacts, AccountGraph, AccountState, Observation

    t0 = datetime(2024, 1, 1, tzinfo=UTC)

    def ts(days: int) -> str:
        return (t0 + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")

    feats = {"content": {"score": 0.1}, "hours_utc": [1] * 48}
    ids = [f"a{k}" for k in range(8)]
    facts = [AccountFacts(a, ts(0)) for a in ids]
    obs = [Observation(a, "ip", "192.0.2.7", ts(1 + k % 3), ts(5)) for k, a in enumerate(ids)]
    states = [AccountState(a, 5, 0.1, 0, 0, feats) for a in ids]
    g1 = AccountGraph(tuple(facts), tuple(obs), tuple(states))
    late = Observation("late", "ip", "192.0.2.7", ts(400), ts(400))
    g2 = AccountGraph((*facts, AccountFacts("late", ts(0))), (*obs, late),
                      (*states, AccountState("late", 5, 0.1, 0, 0, feats)))  # fmt: skip
    kept = _incremental_vs_full(g1, g2, queued_too=False)
    assert set(ids) <= kept, kept


@pytest.mark.slow
def test_the_incremental_benchmark_runs_and_finds_the_same_result(tmp_path: Path) -> None:
    """``benchmarks/bench_incremental.py`` (docs/analyze.md §8) at a toy size."""
    import json
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "report.json"
    res = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "bench_incremental.py"), "--events", "3000", "--accounts", "120",
         "--new", "60", "--workdir", str(tmp_path / "w"), "--out", str(out),
         "--vs-account-model", "off", "--pairs", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["incremental"]["mode"] == "incremental" and report["full"]["mode"] == "full"
    assert report["same_result"] == {"accounts_differing": 0, "clusters_equal": True}
    assert report["incremental"]["events_scanned"] < report["full"]["events_scanned"]
    vs = report["vs_account_model"]  # the default account model against none (the queue by risk)
    assert vs["baseline_model"] == "off" and len(vs["runs"]["default"]) == len(vs["runs"]["baseline"]) == 1
    assert vs["runs"]["baseline"][0]["raised_by_model"] == 0 and vs["ratio_wall"] > 0
    assert vs["median"]["default"]["enforce"] == vs["median"]["baseline"]["enforce"]


def test_incremental_then_full_on_every_backend(platform: Path, tmp_path: Path, db_url: str) -> None:
    """Incremental after new events, then ``--full`` on the same database: nothing changes."""
    batches = _split(platform / "events.jsonl", tmp_path, [0.9])
    assert main(["--db", db_url, "ingest", str(batches[0]), "--accounts", str(platform / "accounts.jsonl"), "-q"]) == 0
    assert main(["--db", db_url, "intel", "import", str(platform / "intel.stix.json")]) == 0
    assert _run(db_url).mode == "full"
    assert main(["--db", db_url, "ingest", str(batches[1]), "-q"]) == 0
    s = _run(db_url)
    assert s.mode == "incremental" and s.events_scanned > 0
    inc = _snapshot(db_url)
    assert _run(db_url, full=True, score=False).mode == "full"
    _assert_same(inc, _snapshot(db_url))


def test_the_lock_is_exclusive_on_every_backend(db_url: str) -> None:
    from stormwatch.errors import StoreError

    holder, other = open_store(db_url), open_store(db_url)
    try:
        holder.migrate()
        holder.analysis.lock(5)
        if db_url.startswith("sqlite"):
            other._execute("PRAGMA busy_timeout=50")  # type: ignore[attr-defined]
        with pytest.raises(StoreError, match="another analyze run"):
            other.analysis.lock(0.3)
        other.rollback()
        holder.commit()
        other.analysis.lock(2)  # free again
        other.rollback()
    finally:
        holder.close()
        other.close()


def test_a_stored_result_changed_behind_its_back_gets_a_full_run(platform: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'g.db'}"
    assert main(["--db", url, "ingest", str(platform / "events.jsonl"), "--accounts",
                 str(platform / "accounts.jsonl"), "-q"]) == 0  # fmt: skip
    assert _run(url).mode == "full"
    store = open_store(url)
    try:
        store._execute("DELETE FROM account_judgements WHERE account_id IN"  # type: ignore[attr-defined]
                       " (SELECT account_id FROM account_judgements LIMIT 3)")  # fmt: skip
        store.commit()
    finally:
        store.close()
    s = _run(url, score=False)
    assert (s.mode, s.full_reason, s.accounts) == ("full", "stored result changed", 160)
    assert _run(url, score=False).mode == "incremental"


def _features(url: str) -> tuple[list[Any], list[Any]]:
    store = open_store(url)
    try:
        q = store._query  # type: ignore[attr-defined]
        feats = sorted(
            q(
                "SELECT account_id, n_events, first_ts, last_ts, n_high, max_score, content_score, ttp_breadth,"
                " home_utc_offset, refusals, rephrases, features FROM account_features"
            )
        )
        attrs = sorted(q("SELECT account_id, kind, value, n, first_ts, last_ts FROM account_attributes"))
    finally:
        store.close()
    return feats, attrs


def test_features_in_worker_processes_equal_one_process(
    platform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """Features computed by several worker processes (each a share of the accounts, its own
    connection, on each backend) are the rows one process computes, on the full and on the
    incremental path, and the judgements that follow are the same."""
    from stormwatch.analyze import stages

    parallel_runs: list[int] = []
    real = stages._features_parallel

    def counted(*args: Any, **kw: Any) -> Any:
        parallel_runs.append(args[3])  # the worker count
        return real(*args, **kw)

    monkeypatch.setattr(stages, "_features_parallel", counted)
    batches = _split(platform / "events.jsonl", tmp_path, [0.97])
    urls = {}
    for workers in ("1", "3"):
        monkeypatch.setenv("STORMWATCH_ANALYZE_WORKERS", workers)
        monkeypatch.setattr(stages, "PARALLEL_MIN_EVENTS", 0)
        # the worker processes open the store by its URL: SQLite and the real PostgreSQL
        url = urls[workers] = f"sqlite:///{tmp_path / 'w1.db'}" if workers == "1" else db_url
        for k, batch in enumerate(batches):
            args = ["--db", url, "ingest", str(batch), "-q"]
            assert main(args + (["--accounts", str(platform / "accounts.jsonl")] if k == 0 else [])) == 0
            s = _run(url)
            assert s.mode == ("full" if k == 0 else "incremental")
            assert s.accounts_recomputed > 0 and s.events_scanned > 0
    assert parallel_runs == [3, 3]  # workers=1 stays in this process; workers=3: both runs in workers
    assert _features(urls["1"]) == _features(urls["3"])
    _assert_same(_snapshot(urls["3"]), _snapshot(urls["1"]))


def test_feature_workers_stay_in_process_for_memory_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    from stormwatch.analyze import stages

    monkeypatch.setenv("STORMWATCH_ANALYZE_WORKERS", "4")
    store = open_store("sqlite:///:memory:")
    try:
        assert stages.feature_workers(store, None, 10**7, 1) == 1  # another process cannot open it
    finally:
        store.close()
    monkeypatch.setenv("STORMWATCH_ANALYZE_WORKERS", "lots")
    monkeypatch.setattr(stages, "PARALLEL_MIN_EVENTS", 0)

    class _Url:
        url = "sqlite:////tmp/x.db"

    assert stages.feature_workers(_Url(), None, 10, 1) >= 1  # type: ignore[arg-type]  # a bad value: the default
