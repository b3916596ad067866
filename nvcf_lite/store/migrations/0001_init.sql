-- Accounts' API keys: only a SHA-256 of the key is kept.
CREATE TABLE api_keys (
    key_id      TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL UNIQUE,
    key_prefix  TEXT NOT NULL,
    nca_id      TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    scopes      TEXT NOT NULL,          -- JSON array of scope names
    resources   TEXT NOT NULL,          -- JSON array of {"type", "id"}
    created_at  TEXT NOT NULL,
    expires_at  TEXT,
    revoked_at  TEXT
);

-- One row per function version; `spec` is the JSON of the registered FunctionSpec.
CREATE TABLE function_versions (
    version_id  TEXT PRIMARY KEY,
    function_id TEXT NOT NULL,
    nca_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    spec        TEXT NOT NULL
);
CREATE INDEX function_versions_by_function ON function_versions (function_id, created_at);
CREATE INDEX function_versions_by_account ON function_versions (nca_id, created_at);

-- Function secrets, kept apart from `spec` so no read path can return them by accident.
CREATE TABLE function_secrets (
    version_id TEXT PRIMARY KEY REFERENCES function_versions (version_id) ON DELETE CASCADE,
    secrets    TEXT NOT NULL           -- JSON object name -> value
);
