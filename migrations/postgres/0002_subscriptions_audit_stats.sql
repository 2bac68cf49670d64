-- Subscriptions (API-managed routes), the counter replicas poll to notice their changes, the
-- audit trail of changes made through the admin API, and an index for per-route statistics.

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE, -- byte order, as SQLite sorts
    spec TEXT NOT NULL,              -- JSON: the route definition as the API accepted it
    secrets TEXT NOT NULL,           -- JSON: [{"sealed": base64, "expires_at_ms": n|null}], newest first
    enabled BOOLEAN NOT NULL,
    disabled_reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    version BIGINT NOT NULL
);

-- One row per counter; 'subscriptions' is bumped in the transaction of every subscription change.
CREATE TABLE generations (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO generations (name, value) VALUES ('subscriptions', 0);

CREATE TABLE audit (
    id TEXT COLLATE "C" PRIMARY KEY,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    details TEXT NOT NULL            -- JSON
);
CREATE INDEX audit_at ON audit (at, id);
CREATE INDEX audit_target_at ON audit (target, at);

-- Statistics of one route over a window.
CREATE INDEX attempts_route_at ON attempts (route, at);
