-- Traces record the model the upstream's answer named and the name their
-- cost was looked up under, and which canonical encoding their chain hash
-- covers (core/trace/chain.go).
--
-- reported_model: the model the upstream says it used; '' when it named
-- none. priced_model: the name whose price gave cost_micros (the reported
-- model, or the routed upstream_model when the catalog has no price for the
-- reported one); '' when the trace has no cost.
--
-- canonical_version: 1 for every row written before this migration (their
-- hashes cover loom.trace.v1, which has neither new column), 2 for rows
-- written since. The default of 1 also keeps rows that an older Loom still
-- inserts during a rolling upgrade verifiable. The version is not a field a
-- forger can flip: the hashed encoding starts with its name, so a row read
-- under another version no longer matches its hash.
--
-- ALTER TABLE on the partitioned table adds the columns to every partition,
-- and partitions created later (loom_ensure_trace_partitions) inherit them;
-- row-level security, the policies and the grants are per table, not per
-- column, so they cover the new columns as they are. Constant defaults are
-- stored in the catalog: no partition is rewritten. (No CHECK constraint on
-- canonical_version: adding one would scan every partition under an
-- exclusive lock; `loom verify` rejects a version it does not know.)
--
-- request_truncated, response_truncated: the sealed request or response is
-- the start of the body, cut at trace.max_body_bytes (v2 rows only).
ALTER TABLE traces
    ADD COLUMN reported_model     text    NOT NULL DEFAULT '',
    ADD COLUMN priced_model       text    NOT NULL DEFAULT '',
    ADD COLUMN request_truncated  boolean NOT NULL DEFAULT false,
    ADD COLUMN response_truncated boolean NOT NULL DEFAULT false,
    ADD COLUMN canonical_version  integer NOT NULL DEFAULT 1;
