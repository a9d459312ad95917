-- Users hold one proxy key each, stored only as its SHA-256 hash and a hint.
-- Times are Unix milliseconds (UTC), so the schema ports to PostgreSQL BIGINT.
-- AUTOINCREMENT: an id is never reused, so a new user never inherits the
-- usage records of a deleted one.
CREATE TABLE users (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    key_hash    TEXT    NOT NULL UNIQUE,
    key_hint    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER
);

-- A provider is an upstream host; its keys live in provider_keys.
CREATE TABLE providers (
    id           INTEGER PRIMARY KEY,
    host         TEXT    NOT NULL UNIQUE,
    base_url     TEXT    NOT NULL,
    inject_usage INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL
);

CREATE TABLE provider_keys (
    id          INTEGER PRIMARY KEY,
    provider_id INTEGER NOT NULL REFERENCES providers(id) ON DELETE CASCADE,
    secret      TEXT    NOT NULL,
    key_hash    TEXT    NOT NULL,
    key_hint    TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    UNIQUE (provider_id, key_hash)
);

-- One row per proxied request. user_name is kept beside user_id so that
-- stats still name a user after it is deleted. NULL tokens mean the
-- upstream reported no usage.
CREATE TABLE usage (
    id                INTEGER PRIMARY KEY,
    ts                INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    user_name         TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL DEFAULT '',
    path              TEXT    NOT NULL,
    status            INTEGER NOT NULL,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    total_tokens      INTEGER,
    reasoning_tokens  INTEGER,
    cached_tokens     INTEGER,
    duration_ms       INTEGER NOT NULL,
    ttfb_ms           INTEGER,
    streamed          INTEGER NOT NULL DEFAULT 0,
    partial           INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_user_ts ON usage (user_id, ts);
CREATE INDEX usage_ts ON usage (ts);
CREATE INDEX usage_user_name_ts ON usage (user_name, ts);
