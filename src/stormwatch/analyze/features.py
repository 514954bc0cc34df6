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
from stormwatch.analyze.aggregates import SCORE_LEVELS, TTP_SCALE, Agg, aggregate
from stormwatch.analyze.scan import LANGS, Columns

__all__ = ["AccountFeatures", "attribute_rows", "compute_features", "distinct_counts", "features_from", "iso"]

Arr = np.ndarray[Any, Any]
OFFSETS = np.arange(-24, 29) / 2.0  # candidate UTC offsets, half-hour steps, -12 .. +14


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
    aggregate: str | None = None  # analyze.aggregates: what a later run merges new events into


def iso(t: float) -> str:
    return str(np.datetime64(int(t * 1e6), "us")) + "Z"


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
    if len(a["acc"]) == 0:
        return [], []
    accounts = cols.accounts.values
    agg = aggregate(a, len(accounts), accounts, cols.event_ids, cols.convs.values)
    attrs = attribute_rows(cols, a)
    feats = features_from(agg, distinct_counts(accounts, attrs))
    if cols.unscored:  # no aggregate to merge into: the account is read whole once its events are scored
        unscored = {accounts[k] for k in cols.unscored}
        for f in feats:
            if f.account_id in unscored:
                f.aggregate = None
    return feats, attrs


def distinct_counts(accounts: list[str], attrs: list[tuple[str, str, str, int, str, str]]) -> dict[str, Arr]:
    """Distinct IPs, user agents and API keys per account (in ``accounts`` order), from attribute rows."""
    index = {a: i for i, a in enumerate(accounts)}
    out = {k: np.zeros(len(accounts), dtype=np.int64) for k in ("ip", "user_agent", "api_key")}
    for account, kind, *_ in attrs:
        col = out.get(kind)
        if col is not None:
            col[index[account]] += 1
    return out


def features_from(g: Agg, distinct: dict[str, Arr]) -> list[AccountFeatures]:
    """Features of every account of ``g`` with events (their aggregate attached, to be stored)."""
    n_ev = g.n
    # content score: noisy-OR of the top-K scores, shrunk while few events are high
    log_keep = np.zeros(len(n_ev))
    for j in range(P.TOP_K):
        log_keep += np.log1p(-np.minimum(g.topk[:, j], 0.999))
    content = (1.0 - np.exp(log_keep)) * np.minimum(1.0, (g.n_high + 1) / (P.CONTENT_SUPPORT + 1)) ** 0.5
    ttp = g.ttp / TTP_SCALE
    mass = ttp.sum(axis=1, keepdims=True)
    breadth = ((ttp >= P.BREADTH_MIN_MASS) & (ttp >= P.BREADTH_MIN_SHARE * np.maximum(mass, 1e-9))).sum(axis=1)
    offset, office_share = _home_offset(g.hist.astype(np.float64))
    out: list[AccountFeatures] = []
    for i, account in enumerate(g.accounts):
        n = int(n_ev[i])
        if n == 0:
            continue
        lang_counts = {LANGS[j]: int(c) for j, c in enumerate(g.langs[i]) if c and LANGS[j] != "und"}
        total_lang = sum(lang_counts.values()) or 1
        convs = sorted(g.convs[i].values(), key=lambda c: c[0])
        r_rows = [e for c in convs for e in c[2]][:6]
        e_rows = [e for c in convs if c[3] for e in c[4]][:6]
        rephrases = sum(int(c[1]) for c in convs)
        top = g.top[i]
        feats: dict[str, Any] = {
            "volume": {
                "events": n,
                "active_days": len(g.days[i]),
                "per_active_day": round(float(n) / max(1, len(g.days[i])), 2),
                "burst_share": round(float(g.bursts[i]) / max(1, n - 1), 3),
                "weekend_share": round(float(g.weekend[i]) / float(n), 3),
                "distinct_ips": int(distinct["ip"][i]),
                "distinct_user_agents": int(distinct["user_agent"][i]),
                "distinct_api_keys": int(distinct["api_key"][i]),
            },
            "content": {
                "top_events": [{"event_id": eid, "score": round(sc, 4)} for sc, _, eid in top],
                "high_events": int(g.n_high[i]),
                "high_share": round(float(g.n_high[i]) / float(n), 4),
                "score": round(float(content[i]), 4),
                "at_or_above": {f"{thr:g}": int(v) for thr, v in zip(SCORE_LEVELS, g.n_ge[i], strict=True)},
            },
            "ttp_mass": {c: round(float(v), 3) for c, v in zip(P.LLMT, ttp[i], strict=True) if v >= 0.05},
            "hours_utc": [int(x) for x in g.hist_all[i]],
            "home_utc_offset": None if np.isnan(offset[i]) else float(offset[i]),
            "office_share": round(float(office_share[i]), 3),
            "languages": {k: round(v / total_lang, 3) for k, v in lang_counts.items()},
            "refusals": int(g.refusals[i]),
            "rephrases": rephrases,
            "rephrase_events": r_rows,
            "escalations": sum(1 for c in convs if c[3]),
            "escalation_events": e_rows,
        }
        out.append(
            AccountFeatures(
                account_id=account,
                n_events=n,
                first_ts=iso(g.first[i]),
                last_ts=iso(g.last[i]),
                n_high=int(g.n_high[i]),
                max_score=top[0][0] if top else 0.0,
                content_score=float(content[i]),
                ttp_breadth=int(breadth[i]),
                home_utc_offset=feats["home_utc_offset"],
                refusals=int(g.refusals[i]),
                rephrases=rephrases,
                features=feats,
                aggregate=g.state(i),
            )
        )
    return out


def attribute_rows(
    cols: Columns, a: dict[str, Arr], keep: Arr | None = None
) -> list[tuple[str, str, str, int, str, str]]:
    """Observables per account: (account, kind, value, n, first, last), of the rows ``keep`` holds
    (all when None; ``a``: ``cols.arrays()``, not subset)."""
    rows: list[tuple[str, str, str, int, str, str]] = []
    accounts = cols.accounts.values
    for kind, name, values in (
        ("ip", "ip", cols.ips.values),
        ("user_agent", "ua", cols.uas.values),
        ("api_key", "key", cols.keys.values),
    ):
        col = a[name]
        ok = np.flatnonzero(col >= 0 if keep is None else (col >= 0) & keep)
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
        if keep is not None and not keep[r]:
            continue
        key = (int(a["acc"][r]), kind, value[:2000])
        cur = seen.get(key)
        if cur is None:
            seen[key] = [1.0, float(t[r]), float(t[r])]
        else:
            cur[0] += 1
            cur[1] = min(cur[1], float(t[r]))
            cur[2] = max(cur[2], float(t[r]))
    for (ai, kind, value), (n, f, la) in seen.items():
        rows.append((accounts[ai], kind, value, int(n), iso(f), iso(la)))
    return rows
