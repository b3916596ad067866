-- Invocation requests: the durable queue and the results waiting to be polled.
-- `state`: queued -> leased -> done | failed. A lease belongs to this process only: on start,
-- every lease left by a previous process is expired back to queued (or failed after too many
-- attempts), so an accepted request is never lost and never reported twice.
CREATE TABLE requests (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id     TEXT NOT NULL UNIQUE,
    function_id    TEXT NOT NULL,
    version_id     TEXT NOT NULL,
    nca_id         TEXT NOT NULL,
    key_id         TEXT NOT NULL,
    state          TEXT NOT NULL,
    method         TEXT NOT NULL,
    path           TEXT NOT NULL,
    headers        TEXT NOT NULL,          -- JSON [[name, value], ...] as forwarded
    body           BLOB NOT NULL,
    poll_seconds   INTEGER NOT NULL,
    mode           TEXT NOT NULL,          -- pexec | stream | path
    assets         TEXT NOT NULL DEFAULT '[]',
    accepted_at    REAL NOT NULL,
    lease_until    REAL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    result         BLOB,                   -- msgspec JSON of the Outcome
    finished_at    REAL
);
CREATE INDEX requests_queue ON requests (state, version_id, seq);
CREATE INDEX requests_finished ON requests (finished_at);
