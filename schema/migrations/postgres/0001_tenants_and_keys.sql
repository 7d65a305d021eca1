-- Tenants and their API keys.
--
-- A key row is never deleted (revoking sets revoked_at), and a tenant with
-- keys cannot be deleted either: the keys are history that traces refer to.

CREATE TABLE tenants (
    id         uuid        PRIMARY KEY,
    name       text        NOT NULL,
    status     text        NOT NULL DEFAULT 'active',
    created_at timestamptz NOT NULL,
    CONSTRAINT tenants_name_key UNIQUE (name),
    CONSTRAINT tenants_status_check CHECK (status IN ('active', 'disabled'))
);

CREATE TABLE api_keys (
    id           uuid        PRIMARY KEY,
    tenant_id    uuid        NOT NULL,
    label        text        NOT NULL DEFAULT '',
    prefix       text        NOT NULL,
    hash         bytea       NOT NULL,           -- SHA-256 of the full key
    created_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_keys_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE RESTRICT,
    CONSTRAINT api_keys_hash_key UNIQUE (hash),
    CONSTRAINT api_keys_hash_check CHECK (octet_length(hash) = 32)
);

CREATE INDEX api_keys_tenant_created_idx ON api_keys (tenant_id, created_at);
