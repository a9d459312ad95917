-- ../0009_usage_rollup.sql in PostgreSQL: daily totals of every usage row,
-- kept by a row trigger in the transaction that inserts the row (the usage
-- writer's batches, off the request path). A new database has no usage, so
-- there is no history to fold in here; aiproxy migrate copies the rolled-up
-- totals of a SQLite file as they are.
CREATE TABLE usage_rollup (
    day               BIGINT NOT NULL,
    user_id           BIGINT NOT NULL,
    user_name         TEXT   NOT NULL,
    provider          TEXT   NOT NULL,
    model             TEXT   NOT NULL,
    requests          BIGINT NOT NULL DEFAULT 0,
    errors            BIGINT NOT NULL DEFAULT 0,
    partial           BIGINT NOT NULL DEFAULT 0,
    unmetered         BIGINT NOT NULL DEFAULT 0,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0,
    completion_tokens BIGINT NOT NULL DEFAULT 0,
    total_tokens      BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens  BIGINT NOT NULL DEFAULT 0,
    cached_tokens     BIGINT NOT NULL DEFAULT 0,
    duration_ms       BIGINT NOT NULL DEFAULT 0,
    cost_micro_usd    BIGINT,
    charged_tokens    BIGINT NOT NULL DEFAULT 0,
    charged_micro_usd BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id, user_name, provider, model)
);
CREATE INDEX usage_rollup_user_name_day ON usage_rollup (user_name, day);
CREATE INDEX usage_rollup_user_id_day ON usage_rollup (user_id, day);

CREATE FUNCTION usage_rollup_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_rollup AS r (day, user_id, user_name, provider, model, requests, errors, partial, unmetered,
        prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cached_tokens, duration_ms, cost_micro_usd,
        charged_tokens, charged_micro_usd)
    VALUES ((NEW.ts / 86400000) * 86400000, NEW.user_id, NEW.user_name, NEW.provider, NEW.model, 1,
        CASE WHEN NEW.status >= 400 THEN 1 ELSE 0 END, CASE WHEN NEW.partial != 0 THEN 1 ELSE 0 END,
        CASE WHEN NEW.unmetered != 0 THEN 1 ELSE 0 END, COALESCE(NEW.prompt_tokens, 0), COALESCE(NEW.completion_tokens, 0),
        COALESCE(NEW.total_tokens, 0), COALESCE(NEW.reasoning_tokens, 0), COALESCE(NEW.cached_tokens, 0),
        NEW.duration_ms, NEW.cost_micro_usd,
        CASE WHEN NEW.status < 400 THEN COALESCE(NEW.charged_tokens, NEW.total_tokens, 0) ELSE 0 END,
        CASE WHEN NEW.status < 400 THEN COALESCE(NEW.charged_micro_usd, NEW.cost_micro_usd, 0) ELSE 0 END)
    ON CONFLICT (day, user_id, user_name, provider, model) DO UPDATE SET
        requests = r.requests + 1,
        errors = r.errors + excluded.errors,
        partial = r.partial + excluded.partial,
        unmetered = r.unmetered + excluded.unmetered,
        prompt_tokens = r.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = r.completion_tokens + excluded.completion_tokens,
        total_tokens = r.total_tokens + excluded.total_tokens,
        reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens,
        cached_tokens = r.cached_tokens + excluded.cached_tokens,
        duration_ms = r.duration_ms + excluded.duration_ms,
        cost_micro_usd = CASE WHEN r.cost_micro_usd IS NULL THEN excluded.cost_micro_usd
            WHEN excluded.cost_micro_usd IS NULL THEN r.cost_micro_usd
            ELSE r.cost_micro_usd + excluded.cost_micro_usd END,
        charged_tokens = r.charged_tokens + excluded.charged_tokens,
        charged_micro_usd = r.charged_micro_usd + excluded.charged_micro_usd;
    RETURN NULL;
END $$;
CREATE TRIGGER usage_rollup_add AFTER INSERT ON usage FOR EACH ROW EXECUTE FUNCTION usage_rollup_add();
