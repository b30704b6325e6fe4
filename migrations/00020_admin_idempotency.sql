-- The admin API's Idempotency-Key records: the first answer to a POST,
-- kept for retries (default 24 h). id is a SHA-256 of the Idempotency-Key
-- (which is not stored); fingerprint a SHA-256 of
-- the request (method, path, body); response the answer sealed with
-- AES-256-GCM under a key derived from the admin token and the
-- Idempotency-Key, so a created API key is not readable from the database.

-- +goose Up
CREATE TABLE admin_idempotency (
    id          bytea       PRIMARY KEY CHECK (octet_length(id) = 32),
    fingerprint bytea       NOT NULL CHECK (octet_length(fingerprint) = 32),
    response    bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX admin_idempotency_expires_idx ON admin_idempotency (expires_at);

-- +goose Down
DROP TABLE admin_idempotency;
