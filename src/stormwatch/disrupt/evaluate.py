"""Policy evaluation: judgements + policies -> planned decisions. Pure and deterministic.

Nothing here touches the store: :func:`evaluate` reads a loaded :class:`Context`, so ``policy
test`` and ``policy compare`` show exactly what a run would record. A decision's id hashes (mode,
policy id, policy version, account, action, end user): the same policy version never decides the
same thing twice, whatever the number of runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from stormwatch.disrupt.judgements import Context
from stormwatch.disrupt.models import ACCOUNT_LADDER, Judgement, Record
from stormwatch.disrupt.policy import CONFIDENCE_LABELS, ActionSpec, Exemption, Policy, PolicySet

_LABEL_RANK = {name: i for i, name in enumerate(CONFIDENCE_LABELS)}


@dataclass(frozen=True)
class Planned(Record):
    """What one policy would decide for one target, before it is recorded."""

    policy_id: str
    policy_version: str
    rule_version: str
    policy_mode: str
    account_id: str
    action: str
    end_user_id: str | None
    params: dict[str, Any]
    status: str  # planned | exempted | superseded
    reasons: tuple[str, ...]
    evidence: dict[str, Any] = field(default_factory=dict)
    model_version: str | None = None
    cluster_id: str | None = None

    def decision_id(self, mode: str) -> str:
        key = [mode, self.policy_id, self.policy_version, self.account_id, self.action, self.end_user_id]
        return "dec_" + hashlib.sha256(orjson.dumps(key)).hexdigest()[:24]

    @property
    def decided_by(self) -> str:
        return f"policy:{self.policy_id}@{self.policy_version}"


def _parse_ts(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _confidence(j: Judgement) -> tuple[float, int]:
    """(numeric, label rank) of the attribution; an unattributed account has no confidence."""
    if not j.actor:
        return 0.0, -1
    num = j.confidence if j.confidence is not None else 0.0
    label = (j.confidence_label or "").lower()
    if label in _LABEL_RANK:
        return num, _LABEL_RANK[label]
    return num, max((_LABEL_RANK[n] for n, t in CONFIDENCE_LABELS.items() if num >= t), default=-1)


def _at_least(j: Judgement, want: float | str) -> bool:
    num, rank = _confidence(j)
    return rank >= _LABEL_RANK[want] if isinstance(want, str) else num >= want


def match(policy: Policy, j: Judgement, ctx: Context, now: datetime) -> list[str] | None:
    """The reasons the policy's conditions hold for ``j``, or None when one does not."""
    reasons: list[str] = []
    cluster = ctx.clusters.get(j.cluster_id) if j.cluster_id else None
    acct = ctx.accounts.get(j.account_id)
    for key, want in policy.when.items():
        ok: bool
        if key == "actor_in":
            ok = (j.actor or "").lower() in {a.lower() for a in want}
            why = f"actor {j.actor!r} in {list(want)}"
        elif key == "actor_any":
            ok = bool(j.actor) == want
            why = f"attributed to {j.actor}" if j.actor else "no attribution"
        elif key == "confidence_at_least":
            ok = _at_least(j, want)
            why = f"attribution confidence {j.confidence_label or j.confidence} >= {want}"
        elif key == "confidence_below":
            ok = not _at_least(j, want)
            why = f"attribution confidence {j.confidence_label or j.confidence or 'none'} < {want}"
        elif key == "risk_at_least":
            ok = j.risk >= want
            why = f"risk {j.risk:.2f} >= {want}"
        elif key == "ttps_any":
            hit = sorted(set(j.ttp_ids()) & set(want))
            ok = bool(hit)
            why = f"TTPs {hit}"
        elif key == "in_cluster_with_actor":
            actor = cluster.actor if cluster else None
            if isinstance(want, bool):
                ok = bool(actor) == want
            else:
                ok = (actor or "").lower() in {a.lower() for a in want}
            why = f"cluster {j.cluster_id} attributed to {actor}" if actor else "cluster has no actor"
        elif key == "account_age_days_at_most":
            created = _parse_ts(acct.created_at if acct else None)
            ok = created is not None and (now - created).days <= want
            why = f"account created {created.date().isoformat() if created else 'unknown'}, <= {want} days"
        elif key == "flagged":
            ok = j.flagged == want
            why = "flagged by analysis" if j.flagged else "not flagged"
        elif key == "end_users_at_least":
            n = ctx.end_users.get(j.account_id, 0)
            ok = n >= want
            why = f"{n} distinct end users >= {want}"
        else:  # pragma: no cover - the schema rejects unknown keys
            return None
        if not ok:
            return None
        reasons.append(why)
    return reasons


def exemption_for(
    policy: Policy, account_id: str, kind: str, ctx: Context, exemptions: Sequence[Exemption], now: datetime
) -> str | None:
    """Why the target is exempt from this action, or None."""
    acct = ctx.accounts.get(account_id)
    org = acct.org_id if acct else None
    domain = (acct.email_domain or "").lower() if acct else ""
    if account_id in policy.unless.get("accounts", ()):
        return f"allowlisted account in {policy.id}"
    if org and org in policy.unless.get("orgs", ()):
        return f"allowlisted org {org} in {policy.id}"
    if domain and domain in {d.lower() for d in policy.unless.get("email_domains", ())}:
        return f"allowlisted email domain {domain} in {policy.id}"
    if account_id in ctx.reinstated:
        return "reinstated on appeal"
    for ex in exemptions:
        hit = (
            ex.account_id == account_id
            or (ex.org_id is not None and ex.org_id == org)
            or (ex.email_domain is not None and ex.email_domain.lower() == domain)
        )
        if hit and (not ex.actions or kind in ex.actions) and ex.active(now):
            return ex.describe()
    return None


def _targets(policy: Policy, j: Judgement, ctx: Context) -> list[str]:
    if policy.apply_to == "cluster" and j.cluster_id and j.cluster_id in ctx.clusters:
        return sorted(set(ctx.clusters[j.cluster_id].members) | {j.account_id})
    return [j.account_id]


def _plan_policy(policy: Policy, ctx: Context, pset: PolicySet, now: datetime) -> list[Planned]:
    out: dict[tuple[str, str, str | None], Planned] = {}
    for j in ctx.judgements:
        reasons = match(policy, j, ctx, now)
        if reasons is None:
            continue
        for account_id in _targets(policy, j, ctx):
            member = ctx.judgement(account_id) or j
            via = [] if account_id == j.account_id else [f"member of cluster {j.cluster_id} (via {j.account_id})"]
            for spec in policy.then:
                for end_user in _end_users(spec, account_id, ctx):
                    key = (account_id, spec.kind, end_user)
                    if key in out:
                        continue
                    exempt = exemption_for(policy, account_id, spec.kind, ctx, pset.exemptions, now)
                    evidence: dict[str, Any] = {
                        "risk": member.risk,
                        "actor": member.actor,
                        "actor_ref": member.actor_ref,
                        "confidence": member.confidence,
                        "confidence_label": member.confidence_label,
                        "ttps": list(member.ttp_ids()),
                        "cluster_id": member.cluster_id,
                        "analysis": [e.to_dict() for e in member.evidence],
                    }
                    if end_user is not None:
                        evidence["flagged_events"] = ctx.flagged_end_users.get(account_id, {}).get(end_user, 0)
                    if exempt:
                        evidence["exemption"] = exempt
                    out[key] = Planned(
                        policy.id, policy.version, policy.rule_version, policy.mode, account_id, spec.kind,
                        end_user, dict(spec.params), "exempted" if exempt else "planned",
                        tuple(via + reasons), evidence, member.model_version, member.cluster_id,
                    )  # fmt: skip
    return list(out.values())


def _end_users(spec: ActionSpec, account_id: str, ctx: Context) -> list[str | None]:
    if spec.kind != "block_end_user":
        return [None]
    floor = int(spec.params.get("min_flagged", 1))
    users = ctx.flagged_end_users.get(account_id, {})
    return [u for u in sorted(users) if users[u] >= floor]


def _supersede(planned: list[Planned]) -> list[Planned]:
    """Same (account, action, end user) twice: the higher-priority policy keeps it. A more severe
    account action (terminate > suspend > rate_limit > require_verification > warn) supersedes
    the milder ones on the same account."""
    worst: dict[str, int] = {}
    for p in planned:
        if p.status == "planned" and p.action in ACCOUNT_LADDER:
            worst[p.account_id] = max(worst.get(p.account_id, -1), ACCOUNT_LADDER.index(p.action))
    seen: set[tuple[str, str, str | None]] = set()
    out = []
    for p in planned:
        key = (p.account_id, p.action, p.end_user_id)
        status = p.status
        if status == "planned":
            milder = p.action in ACCOUNT_LADDER and ACCOUNT_LADDER.index(p.action) < worst.get(p.account_id, -1)
            if key in seen or milder:
                status = "superseded"
            seen.add(key)
        out.append(p if status == p.status else _with_status(p, status))
    return out


def _with_status(p: Planned, status: str) -> Planned:
    from dataclasses import replace

    return replace(p, status=status)


def evaluate(policies: Sequence[Policy], pset: PolicySet, ctx: Context, now: datetime | None = None) -> list[Planned]:
    """Planned decisions of ``policies`` (taken in priority order) over every judgement in ``ctx``."""
    now = now or datetime.now(UTC)
    planned: list[Planned] = []
    for policy in sorted(policies, key=lambda p: (-p.priority, p.id)):
        planned += _plan_policy(policy, ctx, pset, now)
    return _supersede(planned)
