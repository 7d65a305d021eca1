package trace_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/internal/testdb"
	"github.com/loom-runtime/loom/core/pricing"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/sqlite"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/sse"
)

var master = bytes.Repeat([]byte{7}, 32)

// flakyStore is the real SQLite store with a switch that makes trace
// inserts fail, as when the database is unreachable.
type flakyStore struct {
	*sqlite.Store
	down atomic.Bool
}

func (f *flakyStore) InsertTraces(ctx context.Context, t []store.Trace) (int, error) {
	if f.down.Load() {
		return 0, errors.New("connection refused")
	}
	return f.Store.InsertTraces(ctx, t)
}

type env struct {
	st     *flakyStore
	kr     *seal.Keyring
	tenant store.Tenant
	spool  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	st := testdb.SQLite(t)
	tn, err := st.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	fs := &flakyStore{Store: st}
	kr, err := seal.NewKeyring(master, fs)
	if err != nil {
		t.Fatal(err)
	}
	return &env{st: fs, kr: kr, tenant: tn, spool: filepath.Join(t.TempDir(), "spool")}
}

func (e *env) start(t *testing.T, mod func(*trace.Options)) *trace.Recorder {
	t.Helper()
	cat, err := pricing.Default()
	if err != nil {
		t.Fatal(err)
	}
	o := trace.Options{Store: e.st, Keyring: e.kr, Pricing: cat, SpoolDir: e.spool, SpoolMaxBytes: 1 << 30, TenantShare: 100,
		BatchInterval: 10 * time.Millisecond, ReplayInterval: 20 * time.Millisecond, StoreTimeout: time.Second}
	if mod != nil {
		mod(&o)
	}
	r, err := trace.Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (e *env) record(i int) *trace.Record {
	id, _ := uuid.NewV7()
	start := time.Now()
	return &trace.Record{
		ID: id.String(), TenantID: e.tenant.ID, RequestID: fmt.Sprintf("req-%d", i), Endpoint: "chat.completions",
		RequestedModel: "gpt-4o", UpstreamModel: "gpt-4o", ProviderInstance: "openai", Status: trace.StatusOK, HTTPStatus: 200,
		Request:  []byte(fmt.Sprintf(`{"model":"gpt-4o","messages":[{"role":"user","content":"secret prompt %d"}]}`, i)),
		Response: []byte(`{"choices":[{"message":{"content":"hi"}}]}`),
		Usage:    &provider.Usage{PromptTokens: 1000, CompletionTokens: 500, TotalTokens: 1500, CachedPromptTokens: 200},
		// Loom's own time: 1 ms to the provider call, a 1 ms plugin hop
		// (26 ms call, 25 ms upstream), 2 ms after it: 4 ms.
		Start: start, Received: start.Add(time.Millisecond), Dispatched: start.Add(2 * time.Millisecond), Returned: start.Add(28 * time.Millisecond),
		End: start.Add(30 * time.Millisecond), Upstream: 25 * time.Millisecond, UpstreamTTFB: 10 * time.Millisecond,
		TTFB: 29 * time.Millisecond,
	}
}

func submit(t *testing.T, r *trace.Recorder, rec *trace.Record) {
	t.Helper()
	var err error
	if rec.Admission, err = r.Admit(rec.TenantID); err != nil {
		t.Fatal(err)
	}
	r.Submit(rec)
}

func closeRecorder(t *testing.T, r *trace.Recorder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestRecorderWritesSealedPricedChainedTraces(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	recs := make([]*trace.Record, 50)
	for i := range recs {
		recs[i] = e.record(i)
		submit(t, r, recs[i])
	}
	closeRecorder(t, r)
	if n, _ := e.st.CountTraces(ctx, e.tenant.ID); n != 50 {
		t.Fatalf("%d traces, want 50", n)
	}
	got, err := e.st.Trace(ctx, e.tenant.ID, recs[7].ID)
	if err != nil {
		t.Fatal(err)
	}
	// Raw SQL on the database file: ciphertext only, and the same prompt
	// twice never gives the same ciphertext.
	db, err := sql.Open("sqlite", e.st.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT request_ct, response_ct FROM traces")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for rows.Next() {
		var req, resp []byte
		if err := rows.Scan(&req, &resp); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(req, []byte("secret prompt")) || bytes.Contains(resp, []byte(`"content":"hi"`)) {
			t.Fatal("plaintext in the database")
		}
		if seen[string(resp)] {
			t.Fatal("the same response sealed twice gave the same ciphertext")
		}
		seen[string(resp)] = true
	}
	rows.Close()
	plain, err := e.kr.Open(ctx, e.tenant.ID, got.KeyVersion, got.ID, seal.FieldRequest, got.Request)
	if err != nil || !bytes.Equal(plain, recs[7].Request) {
		t.Fatalf("open: %v %q", err, plain)
	}
	// gpt-4o: $2.50 in, $1.25 cached in, $10 out per 1M tokens:
	// 800×2.5 + 200×1.25 + 500×10 = 2000 + 250 + 5000 = 7250 µ$.
	if got.CostMicros == nil || *got.CostMicros != 7250 || got.PriceVersion == "" {
		t.Fatalf("cost %v (catalog %q), want 7250 µ$", got.CostMicros, got.PriceVersion)
	}
	if got.UsageSource != trace.UsageProvider || *got.CachedPromptTokens != 200 {
		t.Fatalf("usage %s %v", got.UsageSource, got.CachedPromptTokens)
	}
	if got.LatencyUS != 30000 || *got.UpstreamUS != 25000 || got.OverheadUS != 4000 || *got.TTFBUS != 29000 {
		t.Fatalf("latencies total %d upstream %v overhead %d ttfb %v", got.LatencyUS, *got.UpstreamUS, got.OverheadUS, *got.TTFBUS)
	}
	reports, err := trace.Verify(ctx, e.st, "")
	if err != nil || len(reports) != 1 || reports[0].Break != nil || reports[0].Traces != 50 {
		t.Fatalf("verify: %v %+v", err, reports)
	}
}

func TestVerifyCatchesTampering(t *testing.T) {
	for _, tc := range []struct {
		column string
		value  any
	}{
		{"status", "ok "},
		{"http_status", 201},
		{"cost_micros", 1},
		{"request_ct", []byte("forged")},
		{"tenant_id", "other-tenant"}, // a row moved to another tenant
		{"priced_model", "gpt-4o-mini"},
		{"reported_model", "gpt-4o-mini"},
		{"canonical_version", 1}, // read as v1, the row no longer matches its hash
		{"canonical_version", 3}, // a version Loom does not know
	} {
		t.Run(tc.column, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			r := e.start(t, nil)
			var victim string
			for i := 0; i < 10; i++ {
				rec := e.record(i)
				if i == 4 {
					victim = rec.ID
				}
				submit(t, r, rec)
			}
			closeRecorder(t, r)
			if tc.value == "other-tenant" {
				other, err := e.st.CreateTenant(ctx, "other")
				if err != nil {
					t.Fatal(err)
				}
				tc.value = other.ID
			}
			if err := e.st.TamperTrace(ctx, victim, tc.column, tc.value); err != nil {
				t.Fatal(err)
			}
			reports, err := trace.Verify(ctx, e.st, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(reports) != 1 || reports[0].Break == nil || reports[0].Break.Seq != 5 || reports[0].Break.TraceID != victim {
				t.Fatalf("tampered %s not caught at seq 5: %+v", tc.column, reports)
			}
			// Seqs 1 to 4 verified; seq 5 is the break, not a good trace.
			if reports[0].Traces != 4 {
				t.Fatalf("tampered %s: %d good traces reported before seq 5, want 4", tc.column, reports[0].Traces)
			}
		})
	}
}

func TestRecorderSpoolsWhileStoreIsDown(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	e.st.down.Store(true)
	var ids []string
	for i := 0; i < 30; i++ {
		rec := e.record(i)
		ids = append(ids, rec.ID)
		submit(t, r, rec)
	}
	deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
	for r.Stats().Spooled < 30 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := r.Stats(); s.Spooled != 30 || s.SpoolBytes == 0 {
		t.Fatalf("stats while down: %+v", s)
	}
	files, _ := filepath.Glob(filepath.Join(e.spool, "*.spool"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if bytes.Contains(b, []byte("secret prompt")) {
			t.Fatal("plaintext in the spool")
		}
	}
	// More traffic while the spool is pending keeps the order: it is spooled too.
	e.st.down.Store(false)
	for i := 30; i < 40; i++ {
		rec := e.record(i)
		ids = append(ids, rec.ID)
		submit(t, r, rec)
	}
	for time.Now().Before(deadline) {
		if n, _ := e.st.CountTraces(ctx, e.tenant.ID); n == 40 && r.Stats().SpoolBytes == 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeRecorder(t, r)
	got, _ := e.st.TraceIDs(ctx, e.tenant.ID)
	if len(got) != 40 {
		t.Fatalf("%d traces after recovery, want 40", len(got))
	}
	seen := map[string]bool{}
	for _, id := range got {
		seen[id] = true
	}
	for _, id := range ids {
		if !seen[id] {
			t.Fatalf("trace %s lost", id)
		}
	}
	if reports, _ := trace.Verify(ctx, e.st, ""); reports[0].Break != nil {
		t.Fatalf("chain broken after replay: %s", reports[0].Break)
	}
}

func TestSpoolReplayedAfterRestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	e.st.down.Store(true)
	for i := 0; i < 5; i++ {
		submit(t, r, e.record(i))
	}
	closeRecorder(t, r) // the store is still down: the traces stay in the spool
	if n, _ := e.st.CountTraces(ctx, e.tenant.ID); n != 0 {
		t.Fatalf("%d traces reached a store that was down", n)
	}
	e.st.down.Store(false)
	r = e.start(t, nil)                     // the next run replays what the last one spooled
	deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
	for time.Now().Before(deadline) {
		if n, _ := e.st.CountTraces(ctx, e.tenant.ID); n == 5 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeRecorder(t, r)
	if n, _ := e.st.CountTraces(ctx, e.tenant.ID); n != 5 {
		t.Fatalf("%d traces after restart, want 5", n)
	}
}

func TestAdmitRefusesWhenSpoolIsFull(t *testing.T) {
	e := newEnv(t)
	r := e.start(t, func(o *trace.Options) { o.SpoolMaxBytes = 4096 })
	defer closeRecorderQuiet(r)
	e.st.down.Store(true)
	refused := false
	for i := 0; i < 200 && !refused; i++ {
		if _, err := r.Admit(e.tenant.ID); err != nil {
			if !errors.Is(err, trace.ErrSpoolFull) {
				t.Fatalf("refused with %v, want ErrSpoolFull", err)
			}
			refused = true
			break
		}
		r.Submit(e.record(i))
		time.Sleep(2 * time.Millisecond)
	}
	if !refused {
		t.Fatal("the spool grew past its limit without refusing requests")
	}
}

func closeRecorderQuiet(r *trace.Recorder) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r.Close(ctx)
}

func TestSyncDurability(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, func(o *trace.Options) { o.Durability = trace.Sync; o.BatchInterval = 200 * time.Millisecond })
	defer closeRecorder(t, r)
	for i := 0; i < 5; i++ {
		rec := e.record(i)
		submit(t, r, rec)
		if err := rec.Durable(); err != nil {
			t.Fatal(err)
		}
		if _, err := e.st.Trace(ctx, e.tenant.ID, rec.ID); err != nil {
			t.Fatalf("Durable returned before the trace was stored: %v", err)
		}
	}
}

func TestEstimatedUsageForStreamsWithoutUsage(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	rec := e.record(0)
	rec.Stream, rec.Usage = true, nil
	rec.Response = nil
	for _, ev := range []string{
		`{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"The capital of France"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":" is Paris."}}]}`,
	} {
		rec.Response = sse.AppendEvent(rec.Response, []byte(ev))
	}
	rec.Status = trace.StatusStreamFailure
	submit(t, r, rec)
	closeRecorder(t, r)
	got, err := e.st.Trace(ctx, e.tenant.ID, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.UsageSource != trace.UsageEstimated || got.PromptTokens == nil || *got.PromptTokens < 5 ||
		*got.CompletionTokens != 7 || got.CostMicros == nil {
		t.Fatalf("usage %s prompt %v completion %v cost %v", got.UsageSource, got.PromptTokens, got.CompletionTokens, got.CostMicros)
	}
	msg, err := e.kr.Open(ctx, e.tenant.ID, got.KeyVersion, got.ID, seal.FieldMessage, got.Message)
	if err != nil || !strings.Contains(string(msg), "The capital of France is Paris.") {
		t.Fatalf("assembled message %s (%v)", msg, err)
	}
}

func TestUnpricedModelHasNoCost(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	rec := e.record(0)
	rec.UpstreamModel, rec.RequestedModel = "echo-1", "echo/echo-1"
	submit(t, r, rec)
	closeRecorder(t, r)
	got, _ := e.st.Trace(ctx, e.tenant.ID, rec.ID)
	if got.CostMicros != nil {
		t.Fatalf("unpriced model cost %d, want NULL", *got.CostMicros)
	}
}

// Without provider usage, a trace is charged an estimate only when an
// upstream call happened and can have produced billable output: not when
// Loom or the upstream refused the request, nor when the provider answered
// without calling its upstream.
func TestEstimateOnlyWhatCanBeBilled(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	errBody := []byte(`{"error":{"message":"no","type":"server_error","param":null,"code":null}}`)
	var events []byte
	for _, ev := range []string{
		`{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"The capital of France"}}]}`,
		`{"id":"c","choices":[{"index":0,"delta":{"content":" is Paris."}}]}`,
	} {
		events = sse.AppendEvent(events, []byte(ev))
	}
	type shape struct {
		status   string
		stream   bool
		http     int
		upstream time.Duration
		response []byte
	}
	cases := []struct {
		name      string
		s         shape
		estimated bool
	}{
		{"ok", shape{trace.StatusOK, false, 200, 25 * time.Millisecond, []byte(`{"choices":[{"message":{"content":"hi"}}]}`)}, true},
		{"ok without upstream timings", shape{trace.StatusOK, false, 200, 0, []byte(`{"choices":[{"message":{"content":"hi"}}]}`)}, true},
		{"stream broken off", shape{trace.StatusStreamFailure, true, 200, 25 * time.Millisecond, events}, true},
		{"client left after the call started", shape{trace.StatusClientDisconnect, false, 499, 25 * time.Millisecond, nil}, true},
		{"client left mid-stream", shape{trace.StatusClientDisconnect, true, 200, 0, events}, true},
		{"shutdown mid-stream", shape{trace.StatusShutdown, true, 200, 0, events}, true},
		{"timed out after the call started", shape{trace.StatusUpstreamTimeout, false, 504, 25 * time.Millisecond, errBody}, true},
		{"plugin failed mid-stream", shape{trace.StatusPluginFailure, true, 200, 0, events}, true},
		{"Loom failed mid-stream", shape{trace.StatusInternalError, true, 200, 0, events}, true},

		{"client left before any call", shape{trace.StatusClientDisconnect, false, 499, 0, nil}, false},
		{"timed out before any call", shape{trace.StatusUpstreamTimeout, false, 504, 0, errBody}, false},
		{"rejected", shape{trace.StatusRejected, false, 400, 0, errBody}, false},
		{"upstream 500", shape{trace.StatusUpstreamError, false, 500, 25 * time.Millisecond, errBody}, false},
		{"stream: upstream 429", shape{trace.StatusUpstreamError, true, 429, 25 * time.Millisecond, errBody}, false},
		{"no credentials, as upstream_error", shape{trace.StatusUpstreamError, false, 503, 0, errBody}, false},
		{"no credentials", shape{trace.StatusProviderUnavailable, true, 503, 0, errBody}, false},
		{"unreachable", shape{trace.StatusUpstreamUnreachable, false, 502, 3 * time.Millisecond, errBody}, false},
		{"plugin failed before the answer", shape{trace.StatusPluginFailure, true, 502, 0, errBody}, false},
		{"Loom failed before the answer", shape{trace.StatusInternalError, false, 500, 0, errBody}, false},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		rec := e.record(i)
		rec.Usage = nil
		rec.Status, rec.Stream, rec.HTTPStatus, rec.Upstream, rec.Response = c.s.status, c.s.stream, c.s.http, c.s.upstream, c.s.response
		if c.s.upstream == 0 {
			rec.UpstreamTTFB = 0
		}
		ids[i] = rec.ID
		submit(t, r, rec)
	}
	closeRecorder(t, r)
	for i, c := range cases {
		got, err := e.st.Trace(ctx, e.tenant.ID, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		if c.estimated {
			if got.UsageSource != trace.UsageEstimated || got.PromptTokens == nil || *got.PromptTokens == 0 || got.CostMicros == nil || got.PricedModel != "gpt-4o" {
				t.Errorf("%s: usage %s, prompt %s, cost %s, priced as %q: want an estimate priced as gpt-4o", c.name, got.UsageSource, num(got.PromptTokens), num(got.CostMicros), got.PricedModel)
			}
			continue
		}
		if got.UsageSource != trace.UsageNone || got.PromptTokens != nil || got.CompletionTokens != nil || got.CostMicros != nil || got.PricedModel != "" {
			t.Errorf("%s: usage %s, prompt %s, cost %s, priced as %q: want nothing counted or charged", c.name, got.UsageSource, num(got.PromptTokens), num(got.CostMicros), got.PricedModel)
		}
	}
}

// num shows an optional count.
func num(p *int64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

// A trace is priced under the model the upstream reported; when the catalog
// has no price for that name, under the model Loom routed the request to;
// never under the client's requested name. The name that priced it is kept.
func TestPricingFallsBackToTheRoutedModel(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	cases := []struct {
		name                          string
		requested, upstream, reported string
		cost                          int64 // µ$; -1: no cost
		priced                        string
	}{
		// gpt-4o: 800×2.5 + 200×1.25 + 500×10 = 7250 µ$.
		{"reported snapshot has a price", "gpt-4o", "gpt-4o", "gpt-4o-2024-08-06", 7250, "gpt-4o-2024-08-06"},
		{"reported unpriced: routed", "gpt-4o", "gpt-4o", "gpt-4o-unlisted-preview", 7250, "gpt-4o"},
		{"nothing reported: routed", "gpt-4o", "gpt-4o", "", 7250, "gpt-4o"},
		// gpt-4o-mini: 800×0.15 + 200×0.075 + 500×0.6 = 435 µ$.
		{"reported wins over routed", "gpt-4o", "gpt-4o", "gpt-4o-mini", 435, "gpt-4o-mini"},
		{"rewritten route: routed", "fast", "gpt-4o", "gpt-4o-unlisted-preview", 7250, "gpt-4o"},
		{"requested name never prices", "gpt-4o", "my-deployment", "mystery-model", -1, ""},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		rec := e.record(i)
		rec.RequestedModel, rec.UpstreamModel, rec.ReportedModel = c.requested, c.upstream, c.reported
		ids[i] = rec.ID
		submit(t, r, rec)
	}
	closeRecorder(t, r)
	for i, c := range cases {
		got, err := e.st.Trace(ctx, e.tenant.ID, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		cost := int64(-1)
		if got.CostMicros != nil {
			cost = *got.CostMicros
		}
		if cost != c.cost || got.PricedModel != c.priced || got.ReportedModel != c.reported || got.PriceVersion == "" {
			t.Errorf("%s: cost %d priced as %q (reported %q, catalog %q), want %d priced as %q",
				c.name, cost, got.PricedModel, got.ReportedModel, got.PriceVersion, c.cost, c.priced)
		}
		if got.CanonicalVersion != trace.CanonicalCurrent {
			t.Errorf("%s: canonical version %d, want %d", c.name, got.CanonicalVersion, trace.CanonicalCurrent)
		}
	}
	if reports, err := trace.Verify(ctx, e.st, ""); err != nil || len(reports) != 1 || reports[0].Break != nil {
		t.Fatalf("verify: %v %+v", err, reports)
	}
}

// A store holding chains written before v2 (hashed with v1, as the
// recorder did then) and traces written since verifies; a field v1 does
// not cover, set on an old row, and a version flipped on a new one, are
// caught.
func TestVerifyMixedCanonicalVersions(t *testing.T) {
	for _, tamper := range []string{"", "priced model on a v1 row", "v2 row read as v1"} {
		t.Run("tamper="+tamper, func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			old := writeV1Chain(t, e, 5)
			r := e.start(t, nil)
			var fresh []string
			for i := 0; i < 5; i++ {
				rec := e.record(100 + i)
				fresh = append(fresh, rec.ID)
				submit(t, r, rec)
			}
			closeRecorder(t, r)
			var victim string
			switch tamper {
			case "priced model on a v1 row":
				victim = old[2]
				if err := e.st.TamperTrace(ctx, victim, "priced_model", "gpt-4o"); err != nil {
					t.Fatal(err)
				}
			case "v2 row read as v1":
				victim = fresh[2]
				// A v2 row whose models are empty would encode like v1 but
				// for the version's name: still a break.
				if err := e.st.TamperTrace(ctx, victim, "priced_model", ""); err != nil {
					t.Fatal(err)
				}
				if err := e.st.TamperTrace(ctx, victim, "canonical_version", 1); err != nil {
					t.Fatal(err)
				}
			}
			reports, err := trace.Verify(ctx, e.st, "")
			if err != nil || len(reports) != 2 {
				t.Fatalf("verify: %v %+v", err, reports)
			}
			var breaks []*trace.Break
			for _, rep := range reports {
				if rep.Traces != 5 && rep.Break == nil {
					t.Errorf("chain %s: %d traces verified, want 5", rep.ChainID, rep.Traces)
				}
				if rep.Break != nil {
					breaks = append(breaks, rep.Break)
				}
			}
			switch {
			case tamper == "" && len(breaks) != 0:
				t.Fatalf("untampered store: %v", breaks[0])
			case tamper != "" && (len(breaks) != 1 || breaks[0].TraceID != victim || breaks[0].Seq != 3):
				t.Fatalf("%s not caught at seq 3 of its chain: %+v", tamper, breaks)
			}
		})
	}
}

// writeV1Chain writes n traces of a new chain the way the recorder did
// before canonical v2: hashed with v1, no reported or priced model. It
// returns their ids.
func writeV1Chain(t *testing.T, e *env, n int) []string {
	t.Helper()
	ctx := context.Background()
	chain := uuid.NewString()
	start := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	if err := e.st.StartChain(ctx, store.Chain{ID: chain, StartedAt: start}); err != nil {
		t.Fatal(err)
	}
	prev := trace.ZeroHash
	var rows []store.Trace
	for i := 0; i < n; i++ {
		id, _ := uuid.NewV7()
		cost := int64(7250)
		tr := store.Trace{
			ID: id.String(), TenantID: e.tenant.ID, RequestID: fmt.Sprintf("old-%d", i), Endpoint: "chat.completions",
			RequestedModel: "gpt-4o", UpstreamModel: "gpt-4o", ProviderInstance: "openai", Status: trace.StatusOK, HTTPStatus: 200,
			UsageSource: trace.UsageProvider, CostMicros: &cost, PriceVersion: "2026-11-21", LatencyUS: 30000, OverheadUS: 5000,
			CreatedAt: start.Add(time.Duration(i) * time.Second), ChainID: chain, ChainSeq: int64(i + 1), PrevHash: prev,
			CanonicalVersion: trace.CanonicalV1,
		}
		h, err := trace.ChainHash(&tr)
		if err != nil {
			t.Fatal(err)
		}
		tr.Hash, prev = h, h
		rows = append(rows, tr)
	}
	if _, err := e.st.InsertTraces(ctx, rows); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	for i := range rows {
		ids[i] = rows[i].ID
	}
	return ids
}

func TestShreddedTenantStillGetsItsTrace(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	if err := e.kr.Shred(ctx, e.tenant.ID); err != nil {
		t.Fatal(err)
	}
	rec := e.record(0)
	submit(t, r, rec)
	closeRecorder(t, r)
	got, err := e.st.Trace(ctx, e.tenant.ID, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Request.Ciphertext != nil || !strings.Contains(got.ErrorMessage, "tenant deleted") {
		t.Fatalf("shredded tenant's trace: %+v", got)
	}
}

// BenchmarkDurability measures what a request waits for its trace, in both
// modes, against a real SQLite store: async hands over and returns; sync
// waits for the batch (group commit) holding its trace to be durable.
// Parallel requests share batches, as they do under load.
func BenchmarkDurability(b *testing.B) {
	for _, mode := range []string{trace.Async, trace.Sync} {
		b.Run(mode, func(b *testing.B) {
			e := newEnvB(b)
			r := e.startB(b, func(o *trace.Options) { o.Durability = mode; o.BatchInterval = 5 * time.Millisecond })
			b.SetParallelism(16)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					rec := e.record(i)
					i++
					for _, err := r.Admit(rec.TenantID); err != nil; _, err = r.Admit(rec.TenantID) {
						time.Sleep(time.Millisecond)
					}
					r.Submit(rec)
					if err := rec.Durable(); err != nil {
						b.Error(err)
					}
				}
			})
			b.StopTimer()
			closeRecorderQuiet(r)
		})
	}
}

func newEnvB(b *testing.B) *env {
	b.Helper()
	ctx := context.Background()
	st := testdb.SQLite(b)
	tn, _ := st.CreateTenant(ctx, "acme")
	fs := &flakyStore{Store: st}
	kr, _ := seal.NewKeyring(master, fs)
	return &env{st: fs, kr: kr, tenant: tn, spool: filepath.Join(b.TempDir(), "spool")}
}

func (e *env) startB(b *testing.B, mod func(*trace.Options)) *trace.Recorder {
	cat, _ := pricing.Default()
	o := trace.Options{Store: e.st, Keyring: e.kr, Pricing: cat, SpoolDir: e.spool, SpoolMaxBytes: 1 << 30, TenantShare: 100,
		BatchInterval: 10 * time.Millisecond, StoreTimeout: 5 * time.Second}
	mod(&o)
	r, err := trace.Start(context.Background(), o)
	if err != nil {
		b.Fatal(err)
	}
	return r
}

// Retention drops whole old months and leaves tombstones: the chain still
// verifies from the tombstone's last hash. The traces are dated around
// fixed days (the first, the ninth and the last of a month, leap February,
// the turn of a year), not the wall clock.
func TestVerifyAfterRetention(t *testing.T) {
	for _, now := range []time.Time{
		time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 9, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC),
		time.Date(2025, 3, 31, 12, 0, 0, 0, time.UTC),
		time.Date(2024, 2, 29, 12, 0, 0, 0, time.UTC),
	} {
		t.Run(now.Format(time.DateOnly), func(t *testing.T) { testVerifyAfterRetention(t, now) })
	}
}

func testVerifyAfterRetention(t *testing.T, now time.Time) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, func(o *trace.Options) { o.Now = func() time.Time { return now } })
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	old := month.AddDate(0, -3, 0).Add(12 * time.Hour) // noon on the 1st, three months back
	for i := 0; i < 12; i++ {
		rec := e.record(i)
		rec.Start = now.Add(-time.Duration(12-i) * time.Second)
		if i < 5 {
			rec.Start = old
		}
		rec.End = rec.Start.Add(30 * time.Millisecond)
		submit(t, r, rec)
	}
	closeRecorder(t, r)
	// A cutoff on the 9th of last month: the month three back goes.
	tombs, err := e.st.ApplyRetention(ctx, month.AddDate(0, -1, 8))
	if err != nil {
		t.Fatal(err)
	}
	if len(tombs) != 1 || tombs[0].Rows != 5 || tombs[0].LastSeq != 5 || tombs[0].Partition != old.Format("2006-01") {
		t.Fatalf("tombstones %+v, want one of 5 rows for %s", tombs, old.Format("2006-01"))
	}
	if n, _ := e.st.CountTraces(ctx, e.tenant.ID); n != 7 {
		t.Fatalf("%d traces left, want 7", n)
	}
	reports, err := trace.Verify(ctx, e.st, "")
	if err != nil || len(reports) != 1 || reports[0].Break != nil || !reports[0].Tombstone || reports[0].Traces != 7 {
		t.Fatalf("verify after retention: %v %+v", err, reports)
	}
	// A tombstone does not excuse a later gap.
	ids, _ := e.st.TraceIDs(ctx, e.tenant.ID)
	if err := e.st.TamperTrace(ctx, ids[3], "chain_seq", int64(100)); err != nil {
		t.Fatal(err)
	}
	if reports, _ := trace.Verify(ctx, e.st, ""); reports[0].Break == nil {
		t.Fatal("a gap after the tombstone went unnoticed")
	}
}

// A spool file damaged on disk (here: its last record torn) still gives up
// its intact records to the replay; the file is kept in spool/corrupt,
// beside (not over) an older one of the same name, and the replay goes on
// with the next file. Verify then names the one missing trace.
func TestDamagedSpoolFileReplaysIntactRecords(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	batched := func(o *trace.Options) { o.BatchSize, o.BatchInterval = 3, time.Hour }
	r := e.start(t, batched)
	e.st.down.Store(true)
	var ids []string
	for i := 0; i < 6; i++ {
		rec := e.record(i)
		ids = append(ids, rec.ID)
		submit(t, r, rec)
		if i%3 == 2 { // one spool file per 3 traces
			deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
			for r.Stats().Spooled < int64(i+1) && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	closeRecorder(t, r)
	files, _ := filepath.Glob(filepath.Join(e.spool, "*.spool"))
	if len(files) != 2 {
		t.Fatalf("spool files %v, want 2", files)
	}
	b, _ := os.ReadFile(files[0])
	if err := os.WriteFile(files[0], b[:len(b)-10], 0o600); err != nil { // the third record is torn
		t.Fatal(err)
	}
	corrupt := filepath.Join(e.spool, "corrupt")
	os.MkdirAll(corrupt, 0o700)
	older := filepath.Join(corrupt, filepath.Base(files[0]))
	os.WriteFile(older, []byte("an older damaged file"), 0o600)
	if _, err := trace.ReadSpool(e.spool); err == nil || !strings.Contains(err.Error(), "record 3: truncated") {
		t.Fatalf("ReadSpool of a torn file: %v", err)
	}

	e.st.down.Store(false)
	r = e.start(t, batched)
	deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
	for r.Stats().SpoolBytes > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	closeRecorder(t, r)
	got, _ := e.st.TraceIDs(ctx, e.tenant.ID)
	want := append(append([]string(nil), ids[:2]...), ids[3:]...)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("traces after replay:\n got %v\nwant %v (all but the torn third)", got, want)
	}
	if kept, _ := os.ReadFile(older); string(kept) != "an older damaged file" {
		t.Fatal("the older file in spool/corrupt was replaced")
	}
	if kept, err := os.ReadFile(older + ".1"); err != nil || !bytes.Equal(kept, b[:len(b)-10]) {
		t.Fatalf("the damaged file was not kept for an operator: %v", err)
	}
	reports, err := trace.Verify(ctx, e.st, "")
	if err != nil {
		t.Fatal(err)
	}
	var breaks []string
	for _, rep := range reports {
		if rep.Break != nil {
			breaks = append(breaks, rep.Break.Reason)
		}
	}
	if len(breaks) != 1 || !strings.Contains(breaks[0], "sequence jumps from 2 to 4") {
		t.Fatalf("verify after losing one torn trace: %v", breaks)
	}
}

// A crash between replaying a spool file and removing it (SIGKILL) leaves a
// file whose traces are already in the store: the next run replays it
// again without duplicating any.
func TestReplayAfterCrashBeforeRemoveIsIdempotent(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	r := e.start(t, nil)
	e.st.down.Store(true)
	for i := 0; i < 7; i++ {
		submit(t, r, e.record(i))
	}
	closeRecorder(t, r)
	rows, err := trace.ReadSpool(e.spool)
	if err != nil || len(rows) != 7 {
		t.Fatalf("spool holds %d traces (%v), want 7", len(rows), err)
	}
	e.st.down.Store(false)
	if _, err := e.st.InsertTraces(ctx, rows); err != nil { // the replay the crash interrupted
		t.Fatal(err)
	}
	r = e.start(t, nil)
	deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
	for r.Stats().SpoolBytes > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	closeRecorder(t, r)
	if left, _ := trace.ReadSpool(e.spool); len(left) != 0 {
		t.Fatalf("%d traces still spooled", len(left))
	}
	if n, _ := e.st.CountTraces(ctx, e.tenant.ID); n != 7 {
		t.Fatalf("%d traces after replaying a file twice, want 7", n)
	}
	if reports, _ := trace.Verify(ctx, e.st, ""); len(reports) != 2 || reports[0].Break != nil || reports[1].Break != nil {
		t.Fatalf("verify: %+v", reports)
	}
}

// keylessStore fails every tenant-key read, as when the store is down
// before a tenant's key was ever loaded, and counts the reads.
type keylessStore struct {
	*flakyStore
	down  atomic.Bool
	reads atomic.Int64
}

func (k *keylessStore) TenantKeys(ctx context.Context, tenantID string) ([]store.TenantKey, error) {
	k.reads.Add(1)
	if k.down.Load() {
		return nil, errors.New("connection refused")
	}
	return k.flakyStore.TenantKeys(ctx, tenantID)
}

// TestHeldBackTracesAreRetriedOnSchedule: traces that cannot be sealed
// yet are retried once a second, not every time new traces fill a batch;
// once the key can be read they are all written.
func TestHeldBackTracesAreRetriedOnSchedule(t *testing.T) {
	e := newEnv(t)
	ks := &keylessStore{flakyStore: e.st}
	ks.down.Store(true)
	kr, err := seal.NewKeyring(master, ks)
	if err != nil {
		t.Fatal(err)
	}
	e.kr = kr
	r := e.start(t, func(o *trace.Options) { o.BatchSize = 4 })
	for i := range 4 { // a full batch: flushed at once, held back
		submit(t, r, e.record(i))
	}
	deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
	for ks.reads.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	first := ks.reads.Load()
	if first < 4 {
		t.Fatalf("%d key reads, want the first batch of 4 tried", first)
	}
	began := time.Now()
	for i := 4; i < 24; i++ { // each arrival fills a batch again
		submit(t, r, e.record(i))
		time.Sleep(10 * time.Millisecond)
	}
	// At most one retry round (24 reads) per started second: a busy
	// machine may stretch the loop's 200 ms, which must not count against
	// the pacing. Retrying on every arrival would read 4+5+…+24 = 270 times.
	took := time.Since(began)
	rounds := 1 + int64(took/time.Second)
	if extra := ks.reads.Load() - first; extra > 24*rounds {
		t.Errorf("%d key reads within %v of the failure, want at most %d retry rounds (%d)", extra, took.Round(time.Millisecond), rounds, 24*rounds)
	}
	ks.down.Store(false)
	deadline = time.Now().Add(time.Minute)
	for r.Stats().Written < 24 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := r.Stats().Written; got != 24 {
		t.Errorf("written = %d, want 24 once the key can be read", got)
	}
	closeRecorder(t, r)
}

// TestTenantShare: one tenant holds at most its share of the queue, so
// another tenant is still admitted; a refusal takes a slot of the refusal
// pool (not of the queue) for its own trace, or goes untraced once that
// pool is full; a tenant's slots come back once its traces are written.
func TestTenantShare(t *testing.T) {
	e := newEnv(t)
	other, err := e.st.CreateTenant(context.Background(), "other")
	if err != nil {
		t.Fatal(err)
	}
	r := e.start(t, func(o *trace.Options) { o.QueueSize, o.TenantShare = 8, 25 })
	defer closeRecorder(t, r)
	if r.TenantSlots() != 2 {
		t.Fatalf("TenantSlots = %d, want 2 (25%% of 8)", r.TenantSlots())
	}
	var recs []*trace.Record
	admit := func(tenant string, want error) {
		t.Helper()
		a, err := r.Admit(tenant)
		if !errors.Is(err, want) {
			t.Fatalf("Admit(%s) = %v, want %v", tenant, err, want)
		}
		if err == nil || errors.Is(err, trace.ErrTenantShare) {
			rec := e.record(len(recs))
			rec.TenantID, rec.Admission = tenant, a
			recs = append(recs, rec)
		}
	}
	admit(e.tenant.ID, nil)
	admit(e.tenant.ID, nil)
	for range 64 { // the refusal pool: max(64, 8/4)
		admit(e.tenant.ID, trace.ErrTenantShare)
	}
	admit(e.tenant.ID, trace.ErrRefusalsFull)
	admit(other.ID, nil)
	if s := r.Stats(); s.QueueDepth != 67 || s.Untraced != 1 {
		t.Fatalf("queue depth %d, untraced %d; want 67, 1", s.QueueDepth, s.Untraced)
	}
	for _, rec := range recs[:66] { // acme's
		r.Submit(rec)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.Stats().QueueDepth != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("queue depth %d after acme's traces were written, want 1", r.Stats().QueueDepth)
		}
		time.Sleep(5 * time.Millisecond)
	}
	admit(e.tenant.ID, nil)
	for _, rec := range recs[66:] {
		r.Submit(rec)
	}
}
