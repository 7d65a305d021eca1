package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/internal/testdb"
	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/pricing"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/server"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/postgres"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/sdk/provider"
)

func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }

const adminToken = "test-admin-token-0123456789"

// forEachStore runs fn on a fresh migrated SQLite store and on a fresh
// PostgreSQL one.
func forEachStore(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		st := testdb.SQLite(t)
		fn(t, st)
	})
	t.Run("postgres", func(t *testing.T) {
		ctx := context.Background()
		st, err := postgres.Open(ctx, testpg.DSN(t), 8, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		fn(t, st)
	})
}

type tenantFix struct{ id, name, key string }

// env is a Loom server (the real server.New, with the dashboard mounted)
// on a real store, keyring and trace recorder, with tenants acme (A) and
// bravo (B).
type env struct {
	st    store.Store
	kr    *seal.Keyring
	rec   *trace.Recorder
	cat   *pricing.Catalog
	api   *API
	srv   *httptest.Server
	base  time.Time // the API's clock when fixed
	a, b  tenantFix
	seeds []*seed
}

type envConfig struct {
	adminToken string
	realClock  bool
	opts       func(*Options)
}

func newEnv(t *testing.T, st store.Store, cfgs ...func(*envConfig)) *env {
	t.Helper()
	ctx := context.Background()
	cfg := envConfig{adminToken: adminToken}
	for _, f := range cfgs {
		f(&cfg)
	}
	e := &env{st: st}
	e.a = e.tenant(t, "acme")
	e.b = e.tenant(t, "bravo")
	var err error
	if e.kr, err = seal.NewKeyring(bytes.Repeat([]byte{7}, 32), st); err != nil {
		t.Fatal(err)
	}
	if e.cat, err = pricing.Default(); err != nil {
		t.Fatal(err)
	}
	e.rec, err = trace.Start(ctx, trace.Options{Store: st, Keyring: e.kr, Pricing: e.cat, SpoolDir: t.TempDir(), TenantShare: 100,
		Durability: trace.Sync, BatchInterval: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.rec.Close(context.Background()) })

	// A fixed clock, not aligned to any bucket width (…:17:23.5).
	e.base = time.Now().UTC().Truncate(time.Hour).Add(-time.Hour + 17*time.Minute + 23500*time.Millisecond)
	o := Options{Store: st, Keyring: e.kr, AdminToken: cfg.adminToken,
		// A short cache TTL so that revocations show at once.
		Auth: auth.New(st, auth.Options{CacheTTL: time.Millisecond})}
	if !cfg.realClock {
		o.Now = func() time.Time { return e.base }
	}
	if cfg.opts != nil {
		cfg.opts(&o)
	}
	e.api = New(o)
	s := server.New(server.Options{Store: st, Auth: o.Auth, Router: router.New(&config.Config{}),
		Providers: noProviders{}, Recorder: e.rec, Dashboard: e.api})
	e.srv = httptest.NewServer(s.Handler())
	t.Cleanup(e.srv.Close)
	t.Cleanup(e.api.Close) // first: a live stream left open must not hold srv.Close up
	return e
}

type noProviders struct{}

func (noProviders) Provider(string) (server.Provider, bool) { return nil, false }

func (e *env) tenant(t *testing.T, name string) tenantFix {
	t.Helper()
	ctx := context.Background()
	tn, err := e.st.CreateTenant(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := auth.CreateKey(ctx, e.st, tn.ID, "test")
	if err != nil {
		t.Fatal(err)
	}
	return tenantFix{id: tn.ID, name: name, key: key}
}

// seed is one recorded request, and what the test expects of its trace.
type seed struct {
	tenant      tenantFix
	id          string
	start       time.Time
	endpoint    string
	model       string
	provider    string
	stream      bool
	status      string
	httpStatus  int
	errMsg      string
	latency     time.Duration
	upstream    time.Duration
	ttfb        time.Duration
	usage       *provider.Usage
	request     []byte
	response    []byte
	unsubmitted bool
}

func (s *seed) createdAt() time.Time { return s.start.UTC().Truncate(time.Microsecond) }
func (s *seed) latencyUS() int64     { return s.latency.Microseconds() }
func (s *seed) overheadUS() int64 {
	if s.upstream > 0 {
		return max(0, s.latency.Microseconds()-s.upstream.Microseconds())
	}
	return s.latency.Microseconds()
}
func (s *seed) ok() bool { return s.status == trace.StatusOK }

// cost is what the recorder must have priced the seed at; ok false when unpriced.
func (s *seed) cost(cat *pricing.Catalog) (int64, bool) {
	if s.usage == nil {
		return 0, false
	}
	return cat.Cost(s.model, s.createdAt(), pricing.Usage{PromptTokens: s.usage.PromptTokens,
		CompletionTokens: s.usage.CompletionTokens, CachedPromptTokens: s.usage.CachedPromptTokens})
}

func (s *seed) cursor() store.TraceCursor {
	return store.TraceCursor{CreatedAt: s.createdAt(), ID: s.id}
}

// submit records seeds through the recorder and waits until they are stored.
func (e *env) submit(t *testing.T, seeds ...*seed) {
	t.Helper()
	var recs []*trace.Record
	for _, s := range seeds {
		if s.id == "" {
			s.id = uuid.Must(uuid.NewV7()).String()
		}
		if s.endpoint == "" {
			s.endpoint = "chat.completions"
		}
		if _, err := e.rec.Admit(s.tenant.id); err != nil {
			t.Fatal("recorder refused a trace")
		}
		r := &trace.Record{
			ID: s.id, TenantID: s.tenant.id, RequestID: uuid.NewString(), Endpoint: s.endpoint, Stream: s.stream,
			RequestedModel: s.model, UpstreamModel: s.model, ProviderInstance: s.provider,
			PluginName: "openai", PluginVersion: "1.0.0", Status: s.status, HTTPStatus: s.httpStatus, Error: s.errMsg,
			Request: s.request, Response: s.response, Usage: s.usage,
			Start: s.start, End: s.start.Add(s.latency), TTFB: s.ttfb, Upstream: s.upstream,
			ConfigHash: "cfg-hash",
		}
		if s.upstream > 0 {
			// The provider call spans the request: Loom's own time is
			// the hop, latency - upstream (see overheadUS).
			r.UpstreamTTFB = s.upstream / 2
			r.Dispatched, r.Returned = r.Start, r.End
		}
		e.rec.Submit(r)
		recs = append(recs, r)
		e.seeds = append(e.seeds, s)
	}
	for _, r := range recs {
		if err := r.Durable(); err != nil {
			t.Fatal(err)
		}
	}
	// Durable means stored or spooled; make sure they are in the store.
	deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
	for _, s := range seeds {
		for {
			_, err := e.st.Trace(context.Background(), s.tenant.id, s.id)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("trace %s not in the store: %v", s.id, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

var models = []string{"gpt-4o", "gpt-4o-mini", "local-llama"} // the last has no price

// newSeed makes a pseudo-random request of tenant tf started at start.
func newSeed(rng *rand.Rand, tf tenantFix, start time.Time) *seed {
	s := &seed{tenant: tf, start: start, model: models[rng.IntN(len(models))],
		provider: []string{"openai", "azure", "ollama"}[rng.IntN(3)], stream: rng.IntN(2) == 0}
	switch r := rng.IntN(10); {
	case r < 7:
		s.status, s.httpStatus = trace.StatusOK, 200
	case r < 8:
		s.status, s.httpStatus, s.errMsg = trace.StatusUpstreamError, 502, "upstream said no"
	case r < 9:
		s.status, s.httpStatus, s.errMsg = trace.StatusClientDisconnect, 499, "client went away"
	default:
		s.status, s.httpStatus, s.errMsg = trace.StatusRejected, 400, "bad request"
	}
	s.latency = time.Duration(1000+rng.IntN(3_000_000)) * time.Microsecond
	if s.status != trace.StatusRejected {
		s.upstream = s.latency - time.Duration(100+rng.IntN(5000))*time.Microsecond
		s.ttfb = s.latency / 3
		if rng.IntN(6) == 0 {
			s.endpoint = "embeddings" // no usage reported, none estimated
		} else {
			p := int64(1 + rng.IntN(2000))
			c := int64(rng.IntN(1000))
			s.usage = &provider.Usage{PromptTokens: p, CompletionTokens: c, TotalTokens: p + c, CachedPromptTokens: p / int64(2+rng.IntN(4))}
		}
	}
	n := rng.IntN(1000)
	s.request = fmt.Appendf(nil, `{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hello %d"}]}`, s.model, s.stream, n)
	if s.stream {
		s.response = fmt.Appendf(nil, "data: {\"id\":\"c%d\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi %d\"},\"finish_reason\":null}]}\n\n"+
			"data: {\"id\":\"c%d\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":%q,\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"+
			"data: [DONE]\n\n", n, s.model, n, n, s.model)
	} else {
		s.response = fmt.Appendf(nil, `{"id":"c%d","object":"chat.completion","created":1,"model":%q,"choices":[{"index":0,"message":{"role":"assistant","content":"hi %d"},"finish_reason":"stop"}]}`, n, s.model, n)
	}
	return s
}

// randFor is a deterministic source for seeds.
func randFor(n int) *rand.Rand { return rand.New(rand.NewPCG(uint64(n), 99)) }

// seedStandard records traces of A and B spread over 40 days before the
// clock, with edge cases: one at the clock (outside every window, which
// ends there), one exactly 24h before it (inside the 24h window), and
// ties on created_at (within A, and across A and B).
func (e *env) seedStandard(t *testing.T) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	offset := func() time.Duration {
		spans := []time.Duration{time.Hour, 24 * time.Hour, 7 * 24 * time.Hour, 30 * 24 * time.Hour, 40 * 24 * time.Hour}
		span := spans[rng.IntN(len(spans))]
		return time.Duration(rng.Int64N(int64(span)/1000)) * 1000 // whole µs
	}
	var seeds []*seed
	for i := 0; i < 48; i++ {
		seeds = append(seeds, newSeed(rng, e.a, e.base.Add(-offset()-time.Microsecond)))
	}
	for i := 0; i < 27; i++ {
		seeds = append(seeds, newSeed(rng, e.b, e.base.Add(-offset()-time.Microsecond)))
	}
	tie := e.base.Add(-30 * time.Minute)
	seeds = append(seeds,
		newSeed(rng, e.a, e.base),                    // at "now": excluded by [from, to)
		newSeed(rng, e.a, e.base.Add(-24*time.Hour)), // exactly at from of 24h: included
		newSeed(rng, e.a, e.base.Add(-time.Hour)),    // exactly at from of 1h: included
		newSeed(rng, e.a, tie), newSeed(rng, e.a, tie), newSeed(rng, e.a, tie),
		newSeed(rng, e.b, tie),
	)
	// A body that is not JSON, shown as a string.
	seeds[0].request = []byte("not json {")
	e.submit(t, seeds...)
}

// seedsOf returns the seeds f selects.
func (e *env) seedsOf(f func(s *seed) bool) []*seed {
	var out []*seed
	for _, s := range e.seeds {
		if f(s) {
			out = append(out, s)
		}
	}
	return out
}

func (e *env) ofTenant(tf tenantFix) func(*seed) bool {
	return func(s *seed) bool { return s.tenant.id == tf.id }
}

// newestFirst sorts seeds in the listing order.
func newestFirst(seeds []*seed) []*seed {
	out := slices.Clone(seeds)
	slices.SortFunc(out, func(x, y *seed) int {
		if c := y.createdAt().Compare(x.createdAt()); c != 0 {
			return c
		}
		return strings.Compare(y.id, x.id)
	})
	return out
}

func ids(seeds []*seed) []string {
	out := make([]string, len(seeds))
	for i, s := range seeds {
		out[i] = s.id
	}
	return out
}

// request sends a request with token as bearer ("" for none).
func (e *env) request(t *testing.T, method, path, token, body string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// getJSON GETs path and decodes a 200 answer into a T.
func getJSON[T any](t *testing.T, e *env, path, token string) T {
	t.Helper()
	resp, body := e.request(t, "GET", path, token, "")
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: status %d: %s", path, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("GET %s: content type %q", path, ct)
	}
	return decodeStrict[T](t, body)
}

// decodeStrict decodes body into a T, refusing fields T does not have.
func decodeStrict[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %T: %v\n%s", v, err, body)
	}
	return v
}

// apiError mirrors the OpenAI error envelope.
type apiError struct {
	Error struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// wantError checks an error answer: status, type, code and param ("" for null).
func wantError(t *testing.T, resp *http.Response, body []byte, status int, typ, code, param string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q: %s", ct, body)
	}
	e := decodeStrict[apiError](t, body)
	if e.Error.Message == nil || *e.Error.Message == "" || e.Error.Type == nil || e.Error.Code == nil {
		t.Fatalf("error body lacks message/type/code: %s", body)
	}
	gotParam := ""
	if e.Error.Param != nil {
		gotParam = *e.Error.Param
	}
	if *e.Error.Type != typ || *e.Error.Code != code || gotParam != param {
		t.Fatalf("error type %q code %q param %q, want %q %q %q: %s", *e.Error.Type, *e.Error.Code, gotParam, typ, code, param, body)
	}
}

// percentile is the store's documented definition (PostgreSQL's
// percentile_disc): the k-th smallest value, k = max(1, ceil(p × N))
// computed in float64; 0 for no values.
func percentile(values []int64, pct int) int64 {
	if len(values) == 0 {
		return 0
	}
	v := slices.Clone(values)
	slices.Sort(v)
	p := map[int]float64{50: 0.50, 95: 0.95, 99: 0.99}[pct]
	k := max(1, int(math.Ceil(p*float64(len(v)))))
	return v[min(k, len(v))-1]
}
