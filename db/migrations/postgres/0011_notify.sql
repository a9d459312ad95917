-- PostgreSQL only (SQLite has no twin: its cache reads auth_version on every
-- lookup, ~11 µs). Every transaction that bumps auth_version (migration
-- 0002's triggers on users, providers and provider keys, and whatever else
-- bumps it) notifies aiproxy_auth when it commits; each serve's listener
-- (pkg/store/pg_listen.go) then marks its cache stale, and the next lookup
-- reads the counter. The payload is empty so that PostgreSQL folds the
-- notifications of one transaction into one.
CREATE FUNCTION notify_auth_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aiproxy_auth', '');
    RETURN NULL;
END $$;

CREATE TRIGGER auth_version_notify AFTER UPDATE ON auth_version
    FOR EACH STATEMENT EXECUTE FUNCTION notify_auth_version();
