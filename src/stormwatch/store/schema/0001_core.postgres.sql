-- events, accounts, ingest runs, quarantine
CREATE TABLE events (seq BIGSERIAL PRIMARY KEY,
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
    refused BOOLEAN,
    messages TEXT,
    prompt TEXT,
    response TEXT,
    attributes TEXT,
    source TEXT NOT NULL,
    run_id TEXT
);
CREATE INDEX events_account_ts ON events (account_id, ts);
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
CREATE TABLE ingest_runs (
    run_id TEXT PRIMARY KEY,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    files TEXT NOT NULL,
    read_count BIGINT NOT NULL DEFAULT 0,
    stored_count BIGINT NOT NULL DEFAULT 0,
    duplicate_count BIGINT NOT NULL DEFAULT 0,
    quarantined_count BIGINT NOT NULL DEFAULT 0,
    accounts_count BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE quarantine (
    id BIGSERIAL PRIMARY KEY,
    run_id TEXT,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    line BIGINT,
    field TEXT,
    reason TEXT NOT NULL,
    raw BYTEA NOT NULL,
    raw_sha256 TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX quarantine_run ON quarantine (run_id);
CREATE UNIQUE INDEX quarantine_once ON quarantine (kind, source, line, raw_sha256);
