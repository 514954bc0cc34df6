"""Versioned schema migrations, one list for both dialects.

Each migration is applied once, in order, inside a transaction, and recorded in
``schema_migrations``. A migration's SQL may differ per dialect: ``{sqlite: ..., postgres: ...}``.
Never edit a released migration; append a new one. Tables that later stages need (detections,
judgements, clusters, indicators, cases, actions, audit) are added by their own migrations when
those stages land.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sqlite: str
    postgres: str


_EVENTS_COLUMNS = """
    event_id TEXT NOT NULL UNIQUE,
    ts TEXT NOT NULL,
    account_id TEXT NOT NULL,
    org_id TEXT,
    end_user_id TEXT,
    api_key_id TEXT,
    ip TEXT,
    user_agent TEXT,
    model TEXT,
    conversation_id TEXT,
    refused {bool},
    messages TEXT,
    prompt TEXT,
    response TEXT,
    attributes TEXT,
    source TEXT NOT NULL,
    run_id TEXT
"""

_ACCOUNTS = """
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    created_at TEXT,
    email_domain TEXT,
    email_hash TEXT,
    payment_fingerprint TEXT,
    phone_hash TEXT,
    device_id TEXT,
    signup_ip TEXT,
    country TEXT,
    org_id TEXT,
    status TEXT,
    attributes TEXT,
    updated_at TEXT NOT NULL
);
"""

_RUNS = """
CREATE TABLE ingest_runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    files TEXT NOT NULL,
    read_count {big} NOT NULL DEFAULT 0,
    stored_count {big} NOT NULL DEFAULT 0,
    duplicate_count {big} NOT NULL DEFAULT 0,
    quarantined_count {big} NOT NULL DEFAULT 0,
    accounts_count {big} NOT NULL DEFAULT 0
);
"""

_QUARANTINE = """
CREATE TABLE quarantine (
    id {serial},
    run_id TEXT,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    line {big},
    field TEXT,
    reason TEXT NOT NULL,
    raw {blob} NOT NULL,
    raw_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX quarantine_run ON quarantine (run_id);
CREATE UNIQUE INDEX quarantine_once ON quarantine (kind, source, line, raw_sha256);
"""

_INDEXES = """
CREATE INDEX events_account_ts ON events (account_id, ts);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "events, accounts, ingest runs, quarantine",
        sqlite="CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        + _EVENTS_COLUMNS.format(bool="INTEGER")
        + ");"
        + _INDEXES
        + _ACCOUNTS
        + _RUNS.format(big="INTEGER")
        + _QUARANTINE.format(serial="INTEGER PRIMARY KEY AUTOINCREMENT", big="INTEGER", blob="BLOB"),
        postgres="CREATE TABLE events (seq BIGSERIAL PRIMARY KEY,"
        + _EVENTS_COLUMNS.format(bool="BOOLEAN")
        + ");"
        + _INDEXES
        + _ACCOUNTS
        + _RUNS.format(big="BIGINT")
        + _QUARANTINE.format(serial="BIGSERIAL PRIMARY KEY", big="BIGINT", blob="BYTEA"),
    ),
)

LATEST = MIGRATIONS[-1].version
