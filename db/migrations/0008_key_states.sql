-- Provider key states (CONTRACT section 5): a key the upstream answered 429
-- rests until rest_until (Unix ms); one answered 401/403 is rejected until
-- an admin touches its provider. Kept in the database so that `provider
-- list` in another process shows them.
--
-- "Touching" a provider is any add, set or remove for its host: the
-- triggers below make every key of the provider usable again and bump the
-- provider's version, which tells a running serve to forget what it
-- remembers of refused keys. aiproxy's own state updates (state and
-- rest_until) are not a touch.
ALTER TABLE provider_keys ADD COLUMN state TEXT NOT NULL DEFAULT 'ok'
    CHECK (state IN ('ok', 'resting', 'rejected'));
ALTER TABLE provider_keys ADD COLUMN rest_until INTEGER;
ALTER TABLE providers ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

CREATE TRIGGER provider_touch_key_added AFTER INSERT ON provider_keys BEGIN
    UPDATE provider_keys SET state = 'ok', rest_until = NULL
        WHERE provider_id = NEW.provider_id AND state <> 'ok';
    UPDATE providers SET version = version + 1 WHERE id = NEW.provider_id;
END;

CREATE TRIGGER provider_touch_key_removed AFTER DELETE ON provider_keys BEGIN
    UPDATE provider_keys SET state = 'ok', rest_until = NULL
        WHERE provider_id = OLD.provider_id AND state <> 'ok';
    UPDATE providers SET version = version + 1 WHERE id = OLD.provider_id;
END;

CREATE TRIGGER provider_touch_set AFTER UPDATE OF base_url, inject_usage, alias, api_root, auth, headers ON providers BEGIN
    UPDATE provider_keys SET state = 'ok', rest_until = NULL
        WHERE provider_id = NEW.id AND state <> 'ok';
    UPDATE providers SET version = version + 1 WHERE id = NEW.id;
END;
