-- per-event detection scores, detector versions, incremental stage cursors
CREATE TABLE detections (
    event_id TEXT NOT NULL,
    model_version TEXT NOT NULL,
    account_id TEXT NOT NULL,
    conversation_id TEXT,
    ts TEXT NOT NULL,
    score REAL NOT NULL,
    flagged INTEGER NOT NULL,
    top_ttp TEXT,
    categories TEXT NOT NULL,
    explanation TEXT,
    scored_at TEXT NOT NULL,
    PRIMARY KEY (event_id, model_version)
);
CREATE TABLE models (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    metadata TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE stage_cursors (
    stage TEXT NOT NULL,
    key TEXT NOT NULL,
    last_seq BIGINT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (stage, key)
);
