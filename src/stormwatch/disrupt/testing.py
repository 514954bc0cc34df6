"""Seed a store with accounts, events and analysis results: for tests, demos and plugin authors.

These write the same tables the ingest and analyze stages write, so code under test reads them
through the real paths (:func:`~stormwatch.disrupt.judgements.load_context`), with no mocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from stormwatch.disrupt.judgements import table_exists
from stormwatch.events import Account, Event
from stormwatch.store import Store

_JUDGEMENTS_DDL = (
    "CREATE TABLE account_judgements (account_id TEXT PRIMARY KEY, risk REAL NOT NULL, flagged INTEGER NOT NULL, "
    "level TEXT NOT NULL, cluster_id TEXT, actor TEXT, actor_ref TEXT, confidence REAL, confidence_label TEXT, "
    "ttps TEXT NOT NULL, evidence TEXT NOT NULL, explanation TEXT NOT NULL, analyzed_at TEXT NOT NULL, "
    "model_version TEXT)"
)
_CLUSTERS_DDL = (
    "CREATE TABLE clusters (cluster_id TEXT PRIMARY KEY, size INTEGER NOT NULL, actor TEXT, actor_ref TEXT, "
    "confidence REAL, confidence_label TEXT, flagged_accounts INTEGER NOT NULL DEFAULT 0, evidence TEXT NOT NULL, "
    "updated_at TEXT NOT NULL)"
)
_MEMBERS_DDL = "CREATE TABLE cluster_members (cluster_id TEXT NOT NULL, account_id TEXT NOT NULL)"


def _ensure(store: Store) -> None:
    for name, ddl in (("account_judgements", _JUDGEMENTS_DDL), ("clusters", _CLUSTERS_DDL),
                      ("cluster_members", _MEMBERS_DDL)):  # fmt: skip
        if not table_exists(store, name):
            store.execute(ddl)


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
    """Insert (or replace) one judgement, creating the analysis tables when analysis never ran."""
    _ensure(store)
    store.execute("DELETE FROM account_judgements WHERE account_id = ?", (account_id,))
    store.execute(
        "INSERT INTO account_judgements (account_id, risk, flagged, level, cluster_id, actor, actor_ref, confidence, "
        "confidence_label, ttps, evidence, explanation, analyzed_at, model_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (account_id, risk, int(flagged), "enforce" if flagged else "none", cluster_id, actor,
         f"intrusion-set--{actor.lower().replace(' ', '-')}" if actor else None, confidence, confidence_label,
         orjson.dumps(ttps if isinstance(ttps, dict) else list(ttps)).decode(),
         orjson.dumps(evidence or {"note": "seeded"}).decode(), "{}", "2026-11-30T00:00:00Z", model_version),
    )  # fmt: skip
    store.commit()


def add_cluster(
    store: Store, cluster_id: str, members: Sequence[str], *, actor: str | None = None,
    confidence: float | None = None, confidence_label: str | None = None,
) -> None:  # fmt: skip
    _ensure(store)
    store.execute("DELETE FROM clusters WHERE cluster_id = ?", (cluster_id,))
    store.execute("DELETE FROM cluster_members WHERE cluster_id = ?", (cluster_id,))
    store.execute(
        "INSERT INTO clusters (cluster_id, size, actor, actor_ref, confidence, confidence_label, flagged_accounts, "
        "evidence, updated_at) VALUES (?, ?, ?, NULL, ?, ?, 0, '{}', '2026-11-30T00:00:00Z')",
        (cluster_id, len(members), actor, confidence, confidence_label),
    )
    store.executemany("INSERT INTO cluster_members (cluster_id, account_id) VALUES (?, ?)",
                      [(cluster_id, m) for m in members])  # fmt: skip
    store.commit()


def add_events(
    store: Store, account_id: str, prompts: Sequence[str], *, end_user_id: str | None = None,
    flagged: bool = False, model_version: str = "test-model@1",
) -> list[str]:  # fmt: skip
    """Store one event per prompt (and a detection row per event, flagged or not); return the event ids."""
    start = len(store.query("SELECT 1 FROM events WHERE account_id = ?", (account_id,)))
    events = [
        Event(event_id=f"{account_id}-{end_user_id or 'x'}-{start + i}", ts=f"2026-11-01T00:00:{i % 60:02d}.000000Z",
              account_id=account_id, end_user_id=end_user_id, prompt=p, source="test")
        for i, p in enumerate(prompts)
    ]  # fmt: skip
    store.insert_events(events)
    if table_exists(store, "detections"):
        store.executemany(
            "INSERT INTO detections (event_id, model_version, account_id, conversation_id, ts, score, flagged, "
            "top_ttp, categories, explanation, scored_at) VALUES (?, ?, ?, NULL, ?, ?, ?, NULL, '{}', NULL, ?)",
            [(e.event_id, model_version, account_id, e.ts, 0.9 if flagged else 0.1, int(flagged), e.ts)
             for e in events],
        )  # fmt: skip
        store.commit()
    return [e.event_id for e in events]
