-- ../0008_key_states.sql in PostgreSQL: touching a provider (any add, set
-- or remove for its host) makes its keys usable again and bumps its version.
ALTER TABLE provider_keys ADD COLUMN state TEXT NOT NULL DEFAULT 'ok'
    CHECK (state IN ('ok', 'resting', 'rejected'));
ALTER TABLE provider_keys ADD COLUMN rest_until BIGINT;
ALTER TABLE providers ADD COLUMN version BIGINT NOT NULL DEFAULT 0;

CREATE FUNCTION provider_touch() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    pid BIGINT;
BEGIN
    IF TG_TABLE_NAME = 'providers' THEN
        pid := NEW.id;
    ELSIF TG_OP = 'DELETE' THEN
        pid := OLD.provider_id;
    ELSE
        pid := NEW.provider_id;
    END IF;
    UPDATE provider_keys SET state = 'ok', rest_until = NULL WHERE provider_id = pid AND state <> 'ok';
    UPDATE providers SET version = version + 1 WHERE id = pid;
    RETURN NULL;
END $$;

CREATE TRIGGER provider_touch_key_added AFTER INSERT ON provider_keys
    FOR EACH ROW EXECUTE FUNCTION provider_touch();
CREATE TRIGGER provider_touch_key_removed AFTER DELETE ON provider_keys
    FOR EACH ROW EXECUTE FUNCTION provider_touch();
CREATE TRIGGER provider_touch_set AFTER UPDATE OF base_url, inject_usage, alias, api_root, auth, headers ON providers
    FOR EACH ROW EXECUTE FUNCTION provider_touch();
