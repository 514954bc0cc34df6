"""The spark engine (Spark local[2], one session for the module) agrees with the local engine, and a
Spark job that fails part way, then runs again, writes each judgement once.

Platform: 400 simulated accounts over 7 days (~5k events), not the issue's few thousand, to keep
``make test`` short on 2 cores; `benchmarks/bench_spark.py --check` compares the engines at any size.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

if shutil.which("java") is None:  # .ci/run installs openjdk-17-jre-headless; never skipped silently
    pytest.fail("the spark engine's tests need Java 17+: `apt-get install -y openjdk-17-jre-headless`", pytrace=False)

from stormwatch.analyze import params as P
from stormwatch.analyze.engines.spark import FAIL_ENV, analyze_spark, spark_session
from stormwatch.analyze.engines.spark_link import spark_link
from stormwatch.analyze.linking import LinkInput, link_accounts
from stormwatch.cli import main as cli_main
from stormwatch.result import AnalysisResult
from stormwatch.store import open_store


def _run(args: list[str], env: dict[str, str]) -> str:
    res = subprocess.run([sys.executable, "-m", "stormwatch", *args], env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert res.returncode in (0, 10), res.stderr[-2000:]
    return res.stdout


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    s = spark_session("local[2]", partitions=2)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Two stores holding the same simulated platform; ``local`` analysed by the local engine."""
    tmp = tmp_path_factory.mktemp("spark_platform")
    sim = tmp / "sim"
    _run(["simulate", "--out", str(sim), "--seed", "11", "--accounts", "400", "--days", "7", "-q"], dict(os.environ))
    urls = {}
    for name in ("local", "spark"):
        url = f"sqlite:///{tmp / f'{name}.db'}"
        env = {**os.environ, "STORMWATCH_DB": url}
        _run(["ingest", str(sim / "events.jsonl"), "--accounts", str(sim / "accounts.jsonl"), "-q"], env)
        _run(["intel", "import", str(sim / "intel.stix.json")], env)
        urls[name] = url
    _run(["analyze", "-q"], {**os.environ, "STORMWATCH_DB": urls["local"]})
    return urls


def _result(url: str) -> AnalysisResult:
    store = open_store(url)
    try:
        return store.analysis.result()
    finally:
        store.close()


def _partition(result: AnalysisResult) -> list[tuple[str, ...]]:
    return sorted(tuple(sorted(c.members)) for c in result.clusters)


def _plain(result: AnalysisResult) -> dict[str, dict[str, Any]]:
    out = {}
    for j in result.judgements:
        d = j.to_dict()
        d.pop("analyzed_at", None)
        out[j.account_id] = d
    return out


def test_spark_engine_agrees_with_local_and_a_failed_run_rerun_writes_each_judgement_once(
    spark: Any,
    platform: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_store(platform["spark"])
    try:
        # a Spark task fails half way (feature stage): nothing is written
        monkeypatch.setenv(FAIL_ENV, "features")
        with pytest.raises(Exception, match="feature task fails"):
            analyze_spark(store, spark=spark)
        # the whole job runs and fails just before its commit: rolled back, still nothing
        monkeypatch.setenv(FAIL_ENV, "commit")
        with pytest.raises(RuntimeError, match="before its commit"):
            analyze_spark(store, spark=spark)
        assert store.analysis.result().judgements == ()
        monkeypatch.delenv(FAIL_ENV)
    finally:
        store.close()
    # the rerun, as `stormwatch analyze --engine spark --master local[2]` (in-process: the active
    # session is reused)
    monkeypatch.setenv("STORMWATCH_DB", platform["spark"])
    with caplog.at_level("WARNING", logger="stormwatch.analyze.engines.spark"):
        assert cli_main(["analyze", "--engine", "spark", "--master", "local[2]", "--json",
                         "--spark-conf", "spark.driver.memory=2g"]) == 0  # fmt: skip
    # the session is already running, so the setting cannot apply: said, not silently dropped
    assert "spark.driver.memory ignored: a Spark session is already running" in caplog.text
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    local, remote = _result(platform["local"]), _result(platform["spark"])
    ids = [j.account_id for j in remote.judgements]
    assert len(ids) == len(set(ids)) == summary["accounts"] == len(local.judgements) > 300
    a, b = {j.account_id: j for j in local.judgements}, {j.account_id: j for j in remote.judgements}
    assert a.keys() == b.keys()
    assert {k: j.level for k, j in a.items()} == {k: j.level for k, j in b.items()}
    assert {k: j.actor for k, j in a.items()} == {k: j.actor for k, j in b.items()}
    assert max(abs(a[k].risk - b[k].risk) for k in a) <= 1e-6
    assert _partition(local) == _partition(remote) and len(local.clusters) > 5
    assert sum(j.level == "enforce" for j in a.values()) > 0 and any(j.actor for j in a.values())
    # beyond what the issue asks: the whole judgement, evidence and explanation included
    assert _plain(local) == _plain(remote)
    assert summary["scoring"]["link"]["star_rounds"][0] >= 2


def _random_graph(seed: int) -> LinkInput:
    """Accounts sharing values of every family: rare ones (strong), crowded ones (weak: pairs), a
    VPN-sized one (no link), time-separated IP use, and a chain big enough to be split."""
    rng = np.random.default_rng(seed)
    n = 700
    acc: list[int] = []
    val: list[int] = []
    first: list[float] = []
    last: list[float] = []
    base: list[float] = []
    fam: list[int] = []
    timed: list[bool] = []

    def value(members: list[int], b: float, f: int, t: bool, spread: float = 0.0) -> None:
        v = len(base)
        base.append(b)
        fam.append(f)
        timed.append(t)
        for m in members:
            acc.append(m)
            val.append(v)
            start = 1.7e9 + rng.uniform(0, spread) if t else np.nan
            first.append(start)
            last.append(start + rng.uniform(0, 3 * 86400) if t else np.nan)

    for _ in range(120):  # small groups through rare strong values
        value(sorted(rng.choice(n, size=int(rng.integers(2, 5)), replace=False).tolist()), 0.9, 0, False)
    for _ in range(150):  # IPs, some used months apart (time rule), degrees 2..40 (pairs up to 32)
        size = int(rng.integers(2, 41))
        value(
            sorted(rng.choice(n, size=size, replace=False).tolist()), 0.8, 1, True, spread=float(rng.choice([0, 9e6]))
        )
    for _ in range(60):  # weak values of two families: pairs combine by noisy-OR
        value(sorted(rng.choice(n, size=int(rng.integers(9, 20)), replace=False).tolist()), 0.6, 2, False)
    for _ in range(80):  # small groups sharing two weak values of different families: strong pairs
        members = sorted(rng.choice(n, size=int(rng.integers(2, 4)), replace=False).tolist())
        value(members, 0.4, 2, False)
        value(members, 0.35, 4, False)
    value(list(range(0, 100)), 0.9, 0, False)  # above DEGREE_CAP: links nobody
    chain = list(range(100, 420))  # a chain of 320 accounts: over MAX_CLUSTER, split by the thresholds
    for a, b in itertools.pairwise(chain):
        value([a, b], 0.55 if a % 3 else 0.95, 3, False)
    key = np.array(acc, dtype=np.int64) * len(base) + np.array(val, dtype=np.int64)
    uniq, idx = np.unique(key, return_index=True)
    return LinkInput(
        n_accounts=n,
        acc=uniq // len(base),
        val=uniq % len(base),
        value_base=np.array(base),
        value_family=np.array(fam, dtype=np.int64),
        timed=np.array(timed),
        first=np.array(first)[idx],
        last=np.array(last)[idx],
    )


def test_spark_linking_gives_the_in_memory_linkers_clusters_and_weights(spark: Any) -> None:
    inp = _random_graph(3)
    want = link_accounts(inp)
    stats: dict[str, Any] = {}
    got = spark_link(spark, inp, stats)
    assert len(stats["star_rounds"]) >= 2  # the chain was split at least once
    assert np.array_equal(got.labels, want.labels)  # the same numbering as scipy's, not only the partition
    assert np.array_equal(got.cluster_size, want.cluster_size)
    assert int(want.cluster_size.max()) <= P.MAX_CLUSTER < 320
    assert np.array_equal(got.degree, want.degree)
    assert np.allclose(got.value_weight, want.value_weight, rtol=0, atol=1e-12)
    assert np.array_equal(got.star_acc, want.star_acc) and np.array_equal(got.star_val, want.star_val)
    assert np.allclose(got.star_w, want.star_w, atol=1e-12)
    assert len(want.pair_a) >= 8
    assert np.array_equal(got.pair_a, want.pair_a) and np.array_equal(got.pair_b, want.pair_b)
    assert np.allclose(got.pair_w, want.pair_w, atol=1e-9)
    # per (pair, family) the same weight (which value evidences a tie may differ: see spark_link)
    assert [(p, f, round(w, 9)) for p, _v, f, w in got.pair_parts] == [
        (p, f, round(w, 9)) for p, _v, f, w in want.pair_parts
    ]


@pytest.mark.parametrize("bad", ["driver.memory=8g", "spark.driver.memory", "spark.driver.memory="])
def test_a_spark_setting_is_key_equals_value(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["analyze", "--engine", "spark", "--spark-conf", bad]) == 2
    assert "expected spark.KEY=VALUE" in capsys.readouterr().err


def test_the_engine_reports_a_missing_dataset(spark: Any, platform: dict[str, str], tmp_path: Path) -> None:
    from stormwatch.errors import InputError

    store = open_store(platform["spark"])
    try:
        with pytest.raises(InputError, match="no such Parquet dataset"):
            analyze_spark(store, spark=spark, events=tmp_path / "missing")
    finally:
        store.close()


def test_the_executor_stages_in_process_give_the_local_features(platform: dict[str, str]) -> None:
    """The scoring and feature functions Spark ships to its Python workers, run here on one batch
    holding every event: the features equal those the local engine stored."""
    from stormwatch.analyze.engines.spark import _featurizer, _scorer
    from stormwatch.columnar import events_to_table
    from stormwatch.detect.settings import load_settings
    from stormwatch.score.models import ensure_active

    store = open_store(platform["local"])
    try:
        rows = list(store.iter_events())
        entry = ensure_active(store)
        stored = {s.account_id: s for s in store.analysis.load_graph().states}
    finally:
        store.close()
    pdf = events_to_table([e for _, e in rows], [s for s, _ in rows]).to_pandas()
    settings = load_settings()
    model = entry.load()

    class Broadcast:
        value = model

    scorer = _scorer(Broadcast(), float(settings.resolved_threshold(model.thresholds)),
                     dict(settings.category_thresholds), "")  # fmt: skip
    scored = pd.concat(list(scorer(iter([pdf.iloc[:1000], pdf.iloc[1000:]]))), ignore_index=True)
    assert len(scored) == len(pdf) and scored["score"].between(0, 1).all()
    out = _featurizer(entry.version, "")(scored)
    feats = {r.account_id: json.loads(r.payload) for r in out.itertuples() if r.rec == "f"}
    assert feats.keys() == stored.keys()
    for account, f in feats.items():
        s = stored[account]
        assert (f["n_events"], f["ttp_breadth"], f["rephrases"]) == (s.n_events, s.ttp_breadth, s.rephrases)
        assert abs(f["content_score"] - s.content_score) <= 1e-9
        assert f["features"] == dict(s.features)
    assert (out["rec"] == "a").sum() > len(feats)  # observables (IPs, keys, user agents, ...) per account


def test_bench_linking_alone_passes_partitions_and_settings_and_the_engines_agree(tmp_path: Path) -> None:
    """`bench_spark.py --link-accounts N --link-lean --link-partitions P --spark-conf K=V` (the docs/scale.md
    run at 10M accounts / 52M edges, here at 20,000 accounts): both engines on one synthetic graph, the same labels."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "spark.json"
    shutil.copy(root / "benchmarks" / "results" / "spark.json", out)
    cmd = [sys.executable, str(root / "benchmarks" / "bench_spark.py"), "--events", "--merge", "--out", str(out),
           "--work", str(tmp_path / "w"), "--link-accounts", "20000", "--link-lean", "--link-partitions", "2",
           "--spark-conf", "spark.driver.memory=1g"]  # fmt: skip
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=600)
    got = json.loads(out.read_text())
    (row,) = [g for g in got["link_alone"] if g["accounts"] == 20000 and g.get("graph")]
    assert row["graph"].startswith("lean") and row["spark_settings"] == {"partitions": 2, "spark.driver.memory": "1g"}
    assert row["same_labels"] is True and row["local"]["labels_sha"] == row["spark"]["labels_sha"]
    assert row["spark"]["edges"] == row["local"]["edges"] > 0 and row["spark"]["rounds"]
    kept = {
        g["accounts"] for g in json.loads((root / "benchmarks" / "results" / "spark.json").read_text())["link_alone"]
    }
    assert kept <= {g["accounts"] for g in got["link_alone"]}  # --merge keeps the graphs it did not measure
