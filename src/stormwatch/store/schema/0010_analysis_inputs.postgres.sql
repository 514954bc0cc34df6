-- analyze: what each account's judgement was computed from (incremental analysis) and run state
CREATE TABLE analysis_inputs (
    account_id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL
);
CREATE TABLE analysis_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
