package dashboard

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/trace"
)

// Mirrors of API.md.

type tokensT struct {
	Prompt     *int64 `json:"prompt"`
	Completion *int64 `json:"completion"`
	Total      *int64 `json:"total"`
	Cached     *int64 `json:"cached"`
}

type summaryT struct {
	ID            string   `json:"id"`
	Tenant        string   `json:"tenant"`
	RequestID     string   `json:"request_id"`
	Endpoint      string   `json:"endpoint"`
	Stream        bool     `json:"stream"`
	Model         string   `json:"model"`
	UpstreamModel string   `json:"upstream_model"`
	Provider      string   `json:"provider"`
	Status        string   `json:"status"`
	HTTPStatus    int      `json:"http_status"`
	Error         *string  `json:"error"`
	Tokens        tokensT  `json:"tokens"`
	UsageSource   string   `json:"usage_source"`
	CostMicros    *int64   `json:"cost_micros"`
	CostUSD       *float64 `json:"cost_usd"`
	LatencyMS     float64  `json:"latency_ms"`
	TTFBMS        *float64 `json:"ttfb_ms"`
	UpstreamMS    *float64 `json:"upstream_ms"`
	OverheadMS    float64  `json:"overhead_ms"`
	CreatedAt     string   `json:"created_at"`
}

type listT struct {
	Data       []summaryT `json:"data"`
	NextCursor *string    `json:"next_cursor"`
}

type detailT struct {
	summaryT
	Plugin *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
	} `json:"plugin"`
	PriceVersion   *string         `json:"price_version"`
	ReportedModel  *string         `json:"reported_model"`
	PricedModel    *string         `json:"priced_model"`
	PricingNote    *string         `json:"pricing_note"`
	ConfigHash     *string         `json:"config_hash"`
	KeyVersion     int             `json:"key_version"`
	UpstreamTTFBMS *float64        `json:"upstream_ttfb_ms"`
	Request        json.RawMessage `json:"request"`
	Response       json.RawMessage `json:"response"`
	ReqTruncated   bool            `json:"request_truncated"`
	RespTruncated  bool            `json:"response_truncated"`
	Message        json.RawMessage `json:"message"`
	Chain          struct {
		ID   string `json:"id"`
		Seq  int64  `json:"seq"`
		Hash string `json:"hash"`
	} `json:"chain"`
	Readable   bool    `json:"readable"`
	Unreadable *string `json:"unreadable"`
}

var summaryKeys = []string{"id", "tenant", "request_id", "endpoint", "stream", "model", "upstream_model", "provider",
	"status", "http_status", "error", "tokens", "usage_source", "cost_micros", "cost_usd", "latency_ms", "ttfb_ms",
	"upstream_ms", "overhead_ms", "created_at"}

// wantKeys checks that a JSON object has exactly these keys (nulls included).
func wantKeys(t *testing.T, raw []byte, keys ...string) {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want := slices.Sorted(slices.Values(keys))
	if !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
}

func ptrEq[T comparable](a, b *T) bool {
	return (a == nil && b == nil) || (a != nil && b != nil && *a == *b)
}

// checkSummary compares a summary with what its seed says.
func checkSummary(t *testing.T, e *env, got summaryT, s *seed) {
	t.Helper()
	fail := func(field string, got, want any) {
		t.Helper()
		t.Errorf("trace %s: %s = %v, want %v", s.id, field, got, want)
	}
	if got.ID != s.id {
		fail("id", got.ID, s.id)
	}
	if got.Tenant != s.tenant.name {
		fail("tenant", got.Tenant, s.tenant.name)
	}
	if _, err := uuid.Parse(got.RequestID); err != nil {
		fail("request_id", got.RequestID, "a UUID")
	}
	if got.Endpoint != s.endpoint || got.Stream != s.stream || got.Model != s.model || got.UpstreamModel != s.model ||
		got.Provider != s.provider || got.Status != s.status || got.HTTPStatus != s.httpStatus {
		fail("endpoint/stream/model/upstream_model/provider/status/http_status",
			[]any{got.Endpoint, got.Stream, got.Model, got.UpstreamModel, got.Provider, got.Status, got.HTTPStatus},
			[]any{s.endpoint, s.stream, s.model, s.model, s.provider, s.status, s.httpStatus})
	}
	if want := nullable(s.errMsg); !ptrEq(got.Error, want) {
		fail("error", got.Error, want)
	}
	if s.usage == nil {
		if got.Tokens != (tokensT{}) || got.UsageSource != trace.UsageNone {
			fail("tokens/usage_source", []any{got.Tokens, got.UsageSource}, "nulls, none")
		}
	} else {
		u := s.usage
		if !ptrEq(got.Tokens.Prompt, &u.PromptTokens) || !ptrEq(got.Tokens.Completion, &u.CompletionTokens) ||
			!ptrEq(got.Tokens.Total, &u.TotalTokens) || !ptrEq(got.Tokens.Cached, &u.CachedPromptTokens) ||
			got.UsageSource != trace.UsageProvider {
			fail("tokens/usage_source", []any{got.Tokens, got.UsageSource}, *u)
		}
	}
	if cost, ok := s.cost(e.cat); ok {
		if got.CostMicros == nil || *got.CostMicros != cost || got.CostUSD == nil || *got.CostUSD != float64(cost)/1e6 {
			fail("cost_micros/cost_usd", []any{got.CostMicros, got.CostUSD}, cost)
		}
	} else if got.CostMicros != nil || got.CostUSD != nil {
		fail("cost_micros/cost_usd", []any{*got.CostMicros, got.CostUSD}, "null (unpriced)")
	}
	if got.LatencyMS != float64(s.latencyUS())/1000 || got.OverheadMS != float64(s.overheadUS())/1000 {
		fail("latency_ms/overhead_ms", []any{got.LatencyMS, got.OverheadMS}, []any{s.latencyUS(), s.overheadUS()})
	}
	if s.upstream > 0 {
		if got.UpstreamMS == nil || *got.UpstreamMS != float64(s.upstream.Microseconds())/1000 ||
			got.TTFBMS == nil || *got.TTFBMS != float64(s.ttfb.Microseconds())/1000 {
			fail("upstream_ms/ttfb_ms", []any{got.UpstreamMS, got.TTFBMS}, []any{s.upstream, s.ttfb})
		}
	} else if got.UpstreamMS != nil || got.TTFBMS != nil {
		fail("upstream_ms/ttfb_ms", []any{got.UpstreamMS, got.TTFBMS}, "null")
	}
	if want := s.createdAt().Format("2006-01-02T15:04:05.000000Z"); got.CreatedAt != want {
		fail("created_at", got.CreatedAt, want)
	}
}

// listAll walks every page of path (which has no cursor yet).
func listAll(t *testing.T, e *env, path, token string) []summaryT {
	t.Helper()
	var out []summaryT
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	next := ""
	for page := 0; ; page++ {
		p := path
		if next != "" {
			p += sep + "cursor=" + url.QueryEscape(next)
		}
		l := getJSON[listT](t, e, p, token)
		out = append(out, l.Data...)
		if l.NextCursor == nil {
			return out
		}
		next = *l.NextCursor
		if page > 1000 {
			t.Fatal("endless pagination")
		}
	}
}

func TestListTraces(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedStandard(t)
		want := newestFirst(e.seedsOf(e.ofTenant(e.a)))

		resp, body := e.request(t, "GET", "/api/v1/traces?limit=200", e.a.key, "")
		if resp.StatusCode != 200 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("status %d, cache-control %q: %s", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
		}
		var raw struct {
			Data       []json.RawMessage `json:"data"`
			NextCursor json.RawMessage   `json:"next_cursor"`
		}
		if err := json.Unmarshal(body, &raw); err != nil {
			t.Fatal(err)
		}
		wantKeys(t, body, "data", "next_cursor")
		if string(raw.NextCursor) != "null" {
			t.Errorf("next_cursor %s on a page that is not full", raw.NextCursor)
		}
		for _, d := range raw.Data {
			wantKeys(t, d, summaryKeys...)
			var tk map[string]json.RawMessage
			json.Unmarshal(d, &tk)
			wantKeys(t, tk["tokens"], "prompt", "completion", "total", "cached")
		}
		l := decodeStrict[listT](t, body)
		if got := l.idsOf(); !slices.Equal(got, ids(want)) {
			t.Fatalf("listed\n%v\nwant (newest first)\n%v", got, ids(want))
		}
		for i, s := range want {
			checkSummary(t, e, l.Data[i], s)
		}

		// The default page size is 50.
		l = getJSON[listT](t, e, "/api/v1/traces", e.a.key)
		if len(l.Data) != 50 || l.NextCursor == nil || !slices.Equal(l.idsOf(), ids(want[:50])) {
			t.Fatalf("default page: %d traces, next_cursor %v", len(l.Data), l.NextCursor)
		}
		// A full last page has a cursor; the page after it is empty with none.
		n := len(want)
		l = getJSON[listT](t, e, "/api/v1/traces?limit="+strconv.Itoa(n), e.a.key)
		if len(l.Data) != n || l.NextCursor == nil {
			t.Fatalf("full page of %d: %d traces, next_cursor %v", n, len(l.Data), l.NextCursor)
		}
		l = getJSON[listT](t, e, "/api/v1/traces?limit=5&cursor="+*l.NextCursor, e.a.key)
		if len(l.Data) != 0 || l.NextCursor != nil || string(mustJSON(t, l.Data)) != "[]" {
			t.Fatalf("after the last trace: %+v", l)
		}
	})
}

func (l listT) idsOf() []string {
	out := make([]string, len(l.Data))
	for i, s := range l.Data {
		out[i] = s.ID
	}
	return out
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Pages are stable while new traces arrive: walking them gives every trace
// that existed at the first page exactly once, in order.
func TestPaginationWhileTracesArrive(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedStandard(t)
		for _, tc := range []struct {
			name, query string
			who         func() (string, []*seed)
		}{
			{"tenant", "", func() (string, []*seed) { return e.a.key, e.seedsOf(e.ofTenant(e.a)) }},
			{"admin", "", func() (string, []*seed) { return adminToken, e.seedsOf(func(*seed) bool { return true }) }},
			{"admin narrowed", "&tenant=bravo", func() (string, []*seed) { return adminToken, e.seedsOf(e.ofTenant(e.b)) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				token, seeds := tc.who()
				want := newestFirst(seeds)
				var got []string
				next := ""
				for page := 0; ; page++ {
					path := "/api/v1/traces?limit=7" + tc.query
					if next != "" {
						path += "&cursor=" + next
					}
					l := getJSON[listT](t, e, path, token)
					got = append(got, l.idsOf()...)
					if l.NextCursor == nil {
						if len(l.Data) == 7 {
							t.Fatal("a full page without next_cursor")
						}
						break
					}
					if len(l.Data) != 7 {
						t.Fatalf("page %d has %d traces and a next_cursor", page, len(l.Data))
					}
					next = *l.NextCursor
					// New traces of both tenants, newer than everything listed.
					e.submit(t, newSeed(randFor(page), e.a, time.Now()), newSeed(randFor(page+100), e.b, time.Now()))
				}
				if !slices.Equal(got, ids(want)) {
					t.Fatalf("pages gave\n%v\nwant\n%v", got, ids(want))
				}
			})
		}
	})
}

func TestListFilters(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedStandard(t)
		from, to := e.base.Add(-7*24*time.Hour), e.base.Add(-time.Hour)
		tests := []struct {
			name, query string
			keep        func(s *seed) bool
		}{
			{"model", "model=gpt-4o", func(s *seed) bool { return s.model == "gpt-4o" }},
			{"unknown model", "model=nope", func(s *seed) bool { return false }},
			{"status", "status=upstream_error", func(s *seed) bool { return s.status == trace.StatusUpstreamError }},
			{"provider", "provider=azure", func(s *seed) bool { return s.provider == "azure" }},
			{"stream true", "stream=true", func(s *seed) bool { return s.stream }},
			{"stream false", "stream=false", func(s *seed) bool { return !s.stream }},
			{"from", "from=" + url.QueryEscape(from.Format(time.RFC3339Nano)), func(s *seed) bool { return !s.createdAt().Before(from) }},
			{"to", "to=" + url.QueryEscape(to.Format(time.RFC3339Nano)), func(s *seed) bool { return s.createdAt().Before(to) }},
			{"from and to", "from=" + url.QueryEscape(from.Format(time.RFC3339Nano)) + "&to=" + url.QueryEscape(to.Format(time.RFC3339Nano)),
				func(s *seed) bool { return !s.createdAt().Before(from) && s.createdAt().Before(to) }},
			{"to with offset", "to=" + url.QueryEscape(to.In(time.FixedZone("x", 5*3600)).Format(time.RFC3339Nano)),
				func(s *seed) bool { return s.createdAt().Before(to) }},
			{"min latency", "min_latency_ms=1500.5", func(s *seed) bool { return s.latencyUS() >= 1500500 }},
			{"min latency integer", "min_latency_ms=2000", func(s *seed) bool { return s.latencyUS() >= 2000000 }},
			{"combined", "model=gpt-4o-mini&stream=false&min_latency_ms=100&status=ok",
				func(s *seed) bool {
					return s.model == "gpt-4o-mini" && !s.stream && s.latencyUS() >= 100000 && s.status == trace.StatusOK
				}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				want := newestFirst(e.seedsOf(func(s *seed) bool { return s.tenant.id == e.a.id && tt.keep(s) }))
				got := listAll(t, e, "/api/v1/traces?limit=9&"+tt.query, e.a.key)
				gotIDs := make([]string, len(got))
				for i, s := range got {
					gotIDs[i] = s.ID
				}
				if !slices.Equal(gotIDs, ids(want)) {
					t.Fatalf("%s gave\n%v\nwant\n%v", tt.query, gotIDs, ids(want))
				}
				if len(want) == 0 && tt.name != "unknown model" {
					t.Fatal("the seed has no trace for this filter: the test proves nothing")
				}
			})
		}
	})
}

func TestListValidation(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		good, _ := encodeCursor(store.TraceCursor{CreatedAt: time.Now(), ID: uuid.NewString()})
		raw, _ := base64.RawURLEncoding.DecodeString(good)
		v2 := slices.Clone(raw)
		v2[0] = 2
		tests := []struct{ query, param string }{
			{"limit=0", "limit"}, {"limit=201", "limit"}, {"limit=-1", "limit"}, {"limit=ten", "limit"}, {"limit=1.5", "limit"},
			{"cursor=garbage!", "cursor"}, {"cursor=" + good[:len(good)-2], "cursor"}, {"cursor=" + good + "AA", "cursor"},
			{"cursor=" + base64.RawURLEncoding.EncodeToString(v2), "cursor"}, {"cursor=" + base64.URLEncoding.EncodeToString(raw), "cursor"},
			{"cursor=" + base64.StdEncoding.EncodeToString([]byte("xyz")), "cursor"},
			{"stream=yes", "stream"}, {"stream=1", "stream"},
			{"from=yesterday", "from"}, {"from=2026-11-21", "from"}, {"to=2026-11-21T10:00:00", "to"},
			{"from=2026-11-21T10:00:00Z&to=2026-11-21T09:00:00Z", "to"}, {"from=2026-11-21T10:00:00Z&to=2026-11-21T10:00:00Z", "to"},
			{"min_latency_ms=-1", "min_latency_ms"}, {"min_latency_ms=fast", "min_latency_ms"}, {"min_latency_ms=NaN", "min_latency_ms"},
			{"min_latency_ms=Inf", "min_latency_ms"},
			{"model=" + strings.Repeat("m", 300), "model"},
		}
		for _, tt := range tests {
			t.Run(tt.query[:min(len(tt.query), 40)], func(t *testing.T) {
				resp, body := e.request(t, "GET", "/api/v1/traces?"+tt.query, e.a.key, "")
				wantError(t, resp, body, 400, "invalid_request_error", "invalid_value", tt.param)
			})
		}
	})
}

func TestCursor(t *testing.T) {
	c := store.TraceCursor{CreatedAt: time.Date(2026, 11, 21, 10, 0, 0, 123456000, time.UTC), ID: uuid.Must(uuid.NewV7()).String()}
	s, err := encodeCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+$`).MatchString(s) {
		t.Fatalf("cursor %q is not base64url without padding", s)
	}
	got, err := decodeCursor(s)
	if err != nil || !got.CreatedAt.Equal(c.CreatedAt) || got.ID != c.ID {
		t.Fatalf("round trip: %+v, %v; want %+v", got, err, c)
	}
	// Upper-case ids come back canonical.
	if got, _ := decodeCursor(mustCursor(t, store.TraceCursor{CreatedAt: c.CreatedAt, ID: strings.ToUpper(c.ID)})); got.ID != c.ID {
		t.Fatalf("id %q, want %q", got.ID, c.ID)
	}
	if _, err := encodeCursor(store.TraceCursor{CreatedAt: c.CreatedAt, ID: "nope"}); err == nil {
		t.Fatal("a cursor for a non-UUID id")
	}
	raw, _ := base64.RawURLEncoding.DecodeString(s)
	neg := slices.Clone(raw)
	neg[1] = 0xff
	for _, bad := range []string{"", "A", s + "A", s[:len(s)-1] + "B", base64.RawURLEncoding.EncodeToString(neg),
		base64.RawURLEncoding.EncodeToString(bytes.Repeat([]byte{1}, 25)) + "=", strings.Repeat("A", 100)} {
		if _, err := decodeCursor(bad); err == nil {
			t.Errorf("decodeCursor(%q) accepted", bad)
		}
	}
}

func mustCursor(t *testing.T, c store.TraceCursor) string {
	s, err := encodeCursor(c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTraceDetail(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedStandard(t)
		listed := map[string]summaryT{}
		for _, s := range listAll(t, e, "/api/v1/traces?limit=200", e.a.key) {
			listed[s.ID] = s
		}
		kinds := map[string]bool{}
		for _, s := range e.seedsOf(e.ofTenant(e.a)) {
			resp, body := e.request(t, "GET", "/api/v1/traces/"+s.id, e.a.key, "")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			wantKeys(t, body, append(slices.Clone(summaryKeys), "plugin", "price_version", "reported_model", "priced_model",
				"pricing_note", "config_hash", "key_version", "upstream_ttfb_ms", "request", "response", "request_truncated", "response_truncated", "message", "chain", "readable", "unreadable")...)
			d := decodeStrict[detailT](t, body)
			checkSummary(t, e, d.summaryT, s)
			if a, b := mustJSON(t, d.summaryT), mustJSON(t, listed[s.id]); !bytes.Equal(a, b) {
				t.Errorf("detail summary %s differs from the listing's %s", a, b)
			}
			if !d.Readable || d.Unreadable != nil || d.KeyVersion != 1 || d.Plugin == nil || d.Plugin.Name != "openai" || d.Plugin.Version != "1.0.0" ||
				d.ConfigHash == nil || *d.ConfigHash != "cfg-hash" {
				t.Errorf("readable/key_version/plugin/config_hash: %s", body)
			}
			if (s.usage != nil) != (d.PriceVersion != nil) || (d.PriceVersion != nil && *d.PriceVersion != e.cat.Version()) {
				t.Errorf("price_version %v for usage %v", d.PriceVersion, s.usage)
			}
			// The seeds report no model: a cost is the routed model's.
			if d.ReportedModel != nil || (d.CostMicros != nil) != (d.PricedModel != nil) ||
				(d.PricedModel != nil && *d.PricedModel != s.model) || (d.CostMicros != nil && d.PricingNote != nil) {
				t.Errorf("reported_model %v priced_model %v pricing_note %v for cost %v", d.ReportedModel, d.PricedModel, d.PricingNote, d.CostMicros)
			}
			if s.upstream > 0 {
				if d.UpstreamTTFBMS == nil || *d.UpstreamTTFBMS != float64((s.upstream/2).Microseconds())/1000 {
					t.Errorf("upstream_ttfb_ms %v", d.UpstreamTTFBMS)
				}
			} else if d.UpstreamTTFBMS != nil {
				t.Errorf("upstream_ttfb_ms %v, want null", *d.UpstreamTTFBMS)
			}
			if d.Chain.ID != e.rec.ChainID() || d.Chain.Seq < 1 || !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(d.Chain.Hash) {
				t.Errorf("chain %+v", d.Chain)
			}
			// Bodies, decrypted.
			if json.Valid(s.request) {
				kinds["json request"] = true
				wantSameJSON(t, d.Request, s.request)
			} else {
				kinds["string request"] = true
				wantString(t, d.Request, string(s.request))
			}
			if s.stream {
				kinds["stream"] = true
				wantString(t, d.Response, string(s.response))
				var m struct {
					Object string `json:"object"`
					XLoom  *struct {
						Events            *int  `json:"events"`
						Done              *bool `json:"done"`
						ResponseTruncated *bool `json:"response_truncated"`
					} `json:"x_loom"`
				}
				if err := json.Unmarshal(d.Message, &m); err != nil || m.Object != "chat.completion" || m.XLoom == nil ||
					m.XLoom.Events == nil || m.XLoom.Done == nil || !*m.XLoom.Done {
					t.Errorf("message %s is not the assembled completion (%v)", d.Message, err)
				}
			} else {
				kinds["non-stream"] = true
				wantSameJSON(t, d.Response, s.response)
				if string(d.Message) != "null" {
					t.Errorf("message %s for a non-stream", d.Message)
				}
			}
		}
		for _, k := range []string{"json request", "string request", "stream", "non-stream"} {
			if !kinds[k] {
				t.Errorf("no %s seeded", k)
			}
		}
		// Ids are matched whatever their case; the answer has the canonical form.
		s := e.seedsOf(e.ofTenant(e.a))[0]
		if d := getJSON[detailT](t, e, "/api/v1/traces/"+strings.ToUpper(s.id), e.a.key); d.ID != s.id {
			t.Fatalf("id %q", d.ID)
		}
		// The admin sees it too (all tenants, or narrowed to its tenant).
		for _, q := range []string{"", "?tenant=acme"} {
			if d := getJSON[detailT](t, e, "/api/v1/traces/"+s.id+q, adminToken); d.ID != s.id || d.Tenant != "acme" || !d.Readable {
				t.Fatalf("admin%s: %+v", q, d)
			}
		}
		// Narrowed to another tenant: not found.
		resp, body := e.request(t, "GET", "/api/v1/traces/"+s.id+"?tenant=bravo", adminToken, "")
		wantError(t, resp, body, 404, "invalid_request_error", "trace_not_found", "")
	})
}

func wantSameJSON(t *testing.T, got json.RawMessage, want []byte) {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Errorf("%s: %v", got, err)
		return
	}
	json.Unmarshal(want, &b)
	if string(mustJSON(t, a)) != string(mustJSON(t, b)) || bytes.HasPrefix(bytes.TrimSpace(got), []byte(`"`)) {
		t.Errorf("got %s, want the JSON %s", got, want)
	}
}

func wantString(t *testing.T, got json.RawMessage, want string) {
	t.Helper()
	var s string
	if err := json.Unmarshal(got, &s); err != nil || s != want {
		t.Errorf("got %s, want the string %q", got, want)
	}
}

// A deleted tenant's traces stay, unreadable: bodies null, readable false.
func TestShreddedTraceIsUnreadable(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()
		c := e.tenant(t, "carol")
		before := newSeed(randFor(1), c, time.Now().Add(-time.Minute))
		e.submit(t, before)
		if d := getJSON[detailT](t, e, "/api/v1/traces/"+before.id, c.key); !d.Readable || string(d.Request) == "null" {
			t.Fatalf("before the shred: %+v", d)
		}
		if err := e.kr.Shred(ctx, c.id); err != nil {
			t.Fatal(err)
		}
		after := newSeed(randFor(2), c, time.Now()) // recorded after: bodies discarded
		e.submit(t, after)
		for _, s := range []*seed{before, after} {
			resp, body := e.request(t, "GET", "/api/v1/traces/"+s.id+"?tenant=carol", adminToken, "")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			d := decodeStrict[detailT](t, body)
			if d.Readable || string(d.Request) != "null" || string(d.Response) != "null" || string(d.Message) != "null" ||
				d.Unreadable == nil || *d.Unreadable != "shredded" {
				t.Fatalf("shredded trace: %s", body)
			}
			if d.ID != s.id || d.Tenant != "carol" || d.Model != s.model {
				t.Fatalf("metadata lost: %s", body)
			}
		}
		// A process that never held the tenant's keys (a gateway started
		// after the shred) tells a shred just the same.
		fresh, err := seal.NewKeyring(bytes.Repeat([]byte{7}, 32), st)
		if err != nil {
			t.Fatal(err)
		}
		api := New(Options{Store: st, Keyring: fresh, AdminToken: adminToken, Auth: auth.New(st, auth.Options{})})
		r := mux.NewRouter()
		api.Register(r)
		for _, s := range []*seed{before, after} {
			req := httptest.NewRequest("GET", "/api/v1/traces/"+s.id, nil)
			req.Header.Set("Authorization", "Bearer "+adminToken)
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			d := decodeStrict[detailT](t, rec.Body.Bytes())
			if rec.Code != 200 || d.Readable || d.Unreadable == nil || *d.Unreadable != "shredded" {
				t.Fatalf("shredded trace, seen by a new process: %d %s", rec.Code, rec.Body)
			}
		}
		// The deleted tenant's key no longer works at all.
		resp, body := e.request(t, "GET", "/api/v1/traces", c.key, "")
		wantError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "")
	})
}

// A trace altered behind Loom's back is unreadable for a reason of its
// own, never "shredded": a body that fails authentication, a key version
// the tenant never had, sealed bodies without a key version, no key
// version for a tenant that is not deleted.
func TestTamperedTraceIsNotShredded(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		tamper, ok := st.(interface {
			TamperTrace(ctx context.Context, id, column string, value any) error
		})
		if !ok {
			t.Fatalf("%T cannot tamper", st)
		}
		e := newEnv(t, st)
		ctx := context.Background()
		for i, tc := range []struct {
			column string
			value  any
			want   string
		}{
			{"request_ct", []byte("forged ciphertext, no valid tag"), "failed_authentication"},
			{"response_nonce", make([]byte, 12), "failed_authentication"},
			{"key_version", int64(9), "missing_key"},
			{"key_version", int64(0), "missing_key"}, // sealed bodies, and acme is not deleted
		} {
			s := newSeed(randFor(10+i), e.a, time.Now().Add(-time.Minute))
			e.submit(t, s)
			if err := tamper.TamperTrace(ctx, s.id, tc.column, tc.value); err != nil {
				t.Fatal(err)
			}
			for _, key := range []string{e.a.key, adminToken} {
				resp, body := e.request(t, "GET", "/api/v1/traces/"+s.id, key, "")
				if resp.StatusCode != 200 {
					t.Fatalf("%s: status %d: %s", tc.column, resp.StatusCode, body)
				}
				d := decodeStrict[detailT](t, body)
				if d.Readable || d.Unreadable == nil || *d.Unreadable != tc.want || string(d.Request) != "null" || d.ID != s.id {
					t.Errorf("%s = %v: %s; want unreadable %q", tc.column, tc.value, body, tc.want)
				}
			}
		}
	})
}

// tenantsDown is a store whose ListTenants fails, counting the calls.
type tenantsDown struct {
	store.Store
	calls int
}

func (s *tenantsDown) ListTenants(context.Context) ([]store.Tenant, error) {
	s.calls++
	return nil, errors.New("store unreachable")
}

// TestNamesDuringOutage: in the admin's all-tenant view, a listing calls
// ListTenants once however many rows fail to be named, and the next
// listing (a live-tail poll reuses its view) tries once again.
func TestNamesDuringOutage(t *testing.T) {
	st := &tenantsDown{}
	a := New(Options{Store: st})
	v := view{scope: store.Scope{All: true}, names: &namer{a: a, all: true}}
	rows := []store.TraceSummary{{ID: "1", TenantID: "t1"}, {ID: "2", TenantID: "t2"}, {ID: "3", TenantID: "t1"}}
	for listing := 1; listing <= 2; listing++ {
		out := a.summaries(context.Background(), v, rows)
		if len(out) != len(rows) {
			t.Fatalf("listing %d: %d rows, want %d", listing, len(out), len(rows))
		}
		for _, s := range out {
			if s.Tenant != "" {
				t.Errorf("listing %d: row %s named %q, want nameless", listing, s.ID, s.Tenant)
			}
		}
		if st.calls != listing {
			t.Errorf("after listing %d: ListTenants called %d times, want %d", listing, st.calls, listing)
		}
	}
}

// The note says why a trace has the price it has when that is not simply
// the reported model's: a fallback to the routed model, or no price at all.
func TestPricingNote(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	for _, c := range []struct {
		name string
		tr   store.Trace
		want string
	}{
		{"priced as reported", store.Trace{CanonicalVersion: 2, ReportedModel: "gpt-4o-2024-08-06", UpstreamModel: "gpt-4o",
			PricedModel: "gpt-4o-2024-08-06", PromptTokens: n(9), CostMicros: n(73)}, ""},
		{"nothing reported", store.Trace{CanonicalVersion: 2, UpstreamModel: "gpt-4o", PricedModel: "gpt-4o", PromptTokens: n(9), CostMicros: n(73)}, ""},
		{"fallback", store.Trace{CanonicalVersion: 2, ReportedModel: "gpt-4o-x-preview", UpstreamModel: "gpt-4o",
			PricedModel: "gpt-4o", PromptTokens: n(9), CostMicros: n(73)},
			"priced as gpt-4o: the upstream reported gpt-4o-x-preview, which has no price"},
		{"unpriced", store.Trace{CanonicalVersion: 2, ReportedModel: "mystery", UpstreamModel: "my-deployment",
			PromptTokens: n(9), PriceVersion: "2026-11-21"},
			"not priced: price catalog 2026-11-21 has no price for mystery or my-deployment"},
		{"unpriced, one name", store.Trace{CanonicalVersion: 2, ReportedModel: "mystery", UpstreamModel: "mystery",
			PromptTokens: n(9), PriceVersion: "2026-11-21"}, "not priced: price catalog 2026-11-21 has no price for mystery"},
		{"no usage", store.Trace{CanonicalVersion: 2, UpstreamModel: "gpt-4o", Status: "upstream_error"}, ""},
		{"written before v2", store.Trace{CanonicalVersion: 1, UpstreamModel: "mystery", PromptTokens: n(9)}, ""},
	} {
		if got := pricingNote(&c.tr); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
