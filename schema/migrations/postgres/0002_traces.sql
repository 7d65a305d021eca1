-- Traces: the encrypted, hash-chained, append-only request history, with the
-- tenant data keys that seal it, the recorder chains, and the tombstones that
-- retention leaves behind.
--
-- Requires PostgreSQL 13 or later (BEFORE row triggers on partitioned tables).

-- A tenant deleted with its keys shredded keeps its row (its traces refer to it).
ALTER TABLE tenants DROP CONSTRAINT tenants_status_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_status_check
    CHECK (status IN ('active', 'disabled', 'deleted'));

-- One row per version of a tenant's data key, wrapped (AES-256-GCM) by the
-- master key. Shredding a tenant deletes its rows.
CREATE TABLE tenant_keys (
    tenant_id  uuid        NOT NULL,
    version    integer     NOT NULL,
    wrapped    bytea       NOT NULL,
    nonce      bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT tenant_keys_pkey PRIMARY KEY (tenant_id, version),
    CONSTRAINT tenant_keys_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE RESTRICT,
    CONSTRAINT tenant_keys_version_check CHECK (version > 0)
);

-- One row per recorder hash chain. Every trace belongs to a registered chain.
CREATE TABLE trace_chains (
    id         uuid        PRIMARY KEY,
    started_at timestamptz NOT NULL,
    host       text        NOT NULL DEFAULT ''
);

-- The traces, partitioned by month of created_at (partitions are named
-- traces_yYYYYmMM and cover [first of the month, first of the next) in UTC).
-- A partitioned table's unique keys must include the partition key, hence
-- the primary key (created_at, id): a trace's created_at never changes, so a
-- replayed row still conflicts with its first copy.
CREATE TABLE traces (
    id                   uuid        NOT NULL,
    tenant_id            uuid        NOT NULL,
    request_id           text        NOT NULL,
    endpoint             text        NOT NULL,
    stream               boolean     NOT NULL,
    requested_model      text        NOT NULL,
    upstream_model       text        NOT NULL,
    provider_instance    text        NOT NULL,
    plugin_name          text        NOT NULL,
    plugin_version       text        NOT NULL,
    status               text        NOT NULL,
    http_status          integer     NOT NULL,
    error_message        text        NOT NULL,
    key_version          integer     NOT NULL,
    request_nonce        bytea,
    request_ct           bytea,
    response_nonce       bytea,
    response_ct          bytea,
    message_nonce        bytea,
    message_ct           bytea,
    prompt_tokens        bigint,
    completion_tokens    bigint,
    total_tokens         bigint,
    cached_prompt_tokens bigint,
    reasoning_tokens     bigint,
    usage_source         text        NOT NULL,
    cost_micros          bigint,
    price_version        text        NOT NULL,
    latency_us           bigint      NOT NULL,
    ttfb_us              bigint,
    upstream_us          bigint,
    upstream_ttfb_us     bigint,
    overhead_us          bigint      NOT NULL,
    config_hash          text        NOT NULL,
    created_at           timestamptz NOT NULL,
    chain_id             uuid        NOT NULL,
    chain_seq            bigint      NOT NULL,
    prev_hash            bytea       NOT NULL,
    hash                 bytea       NOT NULL,
    CONSTRAINT traces_pkey PRIMARY KEY (created_at, id),
    CONSTRAINT traces_tenant_id_fkey FOREIGN KEY (tenant_id)
        REFERENCES tenants (id) ON DELETE RESTRICT,
    CONSTRAINT traces_chain_id_fkey FOREIGN KEY (chain_id)
        REFERENCES trace_chains (id) ON DELETE RESTRICT,
    CONSTRAINT traces_chain_seq_check CHECK (chain_seq > 0),
    CONSTRAINT traces_prev_hash_check CHECK (octet_length(prev_hash) = 32),
    CONSTRAINT traces_hash_check CHECK (octet_length(hash) = 32)
) PARTITION BY RANGE (created_at);

-- Ciphertext does not compress: store it out of line without trying.
-- Partitions created later inherit the setting.
ALTER TABLE traces
    ALTER COLUMN request_ct  SET STORAGE EXTERNAL,
    ALTER COLUMN response_ct SET STORAGE EXTERNAL,
    ALTER COLUMN message_ct  SET STORAGE EXTERNAL;

CREATE INDEX traces_chain_seq_idx ON traces (chain_id, chain_seq);
CREATE INDEX traces_tenant_created_idx ON traces (tenant_id, created_at DESC, id DESC);
CREATE INDEX traces_tenant_id_idx ON traces (tenant_id, id);

-- Immutability. UPDATE and DELETE are refused row by row (the trigger on the
-- partitioned table is cloned onto every partition, present and future);
-- TRUNCATE by statement triggers on the parent and on each partition, since
-- truncating a partition directly does not fire the parent's. Retention
-- removes whole months with DROP TABLE, which fires neither.
CREATE FUNCTION loom_traces_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'traces are immutable: % on % is not allowed', TG_OP, TG_TABLE_NAME
        USING HINT = 'old traces are removed by retention, which drops whole monthly partitions';
END
$$;

CREATE TRIGGER traces_immutable BEFORE UPDATE OR DELETE ON traces
    FOR EACH ROW EXECUTE FUNCTION loom_traces_immutable();
CREATE TRIGGER traces_no_truncate BEFORE TRUNCATE ON traces
    FOR EACH STATEMENT EXECUTE FUNCTION loom_traces_immutable();

-- loom_ensure_trace_partitions creates the monthly partitions of `months`
-- months starting with the month of from_month, each with its TRUNCATE
-- trigger, skipping those that exist. It returns how many it created.
-- Callers serialise on an advisory lock ("loompart" in ASCII), which
-- retention takes too.
CREATE FUNCTION loom_ensure_trace_partitions(from_month date, months integer) RETURNS integer
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    m       date := date_trunc('month', from_month)::date;
    part    text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(7813586394338652788); -- 0x6c6f6f6d70617274
    FOR i IN 1 .. months LOOP
        part := 'traces_y' || to_char(m, 'YYYY') || 'm' || to_char(m, 'MM');
        IF to_regclass(part) IS NULL THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF traces FOR VALUES FROM (%L) TO (%L)',
                part,
                to_char(m, 'YYYY-MM-DD') || ' 00:00:00+00',
                to_char((m + interval '1 month')::date, 'YYYY-MM-DD') || ' 00:00:00+00');
            EXECUTE format('CREATE TRIGGER traces_no_truncate BEFORE TRUNCATE ON %I '
                || 'FOR EACH STATEMENT EXECUTE FUNCTION loom_traces_immutable()', part);
            created := created + 1;
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN created;
END
$$;

-- What retention removed: per dropped partition and chain, how many rows,
-- the sequence range and the hash of the last row, so a chain that lost its
-- beginning still verifies from last_hash. Insert-only like the traces.
CREATE TABLE trace_tombstones (
    id         uuid        PRIMARY KEY,
    partition  text        NOT NULL,
    chain_id   uuid        NOT NULL,
    rows       bigint      NOT NULL,
    first_seq  bigint      NOT NULL,
    last_seq   bigint      NOT NULL,
    last_hash  bytea       NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT trace_tombstones_chain_id_fkey FOREIGN KEY (chain_id)
        REFERENCES trace_chains (id) ON DELETE RESTRICT,
    CONSTRAINT trace_tombstones_rows_check CHECK (rows > 0),
    CONSTRAINT trace_tombstones_seq_check CHECK (first_seq > 0 AND last_seq >= first_seq),
    CONSTRAINT trace_tombstones_last_hash_check CHECK (octet_length(last_hash) = 32)
);

CREATE INDEX trace_tombstones_order_idx ON trace_tombstones (created_at, chain_id, first_seq);

CREATE FUNCTION loom_tombstones_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'trace tombstones are immutable: % on % is not allowed', TG_OP, TG_TABLE_NAME;
END
$$;

CREATE TRIGGER trace_tombstones_immutable BEFORE UPDATE OR DELETE ON trace_tombstones
    FOR EACH ROW EXECUTE FUNCTION loom_tombstones_immutable();
CREATE TRIGGER trace_tombstones_no_truncate BEFORE TRUNCATE ON trace_tombstones
    FOR EACH STATEMENT EXECUTE FUNCTION loom_tombstones_immutable();
