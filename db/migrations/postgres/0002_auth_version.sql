-- ../0002_auth_version.sql in PostgreSQL: auth_version counts the commits
-- that change what the proxy authenticates with. Every instance reads it
-- (one indexed row) before it answers a lookup from its cache, so a key
-- reset or deleted through any instance or the CLI is refused by every
-- other instance at its next request. Statement-level triggers: one bump
-- per statement is enough to tell a cache it is stale.
CREATE TABLE auth_version (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    v  BIGINT NOT NULL
);
INSERT INTO auth_version (id, v) VALUES (1, 0);

CREATE FUNCTION bump_auth_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
    RETURN NULL;
END $$;

CREATE TRIGGER users_auth_version AFTER INSERT OR UPDATE OR DELETE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION bump_auth_version();
CREATE TRIGGER providers_auth_version AFTER INSERT OR UPDATE OR DELETE ON providers
    FOR EACH STATEMENT EXECUTE FUNCTION bump_auth_version();
CREATE TRIGGER provider_keys_auth_version AFTER INSERT OR UPDATE OR DELETE ON provider_keys
    FOR EACH STATEMENT EXECUTE FUNCTION bump_auth_version();
