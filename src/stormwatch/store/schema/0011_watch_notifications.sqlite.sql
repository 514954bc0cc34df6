-- watch: the one-active-watcher lease and the notifications already sent (never sent twice)
CREATE TABLE watch_leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    lease_until TEXT NOT NULL,
    acquired_at TEXT NOT NULL,
    renewed_at TEXT NOT NULL
);
CREATE TABLE watch_notifications (
    account_id TEXT NOT NULL,
    level TEXT NOT NULL,
    channel TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    actor TEXT,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    next_attempt_at TEXT,
    claimed_by TEXT,
    lease_until TEXT,
    created_at TEXT NOT NULL,
    sent_at TEXT,
    PRIMARY KEY (account_id, level, channel)
);
CREATE INDEX watch_notifications_due ON watch_notifications (channel, status, next_attempt_at);
