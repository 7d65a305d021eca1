package main

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/schema"
)

// legacyTraceColumns are the traces columns before 0005_trace_pricing: what
// a Loom from before canonical v2 inserts.
const legacyTraceColumns = `id, tenant_id, request_id, endpoint, stream, requested_model, upstream_model,
	provider_instance, plugin_name, plugin_version, status, http_status, error_message, key_version,
	prompt_tokens, completion_tokens, total_tokens, usage_source, cost_micros, price_version,
	latency_us, overhead_us, config_hash, created_at, chain_id, chain_seq, prev_hash, hash`

type rawStore interface {
	store.Store
	ExecRaw(ctx context.Context, sql string, args ...any) error
	TamperTrace(ctx context.Context, id, column string, value any) error
}

// legacySchema applies the migrations up to version upTo the way Migrate
// records them, leaving the database as a Loom that knew no later one did.
func legacySchema(t *testing.T, st rawStore, dialect string, upTo int) {
	t.Helper()
	ctx := context.Background()
	ddl := `CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`
	record := `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, 0)`
	if dialect == schema.Postgres {
		ddl = `CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`
		record = `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`
	}
	if err := st.ExecRaw(ctx, ddl); err != nil {
		t.Fatal(err)
	}
	ms, err := schema.Migrations(dialect)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version > upTo {
			break
		}
		if err := st.ExecRaw(ctx, m.SQL); err != nil {
			t.Fatalf("apply %04d_%s: %v", m.Version, m.Name, err)
		}
		if err := st.ExecRaw(ctx, record, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
}

// insertLegacyChain writes a chain of n traces as a Loom from before
// canonical v2 did: hashed with v1, inserted without the columns 0005 added.
// It returns the trace ids.
func insertLegacyChain(t *testing.T, st rawStore, dialect, tenantID string, start time.Time, n int) []string {
	t.Helper()
	ctx := context.Background()
	chain := uuid.NewString()
	if err := st.StartChain(ctx, store.Chain{ID: chain, StartedAt: start, Host: "old-loom"}); err != nil {
		t.Fatal(err)
	}
	if dialect == schema.Postgres {
		if err := st.ExecRaw(ctx, `SELECT loom_ensure_trace_partitions($1::date, 1)`, start.Format(time.DateOnly)); err != nil {
			t.Fatal(err)
		}
	}
	ph := make([]string, len(strings.Split(legacyTraceColumns, ",")))
	for i := range ph {
		ph[i] = "?"
		if dialect == schema.Postgres {
			ph[i] = fmt.Sprintf("$%d", i+1)
		}
	}
	insert := `INSERT INTO traces (` + legacyTraceColumns + `) VALUES (` + strings.Join(ph, ", ") + `)`
	prev := trace.ZeroHash
	var ids []string
	for i := 0; i < n; i++ {
		p, c, total, cost := int64(11), int64(4), int64(15), int64(64)
		tr := store.Trace{
			ID: uuid.Must(uuid.NewV7()).String(), TenantID: tenantID, RequestID: fmt.Sprintf("legacy-%d", i),
			Endpoint: "chat.completions", RequestedModel: "gpt-4o", UpstreamModel: "gpt-4o", ProviderInstance: "openai",
			PluginName: "openai", PluginVersion: "0.9.0", Status: "ok", HTTPStatus: 200, KeyVersion: 1,
			PromptTokens: &p, CompletionTokens: &c, TotalTokens: &total, UsageSource: "provider",
			CostMicros: &cost, PriceVersion: "2026-11-21", LatencyUS: 30000, OverheadUS: 900, ConfigHash: "cfg",
			CreatedAt: start.Add(time.Duration(i) * time.Second), ChainID: chain, ChainSeq: int64(i + 1), PrevHash: prev,
			CanonicalVersion: trace.CanonicalV1,
		}
		h, err := trace.ChainHash(&tr)
		if err != nil {
			t.Fatal(err)
		}
		tr.Hash, prev = h, h
		var stream, created any = false, tr.CreatedAt
		if dialect == schema.SQLite {
			stream, created = 0, tr.CreatedAt.UnixNano()
		}
		if err := st.ExecRaw(ctx, insert, tr.ID, tr.TenantID, tr.RequestID, tr.Endpoint, stream, tr.RequestedModel,
			tr.UpstreamModel, tr.ProviderInstance, tr.PluginName, tr.PluginVersion, tr.Status, tr.HTTPStatus, tr.ErrorMessage,
			tr.KeyVersion, p, c, total, tr.UsageSource, cost, tr.PriceVersion, tr.LatencyUS, tr.OverheadUS, tr.ConfigHash,
			created, tr.ChainID, tr.ChainSeq, tr.PrevHash, tr.Hash); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, tr.ID)
	}
	return ids
}

// A store upgraded from before canonical v2 holds traces hashed with v1
// (written before the migration, and by an older Loom still writing after
// it) and traces hashed with v2 (priced, with a priced model): loom verify
// passes on all of them, and catches a priced model added to an old row.
func TestVerifyAcrossTheUpgrade(t *testing.T) {
	for _, backendName := range []string{"sqlite", "postgres"} {
		t.Run(backendName, func(t *testing.T) {
			extra := storeEnv(t, backendName)
			dir := t.TempDir()
			st := openStoreAt(t, dir, extra).(rawStore)
			dialect := st.(interface{ Dialect() string }).Dialect()
			ctx := context.Background()
			legacySchema(t, st, dialect, 3)
			legacy, err := st.CreateTenant(ctx, "legacy")
			if err != nil {
				t.Fatal(err)
			}
			old := insertLegacyChain(t, st, dialect, legacy.ID, time.Date(2026, 1, 15, 10, 0, 0, 0, time.UTC), 4)

			// The new binary migrates (its CLI steps and serve) and writes v2.
			p := startProxy(t, extra...)
			for i := 0; i < 3; i++ {
				resp, b := p.post(t, "/v1/chat/completions", p.key,
					`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"metadata":{"mock_model":"gpt-4o-unlisted-preview"}}`)
				if resp.StatusCode != 200 {
					t.Fatalf("%d %s", resp.StatusCode, b)
				}
			}
			for _, tr := range traceByRequest(t, st, "acme", 3) {
				if tr.CanonicalVersion != trace.CanonicalV2 || tr.PricedModel != "gpt-4o" {
					t.Fatalf("new trace: canonical version %d, priced as %q", tr.CanonicalVersion, tr.PricedModel)
				}
			}
			// An older Loom still running during a rolling upgrade inserts
			// without the new columns: the defaults make its rows v1.
			late := insertLegacyChain(t, st, dialect, legacy.ID, time.Date(2026, 1, 16, 10, 0, 0, 0, time.UTC), 2)
			if code := p.gw.stop(t, syscall.SIGTERM); code != 0 {
				t.Fatalf("exit %d", code)
			}
			for _, id := range append(append([]string(nil), old...), late...) {
				tr, err := st.Trace(ctx, legacy.ID, id)
				if err != nil {
					t.Fatal(err)
				}
				if tr.CanonicalVersion != trace.CanonicalV1 || tr.PricedModel != "" || tr.ReportedModel != "" {
					t.Fatalf("legacy trace read back as version %d, priced %q, reported %q", tr.CanonicalVersion, tr.PricedModel, tr.ReportedModel)
				}
			}
			if out := mustRun(t, p.dir, p.env, "verify"); !strings.Contains(out, "OK: 3 chains, 9 traces verified") {
				t.Fatalf("verify: %s", out)
			}
			// A price attributed after the fact to a trace hashed with v1.
			if err := st.TamperTrace(ctx, old[1], "priced_model", "gpt-4o"); err != nil {
				t.Fatal(err)
			}
			r := runLoom(t, p.dir, p.env, "verify")
			if r.code != 1 || !strings.Contains(r.stdout, "BROKEN") || !strings.Contains(r.stdout, old[1]) {
				t.Fatalf("verify after tampering: exit %d\n%s", r.code, r.stdout)
			}
		})
	}
}
