-- Daily totals of every usage row ever written, folded by retention or not,
-- per UTC day (day = Unix milliseconds of its 00:00 UTC), user, provider and
-- model, so that stats over whole days read a few thousand rows instead of
-- millions. Invariant: for every key, usage_rollup = the usage rows of that
-- day + usage_daily (the folded ones). The trigger below keeps it in the
-- transaction that inserts a usage row, whoever writes it; retention's fold
-- moves rows from usage to usage_daily and leaves this table alone; nothing
-- else deletes or updates usage rows. Columns as usage_daily (cost_micro_usd
-- NULL while every row's cost was NULL), plus what ChargedSince charges:
-- over rows with status < 400, COALESCE(charged_tokens, total_tokens, 0)
-- and COALESCE(charged_micro_usd, cost_micro_usd, 0). Days folded before
-- this migration carry usage_daily's approximation of the charge (their
-- total_tokens and cost, errors included), as ChargedSince reads them.
CREATE TABLE usage_rollup (
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
    charged_tokens    INTEGER NOT NULL DEFAULT 0,
    charged_micro_usd INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_id, user_name, provider, model)
) WITHOUT ROWID;
CREATE INDEX usage_rollup_user_name_day ON usage_rollup (user_name, day);
CREATE INDEX usage_rollup_user_id_day ON usage_rollup (user_id, day);

-- The history so far: folded days and the rows still in usage. One pass
-- over the usage table (a one-time cost of a few seconds per million
-- rows); store.RebuildUsageRollup runs the same statement.
INSERT INTO usage_rollup (day, user_id, user_name, provider, model, requests, errors, partial, unmetered,
    prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cached_tokens, duration_ms, cost_micro_usd,
    charged_tokens, charged_micro_usd)
SELECT day, user_id, user_name, provider, model, SUM(n), SUM(e), SUM(p), SUM(u), SUM(pt), SUM(ct), SUM(tt), SUM(rt),
    SUM(cat), SUM(dur), SUM(cost), SUM(cht), SUM(chc)
FROM (
    SELECT day, user_id, user_name, provider, model, requests AS n, errors AS e, partial AS p, unmetered AS u,
        prompt_tokens AS pt, completion_tokens AS ct, total_tokens AS tt, reasoning_tokens AS rt, cached_tokens AS cat,
        duration_ms AS dur, cost_micro_usd AS cost, total_tokens AS cht, COALESCE(cost_micro_usd, 0) AS chc
    FROM usage_daily
    UNION ALL
    SELECT (ts / 86400000) * 86400000, user_id, user_name, provider, model, COUNT(*), SUM(status >= 400),
        SUM(partial != 0), SUM(unmetered != 0), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),
        COALESCE(SUM(total_tokens), 0), COALESCE(SUM(reasoning_tokens), 0), COALESCE(SUM(cached_tokens), 0),
        SUM(duration_ms), SUM(cost_micro_usd),
        SUM(CASE WHEN status < 400 THEN COALESCE(charged_tokens, total_tokens, 0) ELSE 0 END),
        SUM(CASE WHEN status < 400 THEN COALESCE(charged_micro_usd, cost_micro_usd, 0) ELSE 0 END)
    FROM usage GROUP BY 1, user_id, user_name, provider, model
)
GROUP BY day, user_id, user_name, provider, model;

-- Every new usage row adds to its day's totals, in its own transaction:
-- the usage writer's batches, off the request path.
CREATE TRIGGER usage_rollup_add AFTER INSERT ON usage BEGIN
    INSERT INTO usage_rollup AS r (day, user_id, user_name, provider, model, requests, errors, partial, unmetered,
        prompt_tokens, completion_tokens, total_tokens, reasoning_tokens, cached_tokens, duration_ms, cost_micro_usd,
        charged_tokens, charged_micro_usd)
    VALUES ((NEW.ts / 86400000) * 86400000, NEW.user_id, NEW.user_name, NEW.provider, NEW.model, 1, NEW.status >= 400,
        NEW.partial != 0, NEW.unmetered != 0, COALESCE(NEW.prompt_tokens, 0), COALESCE(NEW.completion_tokens, 0),
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
END;
