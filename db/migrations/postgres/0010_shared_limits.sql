-- PostgreSQL only: the counters of limited users, shared by every serve
-- process on this database (CONTRACT section 8), so that limits and budgets
-- hold across all instances together. SQLite has one serve per file, which
-- keeps these counters in memory (pkg/limits).
--
-- limit_holds: one row per request of a limited user in flight: a
-- concurrency slot, a count in the --rpm/--tpm window at its second (sec),
-- and the most it may cost (tokens, micro_usd) against the budget periods
-- starting at tokens_start and spend_start. Settling deletes it (and adds
-- its charge to limit_window and limit_used); releasing deletes it. A row
-- whose lease ran out belongs to an instance that died, or lost the
-- database for longer than a lease: the next reservation of the user marks
-- it expired, and it no longer holds a slot or a reservation, so a crash
-- never locks a user out; its instance, if alive, still settles it (and
-- the charge counts) or renews it (and it holds again). lease_until is in
-- the database's clock.
CREATE TABLE limit_holds (
    id           BIGSERIAL PRIMARY KEY,
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    instance     TEXT   NOT NULL,
    sec          BIGINT NOT NULL,
    tokens       BIGINT NOT NULL,
    micro_usd    BIGINT NOT NULL,
    tokens_start BIGINT,
    spend_start  BIGINT,
    expired      BOOLEAN NOT NULL DEFAULT false,
    lease_until  BIGINT NOT NULL
);
CREATE INDEX limit_holds_user ON limit_holds (user_id);
CREATE INDEX limit_holds_instance ON limit_holds (instance);

-- limit_window: per user and second, the settled requests of users with
-- --rpm or --tpm and the tokens they were charged, for as long as the
-- second is inside the 60 s window: at most 60 rows a user, however many
-- requests a minute.
CREATE TABLE limit_window (
    user_id  BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sec      BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens   BIGINT NOT NULL,
    PRIMARY KEY (user_id, sec)
);

-- limit_used: what each user was charged in the current period of a budget
-- (kind 'tokens' or 'spend'), seeded from the usage rows when the period's
-- first reservation creates it, then added to by every settlement.
CREATE TABLE limit_used (
    user_id      BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind         TEXT   NOT NULL CHECK (kind IN ('tokens', 'spend')),
    period_start BIGINT NOT NULL,
    used         BIGINT NOT NULL,
    PRIMARY KEY (user_id, kind)
);
