-- Tenants: the tenant that owns a subscription (NULL: none), and the one-time portal links an
-- operator hands a tenant. A link is kept as the SHA-256 of its nonce (the nonce itself is only
-- in the URL), used once (used_at set in the statement that accepts it) and pruned after expiry.
ALTER TABLE subscriptions ADD COLUMN tenant TEXT;
CREATE INDEX subscriptions_tenant ON subscriptions (tenant);

CREATE TABLE portal_links (
    nonce_hash TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    scope TEXT NOT NULL,             -- read | manage
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);
CREATE INDEX portal_links_expires_at ON portal_links (expires_at);
