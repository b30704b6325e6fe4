-- Organizations and their API keys (docs/keystore.md describes how the
-- gateway reads them). Keys are stored only as SHA-256 (key_hash) plus a
-- 12-character display prefix.

-- +goose Up
CREATE TABLE organizations (
    id                    uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    name                  text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    plan_tier             text        NOT NULL CHECK (plan_tier ~ '^[A-Za-z0-9._-]{1,64}$'),
    rate_limit_per_minute bigint      CHECK (rate_limit_per_minute > 0),
    rate_limit_per_day    bigint      CHECK (rate_limit_per_day > 0),
    burst                 bigint      CHECK (burst >= 0),
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    disabled_at           timestamptz
);

CREATE TABLE api_keys (
    id              uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id uuid        NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    key_prefix      text        NOT NULL CHECK (length(key_prefix) = 12),
    key_hash        bytea       NOT NULL CHECK (octet_length(key_hash) = 32),
    plan_tier       text        CHECK (plan_tier ~ '^[A-Za-z0-9._-]{1,64}$'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);

-- The gateway looks keys up by key_hash (the unique index above); the CLI
-- lists them by organization; warm start reads the newest active keys.
CREATE INDEX api_keys_organization_id_idx ON api_keys (organization_id, created_at);
CREATE INDEX api_keys_active_idx ON api_keys (created_at DESC) WHERE revoked_at IS NULL;

-- updated_at follows every change.
-- +goose StatementBegin
CREATE FUNCTION tenantgate_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER organizations_touch BEFORE UPDATE ON organizations
    FOR EACH ROW EXECUTE FUNCTION tenantgate_touch();

-- Change notifications for the gateways' caches, on channel tenantgate_keys:
-- "key:<hex sha256>" when a key row changes (old and new hash), "org:<uuid>"
-- when an organization changes. A change of last_used_at alone is not
-- announced, so recording usage never empties the caches.
-- +goose StatementBegin
CREATE FUNCTION tenantgate_notify_key() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND
       (NEW.organization_id, NEW.name, NEW.key_prefix, NEW.key_hash, NEW.plan_tier, NEW.expires_at, NEW.revoked_at)
       IS NOT DISTINCT FROM
       (OLD.organization_id, OLD.name, OLD.key_prefix, OLD.key_hash, OLD.plan_tier, OLD.expires_at, OLD.revoked_at) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        NEW.updated_at := now();
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        PERFORM pg_notify('tenantgate_keys', 'key:' || encode(OLD.key_hash, 'hex'));
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.key_hash <> OLD.key_hash) THEN
        PERFORM pg_notify('tenantgate_keys', 'key:' || encode(NEW.key_hash, 'hex'));
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER api_keys_notify BEFORE INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION tenantgate_notify_key();

-- +goose StatementBegin
CREATE FUNCTION tenantgate_notify_org() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('tenantgate_keys', 'org:' || OLD.id::text);
    ELSE
        PERFORM pg_notify('tenantgate_keys', 'org:' || NEW.id::text);
    END IF;
    RETURN NULL;
END
$$;
-- +goose StatementEnd

CREATE TRIGGER organizations_notify AFTER INSERT OR UPDATE OR DELETE ON organizations
    FOR EACH ROW EXECUTE FUNCTION tenantgate_notify_org();

-- +goose Down
DROP TABLE api_keys;
DROP TABLE organizations;
DROP FUNCTION tenantgate_notify_org();
DROP FUNCTION tenantgate_notify_key();
DROP FUNCTION tenantgate_touch();
