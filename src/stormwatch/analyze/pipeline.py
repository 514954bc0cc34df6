"""``analyze(store)``: score new events, update account features, match intel, link, attribute, judge.

The last step is store-free: the account graph is loaded from the store
(``store.analysis.load_graph()``), :func:`~stormwatch.analyze.judge.analyze_graph` turns it into an
:class:`~stormwatch.result.AnalysisResult`, and ``store.analysis.write(result)`` replaces the stored one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from stormwatch.analyze.exemptions import load_exemptions
from stormwatch.analyze.judge import analyze_graph
from stormwatch.analyze.settings import AnalyzeSettings
from stormwatch.analyze.stages import match_intel, model_version, score_first, update_features
from stormwatch.store import Store

__all__ = ["AnalyzeSummary", "analyze"]


@dataclass(slots=True)
class AnalyzeSummary:
    model_version: str = ""
    scoring: dict[str, Any] | None = None
    events_scanned: int = 0
    accounts_recomputed: int = 0
    accounts: int = 0
    intel_hits: int = 0
    intel_hit_accounts: int = 0
    clusters: int = 0
    enforce: int = 0
    review: int = 0
    attributed: int = 0
    active_accounts: int = 0
    review_budget: int = 0  # accounts the review budget covers
    review_budget_rule: str = ""  # e.g. "0.5% of active accounts"
    review_within_budget: int = 0
    exempt: int = 0
    exempt_held_back: int = 0  # exempt accounts analysis would otherwise have enforced
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def analyze(
    store: Store,
    *,
    full: bool = False,
    progress: bool = True,
    score: bool = True,
    version: str | None = None,
    settings: AnalyzeSettings | None = None,
) -> AnalyzeSummary:
    """Run the account analysis. Incremental unless ``full``: only accounts with new events get
    their features recomputed; intel matching, linking, attribution and risk always run globally.

    ``score=False`` skips the scoring stage and, unless ``version`` names one, reads the detections
    of the most recently scored model version. ``settings`` give the review budget and the exemption
    files (default: 0.5 % of active accounts, no exemptions)."""
    settings = settings or AnalyzeSettings()
    exemptions = load_exemptions(settings.exemptions)  # a bad file fails before any work
    out = AnalyzeSummary(review_budget_rule=settings.review_budget.describe())
    t0 = time.perf_counter()
    if score:
        out.scoring = score_first(store, progress)
    t1 = time.perf_counter()
    out.model_version = version or model_version(store, active=score)
    try:
        out.events_scanned, out.accounts_recomputed = update_features(
            store, out.model_version, full=full, progress=progress
        )
        t2 = time.perf_counter()
        out.intel_hits = len(match_intel(store))
        t3 = time.perf_counter()
        result = analyze_graph(
            store.analysis.load_graph(), out.model_version, review_budget=settings.review_budget, exemptions=exemptions
        )
        store.analysis.write(result)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    t4 = time.perf_counter()
    n = result.counts()
    out.accounts, out.clusters, out.enforce, out.review = n["accounts"], n["clusters"], n["enforce"], n["review"]
    out.attributed, out.intel_hit_accounts = n["attributed"], n.get("intel_hit_accounts", 0)
    out.active_accounts, out.review_budget = n.get("active_accounts", 0), n.get("review_budget", 0)
    out.review_within_budget, out.exempt = n.get("review_within_budget", 0), n.get("exempt", 0)
    out.exempt_held_back = n.get("exempt_held_back", 0)
    out.seconds = {
        "scoring": round(t1 - t0, 2),
        "features": round(t2 - t1, 2),
        "intel": round(t3 - t2, 2),
        "link_attribute_judge": round(t4 - t3, 2),
        "total": round(t4 - t0, 2),
    }
    return out
