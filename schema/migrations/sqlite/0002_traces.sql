-- Traces: the encrypted, hash-chained, append-only request history, with the
-- tenant data keys that seal it, the recorder chains, and the tombstones that
-- retention leaves behind.

-- A tenant deleted with its keys shredded keeps its row (its traces refer to
-- it). SQLite cannot change a CHECK constraint in place, so tenants is
-- rebuilt, and api_keys with it: the new api_keys references the new tenants
-- table, which the RENAME then gives the old name (references follow). The
-- old tables are dropped child first, so no foreign key is ever dangling and
-- this works with foreign_keys on, inside the migration's transaction.
CREATE TABLE tenants_new (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    name       TEXT    NOT NULL UNIQUE,
    status     TEXT    NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled', 'deleted')),
    created_at INTEGER NOT NULL
) STRICT;
INSERT INTO tenants_new (id, name, status, created_at)
    SELECT id, name, status, created_at FROM tenants;

CREATE TABLE api_keys_new (
    id           TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    tenant_id    TEXT    NOT NULL REFERENCES tenants_new (id) ON DELETE RESTRICT,
    label        TEXT    NOT NULL DEFAULT '',
    prefix       TEXT    NOT NULL,
    hash         BLOB    NOT NULL UNIQUE CHECK (length(hash) = 32), -- SHA-256 of the full key
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT;
INSERT INTO api_keys_new (id, tenant_id, label, prefix, hash, created_at, last_used_at, revoked_at)
    SELECT id, tenant_id, label, prefix, hash, created_at, last_used_at, revoked_at FROM api_keys;

DROP TABLE api_keys;
DROP TABLE tenants;
ALTER TABLE tenants_new RENAME TO tenants;
ALTER TABLE api_keys_new RENAME TO api_keys;
CREATE INDEX api_keys_tenant_created_idx ON api_keys (tenant_id, created_at);

-- One row per version of a tenant's data key, wrapped (AES-256-GCM) by the
-- master key. Shredding a tenant deletes its rows.
CREATE TABLE tenant_keys (
    tenant_id  TEXT    NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    version    INTEGER NOT NULL CHECK (version > 0),
    wrapped    BLOB    NOT NULL,
    nonce      BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, version)
) STRICT, WITHOUT ROWID;

-- One row per recorder hash chain. Every trace belongs to a registered chain.
CREATE TABLE trace_chains (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    started_at INTEGER NOT NULL,
    host       TEXT    NOT NULL DEFAULT ''
) STRICT;

-- The traces: the same columns as on PostgreSQL, in one table (retention
-- deletes whole calendar months, UTC).
CREATE TABLE traces (
    id                   TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    tenant_id            TEXT    NOT NULL REFERENCES tenants (id) ON DELETE RESTRICT,
    request_id           TEXT    NOT NULL,
    endpoint             TEXT    NOT NULL,
    stream               INTEGER NOT NULL CHECK (stream IN (0, 1)),
    requested_model      TEXT    NOT NULL,
    upstream_model       TEXT    NOT NULL,
    provider_instance    TEXT    NOT NULL,
    plugin_name          TEXT    NOT NULL,
    plugin_version       TEXT    NOT NULL,
    status               TEXT    NOT NULL,
    http_status          INTEGER NOT NULL,
    error_message        TEXT    NOT NULL,
    key_version          INTEGER NOT NULL,
    request_nonce        BLOB,
    request_ct           BLOB,
    response_nonce       BLOB,
    response_ct          BLOB,
    message_nonce        BLOB,
    message_ct           BLOB,
    prompt_tokens        INTEGER,
    completion_tokens    INTEGER,
    total_tokens         INTEGER,
    cached_prompt_tokens INTEGER,
    reasoning_tokens     INTEGER,
    usage_source         TEXT    NOT NULL,
    cost_micros          INTEGER,
    price_version        TEXT    NOT NULL,
    latency_us           INTEGER NOT NULL,
    ttfb_us              INTEGER,
    upstream_us          INTEGER,
    upstream_ttfb_us     INTEGER,
    overhead_us          INTEGER NOT NULL,
    config_hash          TEXT    NOT NULL,
    created_at           INTEGER NOT NULL,
    chain_id             TEXT    NOT NULL REFERENCES trace_chains (id) ON DELETE RESTRICT,
    chain_seq            INTEGER NOT NULL CHECK (chain_seq > 0),
    prev_hash            BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash                 BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE INDEX traces_chain_seq_idx ON traces (chain_id, chain_seq);
CREATE INDEX traces_tenant_created_idx ON traces (tenant_id, created_at DESC, id DESC);
CREATE INDEX traces_tenant_id_idx ON traces (tenant_id, id);
CREATE INDEX traces_created_idx ON traces (created_at); -- retention

-- Immutability: UPDATE and DELETE are refused unless the one row of
-- trace_retention_guard says maintenance is running. Retention sets it to 1
-- inside its transaction and back to 0 before committing, so no other
-- connection ever sees it set. (DELETE without WHERE fires the trigger too:
-- SQLite's truncate optimisation is off on tables with triggers.)
CREATE TABLE trace_retention_guard (
    id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    active INTEGER NOT NULL CHECK (active IN (0, 1))
) STRICT;
INSERT INTO trace_retention_guard (id, active) VALUES (1, 0);

CREATE TRIGGER traces_no_update BEFORE UPDATE ON traces
WHEN (SELECT active FROM trace_retention_guard WHERE id = 1) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'traces are immutable: UPDATE is not allowed');
END;

CREATE TRIGGER traces_no_delete BEFORE DELETE ON traces
WHEN (SELECT active FROM trace_retention_guard WHERE id = 1) IS NOT 1
BEGIN
    SELECT RAISE(ABORT, 'traces are immutable: DELETE is not allowed (retention removes whole months)');
END;

-- What retention removed: per month and chain, how many rows, the sequence
-- range and the hash of the last row, so a chain that lost its beginning
-- still verifies from last_hash. Insert-only.
CREATE TABLE trace_tombstones (
    id         TEXT    NOT NULL PRIMARY KEY CHECK (length(id) = 36),
    partition  TEXT    NOT NULL,
    chain_id   TEXT    NOT NULL REFERENCES trace_chains (id) ON DELETE RESTRICT,
    rows       INTEGER NOT NULL CHECK (rows > 0),
    first_seq  INTEGER NOT NULL CHECK (first_seq > 0),
    last_seq   INTEGER NOT NULL,
    last_hash  BLOB    NOT NULL CHECK (length(last_hash) = 32),
    created_at INTEGER NOT NULL,
    CHECK (last_seq >= first_seq)
) STRICT;

CREATE INDEX trace_tombstones_order_idx ON trace_tombstones (created_at, chain_id, first_seq);

CREATE TRIGGER trace_tombstones_no_update BEFORE UPDATE ON trace_tombstones
BEGIN
    SELECT RAISE(ABORT, 'trace tombstones are immutable: UPDATE is not allowed');
END;

CREATE TRIGGER trace_tombstones_no_delete BEFORE DELETE ON trace_tombstones
BEGIN
    SELECT RAISE(ABORT, 'trace tombstones are immutable: DELETE is not allowed');
END;
