-- disrupt: policy decisions, action outbox, hash-chained audit log, cases, appeals
CREATE TABLE disrupt_decisions (
    decision_id TEXT PRIMARY KEY,
    run_id TEXT,
    mode TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    policy_version TEXT NOT NULL,
    rule_version TEXT NOT NULL,
    account_id TEXT NOT NULL,
    action TEXT NOT NULL,
    end_user_id TEXT,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    reasons TEXT NOT NULL,
    evidence TEXT NOT NULL,
    model_version TEXT,
    cluster_id TEXT,
    decided_by TEXT NOT NULL,
    decided_at TEXT NOT NULL
);
CREATE INDEX disrupt_decisions_account ON disrupt_decisions (account_id, mode);
CREATE TABLE disrupt_actions (
    action_id TEXT PRIMARY KEY,
    decision_id TEXT,
    kind TEXT NOT NULL,
    account_id TEXT NOT NULL,
    end_user_id TEXT,
    params TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TEXT,
    created_at TEXT NOT NULL,
    delivered_at TEXT,
    sink TEXT,
    reverses TEXT
);
CREATE INDEX disrupt_actions_status ON disrupt_actions (status, next_attempt_at);
CREATE INDEX disrupt_actions_account ON disrupt_actions (account_id);
CREATE TABLE disrupt_audit (
    seq BIGINT PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    policy_id TEXT,
    policy_version TEXT,
    rule_version TEXT,
    model_version TEXT,
    evidence TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    entry_hash TEXT NOT NULL UNIQUE
);
CREATE TABLE disrupt_cases (
    case_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    opened_by TEXT NOT NULL,
    opened_at TEXT NOT NULL,
    assignee TEXT,
    label TEXT,
    label_actor TEXT,
    label_category TEXT,
    decision_id TEXT,
    closed_by TEXT,
    closed_at TEXT,
    resolution TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX disrupt_cases_account ON disrupt_cases (account_id, status);
CREATE TABLE disrupt_case_notes (
    note_id BIGSERIAL PRIMARY KEY,
    case_id TEXT NOT NULL REFERENCES disrupt_cases (case_id),
    kind TEXT NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX disrupt_case_notes_case ON disrupt_case_notes (case_id);
CREATE TABLE disrupt_appeals (
    appeal_id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    filed_by TEXT NOT NULL,
    filed_at TEXT NOT NULL,
    decided_by TEXT,
    decided_at TEXT,
    note TEXT
);
CREATE INDEX disrupt_appeals_account ON disrupt_appeals (account_id, status);
