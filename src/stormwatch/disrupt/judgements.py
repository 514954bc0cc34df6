"""Read what analysis concluded (``store.analysis``: :class:`stormwatch.result.Judgement`, ``Cluster``)
and the account facts policies use.

Everything the policies read goes through :func:`load_context`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from stormwatch.disrupt.models import AccountInfo, Cluster, Judgement
from stormwatch.store import Store


def load_judgements(store: Store, account_ids: Sequence[str] | None = None) -> list[Judgement]:
    """Every stored account judgement (ordered by account id); empty before analysis ran."""
    return store.analysis.judgements(account_ids=account_ids)


def load_clusters(store: Store) -> dict[str, Cluster]:
    """Every stored cluster with its members, by id."""
    return {c.cluster_id: c for c in store.analysis.clusters(members=True)}


def load_accounts(store: Store) -> dict[str, AccountInfo]:
    return {
        a.account_id: AccountInfo(a.account_id, a.created_at, a.email_domain, a.org_id, a.status)
        for a in store.analysis.account_facts().values()
    }


def end_user_stats(store: Store) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Per account: how many distinct end users, and flagged-event counts per end user."""
    stats = store.analysis.end_user_stats()
    return stats.distinct, stats.flagged


@dataclass
class Context:
    """Everything policy evaluation reads, loaded once per run."""

    judgements: list[Judgement]
    clusters: dict[str, Cluster] = field(default_factory=dict)
    accounts: dict[str, AccountInfo] = field(default_factory=dict)
    end_users: dict[str, int] = field(default_factory=dict)
    flagged_end_users: dict[str, dict[str, int]] = field(default_factory=dict)
    reinstated: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._by_account = {j.account_id: j for j in self.judgements}

    def judgement(self, account_id: str) -> Judgement | None:
        return self._by_account.get(account_id)


def load_context(store: Store, account_ids: Sequence[str] | None = None) -> Context:
    distinct, flagged = end_user_stats(store)
    return Context(
        judgements=load_judgements(store, account_ids),
        clusters=load_clusters(store),
        accounts=load_accounts(store),
        end_users=distinct,
        flagged_end_users=flagged,
        reinstated=store.disrupt.reinstated_accounts(),
    )
