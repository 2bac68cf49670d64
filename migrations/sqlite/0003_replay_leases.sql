-- Replay leases: a replay claims a dead letter (replay_claim, replay_claimed_at) before it
-- republishes it, and marks it replayed (replayed_at) only after the broker's confirm. A claim
-- older than the lease belongs to a replay that crashed or stalled and can be taken again, so a
-- crash between claim and publish never leaves a dead letter marked replayed but not republished.
ALTER TABLE dead_letters ADD COLUMN replay_claim TEXT;
ALTER TABLE dead_letters ADD COLUMN replay_claimed_at BIGINT;

-- The event as received, once per delivery, for routes that log payloads: any such delivery can
-- be retried, not only those that ended in a dead letter.
ALTER TABLE deliveries ADD COLUMN event BLOB;
