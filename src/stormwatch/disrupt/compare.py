"""``policy test`` and ``policy compare``: what policies would do over the stored judgements. Writes nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from stormwatch.disrupt.evaluate import Planned, evaluate
from stormwatch.disrupt.judgements import load_context
from stormwatch.disrupt.models import Record, utcnow
from stormwatch.disrupt.policy import PolicySet
from stormwatch.store import Store


@dataclass(frozen=True)
class Evaluation(Record):
    judgements: int
    planned: tuple[Planned, ...]  # active policies first, then shadow ones
    counts: dict[str, int]  # "action/status" -> n


@dataclass(frozen=True)
class Difference(Record):
    account_id: str
    action: str
    end_user_id: str | None
    active: str | None  # the policy that decides it now, or None
    candidate: str | None  # the candidate policy that would, or None


@dataclass(frozen=True)
class Comparison(Record):
    judgements: int
    same: int
    only_active: tuple[Difference, ...]
    only_candidate: tuple[Difference, ...]


def test_policies(
    store: Store, policy_set: PolicySet, *, now: datetime | None = None, account_ids: Sequence[str] | None = None
) -> Evaluation:
    now = now or utcnow()
    ctx = load_context(store, account_ids)
    planned = evaluate(policy_set.active(), policy_set, ctx, now) + evaluate(policy_set.shadow(), policy_set, ctx, now)
    counts = Counter(f"{p.action}/{p.status}" for p in planned)
    return Evaluation(len(ctx.judgements), tuple(planned), dict(sorted(counts.items())))


def _effective(planned: list[Planned]) -> dict[tuple[str, str, str | None], str]:
    return {(p.account_id, p.action, p.end_user_id): p.decided_by for p in planned if p.status == "planned"}


def compare_policies(
    store: Store, active: PolicySet, candidate: PolicySet, *, now: datetime | None = None
) -> Comparison:
    """What would change if the candidate policies were promoted.

    The active side is ``active``'s non-shadow policies. The promoted side replaces each of them
    by the candidate of the same id and adds the other candidates. Candidates are ``candidate``'s
    shadow policies when it is ``active`` itself (``policy compare`` without ``--candidate``),
    else all of its policies. Exemptions of both sets apply to both sides.
    """
    now = now or utcnow()
    ctx = load_context(store)
    cands = candidate.shadow() if candidate is active else candidate.policies
    ids = {p.id for p in cands}
    promoted = tuple(p for p in active.active() if p.id not in ids) + tuple(cands)
    both = PolicySet(active.policies, tuple(dict.fromkeys(active.exemptions + candidate.exemptions)))
    a = _effective(evaluate(active.active(), both, ctx, now))
    c = _effective(evaluate(promoted, both, ctx, now))
    only_a = tuple(Difference(k[0], k[1], k[2], a[k], None) for k in sorted(a.keys() - c.keys(), key=str))
    only_c = tuple(Difference(k[0], k[1], k[2], None, c[k]) for k in sorted(c.keys() - a.keys(), key=str))
    return Comparison(len(ctx.judgements), len(a.keys() & c.keys()), only_a, only_c)


test_policies.__test__ = False  # type: ignore[attr-defined]  # not a pytest test, whatever its name
