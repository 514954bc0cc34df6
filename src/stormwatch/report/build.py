"""Build the report document (the ``json`` format; md, html and pdf are drawn from it).

Sections follow the common structure of published disruption reports (``docs/report.md``): scope,
executive summary, aggregate metrics, cross-cutting analysis, topics of flagged usage, case studies,
collaboration, safeguard changes, methodology and limitations.

What the period selects: the platform's activity (events, flagged requests) with a timestamp in
the period, and the accounts active in it; for those accounts, every decision, case and appeal
recorded so far (enforcement often follows the period it acts on). Intelligence exports recorded
from the start of the period on.

Privacy: every count goes through :mod:`stormwatch.report.suppress`; no account id, prompt, e-mail
address, IP address or other observable is copied into the document (``tests/test_report.py``
scans every format for those of a simulated platform).
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stormwatch.disrupt.models import ACCOUNT_LADDER
from stormwatch.report.cases import case_studies, lower_first
from stormwatch.report.period import Period
from stormwatch.report.suppress import Cell, count, is_shown, suppress
from stormwatch.report.topics import topic_clusters
from stormwatch.result import Judgement
from stormwatch.store import Store
from stormwatch.store.repos.analysis import FlaggedRequest
from stormwatch.store.repos.disrupt import Decision
from stormwatch.vocab import LLMT_LABELS, ttp

__all__ = ["SCHEMA", "build_report"]

SCHEMA = "stormwatch.transparency-report/1"
DEFAULT_K = 10
#: evidence kind -> (detection source family, as the vendors' reports name them)
SOURCES = {
    "indicator_hit": "Partner intelligence (indicator matched the account's infrastructure)",
    "link": "Infrastructure linking (accounts sharing rare device, payment, key or address)",
    "content": "Content classifier (requests scored on the LLM-TTP taxonomy)",
    "behaviour": "Behavioural patterns (actor working hours and TTP mix, rephrasing after refusals)",
}
TTA_BUCKETS = (("under 1 hour", 1.0), ("1 to 24 hours", 24.0), ("1 to 7 days", 168.0), ("7 to 30 days", 720.0),
               ("over 30 days", float("inf")))  # fmt: skip
ROW_LABELS = {
    "level": "Outcome", "category": "Main LLM-TTP category", "source": "Detection source", "bucket": "Time to action",
    "outcome": "Outcome", "label": "Analyst label", "tlp": "Highest TLP marking", "day": "Day (UTC)",
    "tactic": "ATT&CK tactic", "refused": "Model response",
}  # fmt: skip
ACTIVE_DECISION = frozenset({"planned", "under_appeal", "upheld", "reversed"})
TOP_TTPS_CHART = 6


@dataclass(frozen=True, slots=True)
class _Scope:
    judgements: dict[str, Judgement]  # accounts active in the period
    flagged: list[FlaggedRequest]
    decisions: dict[str, list[Decision]]  # in-scope accounts' decisions (not shadow, not exempted/superseded)


def _parse(ts: str) -> datetime:
    d = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def _model_version(store: Store, judgements: Sequence[Judgement]) -> str | None:
    versions = Counter(j.model_version for j in judgements if j.model_version)
    if versions:
        return versions.most_common(1)[0][0]
    return store.detections.latest_model_version()


def _table(
    title: str,
    row_key: str,
    rows: Sequence[tuple[str, str]],
    cols: Sequence[tuple[str, str]],
    values: Sequence[Sequence[int]],
    k: int,
    **opts: Any,
) -> dict[str, Any]:
    """A suppressed table as the document holds it: rows/columns as (key, label)."""
    t = suppress(values, k, width=len(cols), **opts)
    return {
        "title": title,
        "row_key": row_key,
        "row_label": ROW_LABELS.get(row_key, row_key),
        "rows": [{"key": a, "label": b} for a, b in rows],
        "cols": [{"key": a, "label": b} for a, b in cols],
        **t.to_dict(),
    }


def _all(fn: Any, **kw: Any) -> list[Any]:
    out: list[Any] = []
    while True:
        page = fn(limit=1000, offset=len(out), **kw)
        out += page
        if len(page) < 1000:
            return out


def _scope(store: Store, period: Period) -> tuple[_Scope, str | None]:
    judged = store.analysis.judgements()
    model = _model_version(store, judged)
    activity = store.analysis.activity([j.account_id for j in judged])
    active = {
        j.account_id: j
        for j in judged
        if (a := activity.get(j.account_id)) is not None
        and a.first_ts is not None
        and a.last_ts is not None
        and str(a.first_ts) < period.until
        and str(a.last_ts) >= period.since
    }
    flagged = (
        [r for r in store.analysis.flagged_requests(model, since=period.since, until=period.until)
         if r.account_id in active]
        if model else []
    )  # fmt: skip
    decisions: dict[str, list[Decision]] = defaultdict(list)
    for d in _all(store.disrupt.list_decisions):
        if d.account_id in active and d.mode != "shadow" and d.status in ACTIVE_DECISION:
            decisions[d.account_id].append(d)
    return _Scope(active, flagged, dict(decisions)), model


def _duration(hours: float) -> str:
    if hours < 1:
        return f"{round(hours * 60)} minutes"
    if hours < 48:
        return f"{hours:.1f} hours"
    return f"{hours / 24:,.1f} days"


def _dominant_ttp(j: Judgement) -> str:
    if not j.ttps:
        return "-"
    return max(sorted(j.ttps), key=lambda t: j.ttps[t])


def _severest(ds: Sequence[Decision]) -> str | None:
    ranked = [d.action for d in ds if d.action in ACCOUNT_LADDER]
    if not ranked:
        return None
    return max(ranked, key=ACCOUNT_LADDER.index)


def _fmt(cell: Cell | None, k: int, noun: str = "") -> str:
    """A cell in running text: ``32 accounts``, ``fewer than 10 accounts``, ``a withheld number of accounts``."""
    tail = f" {noun}" if noun else ""
    if cell is None:
        return f"no{tail}"
    if is_shown(cell):
        return f"{cell:,}{tail}"
    return f"fewer than {k}{tail}" if str(cell).startswith("<") else f"a withheld number of{tail}"


# -- sections ------------------------------------------------------------------------------------------------------


def _metrics(sc: _Scope, period: Period, k: int, store: Store) -> dict[str, Any]:
    j = sc.judgements
    levels = ("none", "review", "enforce")
    level_names = {"none": "No action", "review": "Queued for analyst review", "enforce": "Flagged for enforcement"}
    by_level = Counter(x.level for x in j.values())
    accounts_by_level = _table(
        "Accounts active in the period, by analysis outcome", "level",
        [(lv, level_names[lv]) for lv in levels], [("accounts", "Accounts")],
        [[by_level.get(lv, 0)] for lv in levels], k, col_totals=True,
    )  # fmt: skip

    actioned = {a: act for a, ds in sc.decisions.items() if (act := _severest(ds)) is not None}
    actions = [a for a in ACCOUNT_LADDER if a in set(actioned.values())] or ["terminate"]
    cats = sorted({_dominant_ttp(j[a]) for a in actioned}, key=lambda t: (t == "-", t))
    grid = Counter((_dominant_ttp(j[a]), act) for a, act in actioned.items())
    by_category = _table(
        "Accounts actioned, by main LLM-TTP category and severest action",
        "category",
        [(c, f"{c} {LLMT_LABELS[c]}" if c in LLMT_LABELS else "No TTP") for c in cats],
        [(a, a.replace("_", " ")) for a in actions],
        [[grid.get((c, a), 0) for a in actions] for c in cats],
        k,
        row_totals=True,
        col_totals=True,
        grand_total=True,
    )

    src: Counter[str] = Counter()
    for a in actioned:
        src.update({e.kind for e in j[a].evidence if e.kind in SOURCES})
    sources = _table(
        "Accounts actioned, by detection source (an account can have several)", "source",
        [(s, SOURCES[s]) for s in SOURCES], [("accounts", "Accounts")], [[src.get(s, 0)] for s in SOURCES], k,
    )  # fmt: skip

    first_flag: dict[str, str] = {}
    for r in sc.flagged:
        first_flag.setdefault(r.account_id, r.ts)
    hours: list[float] = []
    for a in actioned:
        started = first_flag.get(a)
        decided = min(d.decided_at for d in sc.decisions[a])
        if started is not None:
            hours.append(max(0.0, (_parse(decided) - _parse(started)).total_seconds() / 3600))
    buckets = Counter(next(i for i, (_n, hi) in enumerate(TTA_BUCKETS) if h < hi) for h in hours)
    tta = _table(
        "Time from an account's first flagged request to the first decision on it", "bucket",
        [(str(i), name) for i, (name, _) in enumerate(TTA_BUCKETS)], [("accounts", "Accounts")],
        [[buckets.get(i, 0)] for i in range(len(TTA_BUCKETS))], k, col_totals=True,
    )  # fmt: skip
    after_period = bool(actioned) and all(min(d.decided_at for d in sc.decisions[a]) >= period.until for a in actioned)

    in_scope = set(j)
    appeals = [a for a in _all(store.disrupt.list_appeals) if a.account_id in in_scope]
    ap = Counter(a.status for a in appeals)
    reversed_decisions = sum(d.status == "reversed" for ds in sc.decisions.values() for d in ds)
    appeal_table = _table(
        "Appeals filed by accounts in scope, by outcome", "outcome",
        [("reinstated", "Reinstated (decision reversed)"), ("upheld", "Upheld"), ("open", "Pending")],
        [("appeals", "Appeals")], [[ap.get(s, 0)] for s in ("reinstated", "upheld", "open")], k, col_totals=True,
    )  # fmt: skip
    cases = [c for c in _all(store.disrupt.list_cases) if c.account_id in in_scope]
    cl = Counter(c.label or "unlabelled" for c in cases)
    case_table = _table(
        "Cases opened on accounts in scope, by analyst label", "label",
        [("true_positive", "Confirmed (true positive)"), ("false_positive", "False positive"),
         ("unlabelled", "Not labelled yet")],
        [("cases", "Cases")], [[cl.get(s, 0)] for s in ("true_positive", "false_positive", "unlabelled")], k,
        col_totals=True,
    )  # fmt: skip

    exports = [e for e in store.intel.exports() if e.created_at >= period.since]
    tlps = ["clear", "green", "amber", "amber+strict", "red", "none"]
    ex = Counter(e.max_tlp or "none" for e in exports)
    obj: Counter[str] = Counter()
    for e in exports:
        obj[e.max_tlp or "none"] += e.objects
    present = [t for t in tlps if ex.get(t)] or ["amber"]
    shared = _table(
        "Intelligence shared (exports and STIX objects), by highest TLP marking", "tlp",
        [(t, "TLP:" + t.upper() if t != "none" else "no marking") for t in present],
        [("exports", "Exports"), ("objects", "STIX objects")],
        [[ex.get(t, 0), obj.get(t, 0)] for t in present], k, col_totals=True,
    )  # fmt: skip
    recipients = count(len({e.recipient for e in exports if e.recipient}), k)

    return {
        "accounts_by_level": accounts_by_level,
        "actioned_by_category": by_category,
        "detection_sources": sources,
        "time_to_action": {
            "table": tta,
            "median_hours": round(statistics.median(hours), 1) if len(hours) >= k else None,
            "median_text": _duration(statistics.median(hours)) if len(hours) >= k else None,
            "decided_after_period": after_period,
        },
        "appeals": appeal_table,
        "decisions_reversed": count(reversed_decisions, k),
        "cases": case_table,
        "indicators_shared": shared,
        "recipients": recipients,
        "dry_run": bool(sc.decisions) and all(d.mode == "dry-run" for ds in sc.decisions.values() for d in ds),
    }


def _daily(sc: _Scope, period: Period, k: int) -> dict[str, Any]:
    """Flagged requests per day by TTP (the top ones by accounts, the rest as one column)."""
    acc_by_ttp: dict[str, set[str]] = defaultdict(set)
    for r in sc.flagged:
        acc_by_ttp[r.top_ttp or "-"].add(r.account_id)
    top = sorted((t for t in acc_by_ttp if t != "-"), key=lambda t: (-len(acc_by_ttp[t]), t))[:TOP_TTPS_CHART]
    cols = [*top, "other"]
    days = period.days()
    index = {d.isoformat(): i for i, d in enumerate(days)}
    values = [[0] * len(cols) for _ in days]
    who: list[list[set[str]]] = [[set() for _ in cols] for _ in days]
    day_who: list[set[str]] = [set() for _ in days]
    for r in sc.flagged:
        i = index.get(r.ts[:10])
        if i is None:
            continue
        c = cols.index(r.top_ttp) if r.top_ttp in top else len(cols) - 1
        values[i][c] += 1
        who[i][c].add(r.account_id)
        day_who[i].add(r.account_id)
    col_who = [set().union(*(who[i][c] for i in range(len(days)))) for c in range(len(cols))]
    return _table(
        "Flagged requests per day, by LLM-TTP category",
        "day",
        [(d.isoformat(), d.isoformat()) for d in days],
        [(c, f"{c} {LLMT_LABELS[c]}" if c in LLMT_LABELS else "Other categories") for c in cols],
        values,
        k,
        row_totals=True,
        col_totals=True,
        grand_total=True,
        contributors=[[len(s) for s in row] for row in who],
        total_contributors=(
            [len(s) for s in day_who],
            [len(s) for s in col_who],
            len(set().union(*day_who)) if day_who else 0,
        ),
    )


def _cross_cutting(sc: _Scope, k: int) -> dict[str, Any]:
    from stormwatch.vocab import TACTICS

    flagged_accounts = [j for j in sc.judgements.values() if j.level == "enforce"]
    by_tactic: dict[str, set[str]] = defaultdict(set)
    for j in flagged_accounts:
        for t in j.ttp_ids():
            info = ttp(t)
            if info is not None:
                by_tactic[info.tactic].add(j.account_id)
    tactics = [t for t in TACTICS if t in by_tactic]
    refused = [r for r in sc.flagged if r.refused]
    return {
        "kill_chain": _table(
            "Accounts flagged for enforcement, by ATT&CK tactic of their LLM-TTPs (an account can have several)",
            "tactic",
            [(t, t.replace("-", " ").capitalize()) for t in tactics],
            [("accounts", "Accounts")],
            [[len(by_tactic[t])] for t in tactics],
            k,
        ),
        "refused": _table(
            "Flagged requests the model refused",
            "refused",
            [("refused", "Refused"), ("answered", "Answered")],
            [("requests", "Requests")],
            [[len(refused)], [len(sc.flagged) - len(refused)]],
            k,
            col_totals=True,
            contributors=[
                [len({r.account_id for r in refused})],
                [len({r.account_id for r in sc.flagged if not r.refused})],
            ],
            total_contributors=(None, [len({r.account_id for r in sc.flagged})], None),
        ),
    }


def _safeguards(store: Store, sc: _Scope, period: Period) -> dict[str, Any]:
    models = [
        {
            "name": m.name,
            "version": m.version,
            "status": m.status,
            "registered": m.created_at[:10],
            "changed_in_period": m.created_at >= period.since,
        }
        for m in store.detections.models()
    ]
    pol: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for ds in sc.decisions.values():
        for d in ds:
            pol[(d.policy_id, d.policy_version, d.mode)].add(d.action)
    policies = [
        {"policy": p, "version": v, "mode": mode, "actions": sorted(a.replace("_", " ") for a in acts)}
        for (p, v, mode), acts in sorted(pol.items())
    ]
    return {"models": models, "policies": policies}


def _collaboration(store: Store, metrics: dict[str, Any], k: int) -> dict[str, Any]:
    indicators = store.intel.indicators()
    sets = store.intel.objects_of_type("intrusion-set")
    return {
        "received_indicators": count(len(indicators), k),
        "received_intrusion_sets": count(len(sets), k),
        "shared": metrics["indicators_shared"],
        "recipients": metrics["recipients"],
        "formats": ["STIX 2.1 bundles", "TAXII 2.1 collections", "MISP feeds"],
    }


def build_report(
    store: Store, period: Period, *, k: int = DEFAULT_K, now: datetime | None = None, version: str | None = None
) -> dict[str, Any]:
    """The whole report as one JSON-ready document."""
    from stormwatch import __version__

    if k < 2:
        raise ValueError("k must be >= 2")
    sc, model = _scope(store, period)
    metrics = _metrics(sc, period, k, store)
    daily = _daily(sc, period, k)
    exported = bool(store.intel.exports())
    cases = case_studies(sc.judgements.values(), sc.decisions, k, exported=exported)
    topics = topic_clusters(sc.flagged, k)
    lv = metrics["accounts_by_level"]
    active = lv["col_totals"][0]
    enforce = lv["cells"][2][0]
    actioned = metrics["actioned_by_category"]["total"]
    flagged_requests = daily["total"]
    dry = metrics["dry_run"]
    safeguards = _safeguards(store, sc, period)
    names = [c["name"] for c in cases]

    summary = [
        f"In {period.label}, {_fmt(active, k, 'accounts')} were active on the service and our classifier flagged "
        f"{_fmt(flagged_requests, k, 'requests')} as possible misuse on the LLM-TTP taxonomy.",
        (
            f"We identified {len(cases)} operation{'s' if len(cases) != 1 else ''} consistent with known threat "
            f"actors: {', '.join(names)}."
            if cases
            else "We attributed no operation to a known threat actor."
        ),
        f"Analysis flagged {_fmt(enforce, k, 'accounts')} for enforcement; policies "
        + ("planned actions (dry run: nothing was carried out) on " if dry else "took action on ")
        + f"{_fmt(actioned, k, 'accounts')}.",
    ]
    if topics:
        summary.append(
            "The most common kinds of flagged use were " + ", ".join(lower_first(t.label) for t in topics[:3]) + "."
        )
    if cases:
        summary.append(
            "What the actors did maps to known techniques; we saw no capability beyond what public tools and "
            "documentation give (our uplift assessment)."
        )
    active_models = [m["version"] for m in safeguards["models"] if m["status"] == "active"]
    if active_models:
        summary.append(f"Detection ran on model {', '.join(active_models)}.")

    limitations = [
        f"Every count is suppressed below k = {k} accounts ('<{k}'); a cell shown as '-' is withheld so that a "
        "total cannot give a suppressed cell back. Suppression is applied per table.",
        "We see only our own service: off-platform reach, other providers and locally run models are invisible.",
        "Attribution rests on partner intelligence, infrastructure links and behaviour; it states a confidence, "
        "not a certainty.",
        "Case studies cover operations we attributed; unattributed misuse appears only in the aggregates, so the "
        "published cases are a biased sample.",
        "No prompt text, account id, e-mail or network address appears in this report; flagged usage is described "
        f"only by terms that at least {k} distinct accounts used.",
    ]
    if metrics["time_to_action"]["decided_after_period"]:
        limitations.append(
            "Every decision was made after the period ended (a retrospective run), so time to action includes "
            "that delay."
        )
    if dry:
        limitations.append("Policies ran in dry-run mode: the actions listed were planned, not carried out.")

    return {
        "schema": SCHEMA,
        "title": f"Transparency report: misuse of our AI service, {period.label}",
        "period": period.to_dict(),
        "k": k,
        "generated_at": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "version": version or __version__,
        "scope": {
            "services": ["Chat and API usage (all models served)", "Account records"],
            "accounts_active": active,
            "flagged_requests": flagged_requests,
            "model_version": model,
            "authors": "Threat Intelligence and Safeguards team",
            "contact": "security@your-organisation.example",
        },
        "summary": summary,
        "metrics": metrics,
        "daily": daily,
        "cross_cutting": _cross_cutting(sc, k),
        "topics": [
            {"ttp": t.ttp, "label": t.label, "accounts": t.accounts, "requests": t.requests, "terms": list(t.terms)}
            for t in topics
        ],
        "case_studies": cases,
        "collaboration": _collaboration(store, metrics, k),
        "safeguards": safeguards,
        "methodology": [
            "Every request is scored by the detection model on the 14 categories of the LLM-TTP taxonomy "
            "(Microsoft/OpenAI 2024 labels, mapped to ATT&CK and ATLAS).",
            "Accounts are judged on their requests, indicator matches from partner intelligence, links through "
            "rare shared infrastructure and their behaviour; linked accounts form clusters, which are attributed "
            "to known actors with a confidence (low, medium, high).",
            "Versioned policies turn judgements into decisions (warn, verify, rate-limit, suspend, terminate, open "
            "a case); every decision is written to a hash-chained audit log; appeals can reverse it.",
            "The period selects activity by its timestamp; decisions, cases and appeals on the accounts active in "
            "the period are counted whenever they were made, up to the date of this report.",
        ],
        "limitations": limitations,
        "changelog": [
            f"{(now or datetime.now(UTC)).date().isoformat()}: first version (stormwatch {version or __version__})"
        ],
    }
