"""The ``spark`` engine: the same analysis with the event-sized work on Apache Spark.

What runs where (``docs/scale.md``):

1. **Events** are read from a Parquet dataset (:mod:`stormwatch.columnar`; ``stormwatch export
   --parquet`` or ``ingest --parquet`` writes one; without ``events`` the store's events are exported
   to a temporary one first). Repeated ``event_id`` are dropped.
2. **Scoring**: ``mapInPandas`` over Arrow batches; the active model is broadcast once and every
   executor's Python worker scores with the scoring stage's own batch function
   (:func:`stormwatch.score.scoring._score_batch`), so scores are the local engine's.
3. **Per-account features**: events are hash-bucketed by account and each bucket aggregated by
   ``applyInPandas`` with :func:`~stormwatch.analyze.features.compute_features` (an account's
   features read only its own events, so per-bucket equals global).
4. **Intel matching**: the indicators' exact values are a broadcast semi-join against the
   observables (CIDR ranges and regexes as a broadcast pandas filter); only matching observables
   reach the driver, where :func:`~stormwatch.analyze.intel_matching.match_indicators` (AND clauses,
   validity windows, degree) runs unchanged.
5. **Linking**: :func:`~stormwatch.analyze.engines.spark_link.spark_link` (rarity weights, VPN/NAT
   cap, time rule, pair combination, Large-Star/Small-Star components).
6. **Attribution and judgement** run on the driver over the account-level graph with the local
   engine's code (:func:`~stormwatch.analyze.judge.analyze_graph`, given the Spark linking), and the
   result replaces the stored one in one transaction: a job that fails part way writes nothing, and
   its rerun writes each judgement once.

The driver holds account-level data (features, observables, the link graph), never events.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from stormwatch.analyze.scale import describe, scale_for
from stormwatch.analyze.settings import AnalyzeSettings
from stormwatch.errors import InputError
from stormwatch.store import Store

__all__ = ["FAIL_ENV", "analyze_spark", "spark_session"]

log = logging.getLogger(__name__)

STAGE = "analyze"
#: test hook: ``features`` fails a Spark task of the feature stage, ``commit`` fails just before commit
FAIL_ENV = "STORMWATCH_SPARK_FAIL"
TAIL_CHARS = 1500  # as the store's scan (stormwatch.store.repos.analysis.TAIL_CHARS)
_FEATURE_COLS = (
    "account_id",
    "n_events",
    "first_ts",
    "last_ts",
    "n_high",
    "max_score",
    "content_score",
    "ttp_breadth",
    "home_utc_offset",
    "refusals",
    "rephrases",
)


def _require_spark() -> Any:
    try:
        import pyspark
    except ImportError as exc:
        raise InputError(
            "the spark engine needs PySpark", hint="pip install 'stormwatch[spark]' (and Java 17+ on the PATH)"
        ) from exc
    return pyspark


def spark_session(
    master: str | None = None, *, partitions: int | None = None, conf: dict[str, str] | None = None
) -> Any:
    """A SparkSession for the engine. ``master`` None keeps what ``spark-submit`` set (or ``local[2]``).

    Local masters bind to 127.0.0.1 unless ``SPARK_LOCAL_IP`` says otherwise (local mode binds a
    non-loopback address by default)."""
    _require_spark()
    from pyspark.sql import SparkSession

    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started the JVM and set the master
    if master is None and not submitted and "spark.master" not in (conf or {}):
        master = "local[2]"
    if master is not None and master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # on a cluster: spark.pyspark.python
    b = SparkSession.builder.appName("stormwatch-analyze")
    if master is not None:
        b = b.master(master)
    settings = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
    }
    if master is not None and master.startswith("local"):
        settings["spark.task.maxFailures"] = "1"
        settings["spark.ui.enabled"] = "false"
        settings["spark.sql.shuffle.partitions"] = str(partitions or 4)
        settings["spark.default.parallelism"] = str(partitions or 4)
    elif partitions:
        settings["spark.sql.shuffle.partitions"] = str(partitions)
    settings.update(conf or {})
    for k, v in settings.items():
        b = b.config(k, v)
    spark = b.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


# -- stage 2: scoring -------------------------------------------------------------------------------
_SCORED_SCHEMA = (
    "seq long, event_id string, account_id string, ts string, ip string, user_agent string, api_key_id string,"
    " conversation_id string, refused boolean, attributes string, tail string, score double, categories string"
)


def _scorer(model_bc: Any, threshold: float, cat_thr: dict[str, float], fail: str) -> Any:
    token = uuid.uuid4().hex

    def score(batches: Iterator[Any]) -> Iterator[Any]:
        import pandas as pd

        from stormwatch.score import scoring
        from stormwatch.store.repos.events import ScoringInput

        if getattr(scoring, "_SPARK_MODEL_TOKEN", None) != token:  # once per Python worker
            scoring._MODEL = model_bc.value
            scoring._SPARK_MODEL_TOKEN = token  # type: ignore[attr-defined]
        for pdf in batches:
            msgs = [None if m is None else orjson.loads(m) for m in _obj(pdf["messages"])]
            refused = _obj(pdf["refused"])
            items = [
                scoring._item(ScoringInput(0, e, a, c, "", m, p, None if r is None else bool(r)))
                for e, a, c, m, p, r in zip(
                    pdf["event_id"], pdf["account_id"], _obj(pdf["conversation_id"]), msgs, _obj(pdf["prompt"]),
                    refused, strict=True,
                )
            ]  # fmt: skip
            res = scoring._score_batch([it.text for it in items], [it.turns for it in items], threshold, cat_thr)
            text = [
                m if m is not None else (p or "")
                for m, p in zip(_obj(pdf["messages"]), _obj(pdf["prompt"]), strict=True)
            ]
            yield pd.DataFrame(
                {
                    "seq": pdf["seq"],
                    "event_id": pdf["event_id"],
                    "account_id": pdf["account_id"],
                    "ts": _ts(pdf["ts"]),
                    "ip": pdf["ip"],
                    "user_agent": pdf["user_agent"],
                    "api_key_id": pdf["api_key_id"],
                    "conversation_id": pdf["conversation_id"],
                    "refused": refused,
                    "attributes": pdf["attributes"],
                    "tail": [t[-TAIL_CHARS:] for t in text],
                    "score": [sc for sc, _flagged, _top, _cats, _expl in res],
                    "categories": [cats for _score, _flagged, _top, cats, _expl in res],
                }
            )

    return score


def _obj(series: Any) -> list[Any]:
    """A pandas column as Python values, missing ones None (never NaN)."""
    return [None if _missing(x) else x for x in series.tolist()]


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and x != x)


def _ts(values: Any) -> Any:
    """Timestamps as the store writes them: ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC)."""
    import pandas as pd

    t = pd.to_datetime(values)
    if t.dt.tz is not None:
        t = t.dt.tz_convert("UTC").dt.tz_localize(None)
    return t.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- stage 3: per-account features ------------------------------------------------------------------
_FEATURE_SCHEMA = (
    "rec string, account_id string, kind string, value string, n long, first_ts string, last_ts string,"
    " k1 long, k2 long, k3 long, payload string"
)
_KIND_RANK = {"ip": 0, "user_agent": 1, "api_key": 2}


class _Chunks:
    """What :func:`~stormwatch.analyze.scan.scan_events` reads of a store, over one bucket's events."""

    def __init__(self, part: Any) -> None:
        self.analysis = self
        self._part = part

    def scan(self, model_version: str, account_ids: Any = None, *, chunk: int = 0) -> Iterator[Any]:
        yield self._part


def _featurizer(version: str, fail: str, scale: Any = None) -> Any:
    def features(pdf: Any) -> Any:
        import pandas as pd

        from stormwatch.analyze.features import compute_features
        from stormwatch.analyze.scan import scan_events
        from stormwatch.store.repos.analysis import ScanChunk

        if fail == "features":
            raise RuntimeError(f"{FAIL_ENV}=features: a feature task fails (test hook)")
        pdf = pdf.sort_values(["seq", "ts", "event_id"], kind="stable")
        seq = [int(x) if not _missing(x) else 0 for x in pdf["seq"].tolist()]
        part = ScanChunk(
            tuple(seq), tuple(pdf["event_id"]), tuple(pdf["account_id"]), tuple(pdf["ts"]), tuple(_obj(pdf["ip"])),
            tuple(_obj(pdf["user_agent"])), tuple(_obj(pdf["api_key_id"])), tuple(_obj(pdf["conversation_id"])),
            tuple(_obj(pdf["refused"])), tuple(_obj(pdf["attributes"])), tuple(_obj(pdf["tail"])),
            tuple(float(x) for x in pdf["score"]), tuple(_obj(pdf["categories"])),
        )  # fmt: skip
        cols = scan_events(_Chunks(part), version, scale=scale)  # type: ignore[arg-type]
        feats, attrs = compute_features(cols)
        # order keys: the store's scan numbers accounts and values by first appearance (seq)
        first_seq: dict[str, int] = {}
        for a, s in zip(part.account_id, seq, strict=True):
            first_seq.setdefault(a, s)
        value_seq: dict[tuple[str, str, str], int] = {}
        for a, s, ip, ua, key in zip(part.account_id, seq, part.ip, part.user_agent, part.api_key_id, strict=True):
            for kind, v in (("ip", ip), ("user_agent", ua), ("api_key", key)):
                if v is not None:
                    value_seq.setdefault((a, kind, v), s)
        rows: list[tuple[Any, ...]] = []
        for f in feats:
            payload = {c: getattr(f, c) for c in _FEATURE_COLS}
            payload["features"] = f.features
            rows.append(("f", f.account_id, None, None, None, None, None, first_seq[f.account_id], 0, 0,
                         orjson.dumps(payload).decode()))  # fmt: skip
        for pos, (a, kind, value, n, first, last) in enumerate(attrs):
            rank = _KIND_RANK.get(kind, 3)
            k2 = value_seq.get((a, kind, value), 0) if rank < 3 else 0
            rows.append(
                ("a", a, kind, value, int(n), first, last, rank, first_seq[a] if rank < 3 else 0, k2 or pos, None)
            )
        return pd.DataFrame(rows, columns=[c.split()[0] for c in _FEATURE_SCHEMA.split(", ")])

    return features


# -- stage 4: intel ----------------------------------------------------------------------------------
def _intel(spark: Any, store: Store, attrs: Any) -> list[Any]:
    """Match the live indicators: candidates by broadcast join in Spark, clauses on the driver.

    ``attrs``: the observables the feature stage found (a pandas frame the driver holds anyway, as it
    writes them to the store)."""
    from pyspark.sql import functions as F

    from stormwatch.analyze.intel_matching import Observations, _norm_ip, load_indicators, match_indicators
    from stormwatch.analyze.stages import hit_strength
    from stormwatch.result import IntelHit

    indicators = load_indicators(store)
    if not indicators:
        store.analysis.replace_hits([])
        return []
    acc_rows: list[tuple[str, str, str, int, str | None, str | None]] = []
    email_hashes: dict[str, list[str]] = {}
    for a in store.intel.account_observations():
        if a.signup_ip:
            acc_rows.append(("ip", a.signup_ip, a.account_id, 1, a.created_at, a.created_at))
        if a.email_domain:
            acc_rows.append(("domain", a.email_domain.lower(), a.account_id, 1, None, None))
        if a.email:
            acc_rows.append(("email", a.email.lower(), a.account_id, 1, None, None))
        elif a.email_hash:
            email_hashes.setdefault(str(a.email_hash).lower(), []).append(a.account_id)
    obs_schema = "kind string, value string, account_id string, n long, first_ts string, last_ts string"
    cols = ["kind", "value", "account_id", "n", "first_ts", "last_ts"]
    rows = [tuple(r) for r in attrs[cols].itertuples(index=False)] + acc_rows
    if not rows:
        store.analysis.replace_hits([])
        return []
    import pandas as pd

    obs = spark.createDataFrame(pd.DataFrame(rows, columns=cols).astype({"n": "int64"}), obs_schema)

    def norm_ip(batches: Iterator[Any]) -> Iterator[Any]:
        for pdf in batches:
            ip = pdf["kind"] == "ip"
            pdf.loc[ip, "value"] = pdf.loc[ip, "value"].map(_norm_ip)
            yield pdf

    obs = obs.mapInPandas(norm_ip, obs_schema)
    eq: set[tuple[str, str]] = set()
    ranges: list[tuple[str, int, int, int]] = []  # (kind, version, lo, hi)
    regexes: list[tuple[str, str]] = []
    for ind in indicators:
        for clause in ind.pattern.clauses:
            for atom in clause:
                if atom.op == "eq":
                    eq.update((atom.kind, v) for v in atom.values)
                elif atom.op == "cidr":
                    import ipaddress

                    for v in atom.values:
                        net = ipaddress.ip_network(v, strict=False)
                        ranges.append((atom.kind, net.version, int(net.network_address), int(net.broadcast_address)))
                elif atom.op == "regex":
                    regexes.append((atom.kind, atom.values[0]))
    parts = []
    if eq:
        table = F.broadcast(spark.createDataFrame(sorted(eq), "kind string, value string"))
        parts.append(obs.join(table, ["kind", "value"], "left_semi").select("kind", "value"))
    if ranges or regexes:
        rb = spark.sparkContext.broadcast((ranges, regexes))

        def wanted(batches: Iterator[Any]) -> Iterator[Any]:
            import ipaddress
            import re

            rgs, rxs = rb.value
            compiled = [(k, re.compile(r)) for k, r in rxs]
            for pdf in batches:
                keep = []
                for k, v in zip(pdf["kind"].tolist(), pdf["value"].tolist(), strict=True):
                    hit = any(rk == k and rx.search(v) for rk, rx in compiled)
                    if not hit and rgs:
                        try:
                            addr = ipaddress.ip_address(v)
                        except ValueError:
                            addr = None
                        if addr is not None:
                            iv = int(addr)
                            hit = any(rk == k and ver == addr.version and lo <= iv <= hi for rk, ver, lo, hi in rgs)
                    keep.append(hit)
                yield pdf.loc[keep, ["kind", "value"]]

        parts.append(obs.select("kind", "value").distinct().mapInPandas(wanted, "kind string, value string"))
    cand = parts[0]
    for p in parts[1:]:
        cand = cand.union(p)
    matched = obs.join(F.broadcast(cand.distinct()), ["kind", "value"], "left_semi").toPandas()
    observations = Observations()
    for kind, value, acc, n, first, last in matched.itertuples(index=False):
        observations.add(kind, value, acc, int(n), _none(first), _none(last))
    observations.email_hashes = email_hashes
    hits = match_indicators(indicators, observations)
    by_id = {i.id: i for i in indicators}
    store.analysis.replace_hits(
        [
            IntelHit(h.account_id, h.indicator_id, h.kind, h.value, h.n, h.first_ts, h.last_ts, h.degree,
                     hit_strength(by_id[h.indicator_id], h.degree), tuple(by_id[h.indicator_id].intrusion_sets))
            for h in hits
        ]
    )  # fmt: skip
    return hits


def _none(x: Any) -> Any:
    return None if _missing(x) else x


# -- the run -----------------------------------------------------------------------------------------
class _Feature:
    """An :class:`~stormwatch.analyze.features.AccountFeatures` as the store writes it (from its JSON)."""

    n_events: int

    def __init__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)


def analyze_spark(
    store: Store,
    *,
    master: str | None = "local[2]",
    events: str | Path | None = None,
    partitions: int | None = None,
    buckets: int | None = None,
    settings: AnalyzeSettings | None = None,
    progress: bool = False,
    spark: Any = None,
    conf: dict[str, str] | None = None,
) -> Any:
    """Run the whole analysis with the Spark engine; returns the pipeline's ``AnalyzeSummary``.

    ``events``: a Parquet dataset of canonical events, a folder or a URI Spark reads (``s3a://...``);
    default: the store's events, exported to a temporary dataset first. ``spark``: a SparkSession to
    use; otherwise the active one (kept running) or a new one for ``master`` (stopped at the end).
    """
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from stormwatch.analyze.engines.spark_link import spark_link
    from stormwatch.analyze.exemptions import load_exemptions
    from stormwatch.analyze.judge import analyze_graph, build_graph
    from stormwatch.analyze.pipeline import AnalyzeSummary
    from stormwatch.detect.settings import load_settings
    from stormwatch.score.models import ensure_active

    _require_spark()
    settings = settings or AnalyzeSettings()
    exemptions = load_exemptions(settings.exemptions)
    out = AnalyzeSummary(review_budget_rule=settings.review_budget.describe())
    fail = os.environ.get(FAIL_ENV, "")
    t0 = time.perf_counter()
    spark = spark or SparkSession.getActiveSession()
    own = spark is None
    if conf and not own:  # the JVM is up: pass such settings where the session starts (spark-submit --conf)
        log.warning("Spark settings %s ignored: a Spark session is already running", ", ".join(sorted(conf)))
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        if events is None:
            from stormwatch.ingest.parquet import export_parquet

            tmp = tempfile.TemporaryDirectory(prefix="stormwatch-spark-")
            events = Path(tmp.name) / "events"
            export_parquet(store, events)
        path = str(events)
        if "://" not in path and not Path(path).exists():
            raise InputError(f"{events}: no such Parquet dataset", hint="stormwatch export --parquet DIR writes one")
        spark = spark or spark_session(master, partitions=partitions, conf=conf)
        sc = spark.sparkContext
        n_part = partitions or max(2, sc.defaultParallelism)
        dsettings = load_settings()
        entry = ensure_active(store, dsettings)
        version = entry.version
        model = entry.load()
        threshold = float(dsettings.resolved_threshold(model.thresholds))
        cat_thr = dict(dsettings.category_thresholds)
        model_bc = sc.broadcast(model)  # shipped to each executor once
        ev = spark.read.option("basePath", path).parquet(path).dropDuplicates(["event_id"])
        scored = ev.mapInPandas(_scorer(model_bc, threshold, cat_thr, fail), _SCORED_SCHEMA)
        n_buckets = buckets or n_part * 2
        bucketed = scored.withColumn("bucket", F.pmod(F.xxhash64("account_id"), F.lit(n_buckets)))
        out.score_scale = describe(scale := scale_for(store, version))
        rows = bucketed.groupBy("bucket").applyInPandas(_featurizer(version, fail, scale), _FEATURE_SCHEMA)
        local = rows.toPandas().sort_values(["rec", "k1", "k2", "k3", "account_id"], kind="stable")
        t1 = time.perf_counter()
        feats = [_Feature(orjson.loads(p)) for p in local.loc[local["rec"] == "f", "payload"]]
        arows = local[local["rec"] == "a"]
        attr_rows = [
            (a, k, v, int(n), f, la)
            for a, k, v, n, f, la in zip(
                arows["account_id"], arows["kind"], arows["value"], arows["n"], arows["first_ts"], arows["last_ts"],
                strict=True,
            )
        ]  # fmt: skip
        out.model_version = version
        out.events_scanned = int(sum(f.n_events for f in feats))
        out.accounts_recomputed = len(feats)
        try:
            store.analysis.replace_features(feats, attr_rows, version)  # type: ignore[arg-type]
            max_seq = store.analysis.max_event_seq()
            store.stages.set(STAGE, max_seq)
            t2 = time.perf_counter()
            out.intel_hits = len(_intel(spark, store, arows))
            t3 = time.perf_counter()
            graph = store.analysis.load_graph()
            link_stats: dict[str, Any] = {}
            link = spark_link(spark, build_graph(graph).link_input, link_stats)
            result = analyze_graph(
                graph, version, review_budget=settings.review_budget, exemptions=exemptions, link=link
            )
            store.analysis.write(result)
            if fail == "commit":
                raise RuntimeError(f"{FAIL_ENV}=commit: the run fails before its commit (test hook)")
            store.commit()
        except BaseException:
            store.rollback()
            raise
        t4 = time.perf_counter()
    finally:
        if own and spark is not None:
            spark.stop()
        if tmp is not None:
            tmp.cleanup()
    n = result.counts()
    out.accounts, out.clusters, out.enforce, out.review = n["accounts"], n["clusters"], n["enforce"], n["review"]
    out.attributed, out.intel_hit_accounts = n["attributed"], n.get("intel_hit_accounts", 0)
    out.active_accounts, out.review_budget = n.get("active_accounts", 0), n.get("review_budget", 0)
    for k in ("review_within_budget", "exempt", "exempt_held_back", "raised_by_model", "review_likely_beyond_budget"):
        setattr(out, k, n.get(k, 0))
    out.scoring = {"engine": "spark", "link": link_stats}
    out.seconds = {
        "scoring_features": round(t1 - t0, 2),
        "features": round(t2 - t1, 2),
        "intel": round(t3 - t2, 2),
        "link_attribute_judge": round(t4 - t3, 2),
        "total": round(t4 - t0, 2),
    }
    return out
