-- ../0005_limits.sql in PostgreSQL.
CREATE TABLE limits (
    user_id         BIGINT PRIMARY KEY,
    rpm             BIGINT CHECK (rpm >= 0),
    tpm             BIGINT CHECK (tpm >= 0),
    concurrent      BIGINT CHECK (concurrent >= 0),
    tokens          BIGINT CHECK (tokens >= 0),
    tokens_period   TEXT   CHECK (tokens_period IN ('day', 'week', 'month', 'total')),
    spend_micro_usd BIGINT CHECK (spend_micro_usd >= 0),
    spend_period    TEXT   CHECK (spend_period IN ('day', 'week', 'month', 'total')),
    models          TEXT,
    updated_at      BIGINT NOT NULL,
    CHECK ((tokens IS NULL) = (tokens_period IS NULL)),
    CHECK ((spend_micro_usd IS NULL) = (spend_period IS NULL))
);

CREATE FUNCTION users_delete_limits() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM limits WHERE user_id = OLD.id;
    RETURN NULL;
END $$;
CREATE TRIGGER users_delete_limits AFTER DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION users_delete_limits();

CREATE TRIGGER limits_auth_version AFTER INSERT OR UPDATE OR DELETE ON limits
    FOR EACH STATEMENT EXECUTE FUNCTION bump_auth_version();

ALTER TABLE usage ADD COLUMN charged_tokens BIGINT;
ALTER TABLE usage ADD COLUMN charged_micro_usd BIGINT;
