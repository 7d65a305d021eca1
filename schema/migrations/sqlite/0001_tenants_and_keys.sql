-- Tenants and their API keys.
--
-- Identifiers are canonical lower-case UUID text. Times are INTEGER Unix
-- nanoseconds (UTC); the store writes them truncated to the microsecond so
-- they match what PostgreSQL keeps.
--
-- A key row is never deleted (revoking sets revoked_at), and a tenant with
-- keys cannot be deleted either: the keys are history that traces refer to.

CREATE TABLE tenants (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    name       TEXT    NOT NULL UNIQUE,
    status     TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE api_keys (
    id           TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    tenant_id    TEXT    NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    label        TEXT    NOT NULL DEFAULT '',
    prefix       TEXT    NOT NULL,
    hash         BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32), -- SHA-256 of the full key
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;

CREATE INDEX api_keys_tenant_created_idx ON api_keys (tenant_id, created_at);
