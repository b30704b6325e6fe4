-- A rotated key names its replacement, so that a key is replaced only once
-- (`caddy tenant key rotate` run twice refuses instead of making a second
-- replacement). Deleting the replacement frees the old key to be rotated again.

-- +goose Up
ALTER TABLE api_keys ADD COLUMN replaced_by uuid REFERENCES api_keys (id) ON DELETE SET NULL;

-- +goose Down
ALTER TABLE api_keys DROP COLUMN replaced_by;
