-- Per-user limits and budgets (CONTRACT section 5). One row per user with
-- limits of their own; user_id 0 holds the defaults (`*`), which apply to
-- every user without a row. A NULL column is a limit that is not set, so a
-- row whose columns are all NULL exempts its user from the defaults.
--   rpm, tpm, concurrent  requests / total tokens per sliding minute,
--                         requests in flight
--   tokens, tokens_period a quota of total tokens per day, week, month
--                         (calendar, UTC, weeks from Monday) or total
--   spend_micro_usd, spend_period  a dollar budget, in whole micro-dollars
--                         as usage.cost_micro_usd (migration 0004)
--   models                the allow-list: a JSON array of patterns with *
--                         wildcards; NULL: any model
-- The periods are checked here too, so that no other writer can store one
-- that pkg/limits would not understand.
CREATE TABLE limits (
    user_id         INTEGER PRIMARY KEY,
    rpm             INTEGER CHECK (rpm >= 0),
    tpm             INTEGER CHECK (tpm >= 0),
    concurrent      INTEGER CHECK (concurrent >= 0),
    tokens          INTEGER CHECK (tokens >= 0),
    tokens_period   TEXT    CHECK (tokens_period IN ('day', 'week', 'month', 'total')),
    spend_micro_usd INTEGER CHECK (spend_micro_usd >= 0),
    spend_period    TEXT    CHECK (spend_period IN ('day', 'week', 'month', 'total')),
    models          TEXT,
    updated_at      INTEGER NOT NULL,
    CHECK ((tokens IS NULL) = (tokens_period IS NULL)),
    CHECK ((spend_micro_usd IS NULL) = (spend_period IS NULL))
);

-- A deleted user's limits go with it (user_id 0 is no user, so there is no
-- foreign key); ids are never reused (AUTOINCREMENT), so a re-created user
-- starts without limits of its own.
CREATE TRIGGER users_delete_limits AFTER DELETE ON users
BEGIN
    DELETE FROM limits WHERE user_id = OLD.id;
END;

-- A change of limits bumps auth_version (migration 0002), which serve reads
-- on every request: a running serve applies a `user limit` made by another
-- process at its next request.
CREATE TRIGGER limits_insert_auth_version AFTER INSERT ON limits
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER limits_update_auth_version AFTER UPDATE ON limits
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER limits_delete_auth_version AFTER DELETE ON limits
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;

-- What the limiter charged a request against the user's budgets, when that
-- differs from or adds to what the usage columns say: a request whose usage
-- could not be read is charged what it reserved (budgets fail closed).
-- NULL: charged its total_tokens and cost_micro_usd. So the counters that
-- serve rebuilds from these rows at start are the ones it had.
ALTER TABLE usage ADD COLUMN charged_tokens INTEGER;
ALTER TABLE usage ADD COLUMN charged_micro_usd INTEGER;
