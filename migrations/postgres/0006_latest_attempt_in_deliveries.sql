-- Each delivery's latest attempt lives in its `deliveries` row; `attempts` keeps the earlier
-- ones. An attempt that is a delivery's first and last (most of them) is then one row instead
-- of two (docs/performance.md, fourteenth round).
ALTER TABLE deliveries ADD COLUMN last_attempt BIGINT;
ALTER TABLE deliveries ADD COLUMN last_duration_ms BIGINT;
ALTER TABLE deliveries ADD COLUMN last_response_body TEXT;
ALTER TABLE deliveries ADD COLUMN last_request_headers TEXT;
ALTER TABLE deliveries ADD COLUMN last_payload BYTEA;
ALTER TABLE deliveries ADD COLUMN last_config_version BIGINT;
ALTER TABLE deliveries ADD COLUMN last_config_revision TEXT;

-- Rows written before: each delivery's latest attempt (latest time, then latest recorded) moves
-- into its row.
UPDATE deliveries SET (status, last_status, last_error, last_at, last_attempt, last_duration_ms, last_response_body,
        last_request_headers, last_payload, last_config_version, last_config_revision) =
    (SELECT outcome, status, error, at, attempt, duration_ms, response_body, request_headers, payload,
            config_version, config_revision
     FROM attempts a WHERE a.delivery_id = deliveries.id ORDER BY a.at DESC, a.id DESC LIMIT 1)
WHERE EXISTS (SELECT 1 FROM attempts a WHERE a.delivery_id = deliveries.id);
DELETE FROM attempts WHERE id IN (
    SELECT (SELECT a.id FROM attempts a WHERE a.delivery_id = d.id ORDER BY a.at DESC, a.id DESC LIMIT 1)
    FROM deliveries d);

-- A delivery's upsert (`src/store/backend/batch.rs`) brings an attempt as the row's latest.
-- Before the row is written: if its latest attempt was no later than the one brought, it moves
-- to `attempts`; if it was later (the one brought was recorded late), the one brought goes to
-- `attempts` and the row keeps its own. The row's lock, taken by the upsert, orders concurrent
-- writers of one delivery: each sees the row the one before it left.
CREATE FUNCTION hookrelay_keep_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    kept deliveries;
BEGIN
    IF NEW.last_at >= OLD.last_at THEN
        IF OLD.last_attempt IS NULL THEN
            RETURN NEW;
        END IF;
        kept := OLD;
    ELSE
        kept := NEW;
        NEW.status := OLD.status;
        NEW.last_status := OLD.last_status;
        NEW.last_error := OLD.last_error;
        NEW.last_at := OLD.last_at;
        NEW.last_attempt := OLD.last_attempt;
        NEW.last_duration_ms := OLD.last_duration_ms;
        NEW.last_response_body := OLD.last_response_body;
        NEW.last_request_headers := OLD.last_request_headers;
        NEW.last_payload := OLD.last_payload;
        NEW.last_config_version := OLD.last_config_version;
        NEW.last_config_revision := OLD.last_config_revision;
    END IF;
    INSERT INTO attempts (delivery_id, route, event_id, event_type, attempt, outcome, status, duration_ms,
            response_body, request_headers, error, payload, config_version, config_revision, at)
        VALUES (kept.id, kept.route, kept.event_id, kept.event_type, kept.last_attempt, kept.status, kept.last_status,
            kept.last_duration_ms, kept.last_response_body, kept.last_request_headers, kept.last_error,
            kept.last_payload, kept.last_config_version, kept.last_config_revision, kept.last_at);
    RETURN NEW;
END
$$;
CREATE TRIGGER deliveries_keep_attempt BEFORE UPDATE OF last_at ON deliveries
    FOR EACH ROW EXECUTE FUNCTION hookrelay_keep_attempt();
