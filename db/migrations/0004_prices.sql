-- Prices set with `aiproxy price set` (CONTRACT section 5): US dollars per
-- one million tokens, overriding or adding to pkg/prices' built-in table.
-- cached_input is NULL where cached input costs what other input costs.
CREATE TABLE prices (
    model        TEXT    PRIMARY KEY,
    input        REAL    NOT NULL CHECK (input >= 0),
    output       REAL    NOT NULL CHECK (output >= 0),
    cached_input REAL    CHECK (cached_input >= 0),
    updated_at   INTEGER NOT NULL
);

-- A price change bumps auth_version (migration 0002), so that serve, which
-- reads that counter on every request, sees a `price set` made by another
-- process at its next request (pkg/prices.Table.Sync).
CREATE TRIGGER prices_insert_auth_version AFTER INSERT ON prices
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER prices_update_auth_version AFTER UPDATE ON prices
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER prices_delete_auth_version AFTER DELETE ON prices
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;

-- What each request cost, computed when it ended at the price then in force,
-- so that a later price change never rewrites history. Stored exact, as an
-- integer number of micro-dollars (1e-6 USD, rounded to the nearest), which
-- sums without floating-point drift and is the 6 decimals that cost_usd
-- shows. NULL: an unpriced model, or usage the upstream did not report.
ALTER TABLE usage ADD COLUMN cost_micro_usd INTEGER;
-- 1: a metered endpoint answered without usage that aiproxy could read.
ALTER TABLE usage ADD COLUMN unmetered INTEGER NOT NULL DEFAULT 0;
