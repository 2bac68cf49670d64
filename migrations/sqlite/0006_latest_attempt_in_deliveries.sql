-- Each delivery's latest attempt lives in its `deliveries` row; `attempts` keeps the earlier
-- ones. An attempt that is a delivery's first and last (most of them) is then one row and four
-- B-tree entries instead of two rows and eight (docs/performance.md, fourteenth round).
ALTER TABLE deliveries ADD COLUMN last_attempt BIGINT;
ALTER TABLE deliveries ADD COLUMN last_duration_ms BIGINT;
ALTER TABLE deliveries ADD COLUMN last_response_body TEXT;
ALTER TABLE deliveries ADD COLUMN last_request_headers TEXT;
ALTER TABLE deliveries ADD COLUMN last_payload BLOB;
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

-- A delivery's upsert (`src/store/backend/batch.rs`) writes the attempt it brings into the row
-- as the latest. Then, if the row had a latest attempt no later than it, that one moves to
-- `attempts`; if the row's was later (the one brought was recorded late), the one brought goes
-- to `attempts` and the row takes its own back. (The connections run without recursive
-- triggers, SQLite's default, which `src/store/backend/sqlite.rs` sets: the UPDATE below does
-- not fire this trigger again.)
CREATE TRIGGER deliveries_keep_attempt AFTER UPDATE OF last_at ON deliveries
BEGIN
    INSERT INTO attempts (delivery_id, route, event_id, event_type, attempt, outcome, status, duration_ms,
            response_body, request_headers, error, payload, config_version, config_revision, at)
        SELECT OLD.id, OLD.route, OLD.event_id, OLD.event_type, OLD.last_attempt, OLD.status, OLD.last_status,
            OLD.last_duration_ms, OLD.last_response_body, OLD.last_request_headers, OLD.last_error, OLD.last_payload,
            OLD.last_config_version, OLD.last_config_revision, OLD.last_at
        WHERE NEW.last_at >= OLD.last_at AND OLD.last_attempt IS NOT NULL;
    INSERT INTO attempts (delivery_id, route, event_id, event_type, attempt, outcome, status, duration_ms,
            response_body, request_headers, error, payload, config_version, config_revision, at)
        SELECT NEW.id, NEW.route, NEW.event_id, NEW.event_type, NEW.last_attempt, NEW.status, NEW.last_status,
            NEW.last_duration_ms, NEW.last_response_body, NEW.last_request_headers, NEW.last_error, NEW.last_payload,
            NEW.last_config_version, NEW.last_config_revision, NEW.last_at
        WHERE NEW.last_at < OLD.last_at;
    UPDATE deliveries SET status = OLD.status, last_status = OLD.last_status, last_error = OLD.last_error,
            last_at = OLD.last_at, last_attempt = OLD.last_attempt, last_duration_ms = OLD.last_duration_ms,
            last_response_body = OLD.last_response_body, last_request_headers = OLD.last_request_headers,
            last_payload = OLD.last_payload, last_config_version = OLD.last_config_version,
            last_config_revision = OLD.last_config_revision
        WHERE id = NEW.id AND NEW.last_at < OLD.last_at;
END;
