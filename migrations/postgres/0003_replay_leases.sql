-- Replay leases: a replay claims a dead letter (replay_claim, replay_claimed_at) before it
-- republishes it, and marks it replayed (replayed_at) only after the broker's confirm. A claim
-- older than the lease belongs to a replay that crashed or stalled and can be taken again, so a
-- crash between claim and publish never leaves a dead letter marked replayed but not republished.
ALTER TABLE dead_letters ADD COLUMN replay_claim TEXT;
ALTER TABLE dead_letters ADD COLUMN replay_claimed_at BIGINT;

-- The event as received, once per delivery, for routes that log payloads: any such delivery can
-- be retried, not only those that ended in a dead letter.
ALTER TABLE deliveries ADD COLUMN event BYTEA;

-- Every bump of a generation is announced on the channel hookrelay_<name> when its transaction
-- commits (NOTIFY is transactional), so that replicas sharing this database apply a
-- subscription change at once instead of at their next poll of the generation.
CREATE FUNCTION hookrelay_notify_generation() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('hookrelay_' || NEW.name, NEW.value::text);
    RETURN NEW;
END
$$;
CREATE TRIGGER generations_notify AFTER UPDATE ON generations
    FOR EACH ROW EXECUTE FUNCTION hookrelay_notify_generation();
