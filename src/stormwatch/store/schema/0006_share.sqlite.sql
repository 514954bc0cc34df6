-- sharing: STIX id registry, export records, TAXII 2.1 collections/objects/status/permissions, pull checkpoints
CREATE TABLE share_secrets (
    name TEXT PRIMARY KEY,
    secret TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE share_stix_ids (
    key TEXT PRIMARY KEY,
    stix_id TEXT NOT NULL UNIQUE,
    created TEXT NOT NULL,
    modified TEXT NOT NULL,
    content_hash TEXT NOT NULL
);
CREATE TABLE share_exports (
    export_id TEXT PRIMARY KEY,
    format TEXT NOT NULL,
    recipient TEXT,
    destination TEXT NOT NULL,
    objects INTEGER NOT NULL,
    max_tlp TEXT,
    policy_digest TEXT,
    created_at TEXT NOT NULL
);
CREATE TABLE taxii_api_roots (
    root TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT,
    max_content_length BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE taxii_collections (
    id TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    title TEXT NOT NULL,
    description TEXT,
    alias TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX taxii_collections_root ON taxii_collections (root);
CREATE TABLE taxii_permissions (
    collection_id TEXT NOT NULL,
    principal TEXT NOT NULL,
    can_read INTEGER NOT NULL,
    can_write INTEGER NOT NULL,
    red_named INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (collection_id, principal)
);
CREATE TABLE taxii_objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    collection_id TEXT NOT NULL,
    stix_id TEXT NOT NULL,
    stix_type TEXT NOT NULL,
    version TEXT NOT NULL,
    vkey TEXT NOT NULL,
    spec_version TEXT NOT NULL,
    date_added TEXT NOT NULL,
    is_first INTEGER NOT NULL,
    is_last INTEGER NOT NULL,
    tlp INTEGER NOT NULL,
    audience TEXT,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX taxii_objects_version ON taxii_objects (collection_id, stix_id, vkey);
CREATE INDEX taxii_objects_all ON taxii_objects (collection_id, date_added, seq);
CREATE INDEX taxii_objects_last ON taxii_objects (collection_id, is_last, date_added, seq);
CREATE INDEX taxii_objects_type ON taxii_objects (collection_id, stix_type, is_last, date_added, seq);
CREATE TABLE taxii_status (
    id TEXT PRIMARY KEY,
    root TEXT NOT NULL,
    principal TEXT,
    status TEXT NOT NULL,
    request_timestamp TEXT NOT NULL,
    total_count INTEGER NOT NULL,
    success_count INTEGER NOT NULL,
    failure_count INTEGER NOT NULL,
    pending_count INTEGER NOT NULL,
    successes TEXT NOT NULL,
    failures TEXT NOT NULL,
    pendings TEXT NOT NULL
);
CREATE TABLE share_pull_checkpoints (
    url TEXT NOT NULL,
    collection_id TEXT NOT NULL,
    added_after TEXT,
    next_token TEXT,
    objects BIGINT NOT NULL DEFAULT 0,
    last_run_at TEXT,
    status TEXT,
    PRIMARY KEY (url, collection_id)
);
CREATE TABLE share_pulled_objects (
    source TEXT NOT NULL,
    stix_id TEXT NOT NULL,
    version TEXT NOT NULL,
    body TEXT NOT NULL,
    date_added TEXT,
    pulled_at TEXT NOT NULL,
    imported INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (source, stix_id, version)
);
CREATE INDEX share_pulled_pending ON share_pulled_objects (imported);
