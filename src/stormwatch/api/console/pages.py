"""The console's views, one function per page or form; each takes the console and the request context.

Reads go through the same store repositories and service functions as the JSON API routes; every
write goes through :mod:`stormwatch.disrupt.service` with ``by=principal.actor``, after the same
permission check as the API route that does it.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

from starlette.responses import Response

from stormwatch.analyze.account_model import reaches_review
from stormwatch.analyze.attribution import public_attribution
from stormwatch.analyze.evaluate import CROWD_DEGREE
from stormwatch.api.console import data, svg
from stormwatch.api.errors import NotFound
from stormwatch.api.event_text import read_events
from stormwatch.api.roles import APPEALS_DECIDE, APPEALS_FILE, CASES_WRITE, EVENTS_TEXT
from stormwatch.disrupt import service
from stormwatch.errors import InputError
from stormwatch.result import LEVELS, Judgement
from stormwatch.vocab import LLMT_IDS

if TYPE_CHECKING:
    from stormwatch.api.console.views import Console, Ctx

__all__ = [
    "account",
    "appeal_decide",
    "appeal_file",
    "appeals",
    "audit",
    "case",
    "case_op",
    "case_open",
    "cases",
    "charts",
    "cluster",
    "clusters",
    "event_text",
    "outbox",
    "policy",
    "queue",
]

#: the queue shows at most this many accounts
QUEUE_LIMIT = 200
#: the cluster graph draws at most this many accounts (the most linked)
GRAPH_NODES = 60


def _open_cases(ctx: Ctx, account_ids: list[str] | None = None) -> dict[str, str]:
    """account -> its open case id."""
    return {c.account_id: c.case_id for c in service.list_cases(ctx.store, status="open", limit=100_000)
            if account_ids is None or c.account_id in account_ids}  # fmt: skip


# -- queue


def queue(con: Console, ctx: Ctx) -> Response:
    actor, ttp, level, policy = ctx.arg("actor"), ctx.arg("ttp"), ctx.arg("level"), ctx.arg("policy")
    if level not in (*LEVELS, "all"):
        level = "review"
    rows: list[Judgement] = []
    for lv in LEVELS if level == "all" else (level,):
        rows += ctx.store.analysis.judgements(level=lv, actor=actor, order="risk", limit=10_000)
    if ttp:
        rows = [j for j in rows if ttp in j.ttp_ids()]
    policy_accounts: dict[str, list[str]] = {}
    if policy:
        for d in service.list_decisions(ctx.store, policy_id=policy, limit=100_000):
            policy_accounts.setdefault(d.account_id, []).append(f"{d.action} ({d.status})")
        rows = [j for j in rows if j.account_id in policy_accounts]
    rows.sort(key=lambda j: (j.review_rank is None, j.review_rank or 0, -j.risk, j.account_id))
    total = len(rows)
    # accounts of this list beyond the review budget that the account model still finds likely: the
    # budget is smaller than the queue's likely actors (analyze's summary counts them by the same rule)
    beyond = sum(
        1
        for j in rows
        if j.review_rank and not j.within_budget
        and reaches_review(float((j.explanation.get("account_model") or {}).get("probability", 0.0)))
    )  # fmt: skip
    rows = rows[:QUEUE_LIMIT]
    cases = _open_cases(ctx)
    actors = sorted({str(c.actor) for c in ctx.store.analysis.clusters(min_confidence=None) if c.actor})
    items = [
        {
            "j": j,
            "ttps": sorted(j.ttps.items(), key=lambda kv: -kv[1])[:3],
            "case": cases.get(j.account_id),
            "policy": policy_accounts.get(j.account_id, []),
        }
        for j in rows
    ]
    filters = {"actor": actor or "", "ttp": ttp or "", "level": level, "policy": policy or ""}
    template = "queue_rows.html" if ctx.request.headers.get("hx-target") == "queue-rows" else "queue.html"
    return con.page(
        ctx, template, "Review queue", "queue", items=items, total=total, beyond=beyond, filters=filters, actors=actors,
        ttps=LLMT_IDS, levels=LEVELS, policies=data.policies_in_use(ctx.store),
    )  # fmt: skip


# -- an account


def _redact(value: Any) -> Any:
    """Explanation items without their strings (they may quote the request text)."""
    if isinstance(value, dict):
        return {k: (v if k == "kind" else _redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, str):
        return "[text hidden]"
    return value


def account(con: Console, ctx: Ctx) -> Response:
    account_id = ctx.request.path_params["account_id"]
    j = ctx.store.analysis.judgement(account_id)
    record = ctx.store.get_account(account_id)
    if j is None and record is None:
        raise NotFound(f"no account {account_id!r}")
    timeline, n_events = data.account_timeline(ctx.store, account_id, None if j is None else j.model_version)
    # the scorer's explanation can quote the request (pretexts, top n-grams): its words are shown
    # only with the text itself, after the audited read (event_text)
    timeline = [dataclasses.replace(r, explanation=_redact(r.explanation)) for r in timeline]
    features = ctx.store.analysis.features(account_id) or {}
    # the account model's per-feature contributions (explanation.account_model, issue 12)
    model_part = (j.explanation.get("account_model") if j is not None else None) or {}
    contributions = (
        (j.explanation.get("top_contributions") if j is not None else None)
        or (model_part.get("top_contributions") if isinstance(model_part, dict) else None)
        or []
    )
    explanation = {k: v for k, v in (j.explanation.items() if j is not None else ()) if k != "top_contributions"}
    cases = service.list_cases(ctx.store, account_id=account_id, limit=100)
    return con.page(
        ctx, "account.html", f"Account {account_id}", "queue", account_id=account_id, j=j, record=record,
        timeline=timeline, n_events=n_events, features=features, contributions=contributions,
        explanation=explanation, refusals=sum(r.refused for r in timeline),
        rephrases=sum(r.rephrase for r in timeline),
        decisions=service.list_decisions(ctx.store, account_id=account_id, limit=200),
        actions=service.list_actions(ctx.store, account_id=account_id, limit=200),
        cases=cases, open_case=next((c.case_id for c in cases if c.status == "open"), None),
        appeals=service.list_appeals(ctx.store, account_id=account_id, limit=50),
    )  # fmt: skip


def event_text(con: Console, ctx: Ctx) -> Response:
    """One request's text, for roles that may read it; the read is audited before it is shown."""
    ctx.require(EVENTS_TEXT)
    (record,) = read_events(ctx.store, [ctx.request.path_params["event_id"]], actor=ctx.principal.actor, via="console")
    if record is None:
        raise NotFound(f"no event {ctx.request.path_params['event_id']!r}")
    explanations = {
        d["model_version"]: ctx.store.detections.explanation(record["event_id"], d["model_version"])
        for d in record.get("detections", [])
    }
    return con.render("event_text.html", e=record, explanations={k: v for k, v in explanations.items() if v})


# -- clusters


def clusters(con: Console, ctx: Ctx) -> Response:
    actor = ctx.arg("actor")
    rows = ctx.store.analysis.clusters(actor=actor, limit=200)
    items = [public_attribution(c.to_dict(members=False)) for c in rows]
    return con.page(ctx, "clusters.html", "Clusters", "clusters", items=items, actor=actor or "")


def cluster(con: Console, ctx: Ctx) -> Response:
    cluster_id = ctx.request.path_params["cluster_id"]
    c = ctx.store.analysis.cluster(cluster_id, max_edges=2000)
    if c is None:
        raise NotFound(f"no cluster {cluster_id!r}")
    info = public_attribution(c.to_dict(members=False))
    judged = {j.account_id: j for j in ctx.store.analysis.judgements(account_ids=c.members)}
    degree = Counter[str]()
    for e in c.edges:
        degree[e.account_a] += 1
        degree[e.account_b] += 1
    drawn = sorted(c.members, key=lambda a: (-degree[a], a))[:GRAPH_NODES]
    keep = set(drawn)
    crowds: dict[str, set[str]] = {}
    for kind in sorted({e.kind for e in c.edges}):
        crowds[kind] = ctx.store.analysis.crowded_values(kind, CROWD_DEGREE)
    # one edge per pair in the picture: the strongest link, labelled with every shared attribute
    pairs: dict[tuple[str, str], list[Any]] = {}
    for e in c.edges:
        if e.account_a in keep and e.account_b in keep:
            pairs.setdefault(tuple(sorted((e.account_a, e.account_b))), []).append(e)  # type: ignore[arg-type]
    edges = [
        svg.GraphEdge(
            a,
            b,
            "; ".join(f"{e.kind}: {e.value}" for e in es),
            max(e.weight for e in es),
            all(e.value in crowds.get(e.kind, set()) for e in es),
        )
        for (a, b), es in sorted(pairs.items())
    ]
    nodes = [
        svg.GraphNode(
            a,
            f"{a}: " + ("not judged" if (j := judged.get(a)) is None else f"{j.level}, risk {j.risk:.2f}"),
            "unjudged" if (j := judged.get(a)) is None else j.level,
        )
        for a in drawn
    ]
    figure = svg.graph_svg(f"Accounts linked in cluster {cluster_id}", nodes, edges)
    edge_rows = [
        {"e": e, "crowd": e.value in crowds.get(e.kind, set())} for e in sorted(c.edges, key=lambda e: -e.weight)[:300]
    ]
    members = [{"account_id": a, "j": judged.get(a)} for a in c.members]
    return con.page(
        ctx, "cluster.html", f"Cluster {cluster_id}", "clusters", c=info, figure=figure, edges=edge_rows,
        members=members, drawn=len(drawn), n_edges=len(c.edges), evidence=c.evidence.to_dict(),
    )  # fmt: skip


# -- cases


def cases(con: Console, ctx: Ctx) -> Response:
    status = ctx.arg("status")
    if status not in ("open", "closed"):
        status = None
    items = service.list_cases(ctx.store, status=status, assignee=ctx.arg("assignee"), limit=500)
    return con.page(ctx, "cases.html", "Cases", "cases", items=items, status=status or "")


def case(con: Console, ctx: Ctx) -> Response:
    detail = service.get_case(ctx.store, ctx.request.path_params["case_id"])
    return con.page(ctx, "case.html", f"Case {detail.case.case_id}", "cases", d=detail)


def case_open(con: Console, ctx: Ctx) -> Response:
    ctx.require(CASES_WRITE)
    account_id = ctx.value("account_id", limit=200)
    c = service.open_case(ctx.store, account_id, by=ctx.principal.actor, reason=ctx.value("reason"))
    return con.redirect(con.url(f"/cases/{c.case_id}"), ctx.request)


def case_op(con: Console, ctx: Ctx) -> Response:
    ctx.require(CASES_WRITE)
    case_id, op = ctx.request.path_params["case_id"], ctx.request.path_params["op"]
    by = ctx.principal.actor
    if op == "assign":
        service.assign_case(ctx.store, case_id, ctx.value("assignee", limit=200), by=by)
    elif op == "note":
        service.annotate_case(ctx.store, case_id, ctx.value("text"), by=by)
    elif op == "evidence":
        service.attach_evidence(ctx.store, case_id, ctx.value("evidence"), by=by)
    elif op == "label":
        label = ctx.value("label")
        if label not in ("true_positive", "false_positive"):
            raise InputError("label must be true_positive or false_positive")
        service.label_case(
            ctx.store, case_id, label, by=by,
            actor=ctx.value("actor", required=False, limit=200) or None,
            category=ctx.value("category", required=False, limit=200) or None,
        )  # fmt: skip
    elif op == "close":
        service.close_case(ctx.store, case_id, by=by, resolution=ctx.value("resolution", required=False))
    else:
        raise NotFound(f"no case operation {op!r}")
    return con.redirect(con.url(f"/cases/{case_id}"), ctx.request)


# -- appeals


def appeals(con: Console, ctx: Ctx) -> Response:
    status = ctx.arg("status")
    if status not in ("open", "upheld", "reinstated"):
        status = None
    items = service.list_appeals(ctx.store, status=status, limit=500)
    return con.page(ctx, "appeals.html", "Appeals", "appeals", items=items, status=status or "")


def appeal_file(con: Console, ctx: Ctx) -> Response:
    ctx.require(APPEALS_FILE)
    account_id = ctx.value("account_id", limit=200)
    service.file_appeal(ctx.store, account_id, ctx.value("reason"), by=ctx.principal.actor)
    return con.redirect(con.url("/appeals", status="open"), ctx.request)


def appeal_decide(con: Console, ctx: Ctx) -> Response:
    ctx.require(APPEALS_DECIDE)
    choice = ctx.value("decision")
    if choice not in ("reinstate", "uphold"):
        raise InputError("decision must be reinstate or uphold")
    service.decide_appeal(
        ctx.store, ctx.request.path_params["appeal_id"], reinstate=choice == "reinstate", by=ctx.principal.actor,
        note=ctx.value("note", required=False),
    )  # fmt: skip
    return con.redirect(con.url("/appeals"), ctx.request)


# -- policy, audit, outbox, charts


def policy(con: Console, ctx: Ctx) -> Response:
    from stormwatch.disrupt.cli import default_policy_paths

    paths = default_policy_paths()
    issues = service.check_policies(paths)
    errors = [i for i in issues if i.severity == "error"]
    comparison = evaluation = None
    if not errors:
        ps = service.load_policy_set(paths)
        comparison = service.compare_policies(ctx.store, ps, ps)
        evaluation = service.test_policies(ctx.store, ps)
    return con.page(
        ctx, "policy.html", "Policy dry run", "policy", paths=paths, issues=issues, comparison=comparison,
        evaluation=evaluation,
    )  # fmt: skip


def audit(con: Console, ctx: Ctx) -> Response:
    verification = service.verify_audit(ctx.store)
    target = ctx.arg("target", 300)
    if target is None:
        entries = service.list_audit(ctx.store, limit=50, offset=max(0, verification.entries - 50))
    else:
        entries = service.list_audit(ctx.store, target=target, limit=10_000)[-50:]
    return con.page(
        ctx, "audit.html", "Audit chain", "audit", v=verification, entries=list(reversed(entries)),
        target=ctx.arg("target", 300) or "",
    )  # fmt: skip


def outbox(con: Console, ctx: Ctx) -> Response:
    """What an export would send now, per object type and TLP marking (nothing is written or sent)."""
    from stormwatch.intel.findings import load_findings
    from stormwatch.intel.ids import StoreRegistry
    from stormwatch.intel.service import with_store_secret
    from stormwatch.intel.sharing_policy import load_policy
    from stormwatch.intel.stix_export import build_bundle
    from stormwatch.intel.tlp import Tlp

    pol = load_policy(None)
    recipients = sorted(getattr(pol, "recipients", {}) or {})
    recipient = ctx.arg("recipient")
    if recipient not in recipients:
        recipient = None
    result = build_bundle(
        load_findings(ctx.store), with_store_secret(ctx.store, pol), recipient=recipient,
        registry=StoreRegistry(ctx.store),
    )  # fmt: skip
    ctx.store.rollback()  # the registry is never flushed: the preview leaves nothing behind
    table: dict[tuple[str, str], int] = Counter()
    objects = []
    for obj in result.bundle.get("objects", []):
        level = result.levels.get(obj.get("id", ""))
        tlp = "none" if level is None else level.label
        table[(str(obj.get("type")), tlp)] += 1
        if obj.get("type") not in ("marking-definition", "extension-definition", "identity"):
            objects.append({"type": obj.get("type"), "name": obj.get("name") or obj.get("value") or obj.get("pattern")
                            or obj.get("id"), "tlp": tlp})  # fmt: skip
    order = ["none", *(t.label for t in Tlp)]
    tlps = sorted({t for _, t in table}, key=lambda t: order.index(t) if t in order else len(order))
    types = sorted({ty for ty, _ in table})
    return con.page(
        ctx, "outbox.html", "Sharing outbox", "outbox", result=result, table=table, tlps=tlps, types=types,
        objects=objects[:300], n_objects=len(objects), recipients=recipients, recipient=recipient or "",
        max_tlp=None if result.max_tlp is None else result.max_tlp.label,
    )  # fmt: skip


def charts(con: Console, ctx: Ctx) -> Response:
    model = ctx.store.detections.latest_model_version()
    judged = next(iter(ctx.store.analysis.judgements(level="enforce", limit=1)), None)
    if judged is not None and judged.model_version:
        model = judged.model_version  # the model that judged the accounts
    days, series = data.flagged_per_day(ctx.store, model)
    levels = data.accounts_by_level(ctx.store)
    tta = data.time_to_action(ctx.store)
    return con.page(
        ctx, "charts.html", "Charts", "charts", model=model, days=days, series=series,
        per_day=svg.stacked_bars("Flagged requests per day, by TTP", days, series),
        by_level=svg.bar_chart("Accounts by level", levels, classes=[f"lv-{lv}" for lv, _ in levels]),
        levels=levels, tta=tta,
        tta_cases=svg.bar_chart("Time from case opened to closed", tta["cases"]),
        tta_actions=svg.bar_chart("Time from action created to delivered", tta["actions"]),
    )  # fmt: skip
