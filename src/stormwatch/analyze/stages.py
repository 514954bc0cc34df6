"""The incremental parts of ``analyze``: scoring first, per-account features, intel matching."""

from __future__ import annotations

import logging
from typing import Any

from stormwatch.analyze import params as P
from stormwatch.analyze.features import compute_features
from stormwatch.analyze.intel_matching import Hit, Indicator, load_indicators, load_observations, match_indicators
from stormwatch.analyze.scan import scan_events
from stormwatch.result import IntelHit
from stormwatch.store import Store

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
    return store.detections.latest_model_version() or "none"


def update_features(store: Store, version: str, *, full: bool, progress: bool) -> tuple[int, int]:
    """Recompute features of accounts with new events (all when ``full`` or the model changed).

    Returns (events scanned, accounts recomputed).
    """
    repo = store.analysis
    cursor = store.stages.get(STAGE)
    max_seq = repo.max_event_seq()
    state = repo.feature_state(version)
    accounts: list[str] | None = None
    if not (full or cursor == 0 or state.stale):
        if max_seq <= cursor:
            return 0, 0
        changed = repo.accounts_with_events_after(cursor)
        if len(changed) <= FULL_RESCAN_SHARE * max(state.known, 1):
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
    repo.replace_features(feats, attrs, version, accounts=None if accounts is None else cols.accounts.values)
    store.stages.set(STAGE, max(max_seq, cols.max_seq))
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
    store.analysis.replace_hits(
        [
            IntelHit(h.account_id, h.indicator_id, h.kind, h.value, h.n, h.first_ts, h.last_ts, h.degree,
                     hit_strength(by_id[h.indicator_id], h.degree), tuple(by_id[h.indicator_id].intrusion_sets))
            for h in hits
        ]
    )  # fmt: skip
    return hits
