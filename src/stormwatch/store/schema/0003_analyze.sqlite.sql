-- partner intel (STIX objects, parsed indicators, hits), account features, judgements, clusters, link edges
CREATE TABLE intel_objects (
    id TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    spec_version TEXT,
    created TEXT,
    modified TEXT,
    revoked INTEGER NOT NULL DEFAULT 0,
    name TEXT,
    raw TEXT NOT NULL,
    source TEXT,
    imported_at TEXT NOT NULL
);
CREATE INDEX intel_objects_type ON intel_objects (type);
CREATE TABLE intel_indicators (
    id TEXT PRIMARY KEY,
    name TEXT,
    pattern TEXT NOT NULL,
    pattern_type TEXT NOT NULL,
    valid_from TEXT,
    valid_until TEXT,
    revoked INTEGER NOT NULL DEFAULT 0,
    confidence INTEGER,
    indicator_types TEXT,
    intrusion_sets TEXT NOT NULL,
    supported INTEGER NOT NULL,
    unsupported_reason TEXT,
    compiled TEXT,
    modified TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE intel_hits (
    account_id TEXT NOT NULL,
    indicator_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    n INTEGER NOT NULL,
    first_ts TEXT,
    last_ts TEXT,
    degree INTEGER NOT NULL,
    strength REAL NOT NULL,
    intrusion_sets TEXT NOT NULL,
    PRIMARY KEY (account_id, indicator_id, kind, value)
);
CREATE INDEX intel_hits_indicator ON intel_hits (indicator_id);
CREATE TABLE account_features (
    account_id TEXT PRIMARY KEY,
    n_events INTEGER NOT NULL,
    first_ts TEXT,
    last_ts TEXT,
    n_high INTEGER NOT NULL,
    max_score REAL NOT NULL,
    content_score REAL NOT NULL,
    ttp_breadth INTEGER NOT NULL,
    home_utc_offset REAL,
    refusals INTEGER NOT NULL,
    rephrases INTEGER NOT NULL,
    features TEXT NOT NULL,
    model_version TEXT,
    updated_at TEXT NOT NULL
);
CREATE TABLE account_attributes (
    account_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    n INTEGER NOT NULL,
    first_ts TEXT,
    last_ts TEXT,
    PRIMARY KEY (account_id, kind, value)
);
CREATE INDEX account_attributes_value ON account_attributes (kind, value);
CREATE TABLE account_judgements (
    account_id TEXT PRIMARY KEY,
    risk REAL NOT NULL,
    flagged INTEGER NOT NULL,
    level TEXT NOT NULL,
    cluster_id TEXT,
    actor TEXT,
    actor_ref TEXT,
    confidence REAL,
    confidence_label TEXT,
    ttps TEXT NOT NULL,
    evidence TEXT NOT NULL,
    explanation TEXT NOT NULL,
    analyzed_at TEXT NOT NULL,
    model_version TEXT
);
CREATE INDEX account_judgements_cluster ON account_judgements (cluster_id);
CREATE INDEX account_judgements_flagged ON account_judgements (flagged);
CREATE TABLE clusters (
    cluster_id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    actor TEXT,
    actor_ref TEXT,
    confidence REAL,
    confidence_label TEXT,
    flagged_accounts INTEGER NOT NULL DEFAULT 0,
    evidence TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE cluster_members (
    cluster_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    PRIMARY KEY (cluster_id, account_id)
);
CREATE INDEX cluster_members_account ON cluster_members (account_id);
CREATE TABLE link_edges (
    cluster_id TEXT NOT NULL,
    account_a TEXT NOT NULL,
    account_b TEXT NOT NULL,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    weight REAL NOT NULL
);
CREATE INDEX link_edges_cluster ON link_edges (cluster_id);
