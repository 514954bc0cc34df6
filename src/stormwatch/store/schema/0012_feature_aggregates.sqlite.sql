-- analyze: per-account aggregates kept between runs (new events are merged in); the account index also holds the conversation, so a run finds an account's events in a conversation without reading them
ALTER TABLE account_features ADD COLUMN aggregate TEXT;
DROP INDEX events_account_ts;
CREATE INDEX events_account_ts ON events (account_id, ts, conversation_id);
