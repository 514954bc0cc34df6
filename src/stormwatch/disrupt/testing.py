"""Seed a store with accounts, events and analysis results: for tests, demos and plugin authors.

These write through the same repositories the ingest and analyze stages use (judgements and clusters
through ``store.analysis``), so code under test reads them through the real paths
(:func:`~stormwatch.disrupt.judgements.load_context`), with no mocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stormwatch.events import Account, Event
from stormwatch.result import Cluster, Evidence, Judgement
from stormwatch.store import Store
from stormwatch.store.repos.detections import Detection


def add_account(
    store: Store, account_id: str, *, created_at: str = "2026-01-01T00:00:00Z", email_domain: str | None = None,
    org_id: str | None = None,
) -> None:  # fmt: skip
    store.upsert_accounts([Account(account_id=account_id, created_at=created_at, email_domain=email_domain,
                                   org_id=org_id, status="active")])  # fmt: skip


def add_judgement(
    store: Store,
    account_id: str,
    *,
    risk: float,
    flagged: bool = True,
    actor: str | None = None,
    confidence: float | None = None,
    confidence_label: str | None = None,
    cluster_id: str | None = None,
    ttps: dict[str, float] | Sequence[str] = (),
    model_version: str = "test-model@1",
    evidence: Any = None,
) -> None:
    """Insert (or replace) one judgement through ``store.analysis`` (as the analyze stage writes it)."""
    if isinstance(ttps, Mapping):
        shares = {str(k): float(v) for k, v in ttps.items()}
    else:
        shares = {str(t): 1.0 for t in ttps}
    items = evidence if evidence is not None else [{"kind": "note", "text": "seeded"}]
    store.analysis.put_judgement(
        Judgement(
            account_id=account_id,
            risk=risk,
            level="enforce" if flagged else "none",
            cluster_id=cluster_id,
            actor=actor,
            actor_ref=f"intrusion-set--{actor.lower().replace(' ', '-')}" if actor else None,
            confidence=confidence,
            confidence_label=confidence_label,
            ttps=shares,
            evidence=tuple(Evidence.from_dict(e) for e in items),
            model_version=model_version,
            analyzed_at="2026-11-30T00:00:00Z",
        )
    )
    store.commit()


def add_cluster(
    store: Store, cluster_id: str, members: Sequence[str], *, actor: str | None = None,
    confidence: float | None = None, confidence_label: str | None = None,
) -> None:  # fmt: skip
    """Insert (or replace) one cluster and its members through ``store.analysis``."""
    store.analysis.put_cluster(
        Cluster(cluster_id=cluster_id, members=tuple(members), actor=actor, confidence=confidence,
                confidence_label=confidence_label, updated_at="2026-11-30T00:00:00Z")
    )  # fmt: skip
    store.commit()


def add_events(
    store: Store, account_id: str, prompts: Sequence[str], *, end_user_id: str | None = None,
    flagged: bool = False, model_version: str = "test-model@1",
) -> list[str]:  # fmt: skip
    """Store one event per prompt (and a detection row per event, flagged or not); return the event ids."""
    start = store.analysis.activity([account_id]).get(account_id)
    n = start.events if start is not None else 0
    events = [
        Event(event_id=f"{account_id}-{end_user_id or 'x'}-{n + i}", ts=f"2026-11-01T00:00:{i % 60:02d}.000000Z",
              account_id=account_id, end_user_id=end_user_id, prompt=p, source="test")
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    store.insert_events(events)
    store.detections.insert(
        [Detection(e.event_id, model_version, account_id, None, e.ts, 0.9 if flagged else 0.1, flagged, None, "{}",
                   None, e.ts) for e in events]
    )  # fmt: skip
    store.commit()
    return [e.event_id for e in events]
