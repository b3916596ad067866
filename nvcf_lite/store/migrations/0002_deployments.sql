-- Desired state of each deployed function version. Instances are not stored: the running
-- containers (with their labels) are the truth, adopted again after a restart.
CREATE TABLE deployments (
    deployment_id TEXT PRIMARY KEY,
    function_id   TEXT NOT NULL,
    version_id    TEXT NOT NULL UNIQUE,
    nca_id        TEXT NOT NULL,
    specs         TEXT NOT NULL,            -- JSON array of GpuSpec
    health_info   TEXT NOT NULL DEFAULT '[]',
    draining      INTEGER NOT NULL DEFAULT 0,  -- graceful undeploy waiting for work to drain
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX deployments_by_function ON deployments (function_id);
