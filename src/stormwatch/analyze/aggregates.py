"""Per-account aggregates of scanned events: what features are computed from, kept between runs.

Every feature of ``analyze.features`` is a function of a few mergeable sums per account: counts,
first / last time and the highest ``seq`` included, score-level counts, hour histograms, languages,
TTP mass (in fixed point, so that sums do not depend on their order), the top scores and the top
events (by score, then ``seq``), the set of active days, the count of bursts (gaps under 5 s between
consecutive events) and, per conversation that contributes to them, its rephrasings after a refusal
and its escalation. An incremental run (``analyze.stages.update_features``) reads only the events
after its cursor, aggregates them the same way and merges them into the stored aggregates; the
conversations the new events joined are recomputed whole from the store (the account index
``events_account_ts`` holds the conversation), since a follow-up turn changes what came before it.
An account whose stored aggregate is missing, from another model version or other parameters, or
whose new events start before its stored last event (a burst or a rephrasing would then sit between
old events) is scanned whole, as a full run would. Merging is exact: ``tests/test_aggregates.py``
compares merged features with features computed from all events at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from stormwatch.analyze import params as P
from stormwatch.analyze.scan import LANGS

__all__ = ["SCORE_LEVELS", "STATE_KEY", "Agg", "aggregate", "conv_contributions", "merge_into", "subset_arrays"]

Arr = np.ndarray[Any, Any]
SCORE_LEVELS = (0.3, 0.5, 0.7, 0.9)  # content.at_or_above: events scoring at least each level
TTP_SCALE = 1_000_000  # TTP mass is summed in millionths (integers: the same sum in any order)
N_TOP = 5  # top events kept per account (evidence)
BURST_S = 5.0
_STATE_VERSION = 1
#: the parameters an aggregate depends on: stored with it, a change means a rescan of the account
_STATE_INPUTS = [_STATE_VERSION, P.HIGH_SCORE, P.TTP_MIN_SCORE, P.TOP_K, list(P.LLMT), list(LANGS), SCORE_LEVELS,
                 TTP_SCALE, N_TOP, BURST_S, P.REPHRASE_WINDOW_S, P.REPHRASE_MIN_SCORE, P.ESCALATION_DELTA,
                 P.ESCALATION_MIN]  # fmt: skip
STATE_KEY = hashlib.blake2b(orjson.dumps(_STATE_INPUTS), digest_size=8).hexdigest()

#: a conversation's contribution: [first seq, rephrasings, evidence ids (<= 3 pairs), escalated, [first, last] ids]
Conv = list[Any]


@dataclass(slots=True)
class Agg:
    """Aggregates of ``accounts`` (struct of arrays, one row per account)."""

    accounts: list[str]
    n: Arr
    first: Arr
    last: Arr
    max_seq: Arr
    n_high: Arr
    n_ge: Arr  # (n, len(SCORE_LEVELS))
    refusals: Arr
    weekend: Arr
    bursts: Arr
    hist: Arr  # (n, 48) weekday half-hour bins (UTC)
    hist_all: Arr  # (n, 48) every day
    langs: Arr  # (n, len(LANGS))
    ttp: Arr  # (n, len(LLMT)) int64, TTP_SCALE units
    topk: Arr  # (n, TOP_K) highest scores, descending, 0-padded
    top: list[list[tuple[float, int, str]]] = field(default_factory=list)  # (score, seq, event id), score > 0
    days: list[list[int]] = field(default_factory=list)  # active days (days since the epoch), sorted
    convs: list[dict[str, Conv]] = field(default_factory=list)  # contributing conversations

    def state(self, i: int) -> str:
        """Account ``i``'s aggregate as stored (``account_features.aggregate``)."""
        doc = {
            "k": STATE_KEY,
            "n": int(self.n[i]),
            "first": float(self.first[i]),
            "last": float(self.last[i]),
            "seq": int(self.max_seq[i]),
            "high": int(self.n_high[i]),
            "ge": self.n_ge[i].tolist(),
            "ref": int(self.refusals[i]),
            "wkend": int(self.weekend[i]),
            "burst": int(self.bursts[i]),
            "hist": self.hist[i].tolist(),
            "hall": self.hist_all[i].tolist(),
            "lang": self.langs[i].tolist(),
            "ttp": self.ttp[i].tolist(),
            "topk": self.topk[i].tolist(),
            "top": [list(x) for x in self.top[i]],
            "days": self.days[i],
            "conv": dict(sorted(self.convs[i].items(), key=lambda kv: (kv[1][0], kv[0]))),  # by first seq
        }
        return orjson.dumps(doc).decode()

    @classmethod
    def empty(cls, accounts: list[str]) -> Agg:
        n = len(accounts)

        def z(*shape: int) -> Arr:
            return np.zeros((n, *shape) if shape else n, dtype=np.int64)

        return cls(accounts, z(), np.full(n, np.inf), np.full(n, -np.inf), z(), z(), z(len(SCORE_LEVELS)), z(), z(),
                   z(), z(48), z(48), z(len(LANGS)), z(len(P.LLMT)), np.zeros((n, P.TOP_K)),
                   [[] for _ in range(n)], [[] for _ in range(n)], [{} for _ in range(n)])  # fmt: skip

    @classmethod
    def from_states(cls, accounts: list[str], states: list[dict[str, Any]]) -> Agg:
        """Aggregates from stored states (parsed), in ``accounts`` order."""
        g = cls.empty(accounts)
        for i, s in enumerate(states):
            g.n[i], g.first[i], g.last[i], g.max_seq[i] = s["n"], s["first"], s["last"], s["seq"]
            g.n_high[i], g.refusals[i], g.weekend[i], g.bursts[i] = s["high"], s["ref"], s["wkend"], s["burst"]
            g.n_ge[i], g.hist[i], g.hist_all[i], g.langs[i] = s["ge"], s["hist"], s["hall"], s["lang"]
            g.ttp[i], g.topk[i] = s["ttp"], s["topk"]
            g.top[i] = [(float(a), int(b), str(c)) for a, b, c in s["top"]]
            g.days[i] = [int(d) for d in s["days"]]
            g.convs[i] = dict(s["conv"])
        return g


def subset_arrays(a: dict[str, Arr], keep: Arr) -> dict[str, Arr]:
    """``Columns.arrays()`` restricted to the rows where ``keep`` is true (category rows renumbered)."""
    out = {k: v[keep] for k, v in a.items() if k not in ("cat_rows", "cats", "text_obs")}
    new_row = np.cumsum(keep) - 1
    ok = keep[a["cat_rows"]] if len(a["cat_rows"]) else np.zeros(0, dtype=bool)
    out["cat_rows"] = new_row[a["cat_rows"][ok]]
    out["cats"] = a["cats"][ok]
    return out


def _group_firsts(keys: Arr) -> Arr:
    return np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]]) if len(keys) else np.zeros(0, dtype=np.int64)


def conv_contributions(a: dict[str, Arr], eids: list[str], conv_values: list[str]) -> dict[tuple[int, str], Conv]:
    """Rephrasings and escalation of every (account, conversation) in ``a`` that has either, keyed by
    (account code, conversation id). Events in a conversation are ordered by time, then ``seq``."""
    out: dict[tuple[int, str], Conv] = {}
    has = np.flatnonzero(a["conv"] >= 0)
    if len(has) == 0:
        return out
    order = has[np.lexsort((a["seq"][has], a["t"][has], a["conv"][has], a["acc"][has]))]
    acc, conv, t, s, ref, seq = (a[k][order] for k in ("acc", "conv", "t", "score", "refused", "seq"))
    same = (acc[1:] == acc[:-1]) & (conv[1:] == conv[:-1])
    starts = np.flatnonzero(np.r_[True, ~same])
    ends = np.r_[starts[1:], len(order)]
    gid = np.cumsum(np.r_[True, ~same]) - 1
    follow = same & (ref[:-1] == 1) & ((t[1:] - t[:-1]) <= P.REPHRASE_WINDOW_S)
    follow &= np.maximum(s[:-1], s[1:]) >= P.REPHRASE_MIN_SCORE
    fidx = np.flatnonzero(follow)
    n_reph = np.bincount(gid[fidx + 1], minlength=len(starts))
    last = ends - 1
    up = ((ends - starts) >= 2) & (s[last] - s[starts] >= P.ESCALATION_DELTA) & (s[last] >= P.ESCALATION_MIN)
    first_seq = np.minimum.reduceat(seq, starts)
    pairs: dict[int, list[str]] = {}
    for i in fidx.tolist():
        rows = pairs.setdefault(int(gid[i + 1]), [])
        if len(rows) < 6:
            rows += [eids[order[i]], eids[order[i + 1]]]
    for g in np.flatnonzero((n_reph > 0) | up).tolist():
        st, en = int(starts[g]), int(last[g])
        esc = [eids[order[st]], eids[order[en]]] if up[g] else []
        out[(int(acc[st]), conv_values[int(conv[st])])] = [
            int(first_seq[g]),
            int(n_reph[g]),
            pairs.get(g, []),
            bool(up[g]),
            esc,
        ]
    return out


def aggregate(a: dict[str, Arr], n_acc: int, accounts: list[str], eids: list[str], conv_values: list[str]) -> Agg:
    """Aggregates of the events in ``a`` (``Columns.arrays()``, rows possibly subset) per account code."""
    g = Agg.empty(accounts)
    acc, t, score, seq = a["acc"], a["t"], a["score"], a["seq"]
    if len(acc) == 0:
        return g
    g.n = np.bincount(acc, minlength=n_acc).astype(np.int64)
    np.minimum.at(g.first, acc, t)
    np.maximum.at(g.last, acc, t)
    np.maximum.at(g.max_seq, acc, seq)
    g.n_high = np.bincount(acc, weights=score >= P.HIGH_SCORE, minlength=n_acc).astype(np.int64)
    g.n_ge = np.stack(
        [np.bincount(acc, weights=score >= thr, minlength=n_acc).astype(np.int64) for thr in SCORE_LEVELS], axis=1
    )
    g.refusals = np.bincount(acc, weights=a["refused"], minlength=n_acc).astype(np.int64)
    # top scores and top events: by account, score descending, then seq
    order = np.lexsort((seq, -score, acc))
    starts = np.searchsorted(acc[order], np.arange(n_acc))
    rank = np.arange(len(order)) - starts[acc[order]]
    for j in range(P.TOP_K):
        rows = order[rank == j]
        g.topk[acc[rows], j] = score[rows]
    for r in order[rank < N_TOP].tolist():
        if score[r] > 0:
            g.top[acc[r]].append((float(score[r]), int(seq[r]), eids[r]))
    if len(a["cat_rows"]):
        w = np.rint(score[a["cat_rows"]][:, None] * a["cats"] * TTP_SCALE).astype(np.int64)
        np.add.at(g.ttp, acc[a["cat_rows"]], w)
    day = np.floor(t / 86400).astype(np.int64)
    weekday = (day + 3) % 7 < 5
    bins = ((t % 86400) // 1800).astype(np.int64)
    g.hist = np.bincount(acc[weekday] * 48 + bins[weekday], minlength=n_acc * 48).reshape(n_acc, 48)
    g.hist_all = np.bincount(acc * 48 + bins, minlength=n_acc * 48).reshape(n_acc, 48)
    g.weekend = np.bincount(acc[~weekday], minlength=n_acc).astype(np.int64)
    d0 = int(day.min())
    width = int(day.max()) - d0 + 1
    ad = np.unique(acc * width + (day - d0))
    for k, d in zip((ad // width).tolist(), (ad % width + d0).tolist(), strict=True):
        g.days[k].append(d)
    ot = np.lexsort((t, acc))
    same = acc[ot][1:] == acc[ot][:-1]
    g.bursts = np.bincount(acc[ot][1:][same & (np.diff(t[ot]) < BURST_S)], minlength=n_acc).astype(np.int64)
    g.langs = np.bincount(acc * len(LANGS) + a["lang"], minlength=n_acc * len(LANGS)).reshape(n_acc, len(LANGS))
    for (k, c), contribution in conv_contributions(a, eids, conv_values).items():
        g.convs[k][c] = contribution
    return g


def _merge_top(x: list[tuple[float, int, str]], y: list[tuple[float, int, str]]) -> list[tuple[float, int, str]]:
    by_seq = {seq: (score, seq, eid) for score, seq, eid in (*x, *y)}
    return sorted(by_seq.values(), key=lambda top: (-top[0], top[1]))[:N_TOP]


def merge_into(old: Agg, i: int, new: Agg, j: int, convs: dict[str, Conv], touched: set[str]) -> None:
    """Add ``new``'s account ``j`` (events all after ``old``'s account ``i``'s last one) into it;
    ``touched`` conversations are replaced by ``convs`` (recomputed over all their events)."""
    old.bursts[i] += new.bursts[j] + int(old.n[i] > 0 and new.first[j] - old.last[i] < BURST_S)
    for name in ("n", "n_high", "refusals", "weekend"):
        getattr(old, name)[i] += getattr(new, name)[j]
    for name in ("n_ge", "hist", "hist_all", "langs", "ttp"):
        getattr(old, name)[i] += getattr(new, name)[j]
    old.first[i] = min(old.first[i], new.first[j])
    old.last[i] = max(old.last[i], new.last[j])
    old.max_seq[i] = max(old.max_seq[i], new.max_seq[j])
    old.topk[i] = np.sort(np.r_[old.topk[i], new.topk[j]])[::-1][: P.TOP_K]
    old.top[i] = _merge_top(old.top[i], new.top[j])
    old.days[i] = sorted(set(old.days[i]) | set(new.days[j]))
    kept = {c: v for c, v in old.convs[i].items() if c not in touched}
    kept.update(convs)
    old.convs[i] = kept
