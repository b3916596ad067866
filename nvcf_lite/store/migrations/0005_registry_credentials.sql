-- Registry credentials (spec §2.8): what an account pulls private images with. The record NVCF
-- shows is msgspec JSON in `spec`; the secret (`username:password`) is only in `secret`, sealed
-- (store/sealing.py, context `registry-credential:<id>`), never in plain text. One credential
-- per registry host and account, so the one a pull uses is never ambiguous.
CREATE TABLE registry_credentials (
    registry_credential_id TEXT PRIMARY KEY,
    nca_id                 TEXT NOT NULL,
    registry_hostname      TEXT NOT NULL,   -- canonical: lower case, docker.io for Docker Hub
    created_at             TEXT NOT NULL,
    spec                   TEXT NOT NULL,
    secret                 TEXT NOT NULL,
    UNIQUE (nca_id, registry_hostname)
);
