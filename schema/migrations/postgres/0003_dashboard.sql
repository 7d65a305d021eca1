-- Dashboard: indexes for the trace listing and analytics, and row-level
-- security on the traces as a second wall between tenants.
--
-- ROW-LEVEL SECURITY
--
-- Every query of the store names its tenant itself; on top of that, the
-- traces table (and each of its monthly partitions) only shows a
-- transaction the rows its settings allow:
--
--   * SELECT: the rows of tenant loom.tenant_id, or every row when
--     loom.scope = 'all' (verification, retention, the admin dashboard);
--   * INSERT: only when loom.scope is 'writer' or 'all' (the recorder
--     inserts many tenants' rows in one batch);
--   * UPDATE, DELETE: no policy, so no row (the immutability triggers
--     remain for those who bypass row-level security).
--
-- The store sets both with set_config(…, true) as the first statement of
-- each transaction that touches traces, so they end with the transaction
-- and a pooled connection never carries them to the next user. Without
-- them a query sees no trace at all.
--
-- SUPERUSERS AND ROLES WITH BYPASSRLS ARE NOT SUBJECT TO ROW-LEVEL SECURITY.
-- For it to bite, Loom must connect as a role that is neither. FORCE ROW
-- LEVEL SECURITY below makes it apply to the tables' owner too, so the
-- simplest deployment is one ordinary role that owns the database:
--
--   CREATE ROLE loom LOGIN PASSWORD '…';   -- NOSUPERUSER NOBYPASSRLS: the defaults
--   CREATE DATABASE loom OWNER loom;
--
-- With least privilege, the owner runs `loom migrate` and `loom retention
-- apply` (retention drops partitions, which only their owner may) and
-- `loom serve` connects as a role with just these grants (run as the owner
-- after migrating; loom_app is the example name):
--
--   CREATE ROLE loom_app LOGIN PASSWORD '…';
--   GRANT USAGE ON SCHEMA public TO loom_app;
--   GRANT SELECT ON schema_migrations TO loom_app;
--   GRANT SELECT, INSERT, UPDATE ON tenants, api_keys TO loom_app;
--   GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_keys TO loom_app;
--   GRANT SELECT, INSERT ON trace_chains, traces TO loom_app;
--   GRANT SELECT ON trace_tombstones TO loom_app;
--   GRANT EXECUTE ON FUNCTION loom_ensure_trace_partitions(date, integer) TO loom_app;
--
-- (Grant on traces, not on its partitions: the role then cannot read a
-- partition directly at all. loom_ensure_trace_partitions runs as its owner,
-- so the serving role can create next month's partition without owning the
-- table.)
--
-- Only traces hold tenant data that the dashboard reads. The other tables
-- are left without row-level security: trace_tombstones and trace_chains
-- have no tenant (a chain and its tombstones span the tenants one recorder
-- served); api_keys is looked up by hash before the tenant is known;
-- tenant_keys hold data keys wrapped by the master key, read by the keyring
-- for the tenant a trace names (and all of them when the master key is
-- rotated), so a policy there could only repeat the id the caller passed.

-- Indexes. The per-tenant time index now covers what the analytics
-- aggregate, so summaries and time series are index-only scans (once
-- VACUUM, or autovacuum's insert threshold, has marked the pages
-- all-visible).
DROP INDEX traces_tenant_created_idx;
CREATE INDEX traces_tenant_created_idx ON traces (tenant_id, created_at DESC, id DESC)
    INCLUDE (requested_model, status, latency_us, overhead_us, prompt_tokens, completion_tokens,
             total_tokens, cached_prompt_tokens, cost_micros);
-- The listing's filters, each keeping the newest-first order: a filter on a
-- rare model, status or provider finds its page without walking the others.
CREATE INDEX traces_tenant_model_idx ON traces (tenant_id, requested_model, created_at DESC, id DESC);
CREATE INDEX traces_tenant_status_idx ON traces (tenant_id, status, created_at DESC, id DESC);
CREATE INDEX traces_tenant_provider_idx ON traces (tenant_id, provider_instance, created_at DESC, id DESC);
-- A high latency threshold matches few traces: found by latency, then sorted.
CREATE INDEX traces_tenant_latency_idx ON traces (tenant_id, latency_us);

-- Row-level security on the partitioned table. The settings are read in
-- scalar subqueries so that each is evaluated once per query (an InitPlan),
-- not once per row.
ALTER TABLE traces ENABLE ROW LEVEL SECURITY;
ALTER TABLE traces FORCE ROW LEVEL SECURITY;
CREATE POLICY traces_read ON traces FOR SELECT
    USING (tenant_id = (SELECT nullif(current_setting('loom.tenant_id', true), '')::uuid)
           OR (SELECT current_setting('loom.scope', true) = 'all'));
CREATE POLICY traces_insert ON traces FOR INSERT
    WITH CHECK ((SELECT current_setting('loom.scope', true) IN ('writer', 'all')));

-- A query naming a partition is checked against that partition's policies,
-- not the parent's (and a query through the parent against the parent's
-- only), so every partition gets the same ones. Retention reads the
-- partitions it drops directly, with loom.scope = 'all'.
CREATE FUNCTION loom_protect_trace_partition(part regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    EXECUTE format('CREATE POLICY traces_read ON %s FOR SELECT '
        || 'USING (tenant_id = (SELECT nullif(current_setting(''loom.tenant_id'', true), '''')::uuid) '
        || 'OR (SELECT current_setting(''loom.scope'', true) = ''all''))', part);
    EXECUTE format('CREATE POLICY traces_insert ON %s FOR INSERT '
        || 'WITH CHECK ((SELECT current_setting(''loom.scope'', true) IN (''writer'', ''all'')))', part);
END
$$;
REVOKE EXECUTE ON FUNCTION loom_protect_trace_partition(regclass) FROM PUBLIC;

SELECT loom_protect_trace_partition(i.inhrelid::regclass)
FROM pg_inherits i WHERE i.inhparent = 'traces'::regclass;

-- Partition creation as in 0002, now protecting each new partition. It runs
-- as its owner (SECURITY DEFINER), so a serving role that does not own
-- traces can still create the coming months; hence the bound on months and
-- a search_path fixed to this schema with pg_temp last.
CREATE OR REPLACE FUNCTION loom_ensure_trace_partitions(from_month date, months integer) RETURNS integer
LANGUAGE plpgsql
SECURITY DEFINER
AS $$
DECLARE
    m       date := date_trunc('month', from_month)::date;
    part    text;
    created integer := 0;
BEGIN
    IF months > 240 THEN
        RAISE EXCEPTION 'loom_ensure_trace_partitions: % months is more than 240', months;
    END IF;
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
            PERFORM loom_protect_trace_partition(part::regclass);
            created := created + 1;
        END IF;
        m := (m + interval '1 month')::date;
    END LOOP;
    RETURN created;
END
$$;
DO $$
BEGIN
    EXECUTE format('ALTER FUNCTION loom_ensure_trace_partitions(date, integer) SET search_path = %I, pg_temp',
        current_schema());
    EXECUTE format('ALTER FUNCTION loom_protect_trace_partition(regclass) SET search_path = %I, pg_temp',
        current_schema());
END
$$;
REVOKE EXECUTE ON FUNCTION loom_ensure_trace_partitions(date, integer) FROM PUBLIC;
