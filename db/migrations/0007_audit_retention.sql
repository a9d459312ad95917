-- The audit log: one row per admin change (CLI or HTTP admin, and users
-- resetting their own key), written in the change's own transaction, or in
-- a transaction of its own for a refused change. Never a key, token or DSN.
-- ts is Unix milliseconds (UTC); source is 'cli' or 'http'; actor the OS
-- user or the client's address; result 'ok', 'refused: CODE' or 'error'.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY,
    ts      INTEGER NOT NULL,
    source  TEXT    NOT NULL,
    actor   TEXT    NOT NULL,
    action  TEXT    NOT NULL,
    target  TEXT    NOT NULL,
    result  TEXT    NOT NULL
);
CREATE INDEX audit_log_ts ON audit_log (ts);

-- Daily totals of usage rows older than serve's --usage-retention, folded
-- per UTC day (day = Unix milliseconds of its 00:00 UTC), user, provider and
-- model; the rows themselves are then deleted. stats reads these beside the
-- remaining rows. cost_micro_usd (integer micro-dollars, as in usage) stays
-- NULL while every folded row's cost was NULL (unpriced); unmetered counts
-- rows whose usage could not be read.
CREATE TABLE usage_daily (
    day               INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    user_name         TEXT    NOT NULL,
    provider          TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    partial           INTEGER NOT NULL DEFAULT 0,
    unmetered         INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    reasoning_tokens  INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    duration_ms       INTEGER NOT NULL DEFAULT 0,
    cost_micro_usd    INTEGER,
    PRIMARY KEY (day, user_id, user_name, provider, model)
) WITHOUT ROWID;
CREATE INDEX usage_daily_user_name_day ON usage_daily (user_name, day);
CREATE INDEX usage_daily_user_id_day ON usage_daily (user_id, day);
