"""Account linking on Spark: the rules of :mod:`stormwatch.analyze.linking` as DataFrame jobs, and
connected components by alternating Large-Star / Small-Star rounds.

Same input (:class:`~stormwatch.analyze.linking.LinkInput`), same output
(:class:`~stormwatch.analyze.linking.LinkResult`) as :func:`~stormwatch.analyze.linking.link_accounts`:

* value degree, rarity weight ``base * rarity(d)`` (0 above ``DEGREE_CAP``: VPN exits, CGNAT),
  the time-overlap rule for network values (``NO_OVERLAP_FACTOR`` when nobody else used the value
  within ``OVERLAP_SLACK_S``) - window aggregations per value;
* strong edges (``w >= LINK_THRESHOLD``) as stars through the value node; weak values combined per
  account pair (a self-join per value, at most ``PAIR_DEGREE_CAP`` accounts), maximum per family,
  noisy-OR across families;
* connected components: Large-Star / Small-Star (Kiveris et al., "Connected Components in MapReduce
  and Beyond", SoCC 2014), O(log^2 n) rounds whatever the diameter; the component label is the
  smallest node id, so dense-ranking the labels numbers components exactly as scipy does;
* components above ``MAX_CLUSTER`` accounts are split by the ``SPLIT_THRESHOLDS``.

Ties between two values of one family giving a pair the same weight pick the lower value index as
the pair's evidence (the in-memory linker keeps the first in its enumeration order); the pair and
its weight are the same.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stormwatch.analyze import params as P
from stormwatch.analyze.linking import LinkInput, LinkResult, cluster_links

__all__ = ["connected_components_star", "spark_link"]

Arr = np.ndarray[Any, Any]
MAX_ROUNDS = 64


def _rarity_expr(F: Any, d: Any) -> Any:
    rare = F.pow(F.lit(float(P.RARE_DEGREE)) / F.greatest(d.cast("double"), F.lit(1.0)), F.lit(P.RARITY_POWER))
    r = F.when(d <= P.RARE_DEGREE, F.lit(1.0)).otherwise(rare)
    return F.when((d < 2) | (d > P.DEGREE_CAP), F.lit(0.0)).otherwise(r)


def connected_components_star(spark: Any, edges: Any) -> tuple[Any, int]:
    """Components of the undirected graph ``edges`` (columns ``u``, ``v``: long node ids).

    Returns (DataFrame ``node``, ``label`` for every node on an edge, label = the smallest node id of
    its component; rounds run). Alternates Large-Star and Small-Star until the edge set is stable:
    one Spark job per round (the round's edges are cached and fingerprinted in the same pass).
    """
    from pyspark.sql import functions as F

    e = (
        edges.select(F.greatest("u", "v").alias("u"), F.least("u", "v").alias("v"))
        .filter(F.col("u") != F.col("v"))
        .distinct()
    )
    prev: tuple[int, ...] | None = None
    rounds = 0
    cached: list[Any] = []
    while rounds < MAX_ROUNDS:
        rounds += 1
        # Large-Star: every node links its larger neighbours to the smallest node of its neighbourhood
        sym = e.union(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
        m = sym.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("m"))
        large = (
            sym.filter(F.col("v") > F.col("u"))
            .join(m, "u")
            .select(F.greatest("v", "m").alias("u"), F.least("v", "m").alias("v"))
            .filter(F.col("u") != F.col("v"))
            .distinct()
        )
        # Small-Star: every node links itself and its smaller neighbours to the smallest of them
        m2 = large.groupBy("u").agg(F.min("v").alias("m"))
        small = (
            large.join(m2, "u")
            .select(F.col("v").alias("a"), F.col("m").alias("b"))
            .union(m2.select(F.col("u").alias("a"), F.col("m").alias("b")))
            .select(F.greatest("a", "b").alias("u"), F.least("a", "b").alias("v"))
            .filter(F.col("u") != F.col("v"))
            .distinct()
        )
        e = small.localCheckpoint(eager=False)
        cached.append(e)
        row = e.agg(F.count(F.lit(1)), F.coalesce(F.sum(F.xxhash64("u", "v") % 1_000_000_007), F.lit(0))).first()
        sig = tuple(int(x) for x in row)
        if sig == prev:
            break
        prev = sig
    sym = e.union(e.select(F.col("v").alias("u"), F.col("u").alias("v")))
    labels = sym.groupBy("u").agg(F.least(F.min("v"), F.col("u")).alias("label")).withColumnRenamed("u", "node")
    return labels, rounds


def _raw_labels(spark: Any, raw: Arr, e_u: Arr, e_v: Arr) -> int:
    """Set ``raw[node]`` to its component's smallest node id for every node on an edge; rounds run."""
    import pandas as pd

    if not len(e_u):
        return 0
    df = spark.createDataFrame(pd.DataFrame({"u": e_u.astype(np.int64), "v": e_v.astype(np.int64)}))
    lab, rounds = connected_components_star(spark, df)
    got = lab.toPandas()
    raw[got["node"].to_numpy(dtype=np.int64)] = got["label"].to_numpy(dtype=np.int64)
    return rounds


def _dense(raw: Arr) -> Arr:
    """Components numbered 0 .. k-1 in the order of their smallest node, as scipy numbers them."""
    _, dense = np.unique(raw, return_inverse=True)
    out: Arr = dense.astype(np.int64)
    return out


def _weights(spark: Any, inp: LinkInput) -> tuple[Arr, Arr, Any]:
    """(degree per value, w_v per value, DataFrame of edges with their time-adjusted weight ``w``)."""
    import pandas as pd
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    n_val = len(inp.value_base)
    first = inp.first if inp.first is not None else np.full(len(inp.acc), np.nan)
    last = inp.last if inp.last is not None else np.full(len(inp.acc), np.nan)
    edges = (
        spark.createDataFrame(
            pd.DataFrame(
                {
                    "e": np.arange(len(inp.acc), dtype=np.int64),
                    "a": inp.acc.astype(np.int64),
                    "v": inp.val.astype(np.int64),
                    "f": np.asarray(first, dtype=np.float64),
                    "l": np.asarray(last, dtype=np.float64),
                }
            )
        )
        .withColumn("f", F.when(F.isnan("f"), None).otherwise(F.col("f")))
        .withColumn("l", F.when(F.isnan("l"), None).otherwise(F.col("l")))
    )
    values = spark.createDataFrame(
        pd.DataFrame(
            {
                "v": np.arange(n_val, dtype=np.int64),
                "base": inp.value_base.astype(np.float64),
                "fam": inp.value_family.astype(np.int64),
                "timed": inp.timed.astype(bool),
            }
        )
    )
    deg = edges.groupBy("v").agg(F.count(F.lit(1)).alias("d"))
    vals = F.broadcast(
        values.join(deg, "v", "left")
        .fillna(0, subset=["d"])
        .withColumn("wv", F.col("base") * _rarity_expr(F, F.col("d")))
    )
    ew = edges.join(vals, "v").withColumn("w0", F.col("wv"))
    in_time = F.col("timed") & F.col("f").isNotNull() & (F.col("w0") > 0)
    # the time rule: max(last) / min(first) over the *other* timed edges of the value
    lo, hi = -math.inf, math.inf
    ew = ew.withColumn("lk", F.when(in_time, F.coalesce(F.col("l"), F.lit(lo)))).withColumn(
        "fk", F.when(in_time, F.coalesce(F.col("f"), F.lit(hi)))
    )
    by_v = Window.partitionBy("v", F.col("lk").isNotNull())
    ew = ew.withColumn("rl", F.row_number().over(by_v.orderBy(F.col("lk").desc(), F.col("e"))))
    ew = ew.withColumn("rf", F.row_number().over(by_v.orderBy(F.col("fk").asc(), F.col("e"))))
    ew = (
        ew.withColumn("l1", F.max("lk").over(by_v))
        .withColumn("l2", F.max(F.when(F.col("rl") > 1, F.col("lk"))).over(by_v))
        .withColumn("f1", F.min("fk").over(by_v))
        .withColumn("f2", F.min(F.when(F.col("rf") > 1, F.col("fk"))).over(by_v))
    )
    other_last = F.when(F.col("rl") == 1, F.coalesce(F.col("l2"), F.lit(lo))).otherwise(F.col("l1"))
    other_first = F.when(F.col("rf") == 1, F.coalesce(F.col("f2"), F.lit(hi))).otherwise(F.col("f1"))
    overlap = (F.col("f") <= other_last + P.OVERLAP_SLACK_S) & (F.col("l") >= other_first - P.OVERLAP_SLACK_S)
    ew = ew.withColumn(
        "w",
        F.when(in_time & ~F.coalesce(overlap, F.lit(False)), F.col("w0") * P.NO_OVERLAP_FACTOR).otherwise(F.col("w0")),
    ).select("e", "a", "v", "w", "d", "fam")
    ew = ew.localCheckpoint()
    vp: Any = vals.select("v", "d", "wv").toPandas()
    degree = np.zeros(n_val, dtype=np.int64)
    w_val = np.zeros(n_val, dtype=np.float64)
    degree[vp["v"].to_numpy()] = vp["d"].to_numpy()
    w_val[vp["v"].to_numpy()] = vp["wv"].to_numpy()
    return degree, w_val, ew


def _pairs(ew: Any) -> tuple[Arr, Arr, Arr, list[tuple[int, int, int, float]]]:
    """Strong pairs from weak values: (a, b, combined weight) sorted by (a, b), and their parts."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    weak = ew.filter(
        (F.col("w") >= P.PAIR_MIN_WEIGHT) & (F.col("w") < P.LINK_THRESHOLD) & (F.col("d") <= P.PAIR_DEGREE_CAP)
    )
    x, y = weak.alias("x"), weak.alias("y")
    pairs = x.join(y, (F.col("x.v") == F.col("y.v")) & (F.col("x.a") < F.col("y.a"))).select(
        F.col("x.a").alias("a"),
        F.col("y.a").alias("b"),
        F.col("x.v").alias("v"),
        F.col("x.fam").alias("fam"),
        F.least(F.col("x.w"), F.col("y.w")).alias("w"),
    )
    best = Window.partitionBy("a", "b", "fam").orderBy(F.col("w").desc(), F.col("v"))
    per_fam = pairs.withColumn("r", F.row_number().over(best)).filter(F.col("r") == 1).drop("r")
    keep = F.log1p(-F.least(F.col("w"), F.lit(0.999)))
    comb = per_fam.groupBy("a", "b").agg(F.sum(keep).alias("s")).withColumn("cw", 1.0 - F.exp(F.col("s")))
    strong = comb.filter(F.col("cw") >= P.LINK_THRESHOLD).select("a", "b", "cw")
    parts: Any = per_fam.join(strong, ["a", "b"]).select("a", "b", "v", "fam", "w", "cw").toPandas()
    sp = parts[["a", "b", "cw"]].drop_duplicates(["a", "b"]).sort_values(["a", "b"], kind="stable")
    pa = sp["a"].to_numpy(dtype=np.int64)
    pb = sp["b"].to_numpy(dtype=np.int64)
    pw = sp["cw"].to_numpy(dtype=np.float64)
    index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(pa.tolist(), pb.tolist(), strict=True))}
    parts = parts.sort_values(["a", "b", "fam"], kind="stable")
    out = [
        (index[(int(a), int(b))], int(v), int(f), float(w))
        for a, b, v, f, w in zip(parts["a"], parts["b"], parts["v"], parts["fam"], parts["w"], strict=True)
    ]
    return pa, pb, pw, out


def spark_link(spark: Any, inp: LinkInput, stats: dict[str, Any] | None = None) -> LinkResult:
    """:func:`~stormwatch.analyze.linking.link_accounts` computed on Spark (see the module docstring)."""
    from pyspark.sql import functions as F

    n, n_val = inp.n_accounts, len(inp.value_base)
    degree, w_val, ew = _weights(spark, inp)
    sp = ew.filter(F.col("w") >= P.LINK_THRESHOLD).select("a", "v", "w").toPandas()
    sp = sp.sort_values(["a", "v"], kind="stable")
    s_acc = sp["a"].to_numpy(dtype=np.int64)
    s_val = sp["v"].to_numpy(dtype=np.int64)
    s_w = sp["w"].to_numpy(dtype=np.float64)
    pa, pb, pw, parts = _pairs(ew)
    rounds: list[int] = []
    raw = np.arange(n + n_val, dtype=np.int64)

    def components(s_acc: Arr, s_val: Arr, pa: Arr, pb: Arr, big: Arr | None) -> Arr:
        if big is not None:  # only the oversized components are recomputed, from the links they keep
            raw[big] = np.flatnonzero(big)
            in_s, in_p = big[s_acc], big[pa]
            s_acc, s_val, pa, pb = s_acc[in_s], s_val[in_s], pa[in_p], pb[in_p]
        rounds.append(_raw_labels(spark, raw, np.concatenate([s_acc, pa]), np.concatenate([n + s_val, pb])))
        return _dense(raw)

    result = cluster_links(n, degree, w_val, (s_acc, s_val, s_w), (pa, pb, pw), parts, components)
    if stats is not None:
        stats.update(star_rounds=rounds, strong_edges=len(result.star_acc), strong_pairs=len(result.pair_a))
    assert not any(math.isnan(x) for x in result.star_w.tolist())
    return result
