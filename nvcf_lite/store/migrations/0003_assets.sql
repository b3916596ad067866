-- Assets (spec §2.5): one row per asset from its reservation (POST /v2/nvcf/assets) on. The
-- bytes live in the blob store (blobs/assets/<asset_id>) once `uploaded_at` is set. Epoch
-- seconds (REAL) are for the sweeper; `created_at` is the ISO-8601 string NVCF shows.
CREATE TABLE assets (
    asset_id          TEXT PRIMARY KEY,
    nca_id            TEXT NOT NULL,
    content_type      TEXT NOT NULL,
    description       TEXT NOT NULL,
    created_at        TEXT NOT NULL,
    upload_expires_at REAL NOT NULL,     -- the upload URL's expiry; unuploaded rows go then
    expires_at        REAL NOT NULL,     -- row and bytes are deleted then (asset_ttl_s)
    uploaded_at       TEXT,
    size_bytes        INTEGER,
    sha256            TEXT
);
CREATE INDEX assets_by_account ON assets (nca_id, created_at);
CREATE INDEX assets_by_expiry ON assets (expires_at);

-- Large results (spec §2.3.7) kept in the blob store (blobs/results/<request_id>) until
-- `expires_at` (download_url_ttl_s after they were stored).
CREATE TABLE result_blobs (
    request_id TEXT PRIMARY KEY,
    size_bytes INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX result_blobs_by_expiry ON result_blobs (expires_at);
