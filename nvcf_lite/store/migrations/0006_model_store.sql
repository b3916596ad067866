-- The model store (issue #16): models and resources pushed by `nvcf-lite models|resources
-- push` or PUT /v2/nvcf-lite/{models|resources}/..., mounted read-only at /config/models/{name}
-- and /config/resources/{name} (spec §4.1). The bytes are content-addressed files under
-- blobs/models/sha256/<sha256>, one per distinct content however many trees hold it; these
-- tables are the trees. A tree is immutable: a (kind, name, version) is pushed once.
CREATE TABLE artifacts (
    artifact_id TEXT PRIMARY KEY,
    kind        TEXT NOT NULL CHECK (kind IN ('model', 'resource')),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    file_count  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,         -- digest of the file list (path, mode, content digest)
    created_at  TEXT NOT NULL,
    UNIQUE (kind, name, version)
);

CREATE TABLE artifact_files (
    artifact_id TEXT NOT NULL,
    path        TEXT NOT NULL,         -- relative, '/'-separated, no '.' or '..' parts
    size_bytes  INTEGER NOT NULL,
    sha256      TEXT NOT NULL,         -- the blob: blobs/models/sha256/<sha256>
    executable  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (artifact_id, path)
);
CREATE INDEX artifact_files_by_blob ON artifact_files (sha256);
