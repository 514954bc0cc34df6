"""Merge new events into the stored per-account aggregates (``analyze.aggregates``).

Reads the events after the cursor (a ``seq`` range: no per-account scan), the stored aggregates of
the accounts they belong to, and the conversations the new events joined (all their events, found
through the account index, which holds the conversation: a follow-up turn can make an earlier
refusal a rephrasing, or a conversation an escalation). Accounts
that cannot be merged exactly are returned to be scanned whole (``MergeResult.rescan``): no usable
aggregate, new events older than the stored last one, or a new event without a score under the
model version (``analyze --no-score`` before the scoring stage ran: such an account keeps no
aggregate, so that it is read whole again once the scores exist, as it was before aggregates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from stormwatch.analyze.aggregates import STATE_KEY, Agg, aggregate, conv_contributions, merge_into, subset_arrays
from stormwatch.analyze.features import AccountFeatures, attribute_rows, distinct_counts, features_from
from stormwatch.analyze.scale import ScoreScale
from stormwatch.analyze.scan import scan_events
from stormwatch.store import Store

__all__ = ["MergeResult", "merge_new_events"]

AttrRow = tuple[str, str, str, int, str, str]


@dataclass(slots=True)
class MergeResult:
    scanned: int  # events read: new ones and those of the conversations they joined
    features: list[AccountFeatures]
    attributes: list[AttrRow]
    merged: list[str]  # accounts whose aggregates took the new events
    rescan: list[str]  # accounts to scan whole (no usable aggregate, late or unscored new events)


def _states(store: Store, accounts: list[str], version: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for account, text in store.analysis.aggregates(accounts, version).items():
        try:
            state = orjson.loads(text)
        except orjson.JSONDecodeError:
            continue  # rescanned, and rewritten
        if isinstance(state, dict) and state.get("k") == STATE_KEY:
            out[account] = state
    return out


def _merge_attributes(stored: list[AttrRow], new: list[AttrRow], order: list[str]) -> list[AttrRow]:
    """Stored and new observable rows of the same accounts as one row per (account, kind, value)."""
    rows: dict[tuple[str, str, str], list[Any]] = {}
    for account, kind, value, n, first, last in (*stored, *new):
        cur = rows.get((account, kind, value))
        if cur is None:
            rows[(account, kind, value)] = [n, first, last]
        else:  # ISO timestamps of one format: their order is the order of time
            cur[0] += n
            cur[1] = min(cur[1], first) if cur[1] and first else (cur[1] or first)
            cur[2] = max(cur[2], last)
    rank = {a: i for i, a in enumerate(order)}
    merged = [(a, k, v, int(n), f, la) for (a, k, v), (n, f, la) in rows.items()]
    merged.sort(key=lambda attr: rank[attr[0]])  # stable: stored rows first, in their order
    return merged


def merge_new_events(
    store: Store, version: str, accounts: list[str], after: int, upto: int, scale: ScoreScale | None
) -> MergeResult:
    """Features of ``accounts`` (those with events in ``after < seq <= upto``) from their stored
    aggregates and those events."""
    states = _states(store, accounts, version)
    cols = scan_events(store, version, None, after=after, upto=upto, scale=scale)
    a = cols.arrays()
    names = cols.accounts.values
    known_seq = np.array([states[n]["seq"] if n in states else -1 for n in names], dtype=np.int64)
    keep = a["seq"] > known_seq[a["acc"]] if len(names) else np.zeros(0, dtype=bool)
    sub = subset_arrays(a, keep)
    rows = np.flatnonzero(keep)
    new = aggregate(sub, len(names), names, [cols.event_ids[r] for r in rows.tolist()], cols.convs.values)
    code = {n: i for i, n in enumerate(names)}
    merged: list[str] = []
    rescan: list[str] = []
    unscored = {names[k] for k in cols.unscored}
    for account in accounts:
        state, j = states.get(account), code.get(account)
        late = j is not None and new.n[j] and new.first[j] < state["last"] if state is not None else False
        if state is None or late or account in unscored:
            rescan.append(account)
        else:
            merged.append(account)
    if not merged:
        return MergeResult(len(cols), [], [], [], rescan)
    old = Agg.from_states(merged, [states[m] for m in merged])
    # the conversations the merged accounts' new events joined, recomputed over all their events
    merged_codes = np.zeros(len(names) + 1, dtype=bool)
    merged_codes[[code[m] for m in merged if m in code]] = True
    touched: dict[str, set[str]] = {}
    conv_rows = np.flatnonzero((sub["conv"] >= 0) & merged_codes[sub["acc"]])
    for k, c in zip(sub["acc"][conv_rows].tolist(), sub["conv"][conv_rows].tolist(), strict=True):
        touched.setdefault(names[k], set()).add(cols.convs.values[c])
    scanned = len(cols)
    recomputed: dict[str, dict[str, list[Any]]] = {}
    if touched:
        conv_cols = scan_events(store, version, None, conversations=touched, scale=scale)
        scanned += len(conv_cols)
        found = conv_contributions(conv_cols.arrays(), conv_cols.event_ids, conv_cols.convs.values)
        for (k, c), contribution in found.items():
            account = conv_cols.accounts.values[k]
            if c in touched.get(account, ()):
                recomputed.setdefault(account, {})[c] = contribution
    for i, account in enumerate(merged):
        j = code.get(account)
        if j is not None and new.n[j]:
            merge_into(old, i, new, j, recomputed.get(account, {}), touched.get(account, set()))
    keep_merged = keep & merged_codes[a["acc"]] if len(names) else keep
    attrs = _merge_attributes(
        [(r.account_id, r.kind, r.value, r.n, r.first_ts or "", r.last_ts or "")
         for r in store.analysis.attributes(account_ids=merged, ordered=False)],
        attribute_rows(cols, a, keep_merged),
        merged,
    )  # fmt: skip
    return MergeResult(scanned, features_from(old, distinct_counts(merged, attrs)), attrs, merged, rescan)
