-- Shreds that survive backups: which master key wraps the data keys, and
-- which shreds are still waiting for that key to be rotated away.
--
-- Deleting a tenant's wrapped data keys does not erase them: they stay in
-- dead rows until VACUUM reuses the space, in the WAL and its archives, and
-- in every backup, wrapped under the master key of the time. A shred is
-- therefore recorded as pending, and completes when a master key rotation
-- retires that master key (after which, once the operator destroys the old
-- key, no copy of the wrapped keys can be unwrapped).
--
-- The serving role of the least-privilege deployment (see the comment atop
-- 0003_dashboard.sql) also needs, run as the owner after migrating:
--
--   GRANT SELECT, INSERT, UPDATE ON master_keys, tenant_shreds TO loom_app;

-- Master keys by identifier (seal.MasterKeyID: an HMAC of a fixed label
-- under the key, truncated to 64 bits; it reveals nothing of the key). At
-- most one is current (retired_at NULL); a retired key never comes back.
CREATE TABLE master_keys (
    id            text        PRIMARY KEY,
    registered_at timestamptz NOT NULL,
    retired_at    timestamptz,
    CONSTRAINT master_keys_id_check CHECK (id ~ '^[0-9a-f]{16}$')
);
CREATE UNIQUE INDEX master_keys_one_current_idx ON master_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;

-- The master key each data key is wrapped under; NULL for keys written
-- before this migration (the first rotation sets it).
ALTER TABLE tenant_keys ADD COLUMN master_key_id text;
ALTER TABLE tenant_keys ADD CONSTRAINT tenant_keys_master_key_id_fkey FOREIGN KEY (master_key_id)
    REFERENCES master_keys (id) ON DELETE RESTRICT;

-- One row per shredded tenant. completed_at is set by the first master key
-- rotation after the shred; NULL means pending. shredded_at is NULL for
-- tenants shredded before this migration, recorded here as pending.
CREATE TABLE tenant_shreds (
    tenant_id     uuid        PRIMARY KEY,
    shredded_at   timestamptz,
    key_versions  integer     NOT NULL DEFAULT 0,
    master_key_id text,
    completed_at  timestamptz,
    CONSTRAINT tenant_shreds_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE RESTRICT,
    CONSTRAINT tenant_shreds_master_key_id_fkey FOREIGN KEY (master_key_id)
        REFERENCES master_keys (id) ON DELETE RESTRICT,
    CONSTRAINT tenant_shreds_key_versions_check CHECK (key_versions >= 0)
);

INSERT INTO tenant_shreds (tenant_id) SELECT id FROM tenants WHERE status = 'deleted';
