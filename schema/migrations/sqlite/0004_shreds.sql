-- Shreds that survive backups: which master key wraps the data keys, and
-- which shreds are still waiting for that key to be rotated away.
--
-- Shredding deletes a tenant's wrapped data keys with secure_delete on, so
-- they leave the database file, but copies of the file (backups) and a WAL
-- that could not be checkpointed keep them, wrapped under the master key of
-- the time. A shred is therefore recorded as pending, and completes when a
-- master key rotation retires that master key (after which, once the
-- operator destroys the old key, no copy of the wrapped keys can be
-- unwrapped).

-- Master keys by identifier (seal.MasterKeyID: an HMAC of a fixed label
-- under the key, truncated to 64 bits; it reveals nothing of the key). At
-- most one is current (retired_at NULL); a retired key never comes back.
CREATE TABLE master_keys (
    id            TEXT    NOT NULL PRIMARY KEY
        CHECK (length(id) = 16 AND id NOT GLOB '*[^0-9a-f]*'),
    registered_at INTEGER NOT NULL,
    retired_at    INTEGER
) STRICT;
CREATE UNIQUE INDEX master_keys_one_current_idx ON master_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;

-- The master key each data key is wrapped under; NULL for keys written
-- before this migration (the first rotation sets it).
ALTER TABLE tenant_keys ADD COLUMN master_key_id TEXT REFERENCES master_keys (id) ON DELETE RESTRICT;

-- One row per shredded tenant. completed_at is set by the first master key
-- rotation after the shred; NULL means pending. shredded_at is NULL for
-- tenants shredded before this migration, recorded here as pending.
CREATE TABLE tenant_shreds (
    tenant_id     TEXT    NOT NULL PRIMARY KEY REFERENCES tenants (id) ON DELETE RESTRICT,
    shredded_at   INTEGER,
    key_versions  INTEGER NOT NULL DEFAULT 0 CHECK (key_versions >= 0),
    master_key_id TEXT    REFERENCES master_keys (id) ON DELETE RESTRICT,
    completed_at  INTEGER
) STRICT;

INSERT INTO tenant_shreds (tenant_id) SELECT id FROM tenants WHERE status = 'deleted';
