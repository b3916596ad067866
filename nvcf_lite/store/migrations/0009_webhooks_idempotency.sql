-- Webhooks and idempotency keys (beyond NVCF; README "Webhooks and idempotency").
-- A request may name a webhook (NVCF-WEBHOOK-URL) and carry an Idempotency-Key.
ALTER TABLE requests ADD COLUMN webhook_url TEXT;
ALTER TABLE requests ADD COLUMN idempotency_key TEXT;

-- One row per (account, key) for the TTL: the request it accepted and, once it ended, its
-- outcome, written in the same transaction as the request's own end.
CREATE TABLE idempotency_keys (
    nca_id         TEXT NOT NULL,
    idem_key       TEXT NOT NULL,
    fingerprint    TEXT NOT NULL,          -- sha256 of function, version, path and body
    request_id     TEXT NOT NULL,
    function_id    TEXT NOT NULL,
    version_id     TEXT NOT NULL,
    result         BLOB,                   -- msgspec JSON of the Outcome, once it ended
    expires_at     REAL NOT NULL,
    PRIMARY KEY (nca_id, idem_key)
);
CREATE INDEX idempotency_keys_request ON idempotency_keys (request_id);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);

-- The signed POST of a request's final result, written with the request's end:
-- pending -> delivered | failed (after webhooks.max_attempts).
CREATE TABLE webhook_deliveries (
    delivery_id    TEXT PRIMARY KEY,
    request_id     TEXT NOT NULL,
    function_id    TEXT NOT NULL,
    version_id     TEXT NOT NULL,
    nca_id         TEXT NOT NULL,
    url            TEXT NOT NULL,
    outcome        BLOB NOT NULL,          -- msgspec JSON of the Outcome
    finished_at    REAL NOT NULL,
    state          TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at        REAL NOT NULL,
    last_error     TEXT,
    ended_at       REAL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (state, next_at);
