package dashboard

import (
	"cmp"
	"slices"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

type percentilesT struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

type aggregateT struct {
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	ErrorRate float64 `json:"error_rate"`
	Tokens    struct {
		Prompt     int64 `json:"prompt"`
		Completion int64 `json:"completion"`
		Total      int64 `json:"total"`
		Cached     int64 `json:"cached"`
	} `json:"tokens"`
	CostMicros int64        `json:"cost_micros"`
	CostUSD    float64      `json:"cost_usd"`
	LatencyMS  percentilesT `json:"latency_ms"`
	OverheadMS percentilesT `json:"overhead_ms"`
}

type modelAggregateT struct {
	Model string `json:"model"`
	aggregateT
}

type summaryRespT struct {
	Window  string            `json:"window"`
	From    string            `json:"from"`
	To      string            `json:"to"`
	Overall aggregateT        `json:"overall"`
	ByModel []modelAggregateT `json:"by_model"`
}

type bucketT struct {
	Start      string  `json:"start"`
	Requests   int64   `json:"requests"`
	Errors     int64   `json:"errors"`
	Tokens     int64   `json:"tokens"`
	CostMicros int64   `json:"cost_micros"`
	CostUSD    float64 `json:"cost_usd"`
	LatencyMS  struct {
		P50 float64 `json:"p50"`
		P95 float64 `json:"p95"`
	} `json:"latency_ms"`
}

type timeseriesT struct {
	Window  string    `json:"window"`
	Bucket  string    `json:"bucket"`
	From    string    `json:"from"`
	To      string    `json:"to"`
	Buckets []bucketT `json:"buckets"`
}

const stampFormat = "2006-01-02T15:04:05.000000Z"

// expectAggregate computes, from the seeds alone, what the analytics must report.
func expectAggregate(e *env, seeds []*seed) aggregateT {
	var g aggregateT
	var lat, over []int64
	for _, s := range seeds {
		g.Requests++
		if !s.ok() {
			g.Errors++
		}
		if u := s.usage; u != nil {
			g.Tokens.Prompt += u.PromptTokens
			g.Tokens.Completion += u.CompletionTokens
			g.Tokens.Total += u.TotalTokens
			g.Tokens.Cached += u.CachedPromptTokens
		}
		if c, ok := s.cost(e.cat); ok {
			g.CostMicros += c
		}
		lat = append(lat, s.latencyUS())
		over = append(over, s.overheadUS())
	}
	if g.Requests > 0 {
		g.ErrorRate = float64(g.Errors) / float64(g.Requests)
	}
	g.CostUSD = float64(g.CostMicros) / 1e6
	pct := func(v []int64) percentilesT {
		return percentilesT{float64(percentile(v, 50)) / 1000, float64(percentile(v, 95)) / 1000, float64(percentile(v, 99)) / 1000}
	}
	g.LatencyMS, g.OverheadMS = pct(lat), pct(over)
	return g
}

func inWindow(from, to time.Time) func(*seed) bool {
	return func(s *seed) bool { return !s.createdAt().Before(from) && s.createdAt().Before(to) }
}

func and(fs ...func(*seed) bool) func(*seed) bool {
	return func(s *seed) bool {
		for _, f := range fs {
			if !f(s) {
				return false
			}
		}
		return true
	}
}

var windowDurations = map[string]time.Duration{"1h": time.Hour, "24h": 24 * time.Hour, "7d": 7 * 24 * time.Hour, "30d": 30 * 24 * time.Hour}

// viewer is who asks: a token, an optional ?tenant=, and the seeds it may see.
type viewer struct {
	name, token, query string
	sees               func(*seed) bool
}

func viewers(e *env) []viewer {
	return []viewer{
		{"tenant A", e.a.key, "", e.ofTenant(e.a)},
		{"tenant B", e.b.key, "", e.ofTenant(e.b)},
		{"admin", adminToken, "", func(*seed) bool { return true }},
		{"admin narrowed to B", adminToken, "&tenant=bravo", e.ofTenant(e.b)},
	}
}

func TestSummary(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedStandard(t)
		for _, v := range viewers(e) {
			for _, window := range []string{"", "1h", "24h", "7d", "30d"} {
				t.Run(v.name+"/"+window, func(t *testing.T) {
					name := cmp.Or(window, "24h")
					from, to := e.base.Add(-windowDurations[name]), e.base
					seeds := e.seedsOf(and(v.sees, inWindow(from, to)))
					if len(seeds) == 0 {
						t.Fatal("no seeded trace in the window: the test proves nothing")
					}
					got := getJSON[summaryRespT](t, e, "/api/v1/analytics/summary?window="+window+v.query, v.token)
					if got.Window != name || got.From != from.Format(stampFormat) || got.To != to.Format(stampFormat) {
						t.Fatalf("window %q from %s to %s, want %s %s %s", got.Window, got.From, got.To, name,
							from.Format(stampFormat), to.Format(stampFormat))
					}
					if want := expectAggregate(e, seeds); got.Overall != want {
						t.Fatalf("overall\n%+v\nwant\n%+v", got.Overall, want)
					}
					// By requested model, most requests first (ties by name).
					byModel := map[string][]*seed{}
					for _, s := range seeds {
						byModel[s.model] = append(byModel[s.model], s)
					}
					var want []modelAggregateT
					for m, ss := range byModel {
						want = append(want, modelAggregateT{Model: m, aggregateT: expectAggregate(e, ss)})
					}
					slices.SortFunc(want, func(x, y modelAggregateT) int {
						return cmp.Or(cmp.Compare(y.Requests, x.Requests), cmp.Compare(x.Model, y.Model))
					})
					if !slices.Equal(got.ByModel, want) {
						t.Fatalf("by_model\n%+v\nwant\n%+v", got.ByModel, want)
					}
				})
			}
		}
		// Nothing in the window: zeros, error_rate 0, by_model empty (not null).
		c := e.tenant(t, "carol")
		resp, body := e.request(t, "GET", "/api/v1/analytics/summary?window=1h", c.key, "")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		got := decodeStrict[summaryRespT](t, body)
		if got.Overall != (aggregateT{}) || got.ByModel == nil || len(got.ByModel) != 0 {
			t.Fatalf("empty tenant: %s", body)
		}
	})
}

func TestTimeseries(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedStandard(t)
		// The clock is at …:17:23.5, so the window's ends cut buckets:
		// every bucket width has one more bucket than fits in the window.
		tests := []struct {
			window, bucket, wantBucket string
			width                      time.Duration
			n                          int
		}{
			{"1h", "", "1m", time.Minute, 61},
			{"", "", "1h", time.Hour, 25},
			{"24h", "", "1h", time.Hour, 25},
			{"7d", "", "6h", 6 * time.Hour, 29},
			{"30d", "", "1d", 24 * time.Hour, 31},
			{"24h", "15m", "15m", 15 * time.Minute, 97},
			{"24h", "5m", "5m", 5 * time.Minute, 289},
			{"7d", "1h", "1h", time.Hour, 169},
			{"30d", "6h", "6h", 6 * time.Hour, 121},
			{"1h", "1d", "1d", 24 * time.Hour, 0}, // 1 or 2, see below
		}
		for _, v := range viewers(e) {
			for _, tt := range tests {
				t.Run(v.name+"/"+tt.window+"/"+tt.bucket, func(t *testing.T) {
					name := cmp.Or(tt.window, "24h")
					from, to := e.base.Add(-windowDurations[name]), e.base
					n := tt.n
					if n == 0 {
						n = 1
						if !from.Truncate(tt.width).Equal(to.Truncate(tt.width)) {
							n = 2
						}
					}
					got := getJSON[timeseriesT](t, e, "/api/v1/analytics/timeseries?window="+tt.window+"&bucket="+tt.bucket+v.query, v.token)
					if got.Window != name || got.Bucket != tt.wantBucket || got.From != from.Format(stampFormat) || got.To != to.Format(stampFormat) {
						t.Fatalf("header %q %q %s %s", got.Window, got.Bucket, got.From, got.To)
					}
					if len(got.Buckets) != n {
						t.Fatalf("%d buckets, want %d", len(got.Buckets), n)
					}
					// Aligned to the width in UTC, consecutive, oldest first; the
					// first holds from, the last holds the instant before to.
					first := from.Truncate(tt.width)
					if first.After(from) || !first.Add(tt.width).After(from) {
						t.Fatalf("bad first bucket %s for from %s", first, from)
					}
					seeds := e.seedsOf(and(v.sees, inWindow(from, to)))
					per := make([][]*seed, n)
					for _, s := range seeds {
						i := int(s.createdAt().Sub(first) / tt.width)
						per[i] = append(per[i], s)
					}
					var total int64
					nonEmpty := 0
					for i, b := range got.Buckets {
						start := first.Add(time.Duration(i) * tt.width)
						if b.Start != start.Format(stampFormat) || start.UnixMicro()%tt.width.Microseconds() != 0 {
							t.Fatalf("bucket %d starts %s, want %s", i, b.Start, start.Format(stampFormat))
						}
						g := expectAggregate(e, per[i])
						want := bucketT{Start: b.Start, Requests: g.Requests, Errors: g.Errors, Tokens: g.Tokens.Total,
							CostMicros: g.CostMicros, CostUSD: g.CostUSD}
						want.LatencyMS.P50, want.LatencyMS.P95 = g.LatencyMS.P50, g.LatencyMS.P95
						if b != want {
							t.Fatalf("bucket %d\n%+v\nwant\n%+v", i, b, want)
						}
						total += b.Requests
						if b.Requests > 0 {
							nonEmpty++
						}
					}
					if total != int64(len(seeds)) {
						t.Fatalf("buckets hold %d requests, the window %d", total, len(seeds))
					}
					// The buckets add up to the summary of the same window.
					sum := getJSON[summaryRespT](t, e, "/api/v1/analytics/summary?window="+tt.window+v.query, v.token)
					if sum.Overall.Requests != total {
						t.Fatalf("summary %d requests, buckets %d", sum.Overall.Requests, total)
					}
					if len(seeds) == 0 || (n > 3 && nonEmpty == n) {
						t.Fatalf("%d seeds in %d of %d buckets: zero filling is not exercised", len(seeds), nonEmpty, n)
					}
				})
			}
		}
	})
}

func TestAnalyticsValidation(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		tests := []struct{ path, param string }{
			{"/api/v1/analytics/summary?window=2h", "window"},
			{"/api/v1/analytics/summary?window=24H", "window"},
			{"/api/v1/analytics/summary?window=1d", "window"},
			{"/api/v1/analytics/timeseries?window=90d", "window"},
			{"/api/v1/analytics/timeseries?bucket=2m", "bucket"},
			{"/api/v1/analytics/timeseries?bucket=60s", "bucket"},
			{"/api/v1/analytics/timeseries?window=30d&bucket=1m", "bucket"}, // 43,201 buckets
			{"/api/v1/analytics/timeseries?window=7d&bucket=1m", "bucket"},
		}
		for _, tt := range tests {
			t.Run(tt.path, func(t *testing.T) {
				resp, body := e.request(t, "GET", tt.path, e.a.key, "")
				wantError(t, resp, body, 400, "invalid_request_error", "invalid_value", tt.param)
			})
		}
		// The largest series allowed.
		if ts := getJSON[timeseriesT](t, e, "/api/v1/analytics/timeseries?window=30d&bucket=15m", e.a.key); len(ts.Buckets) != 2881 {
			t.Fatalf("%d buckets", len(ts.Buckets))
		}
	})
}

// The test's percentile is the store's documented one (package store/internal/dash).
func TestPercentileDefinition(t *testing.T) {
	seq := func(n int) []int64 {
		v := make([]int64, n)
		for i := range v {
			v[i] = int64(n - i) // unsorted on purpose
		}
		return v
	}
	for _, c := range []struct {
		n             int
		p50, p95, p99 int64
	}{{100, 50, 95, 99}, {10, 5, 10, 10}, {1, 1, 1, 1}, {0, 0, 0, 0}, {20, 10, 19, 20}} {
		v := seq(c.n)
		if got := [3]int64{percentile(v, 50), percentile(v, 95), percentile(v, 99)}; got != [3]int64{c.p50, c.p95, c.p99} {
			t.Errorf("1..%d: %v, want %d %d %d", c.n, got, c.p50, c.p95, c.p99)
		}
	}
}
