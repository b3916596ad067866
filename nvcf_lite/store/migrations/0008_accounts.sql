-- Accounts (spec §6.4): an NCA id and the NGC org name that selects it in the /v2/orgs paths.
-- The configured [account] is created (or renamed) at start; `nvcf-lite accounts create`
-- adds more.
CREATE TABLE accounts (
    nca_id     TEXT PRIMARY KEY,
    org_name   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

-- The NGC teams a key belongs to (JSON array; empty: the key is not limited to teams).
ALTER TABLE api_keys ADD COLUMN teams TEXT NOT NULL DEFAULT '[]';

-- Function sharing (spec §2.7): the authorized parties of a function (version_id '') or of
-- one version. `party_nca_id` '*' is the wildcard (public).
CREATE TABLE authorized_parties (
    function_id  TEXT NOT NULL,
    version_id   TEXT NOT NULL DEFAULT '',
    party_nca_id TEXT NOT NULL,
    client_id    TEXT,
    added_at     TEXT NOT NULL,
    PRIMARY KEY (function_id, version_id, party_nca_id)
);
CREATE INDEX authorized_parties_by_party ON authorized_parties (party_nca_id);
