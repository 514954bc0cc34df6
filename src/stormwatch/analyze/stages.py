"""The incremental parts of ``analyze``: scoring first, per-account features, intel matching."""

from __future__ import annotations

import logging
import os
from typing import Any

from stormwatch.analyze import merging
from stormwatch.analyze import params as P
from stormwatch.analyze.features import compute_features
from stormwatch.analyze.intel_matching import Hit, Indicator, load_indicators, load_observations, match_indicators
from stormwatch.analyze.scale import ScoreScale, scale_for
from stormwatch.analyze.scan import scan_events
from stormwatch.result import IntelHit
from stormwatch.store import Store

__all__ = ["hit_strength", "match_intel", "model_version", "score_first", "update_features"]

log = logging.getLogger(__name__)
STAGE = "analyze"
PARALLEL_MIN_EVENTS = 100_000  # fewer events to scan: features in this process
PARTS_PER_WORKER = 4  # account shares per worker process (balances the load, shows progress)


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

    An incremental run merges the new events into the stored aggregates of their accounts
    (``analyze.merging``) and scans whole only the accounts that cannot be merged exactly.
    Returns (events scanned, accounts recomputed).
    """
    repo = store.analysis
    cursor = store.stages.get(STAGE)
    max_seq = repo.max_event_seq()
    state = repo.feature_state(version)
    scale = scale_for(store, version)
    if scale is not None:
        log.info("analyze: %s scores mapped onto the reference scale through its presets %s", version, scale.model)
    if not (full or cursor == 0 or state.stale):
        if max_seq <= cursor:
            return 0, 0
        # merging costs the new events, the conversations they joined and the aggregates of their
        # accounts: less than a scan of every event, whatever share of the accounts they touch
        changed = repo.accounts_with_events_after(cursor)
        merged = merging.merge_new_events(store, version, changed, cursor, max_seq, scale)
        scanned, feats, attrs = merged.scanned, merged.features, merged.attributes
        if merged.rescan:
            n, _, more, more_attrs = _scan_features(store, version, merged.rescan, max_seq, state.known, scale,
                                                    progress)  # fmt: skip
            scanned, feats, attrs = scanned + n, feats + more, attrs + more_attrs
        log.info("analyze: new events merged into %d accounts, %d scanned whole", len(merged.merged),
                 len(merged.rescan))  # fmt: skip
        repo.replace_features(feats, attrs, version, accounts=merged.merged + merged.rescan)
        store.stages.set(STAGE, max_seq)
        return scanned, len(feats)
    workers = feature_workers(store, None, max_seq, state.known)
    if workers > 1:
        scanned, seen_seq, feats, attrs = _features_parallel(store, version, None, workers, progress, scale)
        repo.replace_features(feats, attrs, version, accounts=None)
        store.stages.set(STAGE, max(max_seq, seen_seq))
        return scanned, len(feats)
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_seq, unit="ev", desc="analyze: features", leave=False)
    try:
        cols = scan_events(store, version, None, on_rows=bar.update if bar else None, scale=scale)
    finally:
        if bar is not None:
            bar.close()
    feats, attrs = compute_features(cols)
    repo.replace_features(feats, attrs, version, accounts=None)
    store.stages.set(STAGE, max(max_seq, cols.max_seq))
    return len(cols), len(feats)


def _scan_features(
    store: Store,
    version: str,
    accounts: list[str],
    max_seq: int,
    known: int,
    scale: ScoreScale | None,
    progress: bool = False,
) -> tuple[int, int, list[Any], list[Any]]:
    """Features of ``accounts`` from all their events (in worker processes, with a progress bar, when
    there are many)."""
    workers = feature_workers(store, accounts, max_seq, known)
    if workers > 1:
        return _features_parallel(store, version, accounts, workers, progress, scale)
    cols = scan_events(store, version, accounts, scale=scale)
    feats, attrs = compute_features(cols)
    return len(cols), cols.max_seq, feats, attrs


def feature_workers(store: Store, accounts: list[str] | None, max_seq: int, known: int) -> int:
    """How many processes compute features: one for small scans (a worker costs more than it saves)
    and for stores another process cannot open (in-memory SQLite); else ``STORMWATCH_ANALYZE_WORKERS``
    or up to 4 (the cores there are). Features are per account, so any split gives the same rows."""
    url = str(getattr(store, "url", "") or "")
    if not url or ":memory:" in url or url.rstrip("/").endswith("sqlite:"):
        return 1
    events = max_seq if accounts is None else max_seq * len(accounts) / max(known, 1)
    if events < PARALLEL_MIN_EVENTS:
        return 1
    env = os.environ.get("STORMWATCH_ANALYZE_WORKERS", "").strip()
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            log.warning("STORMWATCH_ANALYZE_WORKERS=%r is not a number: using the default", env)
    return max(1, min(4, os.cpu_count() or 1))


def _features_part(
    url: str, version: str, accounts: list[str], scale: ScoreScale | None = None
) -> tuple[int, int, list[Any], list[Any]]:
    """One worker's share: scan these accounts' events and compute their features (own connection)."""
    from stormwatch.store import open_store

    store = open_store(url, migrate=False)
    try:
        cols = scan_events(store, version, accounts, scale=scale)
    finally:
        store.close()
    feats, attrs = compute_features(cols)
    return len(cols), cols.max_seq, feats, attrs


def _features_parallel(
    store: Store,
    version: str,
    accounts: list[str] | None,
    workers: int,
    progress: bool,
    scale: ScoreScale | None = None,
) -> tuple[int, int, list[Any], list[Any]]:
    """Features of ``accounts`` (all when None) in ``workers`` processes, each scanning a contiguous
    share of the sorted account list; results are joined in account order."""
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from stormwatch.procs import pool_options

    ids = sorted(accounts) if accounts is not None else store.events.accounts_after(0)
    n_parts = max(1, min(len(ids), workers * PARTS_PER_WORKER))
    size = -(-len(ids) // n_parts) if ids else 1
    parts = [ids[i : i + size] for i in range(0, len(ids), size)]
    bar: Any = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(ids), unit="acct", desc="analyze: features", leave=False)
    out: list[tuple[int, int, list[Any], list[Any]] | None] = [None] * len(parts)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(parts)), **pool_options(preload=(__name__,))) as pool:
            futures = {pool.submit(_features_part, store.url, version, part, scale): i for i, part in enumerate(parts)}
            for fut in as_completed(futures):
                i = futures[fut]
                out[i] = fut.result()
                if bar is not None:
                    bar.update(len(parts[i]))
    finally:
        if bar is not None:
            bar.close()
    scanned = seen = 0
    feats: list[Any] = []
    attrs: list[Any] = []
    for part_result in out:
        assert part_result is not None
        n_events, max_seq, part_feats, part_attrs = part_result
        scanned += n_events
        seen = max(seen, max_seq)
        feats += part_feats
        attrs += part_attrs
    return scanned, seen, feats, attrs


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
