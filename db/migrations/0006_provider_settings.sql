-- Provider settings of CONTRACT section 6 (issue 14):
--   alias     another name for the provider, usable wherever its host is
--             (X-Host-Final, the first path segment, model prefixes); stored
--             in lower case, NULL when none; unique among aliases (the
--             index) and, checked by pkg/store in the same transaction, never
--             a registered host.
--   api_root  where the provider's API starts under base_url: /v1, or
--             /openai/v1 for Groq; /v1/models is fetched from base_url ||
--             api_root || '/models'.
--   auth      the header the provider takes its key in: bearer, x-api-key,
--             api-key or x-goog-api-key.
--   headers   pinned headers sent with every request to the provider, a JSON
--             object of canonical names to values ('{}' when none). Never a
--             key: Authorization and the scheme headers are refused.
--
-- ADD COLUMN does not rewrite the table, so the auth_version triggers of
-- 0002 stay as they are and fire on every later change of these columns
-- (a running serve sees an alias or auth change at its next request). The
-- defaults of existing rows are set by UPDATEs, which fire them too.
ALTER TABLE providers ADD COLUMN alias    TEXT;
ALTER TABLE providers ADD COLUMN api_root TEXT NOT NULL DEFAULT '/v1';
ALTER TABLE providers ADD COLUMN auth     TEXT NOT NULL DEFAULT 'bearer'
    CHECK (auth IN ('bearer', 'x-api-key', 'api-key', 'x-goog-api-key'));
ALTER TABLE providers ADD COLUMN headers  TEXT NOT NULL DEFAULT '{}';

CREATE UNIQUE INDEX providers_alias ON providers (alias COLLATE NOCASE) WHERE alias IS NOT NULL;

-- The well-known hosts' defaults (pkg/aiproxy DefaultAuth, DefaultAPIRootFor).
-- Groq's API is at /openai/v1, unless its base URL already ends in /openai
-- (the older way to register it).
UPDATE providers SET api_root = '/openai/v1'
    WHERE (host = 'api.groq.com' OR host LIKE 'api.groq.com:%') AND base_url NOT LIKE '%/openai';
UPDATE providers SET auth = 'x-api-key' WHERE host = 'api.anthropic.com' OR host LIKE 'api.anthropic.com:%';
UPDATE providers SET auth = 'api-key' WHERE host LIKE '%.openai.azure.com' OR host LIKE '%.openai.azure.com:%';
UPDATE providers SET auth = 'x-goog-api-key'
    WHERE host = 'generativelanguage.googleapis.com' OR host LIKE 'generativelanguage.googleapis.com:%';

-- Whatever the UPDATEs matched, a serve already running on this file
-- reloads its providers.
UPDATE auth_version SET v = v + 1 WHERE id = 1;
