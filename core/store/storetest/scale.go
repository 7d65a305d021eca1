package storetest

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
)

// ScaleEnv names the environment variable that enables the dashboard scale
// test (LOOM_SCALE_TEST=1); without it the test is skipped, so `make test`
// stays fast. LOOM_SCALE_ROWS overrides the number of traces (1,000,000).
const ScaleEnv = "LOOM_SCALE_TEST"

// ScaleData is the synthetic history the scale test loads: Rows traces
// over the Days before End, in time order, of Tenants tenants of which the
// first holds about 70% of the traces and the others share the rest.
type ScaleData struct {
	Rows, Tenants, Days int
	End                 time.Time
	TenantIDs           []string // filled in by the test
	ChainIDs            []string // one chain per tenant
}

// scaleModels and friends: what the traces use, with the share of each
// (a rare model, a rare provider and rare statuses included).
var (
	scaleModels = []weighted{{"gpt-4o", 30}, {"gpt-4o-mini", 25}, {"claude-sonnet-4", 15}, {"llama-3.3-70b", 10},
		{"text-embedding-3-small", 9}, {"mistral-large", 6}, {"o3", 4.8}, {"rare-model", 0.2}}
	scaleStatuses = []weighted{{"ok", 96}, {"upstream_error", 2.5}, {"upstream_timeout", 1}, {"client_disconnect", 0.49},
		{"plugin_failure", 0.01}}
	scaleProviders = []weighted{{"openai-eu", 45}, {"openai-us", 30}, {"anthropic", 24.5}, {"rare-provider", 0.5}}
)

type weighted struct {
	name string
	pct  float64
}

func pick(ws []weighted, u float64) string {
	u *= 100
	for _, w := range ws {
		if u < w.pct {
			return w.name
		}
		u -= w.pct
	}
	return ws[0].name
}

// splitmix64 is a small, fast, deterministic mixer: row i's fields derive
// from splitmix64(i·k + field).
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

type rowRand struct{ i, n uint64 }

func (r *rowRand) u64() uint64 {
	r.n++
	return splitmix64(r.i*64 + r.n)
}

func (r *rowRand) float() float64 { return float64(r.u64()>>11) / (1 << 53) }

// scaleBody is the source of every trace's "ciphertext": random bytes
// (ciphertext does not compress) sliced at row-dependent offsets.
var scaleBody = func() []byte {
	b := make([]byte, 1<<16)
	for i := range b {
		b[i] = byte(splitmix64(uint64(i)))
	}
	return b
}()

// Row returns trace i of the data set: deterministic, realistic
// distributions (log-normal latencies, a few percent errors, some unknown
// usage and unpriced models), bodies of about 1 KB.
func (d *ScaleData) Row(i int) store.Trace {
	r := rowRand{i: uint64(i)}
	span := time.Duration(d.Days) * 24 * time.Hour
	at := d.End.Add(-span + time.Duration(float64(span)*(float64(i)+r.float())/float64(d.Rows))).Truncate(time.Microsecond)
	tenant := 0
	if r.float() >= 0.7 {
		tenant = 1 + int(r.u64()%uint64(d.Tenants-1))
	}
	var id uuid.UUID
	binary.BigEndian.PutUint64(id[8:], r.u64())
	binary.BigEndian.PutUint64(id[0:], uint64(at.UnixMilli())<<16|r.u64()&0xffff)
	id[6] = 0x70 | id[6]&0x0f // version 7
	id[8] = 0x80 | id[8]&0x3f // RFC 4122 variant
	status := pick(scaleStatuses, r.float())
	// Log-normal latency around 450 ms; errors are often slow.
	z := math.Sqrt(-2*math.Log(1-r.float())) * math.Cos(2*math.Pi*r.float())
	lat := int64(math.Exp(13 + 0.9*z))
	if status == "upstream_timeout" {
		lat = 30_000_000 + int64(r.u64()%1_000_000)
	}
	prompt := int64(50 + r.u64()%4000)
	completion := int64(10 + r.u64()%1000)
	total := prompt + completion
	tr := store.Trace{
		ID: id.String(), TenantID: d.TenantIDs[tenant], RequestID: "req_" + strconv.FormatUint(r.u64()%1e12, 36),
		Endpoint: "chat.completions", Stream: r.u64()%2 == 0,
		RequestedModel: pick(scaleModels, r.float()), ProviderInstance: pick(scaleProviders, r.float()),
		PluginName: "openai", PluginVersion: "1.4.2", Status: status, HTTPStatus: 200,
		KeyVersion: 1, UsageSource: "provider", PriceVersion: "2025-06", ConfigHash: "cfg_9f86d081884c7d65",
		PromptTokens: &prompt, CompletionTokens: &completion, TotalTokens: &total,
		LatencyUS: lat, OverheadUS: int64(200 + r.u64()%3000),
		CreatedAt: at, ChainID: d.ChainIDs[tenant], ChainSeq: int64(i + 1),
		PrevHash: scaleBody[i%4096 : i%4096+32], Hash: scaleBody[i%4096+32 : i%4096+64], CanonicalVersion: 2,
	}
	tr.UpstreamModel = tr.RequestedModel + "-2025"
	if status != "ok" {
		tr.HTTPStatus, tr.ErrorMessage = 502, "upstream answered 500: internal error"
	}
	off := int(r.u64() % (1<<16 - 2048))
	tr.Request = store.Sealed{Nonce: scaleBody[off : off+12], Ciphertext: scaleBody[off : off+384]}
	tr.Response = store.Sealed{Nonce: scaleBody[off+12 : off+24], Ciphertext: scaleBody[off+384 : off+1024]}
	if r.u64()%5 == 0 {
		cached := prompt / 2
		tr.CachedPromptTokens = &cached
	}
	if r.u64()%10 == 0 {
		tr.CostMicros = nil // an unpriced model
	} else {
		cost := total * 3
		tr.CostMicros = &cost
	}
	if r.u64()%50 == 0 {
		tr.PromptTokens, tr.CompletionTokens, tr.TotalTokens, tr.UsageSource = nil, nil, nil, "none"
	}
	ttfb := lat / 3
	tr.TTFBUS, tr.UpstreamUS = &ttfb, &lat
	return tr
}

// ScaleTiming is one measured query.
type ScaleTiming struct {
	Name     string
	Rows     int           // rows or buckets returned (requests for summaries)
	First    time.Duration // the first run
	Median   time.Duration // of the runs after it
	Required bool          // must answer well under a second
}

// ScaleBudget is what "well under a second" means for the required queries.
const ScaleBudget = 500 * time.Millisecond

// SkipUnlessScale skips t unless the scale test is enabled (ScaleEnv).
func SkipUnlessScale(t testing.TB) {
	t.Helper()
	if os.Getenv(ScaleEnv) == "" {
		t.Skipf("set %s=1 to load 1,000,000 traces and time the dashboard queries", ScaleEnv)
	}
}

// DashboardAtScale creates the tenants and chains of a data set of rows
// traces (LOOM_SCALE_ROWS overrides it), lets load write it (in bulk,
// behind the store's back: load gets the data set and writes d.Rows rows of
// d.Row), then times each dashboard query and reports the timings with
// t.Log. The required queries — ListTraces first pages with and without a
// filter, Summary over 24 hours and 30 days, for the largest tenant — must
// take less than ScaleBudget (median of 5 runs after a first one).
func DashboardAtScale(t *testing.T, s store.Store, load func(d *ScaleData) error) []ScaleTiming {
	SkipUnlessScale(t)
	d := &ScaleData{Rows: 1_000_000, Tenants: 10, Days: 30, End: time.Now().UTC().Truncate(time.Second)}
	if v := os.Getenv("LOOM_SCALE_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1000 {
			t.Fatalf("LOOM_SCALE_ROWS=%q: want a number of at least 1000", v)
		}
		d.Rows = n
	}
	for i := range d.Tenants {
		d.TenantIDs = append(d.TenantIDs, mustTenant(t, s, fmt.Sprintf("tenant-%02d", i)).ID)
		d.ChainIDs = append(d.ChainIDs, mustChain(t, s).ID)
	}
	start := time.Now()
	if err := load(d); err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Logf("loaded %d traces in %s", d.Rows, time.Since(start).Round(time.Millisecond))

	ctx := t.Context()
	big, small := store.TenantScope(d.TenantIDs[0]), store.TenantScope(d.TenantIDs[1])
	admin := store.Scope{All: true}
	if n, err := s.CountTraces(ctx, d.TenantIDs[0]); err != nil || n < int64(d.Rows)/2 {
		t.Fatalf("largest tenant has %d traces (%v); the load went wrong", n, err)
	}
	day, month := d.End.Add(-24*time.Hour), d.End.Add(-30*24*time.Hour)
	first, err := s.ListTraces(ctx, big, store.TraceFilter{}, nil, 50)
	if err != nil || len(first) != 50 {
		t.Fatalf("ListTraces: %d, %v", len(first), err)
	}
	// A cursor a third of the way back, for a deep page.
	deep := &store.TraceCursor{CreatedAt: d.End.Add(-10 * 24 * time.Hour), ID: uuid.Nil.String()}
	list := func(sc store.Scope, f store.TraceFilter, before *store.TraceCursor) func() (int, error) {
		return func() (int, error) {
			got, err := s.ListTraces(ctx, sc, f, before, 50)
			return len(got), err
		}
	}
	summary := func(sc store.Scope, from time.Time) func() (int, error) {
		return func() (int, error) {
			all, _, err := s.Summary(ctx, sc, from, d.End)
			return int(all.Requests), err
		}
	}
	series := func(sc store.Scope, from time.Time, w time.Duration) func() (int, error) {
		return func() (int, error) {
			got, err := s.Timeseries(ctx, sc, from, d.End, w)
			return len(got), err
		}
	}
	slow := int64(5_000_000)
	cases := []struct {
		name     string
		fn       func() (int, error)
		required bool
	}{
		{"ListTraces largest tenant, first page", list(big, store.TraceFilter{}, nil), true},
		{"ListTraces largest tenant, model filter", list(big, store.TraceFilter{Model: "claude-sonnet-4"}, nil), true},
		{"ListTraces largest tenant, status=upstream_error", list(big, store.TraceFilter{Status: "upstream_error"}, nil), true},
		{"ListTraces largest tenant, rare status (0.01%)", list(big, store.TraceFilter{Status: "plugin_failure"}, nil), true},
		{"ListTraces largest tenant, absent status", list(big, store.TraceFilter{Status: "shutdown"}, nil), true},
		{"ListTraces largest tenant, rare model (0.2%)", list(big, store.TraceFilter{Model: "rare-model"}, nil), true},
		{"ListTraces largest tenant, rare provider (0.5%)", list(big, store.TraceFilter{Provider: "rare-provider"}, nil), true},
		{"ListTraces largest tenant, latency >= 5 s", list(big, store.TraceFilter{MinLatencyUS: slow}, nil), true},
		{"ListTraces largest tenant, stream + last 24h", list(big, store.TraceFilter{Stream: new(true), From: day}, nil), true},
		{"ListTraces largest tenant, page 20 days back", list(big, store.TraceFilter{}, deep), true},
		{"ListTraces small tenant, first page", list(small, store.TraceFilter{}, nil), true},
		{"ListTraces small tenant, status=upstream_error", list(small, store.TraceFilter{Status: "upstream_error"}, nil), true},
		{"ListTraces all tenants, first page", list(admin, store.TraceFilter{}, nil), false},
		{"ListTraces all tenants, status=upstream_error", list(admin, store.TraceFilter{Status: "upstream_error"}, nil), false},
		{"ListTraces all tenants, rare model (0.2%)", list(admin, store.TraceFilter{Model: "rare-model"}, nil), false},
		{"TracesSince largest tenant, last minute", func() (int, error) {
			got, err := s.TracesSince(ctx, big, store.TraceCursor{CreatedAt: d.End.Add(-time.Minute), ID: uuid.Nil.String()}, 100)
			return len(got), err
		}, false},
		{"ScopedTrace", func() (int, error) {
			_, err := s.ScopedTrace(ctx, big, first[7].ID)
			return 1, err
		}, false},
		{"Summary largest tenant, 24h", summary(big, day), true},
		{"Summary largest tenant, 30d", summary(big, month), true},
		{"Summary small tenant, 30d", summary(small, month), true},
		{"Summary all tenants, 24h", summary(admin, day), false},
		{"Summary all tenants, 30d", summary(admin, month), false},
		{"Timeseries largest tenant, 24h by 1h", series(big, day, time.Hour), false},
		{"Timeseries largest tenant, 30d by 1d", series(big, month, 24*time.Hour), false},
		{"Timeseries largest tenant, 30d by 1h", series(big, month, time.Hour), false},
		{"Timeseries all tenants, 30d by 1d", series(admin, month, 24*time.Hour), false},
	}
	var out []ScaleTiming
	for _, c := range cases {
		tm := ScaleTiming{Name: c.name, Required: c.required}
		var runs []time.Duration
		for run := range 6 {
			t0 := time.Now()
			n, err := c.fn()
			el := time.Since(t0)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if run == 0 {
				tm.First, tm.Rows = el, n
			} else {
				runs = append(runs, el)
			}
		}
		slices.Sort(runs)
		tm.Median = runs[len(runs)/2]
		out = append(out, tm)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%-55s %9s %10s %10s\n", "query ("+strconv.Itoa(d.Rows)+" traces)", "rows", "first", "median")
	for _, tm := range out {
		mark := ""
		if tm.Required {
			mark = " *"
		}
		fmt.Fprintf(&b, "%-55s %9d %10s %10s%s\n", tm.Name, tm.Rows, round(tm.First), round(tm.Median), mark)
	}
	t.Logf("dashboard timings (* = required under %s):\n%s", ScaleBudget, b.String())
	for _, tm := range out {
		if tm.Required && tm.Median > ScaleBudget {
			t.Errorf("%s: median %s, want under %s", tm.Name, tm.Median, ScaleBudget)
		}
	}
	return out
}

func round(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	default:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
}
