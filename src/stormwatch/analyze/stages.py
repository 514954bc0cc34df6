"""The incremental parts of ``analyze``: scoring first, per-account features, intel matching."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from stormwatch.analyze import params as P
from stormwatch.analyze.features import compute_features
from stormwatch.analyze.intel_matching import Hit, Indicator, load_indicators, load_observations, match_indicators
from stormwatch.analyze.scan import scan_events
from stormwatch.store import Store
from stormwatch.store.sql import now_iso

__all__ = ["hit_strength", "match_intel", "model_version", "score_first", "update_features"]

log = logging.getLogger(__name__)
STAGE = "analyze"
FULL_RESCAN_SHARE = 0.3  # more accounts than this share changed: one sequential scan is cheaper


def score_first(store: Store, progress: bool) -> dict[str, Any] | None:
    """Run the scoring stage (``stormwatch.score.scoring``) so detections are current."""
    try:
        from stormwatch.score.scoring import score_new_events
    except ImportError:
        log.warning("stormwatch.score.scoring is not installed: using the detections already stored")
        return None
    summary = score_new_events(store, progress=progress)
    to_dict = getattr(summary, "to_dict", None)
    if callable(to_dict):
        result: dict[str, Any] = to_dict()
        return result
    return {"summary": str(summary)}


def model_version(store: Store, *, active: bool = True) -> str:
    """The active model version (scoring stage), else the most recently scored one."""
    if active:
        try:
            from stormwatch.score.scoring import active_model_version
        except ImportError:
            pass
        else:
            return str(active_model_version(store))
    rows = store.query("SELECT model_version FROM detections ORDER BY scored_at DESC LIMIT 1")
    return str(rows[0][0]) if rows else "none"


def _cursor(store: Store) -> int:
    rows = store.query("SELECT last_seq FROM stage_cursors WHERE stage = ? AND key = ?", (STAGE, "events"))
    return int(rows[0][0]) if rows else 0


def _set_cursor(store: Store, seq: int) -> None:
    store.execute("DELETE FROM stage_cursors WHERE stage = ? AND key = ?", (STAGE, "events"))
    store.execute(
        "INSERT INTO stage_cursors (stage, key, last_seq, updated_at) VALUES (?, ?, ?, ?)",
        (STAGE, "events", seq, now_iso()),
    )


def _delete_for(store: Store, table: str, accounts: Sequence[str]) -> None:
    for i in range(0, len(accounts), 500):
        part = list(accounts[i : i + 500])
        store.execute(f"DELETE FROM {table} WHERE account_id IN ({', '.join('?' for _ in part)})", part)


def update_features(store: Store, version: str, *, full: bool, progress: bool) -> tuple[int, int]:
    """Recompute features of accounts with new events (all when ``full`` or the model changed).

    Returns (events scanned, accounts recomputed).
    """
    cursor = _cursor(store)
    max_seq = int(store.query("SELECT COALESCE(MAX(seq), 0) FROM events")[0][0])
    stale = store.query("SELECT COUNT(*) FROM account_features WHERE model_version <> ?", (version,))[0][0]
    known = int(store.query("SELECT COUNT(*) FROM account_features")[0][0])
    accounts: list[str] | None = None
    if not (full or cursor == 0 or stale):
        if max_seq <= cursor:
            return 0, 0
        changed = [r[0] for r in store.query("SELECT DISTINCT account_id FROM events WHERE seq > ?", (cursor,))]
        if len(changed) <= FULL_RESCAN_SHARE * max(known, 1):
            accounts = sorted(changed)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        total = None if accounts is not None else max_seq
        bar = tqdm(total=total, unit="ev", desc="analyze: features", leave=False)
    try:
        cols = scan_events(store, version, accounts, on_rows=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    feats, attrs = compute_features(cols)
    ids = cols.accounts.values
    if accounts is None:
        store.execute("DELETE FROM account_features")
        store.execute("DELETE FROM account_attributes")
    else:
        _delete_for(store, "account_features", ids)
        _delete_for(store, "account_attributes", ids)
    now = now_iso()
    store.executemany(
        "INSERT INTO account_features (account_id, n_events, first_ts, last_ts, n_high, max_score, content_score,"
        " ttp_breadth, home_utc_offset, refusals, rephrases, features, model_version, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                f.account_id,
                f.n_events,
                f.first_ts,
                f.last_ts,
                f.n_high,
                f.max_score,
                f.content_score,
                f.ttp_breadth,
                f.home_utc_offset,
                f.refusals,
                f.rephrases,
                orjson.dumps(f.features).decode(),
                version,
                now,
            )
            for f in feats
        ],
    )
    for i in range(0, len(attrs), 50_000):
        store.executemany(
            "INSERT INTO account_attributes (account_id, kind, value, n, first_ts, last_ts) VALUES (?, ?, ?, ?, ?, ?)",
            attrs[i : i + 50_000],
        )
    _set_cursor(store, max(max_seq, cols.max_seq))
    return len(cols), len(feats)


def hit_strength(ind: Indicator, degree: int) -> float:
    """confidence/100 x rarity of the observable x type factor (shared-infrastructure types count less)."""
    conf = (ind.confidence if ind.confidence is not None else P.DEFAULT_INDICATOR_CONFIDENCE) / 100.0
    rare = 1.0 if degree <= P.RARE_DEGREE else (P.RARE_DEGREE / degree) ** P.RARITY_POWER
    typ = P.WEAK_INDICATOR_FACTOR if set(ind.types) & P.WEAK_INDICATOR_TYPES else 1.0
    return round(min(0.99, max(0.0, conf * rare * typ)), 4)


def match_intel(store: Store) -> list[Hit]:
    """Match every live indicator against every account's observables; rewrite ``intel_hits``."""
    indicators = load_indicators(store)
    hits = match_indicators(indicators, load_observations(store)) if indicators else []
    by_id = {i.id: i for i in indicators}
    store.execute("DELETE FROM intel_hits")
    if hits:
        store.executemany(
            "INSERT INTO intel_hits (account_id, indicator_id, kind, value, n, first_ts, last_ts, degree, strength,"
            " intrusion_sets) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    h.account_id,
                    h.indicator_id,
                    h.kind,
                    h.value,
                    h.n,
                    h.first_ts,
                    h.last_ts,
                    h.degree,
                    hit_strength(by_id[h.indicator_id], h.degree),
                    orjson.dumps(list(by_id[h.indicator_id].intrusion_sets)).decode(),
                )
                for h in hits
            ],
        )
    return hits
