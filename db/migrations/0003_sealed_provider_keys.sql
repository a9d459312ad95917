-- From this version on, provider_keys.secret holds each provider key sealed
-- (pkg/seal: AES-256-GCM under a secret kept outside the database, bound to
-- the provider's host and the key's row id), as a BLOB. A TEXT value there is
-- a key stored in clear by an older aiproxy: pkg/store seals those when it
-- opens the database, in one transaction, and scrubs the clear bytes.
--
-- This migration changes no table. It marks the new format, so that an
-- older aiproxy, which would send the sealed bytes upstream as a key,
-- refuses the database as written by a newer version.
SELECT 1;
