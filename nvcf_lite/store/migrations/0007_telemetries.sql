-- Telemetry endpoints of an account (spec §2.8): where a function version's logs and metrics
-- are shipped. `name` is the name of the telemetry's secret, unique within an account.
CREATE TABLE telemetries (
    telemetry_id TEXT PRIMARY KEY,
    nca_id       TEXT NOT NULL,
    name         TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    provider     TEXT NOT NULL,
    types        TEXT NOT NULL,          -- JSON array of LOGS | METRICS | TRACES
    created_at   TEXT NOT NULL,
    UNIQUE (nca_id, name)
);

-- A telemetry's secret value, sealed (store/sealing.py), kept apart so no read path returns it.
CREATE TABLE telemetry_secrets (
    telemetry_id TEXT PRIMARY KEY REFERENCES telemetries (telemetry_id) ON DELETE CASCADE,
    secret       TEXT NOT NULL
);
