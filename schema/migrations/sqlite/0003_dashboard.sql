-- Dashboard: indexes for the trace listing (newest first, filtered, keyset
-- paginated on (created_at, id)) and for the analytics (summary and time
-- series over a window of created_at).
--
-- SQLite has no row-level security: every dashboard query carries its
-- tenant predicate itself (see store/sqlite/dashboard.go).
--
-- A trace row holds its sealed bodies (often several KB, in overflow pages)
-- before the metadata columns, so reading a metadata column from the table
-- walks the overflow chain. The analytics therefore read covering indexes
-- only, and the listing filters on index columns before it touches a row.

-- The per-tenant time index, widened to cover the time series (status,
-- tokens, cost, latency) and the listing filters; (created_at, id) order
-- serves the newest-first listing scanned backwards and TraceIDs forwards.
DROP INDEX traces_tenant_created_idx;
CREATE INDEX traces_tenant_created_idx ON traces (tenant_id, created_at, id,
    status, requested_model, provider_instance, stream, latency_us, total_tokens, cost_micros);

-- Per tenant and requested model: the summary (one range scan per model,
-- covering every column it aggregates) and the model filter of the listing.
CREATE INDEX traces_tenant_model_idx ON traces (tenant_id, requested_model, created_at, id,
    status, latency_us, overhead_us, prompt_tokens, completion_tokens, total_tokens,
    cached_prompt_tokens, cost_micros);

-- The status and provider filters of the listing (errors are rare; so may
-- a provider be).
CREATE INDEX traces_tenant_status_idx ON traces (tenant_id, status, created_at, id);
CREATE INDEX traces_tenant_provider_idx ON traces (tenant_id, provider_instance, created_at, id);

-- Every tenant's traces newest first (the admin listing), and retention.
DROP INDEX traces_created_idx;
CREATE INDEX traces_created_idx ON traces (created_at, id);
