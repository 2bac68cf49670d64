-- Deliveries (one per route and event), their attempts, and indexed dead letters.
CREATE TABLE deliveries (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    last_status BIGINT,
    last_error TEXT,
    first_at BIGINT NOT NULL,
    last_at BIGINT NOT NULL
);
CREATE INDEX deliveries_last_at ON deliveries (last_at);
CREATE INDEX deliveries_route_last_at ON deliveries (route, last_at);

CREATE TABLE attempts (
    id BIGSERIAL PRIMARY KEY,
    delivery_id TEXT NOT NULL,
    route TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    status BIGINT,
    duration_ms BIGINT NOT NULL,
    response_body TEXT,
    error TEXT,
    payload BYTEA,
    config_version BIGINT NOT NULL,
    config_revision TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX attempts_delivery ON attempts (delivery_id, id);
CREATE INDEX attempts_at ON attempts (at);

CREATE TABLE dead_letters (
    id TEXT PRIMARY KEY,
    route TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    reason TEXT NOT NULL,
    error TEXT NOT NULL,
    details TEXT,
    last_status BIGINT,
    last_response TEXT,
    attempts BIGINT NOT NULL,
    body BYTEA NOT NULL,
    headers TEXT NOT NULL,
    dead_at BIGINT NOT NULL,
    replayed_at BIGINT
);
CREATE INDEX dead_letters_dead_at ON dead_letters (dead_at);
CREATE INDEX dead_letters_route_dead_at ON dead_letters (route, dead_at);
