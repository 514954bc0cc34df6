"""The global part of ``analyze``: link every account, attribute clusters, judge accounts.

:func:`analyze_graph` is pure: an in-memory :class:`~stormwatch.result.AccountGraph` in, an
:class:`~stormwatch.result.AnalysisResult` out, so the graph can come from the store, a file or
another engine. :func:`judge_all` loads the graph from the store, runs it and writes the result
(``store.analysis``).

Linking runs over the whole graph each time (vectorised); ``analyze_graph(keep=...)`` attributes,
judges and returns only the link components an incremental run needs (``analyze.incremental``),
each exactly as the whole run would. Last, exemptions (``analyze.exemptions``) keep their accounts
out of ``enforce`` and the accounts at ``review`` are ranked into the review queue against the review
budget (``analyze.review``).

Why this module is long: it is the one place where linking, attribution, the risk rules, exemptions
and the review queue meet to produce the analysis result; each step is a short function, and
splitting them would scatter the order in which they must run.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from stormwatch.analyze import params as P
from stormwatch.analyze.account_model import (
    AccountModelInputs,
    load_model,
    reaches_review,
    resolve_model,
    score_accounts,
)
from stormwatch.analyze.attribution import AccountBehaviour, Attribution, IntrusionSet, attribute, confidence_label
from stormwatch.analyze.cohorts import Cohorts, epoch_seconds, find_cohorts, top_scores
from stormwatch.analyze.exemptions import Exemption, match_exemption
from stormwatch.analyze.linking import LinkInput, LinkResult, link_accounts
from stormwatch.analyze.profiles import load_profiles, profile_for
from stormwatch.analyze.review import DEFAULT_BUDGET, ReviewBudget, rank_review_queue
from stormwatch.analyze.risk import RiskInputs, judge
from stormwatch.result import (
    AccountGraph,
    AccountState,
    AnalysisResult,
    Cluster,
    ClusterEvidence,
    Evidence,
    Judgement,
    LinkEdge,
)
from stormwatch.store import Store

__all__ = [
    "Graph",
    "JudgeSummary",
    "LevelSettings",
    "analyze_graph",
    "build_graph",
    "judge_all",
    "link_graph",
    "load_graph",
]

Arr = np.ndarray[Any, Any]
_ACCOUNT_KINDS = (
    ("device_id", "device"),
    ("payment_fingerprint", "payment"),
    ("phone_hash", "phone"),
    ("signup_ip", "ip"),
    ("email_domain", "email_domain"),
    ("org_id", "org"),
)
FAMILIES = {fam: i for i, fam in enumerate(sorted({f for _, f in P.LINK_KINDS.values()}))}


@dataclass(slots=True)
class Graph:
    accounts: list[str]
    index: dict[str, int]
    values: list[tuple[str, str]]  # (kind, value)
    link_input: LinkInput


@dataclass(slots=True)
class JudgeSummary:
    accounts: int = 0
    clusters: int = 0
    enforce: int = 0
    review: int = 0
    attributed: int = 0
    intel_hit_accounts: int = 0
    active_accounts: int = 0  # accounts with at least one event
    review_budget: int = 0  # accounts the review budget covers
    review_within_budget: int = 0
    exempt: int = 0  # accounts an active exemption holds (any level)
    exempt_held_back: int = 0  # ... of which analysis would otherwise have enforced
    raised_by_model: int = 0  # accounts the rules left at none that the account model put at review
    #: accounts at review outside the budget whose account-model probability still reaches
    #: MODEL_REVIEW_PROBABILITY: the budget holds fewer than the queue's likely actors (0 without a model)
    review_likely_beyond_budget: int = 0


@dataclass(frozen=True, slots=True)
class LevelSettings:
    """What turns levels into the analyst's queue: the review budget and the active exemptions."""

    review_budget: ReviewBudget = DEFAULT_BUDGET
    exemptions: tuple[Exemption, ...] = ()
    #: the account model that orders the review queue: a version or folder, "off" (order by risk),
    #: None (``$STORMWATCH_ACCOUNT_MODEL``, else the newest shipped); and models scored in shadow
    account_model: str | None = None
    account_model_shadow: tuple[str, ...] = ()


def load_graph(store: Store) -> Graph:
    """The linking graph of the accounts in the store."""
    return build_graph(store.analysis.load_graph())


def build_graph(inp: AccountGraph) -> Graph:
    """Number accounts and attribute values (in the order given) and build the linking input."""
    accounts = inp.account_ids()
    index = {a: i for i, a in enumerate(accounts)}
    vid: dict[tuple[str, str], int] = {}
    acc: list[int] = []
    val: list[int] = []
    first: list[str | None] = []
    last: list[str | None] = []

    linking = [o for o in inp.observations if o.kind in ("ip", "api_key")]  # the hot loop, inlined
    setdefault = vid.setdefault
    val.extend([setdefault((o.kind, o.value), len(vid)) for o in linking])
    acc.extend([index[o.account_id] for o in linking])
    first.extend([o.first_ts for o in linking])
    last.extend([o.last_ts for o in linking])
    for rec in inp.accounts:
        ai, created = index[rec.account_id], rec.created_at
        for field_name, kind in _ACCOUNT_KINDS:
            value = getattr(rec, field_name)
            if value:
                at = created if kind == "ip" else None
                val.append(setdefault((kind, str(value).lower() if kind == "email_domain" else str(value)), len(vid)))
                acc.append(ai)
                first.append(at)
                last.append(at)
    values = list(vid)
    base = np.array([0.0 if (k == "email_domain" and v in P.WEBMAIL) else P.LINK_KINDS[k][0] for k, v in values])
    family = np.array([FAMILIES[P.LINK_KINDS[k][1]] for k, _ in values], dtype=np.int64)
    timed = np.array([k == "ip" for k, _ in values], dtype=bool)
    a_arr, v_arr = np.asarray(acc, dtype=np.int64), np.asarray(val, dtype=np.int64)
    f_arr, l_arr = epoch_seconds(first), epoch_seconds(last)
    # one edge per (account, value): earliest first use, latest last use
    key = a_arr * max(len(values), 1) + v_arr
    uniq, inv = np.unique(key, return_inverse=True)
    f_u = np.full(len(uniq), np.inf)
    l_u = np.full(len(uniq), -np.inf)
    np.fmin.at(f_u, inv, f_arr)
    np.fmax.at(l_u, inv, l_arr)
    f_u[np.isinf(f_u)] = np.nan
    l_u[np.isinf(l_u)] = np.nan
    link_input = LinkInput(
        n_accounts=len(accounts),
        acc=uniq // max(len(values), 1),
        val=uniq % max(len(values), 1),
        value_base=base,
        value_family=family,
        timed=timed,
        first=f_u,
        last=l_u,
    )
    return Graph(accounts, index, values, link_input)


def _intrusion_sets(objects: Sequence[Mapping[str, Any]]) -> dict[str, IntrusionSet]:
    sets: dict[str, IntrusionSet] = {}
    named: set[str] = set()
    for o in objects:
        ids = [r.get("external_id", "") for r in o.get("external_references", []) if isinstance(r, dict)]
        prof = profile_for(o.get("name"), list(o.get("aliases", [])), ids)
        sets[o["id"]] = IntrusionSet(o["id"], str(o.get("name") or o["id"]), prof)
        if prof:
            named.add(prof.name)
    for prof in load_profiles():
        if prof.name not in named:
            sets[f"profile:{prof.name}"] = IntrusionSet(f"profile:{prof.name}", prof.name, prof)
    return sets


def _behaviour(
    states: Sequence[AccountState], g: Graph
) -> tuple[AccountBehaviour, list[dict[str, Any]], Arr, Arr, Arr]:
    n = len(g.accounts)
    ttp, hours = np.zeros((n, len(P.LLMT))), np.zeros((n, 48))
    langs: list[dict[str, float]] = [{} for _ in range(n)]
    n_ev, content, breadth = np.zeros(n), np.zeros(n), np.zeros(n, dtype=np.int64)
    rephr, escal = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    feats: list[dict[str, Any]] = [{} for _ in range(n)]
    col = {c: i for i, c in enumerate(P.LLMT)}
    for st in states:
        a, ne, cs, br, rp = st.account_id, st.n_events, st.content_score, st.ttp_breadth, st.rephrases
        i = g.index[a]
        f = dict(st.features)
        feats[i] = f
        n_ev[i], content[i], breadth[i], rephr[i] = float(ne), float(cs), int(br), int(rp)
        escal[i] = int(f.get("escalations", 0))
        for c, m in f.get("ttp_mass", {}).items():
            ttp[i, col[c]] = m
        hours[i] = f.get("hours_utc", [0] * 48)
        langs[i] = f.get("languages", {})
    return AccountBehaviour(ttp, hours, langs, n_ev, content), feats, breadth, rephr, escal


def _ttp_shares(mass: dict[str, float]) -> dict[str, float]:
    """TTP -> share of the account's TTP mass (events scoring >= 0.3, weighted by score)."""
    total = sum(mass.values())
    if total < 0.5:
        return {}
    return {k: round(v / total, 3) for k, v in sorted(mass.items(), key=lambda kv: -kv[1]) if v / total >= 0.05}


def _coordinated(
    link: LinkResult, att: Attribution, feats: list[dict[str, Any]], orgs: Sequence[str | None]
) -> tuple[set[int], set[int]]:
    """(cluster labels whose malicious members are coordinated and fit an actor profile, labels that
    would be but at least half of whose malicious members belong to one organisation of the platform).

    An organisation's accounts (one ``org_id``: a customer with its own billing and members) asking
    offensive questions together is the signature of a security firm or an in-house red team as much
    as of an operation: without intel it is not corroboration enough to enforce, so those clusters
    stay at ``review`` (with the reason) until an analyst exempts the firm or intel names it."""
    out: set[int] = set()
    org_held: set[int] = set()
    fits = {label: fit for label, (_ref, _conf, fit) in att.cluster_fit.items()}
    fits.update({label: fit for label, (_ranked, fit) in att.unnamed_fit.items()})  # fits, names none
    for label, fit in fits.items():
        if fit is None or fit.score < P.COORDINATED_FIT or link.cluster_size[label] < P.COORDINATED_MIN_SIZE:
            continue
        members = np.flatnonzero(link.labels == label)
        bad_members = [
            int(m)
            for m in members
            if feats[m] and float(feats[m].get("content", {}).get("score", 0.0)) >= P.COORDINATED_MEMBER_CONTENT
        ]
        bad = len(bad_members)
        if bad >= P.COORDINATED_MIN_SIZE and bad >= 0.5 * len(members):
            top_org = Counter(orgs[m] for m in bad_members if orgs[m]).most_common(1)
            if top_org and top_org[0][1] >= 0.5 * bad:
                org_held.add(label)
            else:
                out.add(label)
    return out, org_held


def _queue(
    judged: list[dict[str, Any]], settings: LevelSettings, summary: JudgeSummary, inputs: AccountModelInputs
) -> list[Judgement]:
    """Rank the accounts at review that no exemption holds by the account model's calibrated
    probability (by risk when there is no model) and mark the first ``budget`` of them within the budget."""
    budget = settings.review_budget
    model = resolve_model(settings.account_model)
    shadow = [load_model(v) for v in settings.account_model_shadow]
    prob = score_accounts(judged, inputs, model, shadow)
    if model is not None:
        for j in judged:
            p = prob.get(j["account_id"])  # only the candidates the model scored
            if j["level"] == "none" and j["exemption"] is None and p is not None and reaches_review(p):
                _raise_to_review(j, model.version, p)
                summary.review += 1
                summary.raised_by_model += 1
    ordered_by = f"account model {model.version} probability" if model is not None else "risk"
    summary.review_budget = budget.size(summary.active_accounts)
    places = rank_review_queue(
        (
            (j["account_id"], prob.get(j["account_id"], float(j["risk"])))
            for j in judged
            if j["level"] == "review" and j["exemption"] is None
        ),
        summary.review_budget,
    )
    out: list[Judgement] = []
    for j in judged:
        place = places.get(j["account_id"])
        if place is not None:
            summary.review_within_budget += int(place.within_budget)
            if model is not None and not place.within_budget and reaches_review(prob.get(j["account_id"], 0.0)):
                summary.review_likely_beyond_budget += 1
            j["review_rank"], j["within_budget"] = place.rank, place.within_budget
            j["explanation"]["review_queue"] = {
                "rank": place.rank,
                "of": len(places),
                "budget": summary.review_budget,
                "budget_rule": budget.describe(),
                "within_budget": place.within_budget,
                "ordered_by": ordered_by,
            }
        out.append(Judgement(**j))
    return out


def _raise_to_review(j: dict[str, Any], version: str, p: float) -> None:
    """An account the rules left at none that the account model finds likely: ``review``, never more."""
    j["level"] = "review"
    ex = j["explanation"]
    ex["level"] = "review"
    ex["raised_by_account_model"] = True
    ex["reasons"] = [
        f"the account model ({version}) puts the probability that it is an actor's at {p:.2f}"
        f" (>= {P.MODEL_REVIEW_PROBABILITY:g}) though no rule flags it: ranked in the review queue, never"
        " enforced on this alone",
        *ex.get("reasons", []),
    ]


def link_graph(inp: AccountGraph) -> tuple[Graph, LinkResult]:
    """Number the accounts and values of ``inp`` and link them (what ``analyze_graph`` starts with)."""
    g = build_graph(inp)
    return g, link_accounts(g.link_input)


def cluster_id(first_member: str) -> str:
    return "cl_" + hashlib.sha256(first_member.encode()).hexdigest()[:12]


def judge_all(
    store: Store,
    version: str,
    *,
    review_budget: ReviewBudget | None = None,
    exemptions: Sequence[Exemption] = (),
) -> JudgeSummary:
    """Load the account graph from the store, judge it and write the result (not committed)."""
    result = analyze_graph(store.analysis.load_graph(), version, review_budget=review_budget, exemptions=exemptions)
    store.analysis.write(result)
    return JudgeSummary(**{f.name: int(result.stats.get(f.name, 0)) for f in dataclasses.fields(JudgeSummary)})


def analyze_graph(
    inp: AccountGraph,
    version: str,
    *,
    now: str | None = None,
    review_budget: ReviewBudget | None = None,
    exemptions: Sequence[Exemption] = (),
    account_model: str | None = None,
    account_model_shadow: Sequence[str] = (),
    link: LinkResult | None = None,
    graph: Graph | None = None,
    keep: Arr | None = None,
    cohorts: Cohorts | None = None,
) -> AnalysisResult:
    """Link, attribute and judge every account of ``inp``: pure, the same graph (and settings) give
    the same result. ``review_budget`` defaults to ``params.REVIEW_BUDGET`` of active accounts;
    ``exemptions`` apply while active at ``now``; ``account_model`` orders the review queue
    (``analyze.account_model.resolve_model``), ``account_model_shadow`` score in shadow."""
    from stormwatch.analyze.evidence import EvidenceBuilder

    # ``graph``: ``inp`` already numbered (build_graph); ``keep`` (a mask over its accounts, whole link
    # components): judge, rank and return only those accounts and their clusters, each exactly as the
    # whole run would (incremental analysis, analyze.incremental; ``cohorts``: find_cohorts of the same graph)
    g = graph if graph is not None else build_graph(inp)
    link = link if link is not None else link_accounts(g.link_input)  # ``link``: another engine's linking
    sets = _intrusion_sets(inp.intrusion_sets)
    beh, feats, breadth, rephr, escal = _behaviour(inp.states, g)
    hits_rows = list(inp.hits)
    per_set: dict[str, dict[int, float]] = {}
    for h in hits_rows:
        for ref in h.intrusion_sets:
            if ref in sets and h.account_id in g.index:
                d = per_set.setdefault(ref, {})
                i = g.index[h.account_id]
                d[i] = max(d.get(i, 0.0), float(h.strength))
    hits = {ref: list(d.items()) for ref, d in per_set.items()}
    # direct hits that are not mere IP overlap: an actor's own domain / address / URL, or several
    # different indicators on one account
    kinds: dict[str, set[str]] = {}
    inds: dict[str, set[str]] = {}
    for h in hits_rows:
        if float(h.strength) > 0:
            kinds.setdefault(h.account_id, set()).add(str(h.kind))
            inds.setdefault(h.account_id, set()).add(str(h.indicator_id))
    own_intel = {g.index[a] for a in kinds if a in g.index and (kinds[a] & P.IDENTITY_HIT_KINDS or len(inds[a]) >= 2)}
    att = attribute(link, len(g.values), sets, hits, beh, keep=keep)
    ev = EvidenceBuilder(g, link, att, sets, hits_rows, inp.indicator_names)
    levels = LevelSettings(
        review_budget or DEFAULT_BUDGET, tuple(exemptions), account_model, tuple(account_model_shadow)
    )
    facts = {a.account_id: a for a in inp.accounts}
    active = int(np.count_nonzero(beh.n_events > 0))
    top = top_scores(inp.states, g.index, len(g.accounts))
    if cohorts is None:
        cohorts = find_cohorts(inp, g.index, top)
    return _result(
        g, link, att, sets, ev, feats, breadth, rephr, escal, version, own_intel, now, levels, facts, active, keep,
        (cohorts, top),
    )  # fmt: skip


def _result(
    g: Graph,
    link: LinkResult,
    att: Attribution,
    sets: dict[str, IntrusionSet],
    ev: Any,
    feats: list[dict[str, Any]],
    breadth: Arr,
    rephr: Arr,
    escal: Arr,
    version: str,
    own_intel: set[int],
    now: str | None,
    settings: LevelSettings,
    facts: Mapping[str, Any],
    active: int,
    keep: Arr | None = None,
    cohort_of: tuple[Cohorts, Arr] | None = None,
) -> AnalysisResult:
    if now is None:
        from datetime import UTC, datetime

        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    summary = JudgeSummary(accounts=len(g.accounts), active_accounts=active)
    today = date.fromisoformat(now[:10])
    multi = link.cluster_size[link.labels] >= 2
    first_member: dict[int, str] = {}
    for k in np.flatnonzero(multi):
        first_member.setdefault(int(link.labels[k]), g.accounts[k])
    cid = {lab: cluster_id(a) for lab, a in first_member.items()}
    if keep is not None:  # only the kept components' clusters (and edges) are built
        kept = set(np.unique(link.labels[keep]).tolist())
        cid = {lab: c for lab, c in cid.items() if lab in kept}
    orgs = [getattr(facts.get(a), "org_id", None) or None for a in g.accounts]
    # clusters (of >= 2 accounts) holding at least one member with malicious content of its own: a
    # quiet account's profile fit corroborates its attribution only inside such a cluster or with
    # content of its own (an ordinary user on a recycled actor IP fits the actor's hours too)
    hot = Counter(
        int(link.labels[m])
        for m in range(len(g.accounts))
        if multi[m] and feats[m] and float(feats[m].get("content", {}).get("score", 0.0)) >= P.CORROBORATE_CONTENT
    )
    coordinated, org_held = _coordinated(link, att, feats, orgs)
    identity = {
        int(a)
        for a, v in zip(link.star_acc.tolist(), link.star_val.tolist(), strict=True)
        if g.values[v][0] in P.IDENTITY_KINDS
    }
    identity |= {int(link.pair_a[p]) for p, v, _f, _w in link.pair_parts if g.values[v][0] in P.IDENTITY_KINDS}
    identity |= {int(link.pair_b[p]) for p, v, _f, _w in link.pair_parts if g.values[v][0] in P.IDENTITY_KINDS}
    n_acc = len(g.accounts)
    cohorts, top = cohort_of if cohort_of is not None else (Cohorts(np.full(n_acc, -1)), np.zeros(n_acc))
    judged: list[dict[str, Any]] = []
    levels: list[str] = []
    for i, account in enumerate(g.accounts):
        if keep is not None and not keep[i]:
            levels.append("")
            continue
        ref = att.actor_ref[i]
        conf = float(att.confidence[i]) if ref else 0.0
        content_i = float(feats[i].get("content", {}).get("score", 0.0)) if feats[i] else 0.0
        fit_i = att.fit[i]
        cohort = cohorts.member(i)
        res = judge(
            RiskInputs(
                content=content_i,
                rephrases=int(rephr[i]),
                escalations=int(escal[i]),
                breadth=int(breadth[i]),
                direct_intel=float(att.direct[i]),
                link_intel=float(max(0.0, att.intel[i] - att.direct[i])),
                confidence=conf,
                behaviour_only=bool(ref) and att.source[i] < 0,
                coordinated=int(link.labels[i]) in coordinated,
                corroborated=(
                    content_i >= P.CORROBORATE_CONTENT
                    or (
                        fit_i is not None
                        and fit_i.score >= P.CORROBORATE_FIT
                        and (content_i >= P.CORROBORATE_FIT_MIN_CONTENT or hot[int(link.labels[i])] > 0)
                    )
                    or i in identity
                    or i in own_intel
                ),
                cohort=cohort is not None,
                cohort_held=cohort is not None and cohort.held,
                top_score=float(top[i]),
            )
        )
        level, explanation = res.level, dict(res.explanation)
        if cohort is not None:
            explanation["cohort"] = cohort.describe(g.accounts, top, orgs)
        if int(link.labels[i]) in org_held and multi[i]:
            explanation["organisation_cluster"] = (
                "linked with accounts of its own organisation that ask malicious-looking questions together:"
                " a security firm's or red team's signature as much as an operation's, so not enforced"
                " without intel (exempt the firm, or confirm it)"
            )
        exemption = match_exemption(settings.exemptions, account, facts.get(account), today)
        held: dict[str, Any] | None = None
        if exemption is not None:
            summary.exempt += 1
            held = {**exemption.to_dict(), "held_back": level == "enforce"}
            explanation["exemption"] = held
            if level == "enforce":  # an exempt account is never enforced; it stays visible at review
                level = "review"
                summary.exempt_held_back += 1
                explanation["reasons"] = [
                    f"held back from enforce by the exemption for {exemption.match} {exemption.value}"
                    f" ({exemption.reason})",
                    *explanation.get("reasons", []),
                ]
            explanation["level"] = level
        levels.append(level)
        summary.enforce += int(level == "enforce")
        summary.review += int(level == "review")
        summary.attributed += int(ref is not None)
        summary.intel_hit_accounts += int(att.direct[i] > 0)
        judged.append(
            dict(
                account_id=account,
                risk=res.risk,
                level=level,
                cluster_id=cid.get(int(link.labels[i])) if multi[i] else None,
                actor=sets[ref].name if ref else None,
                actor_ref=ref if ref and not ref.startswith("profile:") else None,
                confidence=round(conf, 4) if ref else None,
                confidence_label=confidence_label(conf) if ref else None,
                ttps=_ttp_shares(feats[i].get("ttp_mass", {}) if feats[i] else {}),
                evidence=tuple(Evidence.from_dict(e) for e in ev.account(i, feats[i])),
                explanation=explanation,
                model_version=version,
                analyzed_at=now,
                exemption=held,
            )
        )
    inputs = AccountModelInputs(g.index, feats, link.labels, link.cluster_size, att, coordinated, identity,
                                own_intel, facts, g.link_input, cohorts, top)  # fmt: skip
    judgements = _queue(judged, settings, summary, inputs)
    members: dict[int, list[int]] = {}
    for m in np.flatnonzero(multi).tolist():
        members.setdefault(int(link.labels[m]), []).append(int(m))
    clusters: list[Cluster] = []
    for lab, idx in members.items():
        if lab not in cid:
            continue
        fit = att.cluster_fit.get(lab)
        ref = fit[0] if fit else None
        cconf = float(fit[1]) if fit else None
        clusters.append(
            Cluster(
                cluster_id=cid[lab],
                members=tuple(g.accounts[i] for i in idx),
                actor=sets[ref].name if ref else None,
                actor_ref=ref if ref and not ref.startswith("profile:") else None,
                confidence=round(cconf, 4) if cconf is not None else None,
                confidence_label=confidence_label(cconf),
                flagged_accounts=sum(levels[i] == "enforce" for i in idx),
                evidence=ClusterEvidence.from_dict(ev.cluster(lab, idx)),
                updated_at=now,
            )
        )
    summary.clusters = len(clusters)
    return AnalysisResult(
        judgements=tuple(judgements),
        clusters=tuple(clusters),
        links=tuple(LinkEdge(*e) for e in ev.edges(cid)),
        model_version=version,
        analyzed_at=now,
        stats=dataclasses.asdict(summary),
    )
