-- auth_version counts the commits that change what the proxy authenticates
-- with: users, providers and provider keys. pkg/store's cache of those rows
-- compares it, instead of SQLite's data_version, which every commit moves
-- (the usage writer's inserts, every 100 ms under load, included); so usage
-- records no longer make the cache reload its users and providers.
--
-- The triggers bump it in the same transaction as the change, whichever
-- process or handle commits it. A later migration that rewrites one of these
-- tables without firing them (a table rebuild: create, copy, drop, rename)
-- must recreate the triggers and bump v itself.
CREATE TABLE auth_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    v  INTEGER NOT NULL
);
INSERT INTO auth_version (id, v) VALUES (1, 0);

CREATE TRIGGER users_insert_auth_version AFTER INSERT ON users
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER users_update_auth_version AFTER UPDATE ON users
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER users_delete_auth_version AFTER DELETE ON users
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;

CREATE TRIGGER providers_insert_auth_version AFTER INSERT ON providers
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER providers_update_auth_version AFTER UPDATE ON providers
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER providers_delete_auth_version AFTER DELETE ON providers
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;

CREATE TRIGGER provider_keys_insert_auth_version AFTER INSERT ON provider_keys
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER provider_keys_update_auth_version AFTER UPDATE ON provider_keys
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
CREATE TRIGGER provider_keys_delete_auth_version AFTER DELETE ON provider_keys
BEGIN
    UPDATE auth_version SET v = v + 1 WHERE id = 1;
END;
