-- Traces record the model the upstream's answer named and the name their
-- cost was looked up under, and which canonical encoding their chain hash
-- covers (core/trace/chain.go). The same columns as on PostgreSQL (see
-- its 0005_trace_pricing.sql for what they hold).
--
-- canonical_version is 1 for every row written before this migration and
-- for rows an older Loom still inserts during a rolling upgrade (the
-- default), 2 for rows written since. ADD COLUMN with a constant default
-- rewrites no row and fires no trigger.
ALTER TABLE traces ADD COLUMN reported_model TEXT NOT NULL DEFAULT '';
ALTER TABLE traces ADD COLUMN priced_model TEXT NOT NULL DEFAULT '';
ALTER TABLE traces ADD COLUMN request_truncated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN response_truncated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE traces ADD COLUMN canonical_version INTEGER NOT NULL DEFAULT 1;
