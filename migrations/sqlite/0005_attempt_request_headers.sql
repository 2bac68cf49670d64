-- The request headers each attempt was sent with, one `name: value` line per header, credential
-- values masked (NULL for attempts recorded before this migration).
ALTER TABLE attempts ADD COLUMN request_headers TEXT;
