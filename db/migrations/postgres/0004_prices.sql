-- ../0004_prices.sql in PostgreSQL.
CREATE TABLE prices (
    model        TEXT             PRIMARY KEY,
    input        DOUBLE PRECISION NOT NULL CHECK (input >= 0),
    output       DOUBLE PRECISION NOT NULL CHECK (output >= 0),
    cached_input DOUBLE PRECISION CHECK (cached_input >= 0),
    updated_at   BIGINT           NOT NULL
);

CREATE TRIGGER prices_auth_version AFTER INSERT OR UPDATE OR DELETE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION bump_auth_version();

ALTER TABLE usage ADD COLUMN cost_micro_usd BIGINT;
ALTER TABLE usage ADD COLUMN unmetered BIGINT NOT NULL DEFAULT 0;
