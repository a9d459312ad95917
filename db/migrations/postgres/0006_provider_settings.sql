-- ../0006_provider_settings.sql in PostgreSQL (a new database has no
-- providers yet, so the well-known hosts' UPDATEs have nothing to do).
ALTER TABLE providers ADD COLUMN alias    TEXT;
ALTER TABLE providers ADD COLUMN api_root TEXT NOT NULL DEFAULT '/v1';
ALTER TABLE providers ADD COLUMN auth     TEXT NOT NULL DEFAULT 'bearer'
    CHECK (auth IN ('bearer', 'x-api-key', 'api-key', 'x-goog-api-key'));
ALTER TABLE providers ADD COLUMN headers  TEXT NOT NULL DEFAULT '{}';

CREATE UNIQUE INDEX providers_alias ON providers ((alias COLLATE nocase)) WHERE alias IS NOT NULL;
