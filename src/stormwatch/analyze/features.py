"""Per-account features from scanned events, aggregated with numpy.

For each account: volume and rhythm (events, active days, events per active day, burst share,
weekend share), content (top scores with event ids, high-scoring count, noisy-OR content score,
TTP mass and breadth), active hours (48 half-hour UTC bins) and an estimated home UTC offset,
languages, refusals, rephrasing after refusal, conversation escalation. Also the account's
infrastructure observables (request IPs, user agents, API keys, URLs / domains / e-mails named in
its requests) with counts and first/last use, which feed linking and intel matching.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stormwatch.analyze import params as P
from stormwatch.analyze.scan import LANGS, Columns

__all__ = ["AccountFeatures", "compute_features", "iso"]

Arr = np.ndarray[Any, Any]
OFFSETS = np.arange(-24, 29) / 2.0  # candidate UTC offsets, half-hour steps, -12 .. +14
SCORE_LEVELS = (0.3, 0.5, 0.7, 0.9)  # content.at_or_above: events scoring at least each level


@dataclass(slots=True)
class AccountFeatures:
    account_id: str
    n_events: int
    first_ts: str
    last_ts: str
    n_high: int
    max_score: float
    content_score: float
    ttp_breadth: int
    home_utc_offset: float | None
    refusals: int
    rephrases: int
    features: dict[str, Any]


def iso(t: float) -> str:
    return str(np.datetime64(int(t * 1e6), "us")) + "Z"


def _group_bounds(keys: Arr) -> tuple[Arr, Arr]:
    """Start and end index of each run of equal values in a sorted array."""
    if len(keys) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    return starts, ends


def _conversation_signals(a: dict[str, Arr], n_acc: int) -> tuple[Arr, Arr, list[list[int]], list[list[int]]]:
    """(rephrases, escalations, rephrase event rows, escalation event rows) per account."""
    rephr = np.zeros(n_acc, dtype=np.int64)
    escal = np.zeros(n_acc, dtype=np.int64)
    r_rows: list[list[int]] = [[] for _ in range(n_acc)]
    e_rows: list[list[int]] = [[] for _ in range(n_acc)]
    has = np.flatnonzero(a["conv"] >= 0)
    if len(has) == 0:
        return rephr, escal, r_rows, e_rows
    order = has[np.lexsort((a["t"][has], a["conv"][has]))]
    conv, t, s, ref, acc = a["conv"][order], a["t"][order], a["score"][order], a["refused"][order], a["acc"][order]
    same = conv[1:] == conv[:-1]
    follow = same & (ref[:-1] == 1) & ((t[1:] - t[:-1]) <= P.REPHRASE_WINDOW_S)
    follow &= np.maximum(s[:-1], s[1:]) >= P.REPHRASE_MIN_SCORE
    idx = np.flatnonzero(follow)
    np.add.at(rephr, acc[idx + 1], 1)
    # evidence rows: the first three pairs of each account (a per-account cap, so the rows do not
    # depend on which other accounts were scanned with it)
    for i in idx.tolist():
        rows = r_rows[acc[i + 1]]
        if len(rows) < 6:
            rows += [int(order[i]), int(order[i + 1])]
    starts, ends = _group_bounds(conv)
    long = (ends - starts) >= 2
    st, en = starts[long], ends[long] - 1
    up = (s[en] - s[st] >= P.ESCALATION_DELTA) & (s[en] >= P.ESCALATION_MIN)
    np.add.at(escal, acc[st[up]], 1)
    for i, j in zip(st[up].tolist(), en[up].tolist(), strict=True):
        rows = e_rows[acc[i]]
        if len(rows) < 6:
            rows += [int(order[i]), int(order[j])]
    return rephr, escal, r_rows, e_rows


def _home_offset(hist: Arr) -> tuple[Arr, Arr]:
    """Best UTC offset per account (assuming a working-day rhythm) and the share it explains."""
    lo, hi = int(P.OFFICE_HOURS[0] * 2), int(P.OFFICE_HOURS[1] * 2)
    window = np.zeros(48)
    window[lo:hi] = 1.0
    total = hist.sum(axis=1)
    best = np.full(hist.shape[0], np.nan)
    share = np.zeros(hist.shape[0])
    for off in OFFSETS:
        # local bin l corresponds to UTC bin (l - 2*off) mod 48
        shifted = np.roll(window, -int(off * 2))
        val = hist @ shifted / np.maximum(total, 1)
        better = val > share
        share[better] = val[better]
        best[better] = off
    best[total < 5] = np.nan
    return best, share


def compute_features(cols: Columns) -> tuple[list[AccountFeatures], list[tuple[str, str, str, int, str, str]]]:
    """Aggregate scanned events into features and attribute rows (account, kind, value, n, first, last)."""
    a = cols.arrays()
    n_acc = len(cols.accounts.values)
    acc, t, score = a["acc"], a["t"], a["score"]
    if len(acc) == 0:
        return [], []
    n_ev = np.bincount(acc, minlength=n_acc)
    first = np.full(n_acc, np.inf)
    last = np.full(n_acc, -np.inf)
    np.minimum.at(first, acc, t)
    np.maximum.at(last, acc, t)
    high = score >= P.HIGH_SCORE
    n_high = np.bincount(acc, weights=high, minlength=n_acc).astype(np.int64)
    # events at or above several score levels (the account model reads the distribution)
    n_ge = {
        f"{thr:g}": np.bincount(acc, weights=score >= thr, minlength=n_acc).astype(np.int64) for thr in SCORE_LEVELS
    }
    refusals = np.bincount(acc, weights=a["refused"], minlength=n_acc).astype(np.int64)
    # top scores per account
    order = np.lexsort((-score, acc))
    starts = np.searchsorted(acc[order], np.arange(n_acc))
    rank = np.arange(len(order)) - starts[acc[order]]
    top = order[rank < 5]
    top_by_acc: list[list[int]] = [[] for _ in range(n_acc)]
    for r in top:
        if score[r] > 0:
            top_by_acc[acc[r]].append(int(r))
    topk = order[rank < P.TOP_K]
    log_keep = np.bincount(acc[topk], weights=np.log1p(-np.minimum(score[topk], 0.999)), minlength=n_acc)
    content = (1.0 - np.exp(log_keep)) * np.minimum(1.0, (n_high + 1) / (P.CONTENT_SUPPORT + 1)) ** 0.5
    # TTP mass
    ttp = np.zeros((n_acc, len(P.LLMT)))
    if len(a["cat_rows"]):
        w = score[a["cat_rows"]][:, None] * a["cats"]
        np.add.at(ttp, acc[a["cat_rows"]], w)
    mass = ttp.sum(axis=1, keepdims=True)
    breadth = ((ttp >= P.BREADTH_MIN_MASS) & (ttp >= P.BREADTH_MIN_SHARE * np.maximum(mass, 1e-9))).sum(axis=1)
    # time: half-hour bins on weekdays, weekday/weekend split, active days, bursts
    day = np.floor(t / 86400).astype(np.int64)
    weekday = (day + 3) % 7 < 5
    bins = ((t % 86400) // 1800).astype(np.int64)
    hist = np.bincount(acc[weekday] * 48 + bins[weekday], minlength=n_acc * 48).reshape(n_acc, 48)
    hist_all = np.bincount(acc * 48 + bins, minlength=n_acc * 48).reshape(n_acc, 48)
    offset, office_share = _home_offset(hist.astype(np.float64))
    weekend = np.bincount(acc[~weekday], minlength=n_acc)
    ad_keys = np.unique(acc * 100_000 + (day - day.min()))
    active_days = np.bincount(ad_keys // 100_000, minlength=n_acc)
    ot = np.lexsort((t, acc))
    gaps = np.diff(t[ot])
    same = acc[ot][1:] == acc[ot][:-1]
    bursts = np.bincount(acc[ot][1:][same & (gaps < 5.0)], minlength=n_acc)
    langs = np.bincount(acc * len(LANGS) + a["lang"], minlength=n_acc * len(LANGS)).reshape(n_acc, len(LANGS))
    rephr, escal, r_rows, e_rows = _conversation_signals(a, n_acc)
    distinct = {}
    for name in ("ip", "ua", "key"):
        col = a[name]
        ok = col >= 0
        distinct[name] = np.bincount(np.unique(acc[ok] * (col.max() + 2) + col[ok]) // (col.max() + 2), minlength=n_acc)

    ev = cols.event_ids
    out: list[AccountFeatures] = []
    for i, account in enumerate(cols.accounts.values):
        if n_ev[i] == 0:
            continue
        lang_counts = {LANGS[j]: int(c) for j, c in enumerate(langs[i]) if c and LANGS[j] != "und"}
        total_lang = sum(lang_counts.values()) or 1
        feats: dict[str, Any] = {
            "volume": {
                "events": int(n_ev[i]),
                "active_days": int(active_days[i]),
                "per_active_day": round(float(n_ev[i]) / max(1, int(active_days[i])), 2),
                "burst_share": round(float(bursts[i]) / max(1, int(n_ev[i]) - 1), 3),
                "weekend_share": round(float(weekend[i]) / float(n_ev[i]), 3),
                "distinct_ips": int(distinct["ip"][i]),
                "distinct_user_agents": int(distinct["ua"][i]),
                "distinct_api_keys": int(distinct["key"][i]),
            },
            "content": {
                "top_events": [{"event_id": ev[r], "score": round(float(score[r]), 4)} for r in top_by_acc[i]],
                "high_events": int(n_high[i]),
                "high_share": round(float(n_high[i]) / float(n_ev[i]), 4),
                "score": round(float(content[i]), 4),
                "at_or_above": {k: int(v[i]) for k, v in n_ge.items()},
            },
            "ttp_mass": {c: round(float(v), 3) for c, v in zip(P.LLMT, ttp[i], strict=True) if v >= 0.05},
            "hours_utc": [int(x) for x in hist_all[i]],
            "home_utc_offset": None if np.isnan(offset[i]) else float(offset[i]),
            "office_share": round(float(office_share[i]), 3),
            "languages": {k: round(v / total_lang, 3) for k, v in lang_counts.items()},
            "refusals": int(refusals[i]),
            "rephrases": int(rephr[i]),
            "rephrase_events": [ev[r] for r in r_rows[i]],
            "escalations": int(escal[i]),
            "escalation_events": [ev[r] for r in e_rows[i]],
        }
        out.append(
            AccountFeatures(
                account_id=account,
                n_events=int(n_ev[i]),
                first_ts=iso(first[i]),
                last_ts=iso(last[i]),
                n_high=int(n_high[i]),
                max_score=float(score[top_by_acc[i][0]]) if top_by_acc[i] else 0.0,
                content_score=float(content[i]),
                ttp_breadth=int(breadth[i]),
                home_utc_offset=feats["home_utc_offset"],
                refusals=int(refusals[i]),
                rephrases=int(rephr[i]),
                features=feats,
            )
        )
    return out, _attribute_rows(cols, a)


def _attribute_rows(cols: Columns, a: dict[str, Arr]) -> list[tuple[str, str, str, int, str, str]]:
    rows: list[tuple[str, str, str, int, str, str]] = []
    accounts = cols.accounts.values
    for kind, name, values in (
        ("ip", "ip", cols.ips.values),
        ("user_agent", "ua", cols.uas.values),
        ("api_key", "key", cols.keys.values),
    ):
        col = a[name]
        ok = np.flatnonzero(col >= 0)
        if len(ok) == 0:
            continue
        width = col.max() + 1
        keys = a["acc"][ok] * width + col[ok]
        uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        lo = np.full(len(uniq), np.inf)
        hi = np.full(len(uniq), -np.inf)
        np.minimum.at(lo, inv, a["t"][ok])
        np.maximum.at(hi, inv, a["t"][ok])
        for k, c, f, la in zip(uniq.tolist(), counts.tolist(), lo.tolist(), hi.tolist(), strict=True):
            rows.append((accounts[k // width], kind, values[k % width], int(c), iso(f), iso(la)))
    seen: dict[tuple[int, str, str], list[float]] = {}
    t = a["t"]
    for r, kind, value in cols.text_obs:
        key = (int(a["acc"][r]), kind, value)
        cur = seen.get(key)
        if cur is None:
            seen[key] = [1.0, float(t[r]), float(t[r])]
        else:
            cur[0] += 1
            cur[1] = min(cur[1], float(t[r]))
            cur[2] = max(cur[2], float(t[r]))
    for (ai, kind, value), (n, f, la) in seen.items():
        rows.append((accounts[ai], kind, value[:2000], int(n), iso(f), iso(la)))
    return rows
