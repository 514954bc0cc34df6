"""``analyze(store)``: score new events, update account features, match intel, link, attribute, judge.

The last step is store-free: the account graph is loaded from the store
(``store.analysis.load_graph()``) and :func:`~stormwatch.analyze.judge.analyze_graph` turns it into an
:class:`~stormwatch.result.AnalysisResult`. A full run (``--full``, the first run, a changed global
input) replaces the stored result (``store.analysis.write``); otherwise only the link components
whose inputs changed are judged again and upserted (``store.analysis.write_changes``, see
:mod:`stormwatch.analyze.incremental`). One run at a time: the analysis lock
(``store.analysis.lock``) is taken before the stage cursor is read and held until the commit.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from stormwatch.analyze.account_model import resolve_model
from stormwatch.analyze.cohorts import find_cohorts, judgement_labels, top_scores
from stormwatch.analyze.exemptions import load_exemptions
from stormwatch.analyze.incremental import GLOBAL_KEY, account_fingerprints, global_fingerprint, hit_refs, plan_keep
from stormwatch.analyze.judge import analyze_graph, link_graph
from stormwatch.analyze.scale import describe, scale_for
from stormwatch.analyze.settings import AnalyzeSettings
from stormwatch.analyze.stages import match_intel, model_version, score_first, update_features
from stormwatch.store import Store

__all__ = ["AnalyzeSummary", "analyze"]


@dataclass(slots=True)
class AnalyzeSummary:
    model_version: str = ""
    scoring: dict[str, Any] | None = None
    #: how the model's request scores were mapped onto the reference scale (``analyze.scale``); None:
    #: used as they are (the shipped first tier, or a version the registry does not know)
    score_scale: dict[str, Any] | None = None
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
    raised_by_model: int = 0  # accounts at review that the account model raised from none
    review_likely_beyond_budget: int = 0  # outside the budget, account-model probability >= 0.5
    mode: str = ""  # "full" or "incremental" (the judgement step)
    full_reason: str = ""  # why the judgement step ran in full
    accounts_judged: int = 0  # accounts attributed and judged again
    components_judged: int = 0  # ... in this many link components (those a cohort joins count once)
    seconds: dict[str, float] = field(default_factory=dict)
    #: CPU seconds of this process per stage (all its threads; the scoring workers not included):
    #: comparable across runs on a busy machine, where wall seconds are not
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_step(store: Store, out: AnalyzeSummary, *, full: bool, judge_kw: dict[str, Any]) -> dict[str, int]:
    """Link the whole graph, then judge again only the components whose fingerprint changed
    (``analyze.incremental``) and upsert them; everything when ``full``, on the first run, or when a
    global input changed. Returns the result's counts. Does not commit."""
    repo = store.analysis
    inp = repo.load_graph()
    g, link = link_graph(inp)
    cohorts = find_cohorts(inp, g.index, top_scores(inp.states, g.index, len(g.accounts)))
    units = judgement_labels(link.labels, cohorts)  # link components joined through cohorts
    judge_kw = {**judge_kw, "cohorts": cohorts}
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    active = resolve_model(judge_kw.get("account_model"))
    models = [active.version if active is not None else "off", *judge_kw.get("account_model_shadow", ())]
    gfp = global_fingerprint(inp, g, out.model_version, models)
    fps = account_fingerprints(inp, g, link, judge_kw.get("exemptions", ()), date.fromisoformat(now[:10]), units)
    stored_g = repo.state(GLOBAL_KEY)
    stored = {} if full or stored_g != gfp else repo.fingerprints()
    if stored and len(stored) != repo.judgement_count():  # the stored result was changed behind our back
        stored, stored_g = {}, "result changed"
    if full or not stored:
        out.mode = "full"
        out.full_reason = (
            "--full"
            if full
            else {None: "first run", "result changed": "stored result changed"}.get(stored_g, "global inputs changed")
        )
        result = analyze_graph(inp, out.model_version, now=now, graph=g, link=link, **judge_kw)
        repo.write(result)
        repo.put_fingerprints(dict(zip(g.accounts, fps, strict=True)), replace=True)
        repo.set_state(GLOBAL_KEY, gfp)
        out.accounts_judged = len(g.accounts)
        out.components_judged = int(np.unique(units).size)
        return result.counts()
    out.mode = "incremental"
    queued = repo.judgements_at(("review", "enforce"))
    keep = plan_keep(g.accounts, units, fps, stored, queued)
    gone = sorted(set(stored) - set(g.index))
    part = analyze_graph(inp, out.model_version, now=now, graph=g, link=link, keep=keep, **judge_kw)
    judged = [a for a, k in zip(g.accounts, keep.tolist(), strict=True) if k]
    repo.write_changes(
        part.judgements, part.clusters, part.links, remove_accounts=gone,
        remove_clusters=sorted(repo.cluster_ids_of([*judged, *gone])),
    )  # fmt: skip
    repo.put_fingerprints({a: fps[g.index[a]] for a in judged}, remove=gone)
    out.accounts_judged = len(judged)
    out.components_judged = int(np.unique(units[keep]).size)
    counts = repo.result_counts()
    sets = hit_refs(inp, g.index)
    counts["intel_hit_accounts"] = len(
        {h.account_id for h in inp.hits if float(h.strength) > 0 and h.account_id in g.index
         and any(r in sets for r in h.intrusion_sets)}
    )  # fmt: skip
    for k in ("active_accounts", "review_budget", "review_likely_beyond_budget"):
        counts[k] = int(part.stats.get(k, 0))
    return counts


def analyze(
    store: Store,
    *,
    full: bool = False,
    progress: bool = True,
    score: bool = True,
    version: str | None = None,
    settings: AnalyzeSettings | None = None,
    lock_timeout_s: float = 900.0,
) -> AnalyzeSummary:
    """Run the account analysis. Incremental unless ``full``: only accounts with new events get
    their features recomputed, intel matching and linking run globally (vectorised), and only the
    link components whose inputs changed (plus the accounts at review / enforce: the review queue is
    global) are attributed, judged and written again. Two runs at once are serialised by the
    analysis lock (``lock_timeout_s``): the second one sees what the first did.

    ``score=False`` skips the scoring stage and, unless ``version`` names one, reads the detections
    of the most recently scored model version. ``settings`` give the review budget and the exemption
    files (default: 0.5 % of active accounts, no exemptions)."""
    settings = settings or AnalyzeSettings()
    exemptions = load_exemptions(settings.exemptions)  # a bad file fails before any work
    out = AnalyzeSummary(review_budget_rule=settings.review_budget.describe())
    t0, c0 = time.perf_counter(), time.process_time()
    if score:
        out.scoring = score_first(store, progress)
    t1, c1 = time.perf_counter(), time.process_time()
    out.model_version = version or model_version(store, active=score)
    out.score_scale = describe(scale_for(store, out.model_version))
    try:
        store.analysis.lock(lock_timeout_s)  # one analyze at a time; the cursor is read under the lock
        out.events_scanned, out.accounts_recomputed = update_features(
            store, out.model_version, full=full, progress=progress
        )
        t2, c2 = time.perf_counter(), time.process_time()
        out.intel_hits = len(match_intel(store))
        t3, c3 = time.perf_counter(), time.process_time()
        judge_kw: dict[str, Any] = {"review_budget": settings.review_budget, "exemptions": exemptions}
        # the account model orders the review queue; the queue's accounts are judged again every run
        if getattr(settings, "account_model", None) is not None:
            judge_kw["account_model"] = settings.account_model
        if getattr(settings, "account_model_shadow", ()):
            judge_kw["account_model_shadow"] = tuple(settings.account_model_shadow)
        n = judge_step(store, out, full=full, judge_kw=judge_kw)
        store.commit()
    except BaseException:
        store.rollback()
        raise
    t4, c4 = time.perf_counter(), time.process_time()
    out.accounts, out.clusters, out.enforce, out.review = n["accounts"], n["clusters"], n["enforce"], n["review"]
    out.attributed, out.intel_hit_accounts = n["attributed"], n.get("intel_hit_accounts", 0)
    out.active_accounts, out.review_budget = n.get("active_accounts", 0), n.get("review_budget", 0)
    out.review_within_budget, out.exempt = n.get("review_within_budget", 0), n.get("exempt", 0)
    out.exempt_held_back = n.get("exempt_held_back", 0)
    out.raised_by_model = n.get("raised_by_model", 0)
    out.review_likely_beyond_budget = n.get("review_likely_beyond_budget", 0)
    out.seconds = {
        "scoring": round(t1 - t0, 2),
        "features": round(t2 - t1, 2),
        "intel": round(t3 - t2, 2),
        "link_attribute_judge": round(t4 - t3, 2),
        "total": round(t4 - t0, 2),
    }
    out.cpu_seconds = {
        "scoring": round(c1 - c0, 2),
        "features": round(c2 - c1, 2),
        "intel": round(c3 - c2, 2),
        "link_attribute_judge": round(c4 - c3, 2),
        "total": round(c4 - c0, 2),
    }
    return out
