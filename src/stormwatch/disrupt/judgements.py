"""Read what analysis concluded (``account_judgements``, ``clusters``) and the account facts policies use.

Everything the policies read goes through :func:`load_context`, so a change in the analysis tables
(migration 0003, built by the analyze stage) is absorbed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from stormwatch.disrupt.models import AccountInfo, Cluster, Judgement
from stormwatch.store import Store

TTP_MIN_MASS = 0.05


def table_exists(store: Store, name: str) -> bool:
    if store.dialect == "sqlite":
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    else:
        sql = "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?"
    return bool(store.query(sql, (name,)))


def _json(value: Any) -> Any:
    if value is None or not isinstance(value, str | bytes):
        return value
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return value


def ttp_ids(value: Any) -> tuple[str, ...]:
    """TTPs as stored: a list of ids, a list of ``{"id": ..}`` objects, or an ``{id: mass}`` map
    (the analyze stage's share of the account's flagged requests per TTP: those of at least
    :data:`TTP_MIN_MASS` count)."""
    value = _json(value)
    if isinstance(value, dict):
        return tuple(sorted(str(k) for k, v in value.items() if not isinstance(v, int | float) or v >= TTP_MIN_MASS))
    if isinstance(value, list):
        out = []
        for v in value:
            if isinstance(v, dict):
                ident = v.get("id") or v.get("ttp") or v.get("technique")
                if ident:
                    out.append(str(ident))
            elif v is not None:
                out.append(str(v))
        return tuple(sorted(set(out)))
    return ()


def load_judgements(store: Store, account_ids: Sequence[str] | None = None) -> list[Judgement]:
    """Every stored account judgement (ordered by account id); empty before analysis ran."""
    if not table_exists(store, "account_judgements"):
        return []
    rows = store.query(
        "SELECT account_id, risk, flagged, cluster_id, actor, actor_ref, confidence, confidence_label, "
        "ttps, evidence, model_version, analyzed_at FROM account_judgements ORDER BY account_id"
    )
    wanted = set(account_ids) if account_ids is not None else None
    return [
        Judgement(
            account_id=str(r[0]),
            risk=float(r[1] or 0.0),
            flagged=bool(r[2]),
            cluster_id=r[3],
            actor=r[4],
            actor_ref=r[5],
            confidence=None if r[6] is None else float(r[6]),
            confidence_label=r[7],
            ttps=ttp_ids(r[8]),
            evidence=_json(r[9]),
            model_version=r[10],
            analyzed_at=r[11],
        )
        for r in rows
        if wanted is None or r[0] in wanted
    ]


def load_clusters(store: Store) -> dict[str, Cluster]:
    if not table_exists(store, "clusters"):
        return {}
    members: dict[str, list[str]] = {}
    if table_exists(store, "cluster_members"):
        for cid, acct in store.query("SELECT cluster_id, account_id FROM cluster_members ORDER BY account_id"):
            members.setdefault(str(cid), []).append(str(acct))
    rows = store.query("SELECT cluster_id, actor, confidence, confidence_label FROM clusters")
    return {
        str(r[0]): Cluster(
            str(r[0]), r[1], None if r[2] is None else float(r[2]), r[3], tuple(members.get(str(r[0]), ()))
        )
        for r in rows
    }


def load_accounts(store: Store) -> dict[str, AccountInfo]:
    rows = store.query("SELECT account_id, created_at, email_domain, org_id, status FROM accounts")
    return {str(r[0]): AccountInfo(str(r[0]), r[1], r[2], r[3], r[4]) for r in rows}


def end_user_stats(store: Store) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Per account: how many distinct end users, and flagged-event counts per end user."""
    distinct = {
        str(a): int(n)
        for a, n in store.query(
            "SELECT account_id, COUNT(DISTINCT end_user_id) FROM events "
            "WHERE end_user_id IS NOT NULL GROUP BY account_id"
        )
    }
    flagged: dict[str, dict[str, int]] = {}
    if table_exists(store, "detections"):
        rows = store.query(
            "SELECT e.account_id, e.end_user_id, COUNT(DISTINCT e.event_id) FROM events e "
            "JOIN detections d ON d.event_id = e.event_id "
            "WHERE d.flagged = 1 AND e.end_user_id IS NOT NULL GROUP BY e.account_id, e.end_user_id"
        )
        for acct, user, n in rows:
            flagged.setdefault(str(acct), {})[str(user)] = int(n)
    return distinct, flagged


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
    reinstated: set[str] = set()
    if table_exists(store, "disrupt_appeals"):
        reinstated = {
            str(r[0]) for r in store.query("SELECT account_id FROM disrupt_appeals WHERE status = 'reinstated'")
        }
    return Context(
        judgements=load_judgements(store, account_ids),
        clusters=load_clusters(store),
        accounts=load_accounts(store),
        end_users=distinct,
        flagged_end_users=flagged,
        reinstated=reinstated,
    )
