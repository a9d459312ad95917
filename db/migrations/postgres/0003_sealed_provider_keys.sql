-- ../0003_sealed_provider_keys.sql marks the sealed-key format; a
-- PostgreSQL database has held sealed keys (BYTEA) from its first migration.
SELECT 1;
