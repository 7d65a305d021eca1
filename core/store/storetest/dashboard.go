package storetest

import (
	"cmp"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
)

var dashboardTests = []suiteTest{
	{name: "DashboardTenantIsolation", fn: testDashboardIsolation},
	{name: "DashboardAdminScope", fn: testDashboardAdminScope},
	{name: "DashboardZeroScope", fn: testDashboardZeroScope},
	{name: "ListTracesSummaryFields", fn: testListTracesFields},
	{name: "ListTracesOrderAndPages", fn: testListTracesPages},
	{name: "ListTracesCursorStableUnderInserts", fn: testListTracesCursorStable},
	{name: "ListTracesFilters", fn: testListTracesFilters},
	{name: "ListTracesBadArguments", fn: testListTracesBadArguments},
	{name: "TracesSince", fn: testTracesSince},
	{name: "ScopedTrace", fn: testScopedTrace},
	{name: "SummaryPercentiles", fn: testSummaryPercentiles},
	{name: "SummarySums", fn: testSummarySums},
	{name: "SummaryWindow", fn: testSummaryWindow},
	{name: "SummaryMatchesReference", fn: testSummaryReference},
	{name: "TimeseriesBuckets", fn: testTimeseriesBuckets},
	{name: "TimeseriesAlignment", fn: testTimeseriesAlignment},
	{name: "TimeseriesMatchesReference", fn: testTimeseriesReference},
}

// PercentileDisc is the percentile definition every store implements
// (PostgreSQL's percentile_disc), written out independently of the stores:
// the value at 1-based position ceil(p × N) of the sorted values, 0 for none.
func PercentileDisc(values []int64, p float64) int64 {
	if len(values) == 0 {
		return 0
	}
	v := slices.Clone(values)
	slices.Sort(v)
	k := int(math.Ceil(p * float64(len(v))))
	return v[min(max(k, 1), len(v))-1]
}

// dashBase is the hour the dashboard tests' traces are created around.
var dashBase = time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)

// dashData makes traces for the dashboard tests, one chain, sequence
// numbers in creation order.
type dashData struct {
	t     testing.TB
	s     store.Store
	chain string
	seq   int64
	all   []store.Trace // everything inserted, in insertion order
}

func newDashData(t testing.TB, s store.Store) *dashData {
	return &dashData{t: t, s: s, chain: mustChain(t, s).ID}
}

// trace returns a small trace of tenant at `at` (not inserted), changed by mods.
func (d *dashData) trace(tenant string, at time.Time, mods ...func(*store.Trace)) store.Trace {
	d.t.Helper()
	d.seq++
	tr := newTrace(d.t, tenant, d.chain, d.seq, at, 32)
	for _, m := range mods {
		m(&tr)
	}
	return tr
}

// add inserts traces and remembers them.
func (d *dashData) add(trs ...store.Trace) []store.Trace {
	d.t.Helper()
	mustInsert(d.t, d.s, trs, len(trs))
	d.all = append(d.all, trs...)
	return trs
}

// of returns the inserted traces of the scope, in the listing order.
func (d *dashData) of(sc store.Scope) []store.Trace {
	var out []store.Trace
	for _, tr := range d.all {
		if inScope(sc, tr.TenantID) {
			out = append(out, stored(tr))
		}
	}
	slices.SortFunc(out, newestFirst)
	return out
}

func inScope(sc store.Scope, tenantID string) bool {
	if sc.TenantID != "" {
		return strings.EqualFold(sc.TenantID, tenantID)
	}
	return sc.All
}

// newestFirst is the listing order: created_at, then id, both descending.
func newestFirst(a, b store.Trace) int {
	if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
		return c
	}
	return strings.Compare(b.ID, a.ID)
}

func model(m string) func(*store.Trace)   { return func(tr *store.Trace) { tr.RequestedModel = m } }
func status(s string) func(*store.Trace)  { return func(tr *store.Trace) { tr.Status = s } }
func latency(us int64) func(*store.Trace) { return func(tr *store.Trace) { tr.LatencyUS = us } }

// summaryOf is the store.TraceSummary a store lists for tr.
func summaryOf(tr store.Trace) store.TraceSummary {
	tr = stored(tr)
	return store.TraceSummary{
		ID: tr.ID, TenantID: tr.TenantID, RequestID: tr.RequestID, Endpoint: tr.Endpoint, Stream: tr.Stream,
		RequestedModel: tr.RequestedModel, UpstreamModel: tr.UpstreamModel, Provider: tr.ProviderInstance,
		Status: tr.Status, HTTPStatus: tr.HTTPStatus, ErrorMessage: tr.ErrorMessage,
		PromptTokens: tr.PromptTokens, CompletionTokens: tr.CompletionTokens, TotalTokens: tr.TotalTokens,
		CachedPromptTokens: tr.CachedPromptTokens, UsageSource: tr.UsageSource, CostMicros: tr.CostMicros,
		LatencyUS: tr.LatencyUS, OverheadUS: tr.OverheadUS, TTFBUS: tr.TTFBUS, UpstreamUS: tr.UpstreamUS,
		CreatedAt: tr.CreatedAt,
	}
}

func ids(trs []store.Trace) []string {
	out := make([]string, len(trs))
	for i, tr := range trs {
		out[i] = stored(tr).ID
	}
	return out
}

func summaryIDs(sums []store.TraceSummary) []string {
	out := make([]string, len(sums))
	for i, s := range sums {
		out[i] = s.ID
	}
	return out
}

func listAll(t testing.TB, s store.Store, sc store.Scope, f store.TraceFilter, limit int) []store.TraceSummary {
	t.Helper()
	var out []store.TraceSummary
	var before *store.TraceCursor
	for range 10000 {
		page, err := s.ListTraces(t.Context(), sc, f, before, limit)
		if err != nil {
			t.Fatalf("ListTraces(%+v, %+v, before %+v, %d): %v", sc, f, before, limit, err)
		}
		if page == nil {
			t.Fatal("ListTraces returned a nil slice")
		}
		if len(page) > limit {
			t.Fatalf("ListTraces(limit %d) = %d rows", limit, len(page))
		}
		out = append(out, page...)
		if len(page) < limit {
			return out
		}
		last := page[len(page)-1]
		before = &store.TraceCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	t.Fatal("ListTraces never ends")
	return nil
}

func checkIDs(t testing.TB, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s: got %d ids, want %d\n got %v\nwant %v", what, len(got), len(want), got, want)
	}
}

func mustSummary(t testing.TB, s store.Store, sc store.Scope, from, to time.Time) (store.Aggregate, []store.ModelAggregate) {
	t.Helper()
	all, models, err := s.Summary(t.Context(), sc, from, to)
	if err != nil {
		t.Fatalf("Summary(%+v, %s, %s): %v", sc, from, to, err)
	}
	if models == nil {
		t.Fatal("Summary returned a nil model slice")
	}
	return all, models
}

func mustSeries(t testing.TB, s store.Store, sc store.Scope, from, to time.Time, width time.Duration) []store.Bucket {
	t.Helper()
	got, err := s.Timeseries(t.Context(), sc, from, to, width)
	if err != nil {
		t.Fatalf("Timeseries(%+v, %s, %s, %s): %v", sc, from, to, width, err)
	}
	if got == nil {
		t.Fatal("Timeseries returned a nil slice")
	}
	return got
}

// refAggregate computes what Summary must report for trs.
func refAggregate(trs []store.Trace) store.Aggregate {
	var a store.Aggregate
	var lat, ovh []int64
	val := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	for _, tr := range trs {
		a.Requests++
		if tr.Status != "ok" {
			a.Errors++
		}
		a.PromptTokens += val(tr.PromptTokens)
		a.CompletionTokens += val(tr.CompletionTokens)
		a.TotalTokens += val(tr.TotalTokens)
		a.CachedPromptTokens += val(tr.CachedPromptTokens)
		a.CostMicros += val(tr.CostMicros)
		lat = append(lat, tr.LatencyUS)
		ovh = append(ovh, tr.OverheadUS)
	}
	a.Latency = store.Percentiles{P50: PercentileDisc(lat, 0.5), P95: PercentileDisc(lat, 0.95), P99: PercentileDisc(lat, 0.99)}
	a.Overhead = store.Percentiles{P50: PercentileDisc(ovh, 0.5), P95: PercentileDisc(ovh, 0.95), P99: PercentileDisc(ovh, 0.99)}
	return a
}

// refSummary computes what Summary must report for the traces of trs in [from, to).
func refSummary(trs []store.Trace, from, to time.Time) (store.Aggregate, []store.ModelAggregate) {
	var in []store.Trace
	byModel := map[string][]store.Trace{}
	for _, tr := range trs {
		tr = stored(tr)
		if tr.CreatedAt.Before(from) || !tr.CreatedAt.Before(to) {
			continue
		}
		in = append(in, tr)
		byModel[tr.RequestedModel] = append(byModel[tr.RequestedModel], tr)
	}
	models := []store.ModelAggregate{}
	for m, trs := range byModel {
		models = append(models, store.ModelAggregate{Model: m, Aggregate: refAggregate(trs)})
	}
	slices.SortFunc(models, func(x, y store.ModelAggregate) int {
		if c := cmp.Compare(y.Requests, x.Requests); c != 0 {
			return c
		}
		return cmp.Compare(x.Model, y.Model)
	})
	return refAggregate(in), models
}

func checkSummary(t testing.TB, what string, gotAll store.Aggregate, gotModels []store.ModelAggregate, wantAll store.Aggregate, wantModels []store.ModelAggregate) {
	t.Helper()
	if gotAll != wantAll {
		t.Errorf("%s: overall\n got %+v\nwant %+v", what, gotAll, wantAll)
	}
	if !reflect.DeepEqual(gotModels, wantModels) {
		t.Errorf("%s: by model\n got %+v\nwant %+v", what, gotModels, wantModels)
	}
}

// refSeries computes what Timeseries must report for the traces of trs in
// [from, to), buckets aligned to the Unix epoch.
func refSeries(trs []store.Trace, from, to time.Time, width time.Duration) []store.Bucket {
	type acc struct {
		b   store.Bucket
		lat []int64
	}
	byStart := map[time.Time]*acc{}
	for _, tr := range trs {
		tr = stored(tr)
		if tr.CreatedAt.Before(from) || !tr.CreatedAt.Before(to) {
			continue
		}
		ns := tr.CreatedAt.UnixNano()
		k := ns / int64(width)
		if ns%int64(width) != 0 && ns < 0 {
			k--
		}
		start := time.Unix(0, k*int64(width)).UTC()
		a := byStart[start]
		if a == nil {
			a = &acc{b: store.Bucket{Start: start}}
			byStart[start] = a
		}
		a.b.Requests++
		if tr.Status != "ok" {
			a.b.Errors++
		}
		if tr.TotalTokens != nil {
			a.b.TotalTokens += *tr.TotalTokens
		}
		if tr.CostMicros != nil {
			a.b.CostMicros += *tr.CostMicros
		}
		a.lat = append(a.lat, tr.LatencyUS)
	}
	out := []store.Bucket{}
	for _, a := range byStart {
		a.b.LatencyP50, a.b.LatencyP95 = PercentileDisc(a.lat, 0.5), PercentileDisc(a.lat, 0.95)
		out = append(out, a.b)
	}
	slices.SortFunc(out, func(x, y store.Bucket) int { return x.Start.Compare(y.Start) })
	return out
}

func checkSeries(t testing.TB, what string, got, want []store.Bucket) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d buckets, want %d\n got %+v\nwant %+v", what, len(got), len(want), got, want)
		return
	}
	for i := range want {
		if g := got[i]; !g.Start.Equal(want[i].Start) || g.Start.Location() != time.UTC ||
			g.Requests != want[i].Requests || g.Errors != want[i].Errors || g.TotalTokens != want[i].TotalTokens ||
			g.CostMicros != want[i].CostMicros || g.LatencyP50 != want[i].LatencyP50 || g.LatencyP95 != want[i].LatencyP95 {
			t.Errorf("%s[%d] = %+v, want %+v", what, i, g, want[i])
		}
	}
}

// isolationData: tenants A and B interleaved in time, sharing models and
// each with a model and a status the other never used; C with nothing.
func isolationData(t *testing.T, s store.Store) (d *dashData, a, b, c store.Tenant) {
	a, b, c = mustTenant(t, s, "acme"), mustTenant(t, s, "globex"), mustTenant(t, s, "initech")
	d = newDashData(t, s)
	var batch []store.Trace
	for i := range 40 {
		at := dashBase.Add(time.Duration(i) * 7 * time.Minute)
		tn, m, st := a.ID, "gpt-4o", "ok"
		if i%2 == 1 {
			tn = b.ID
		}
		switch {
		case i%10 == 3:
			m = "only-b-model"
		case i%10 == 4:
			m = "only-a-model"
		}
		if i%8 == 5 {
			st = "upstream_error"
		}
		if i%10 == 7 {
			st = "only_b_status"
		}
		batch = append(batch, d.trace(tn, at, model(m), status(st), latency(int64(1000+i))))
	}
	// B alone in an hour A has nothing in.
	batch = append(batch, d.trace(b.ID, dashBase.Add(-5*time.Hour), model("gpt-4o")))
	d.add(batch...)
	return d, a, b, c
}

func testDashboardIsolation(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, a, b, c := isolationData(t, s)
	from, to := dashBase.Add(-24*time.Hour), dashBase.Add(24*time.Hour)
	for _, tc := range []struct {
		name string
		sc   store.Scope
		want []store.Trace
	}{
		{"A", store.TenantScope(a.ID), d.of(store.TenantScope(a.ID))},
		{"B", store.TenantScope(b.ID), d.of(store.TenantScope(b.ID))},
		{"A upper-case id", store.TenantScope(strings.ToUpper(a.ID)), d.of(store.TenantScope(a.ID))},
		{"A with All set too", store.Scope{TenantID: a.ID, All: true}, d.of(store.TenantScope(a.ID))},
		{"C (no traces)", store.TenantScope(c.ID), nil},
		{"unknown tenant", store.TenantScope(uuid.NewString()), nil},
		{"malformed tenant", store.TenantScope("acme"), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, sum := range listAll(t, s, tc.sc, store.TraceFilter{}, 7) {
				if tc.want == nil || !strings.EqualFold(sum.TenantID, tc.want[0].TenantID) {
					t.Fatalf("ListTraces(%s) returned trace %s of tenant %s", tc.name, sum.ID, sum.TenantID)
				}
			}
			checkIDs(t, "ListTraces", summaryIDs(listAll(t, s, tc.sc, store.TraceFilter{}, 7)), ids(tc.want))
			// Filters on values only the other tenant has find nothing.
			for _, f := range []store.TraceFilter{{Model: "only-b-model"}, {Status: "only_b_status"}} {
				got := listAll(t, s, tc.sc, f, 50)
				var want []string
				for _, tr := range tc.want {
					if (f.Model == "" || tr.RequestedModel == f.Model) && (f.Status == "" || tr.Status == f.Status) {
						want = append(want, tr.ID)
					}
				}
				checkIDs(t, fmt.Sprintf("ListTraces(%+v)", f), summaryIDs(got), want)
			}
			// The live tail from before everything.
			since, err := s.TracesSince(ctx, tc.sc, store.TraceCursor{CreatedAt: from, ID: uuid.Nil.String()}, 1000)
			if err != nil {
				t.Fatal(err)
			}
			wantAsc := slices.Clone(tc.want)
			slices.Reverse(wantAsc)
			checkIDs(t, "TracesSince", summaryIDs(since), ids(wantAsc))
			// Every trace of every tenant: found exactly when in scope.
			for _, tr := range d.all {
				got, err := s.ScopedTrace(ctx, tc.sc, tr.ID)
				if slices.Contains(ids(tc.want), stored(tr).ID) {
					if err != nil {
						t.Errorf("ScopedTrace(own %s): %v", tr.ID, err)
					} else {
						checkTrace(t, "ScopedTrace", got, tr)
					}
				} else if !errors.Is(err, store.ErrNotFound) {
					t.Errorf("ScopedTrace(%s, another tenant's %s) = %v, want ErrNotFound", tc.name, tr.ID, err)
				}
			}
			// Counts, sums, models and buckets reflect its own traces only.
			all, models := mustSummary(t, s, tc.sc, from, to)
			wantAll, wantModels := refSummary(tc.want, from, to)
			checkSummary(t, "Summary", all, models, wantAll, wantModels)
			for _, w := range []time.Duration{time.Hour, time.Minute} {
				checkSeries(t, "Timeseries", mustSeries(t, s, tc.sc, from, to, w), refSeries(tc.want, from, to, w))
			}
		})
	}
	// The two tenants' errors together are not what either sees.
	sa, _ := mustSummary(t, s, store.TenantScope(a.ID), from, to)
	sb, _ := mustSummary(t, s, store.TenantScope(b.ID), from, to)
	if sa.Requests == 0 || sb.Requests == 0 || sa.Requests+sb.Requests != int64(len(d.all)) {
		t.Errorf("Summary requests: A %d + B %d, want %d in all", sa.Requests, sb.Requests, len(d.all))
	}
}

func testDashboardAdminScope(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, _, _, _ := isolationData(t, s)
	admin := store.Scope{All: true}
	want := d.of(admin)
	from, to := dashBase.Add(-24*time.Hour), dashBase.Add(24*time.Hour)
	checkIDs(t, "ListTraces(all)", summaryIDs(listAll(t, s, admin, store.TraceFilter{}, 6)), ids(want))
	checkIDs(t, "ListTraces(all, status)", summaryIDs(listAll(t, s, admin, store.TraceFilter{Status: "upstream_error"}, 2)),
		ids(filterTraces(want, func(tr store.Trace) bool { return tr.Status == "upstream_error" })))
	since, err := s.TracesSince(ctx, admin, store.TraceCursor{CreatedAt: from, ID: uuid.Nil.String()}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(since) != len(want) {
		t.Errorf("TracesSince(all) = %d traces, want %d", len(since), len(want))
	}
	for _, tr := range d.all {
		got, err := s.ScopedTrace(ctx, admin, tr.ID)
		if err != nil {
			t.Fatalf("ScopedTrace(all, %s): %v", tr.ID, err)
		}
		checkTrace(t, "ScopedTrace(all)", got, tr)
	}
	if _, err := s.ScopedTrace(ctx, admin, uuid.NewString()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ScopedTrace(all, unknown) = %v, want ErrNotFound", err)
	}
	all, models := mustSummary(t, s, admin, from, to)
	wantAll, wantModels := refSummary(want, from, to)
	checkSummary(t, "Summary(all)", all, models, wantAll, wantModels)
	checkSeries(t, "Timeseries(all)", mustSeries(t, s, admin, from, to, time.Hour), refSeries(want, from, to, time.Hour))
}

func filterTraces(trs []store.Trace, keep func(store.Trace) bool) []store.Trace {
	var out []store.Trace
	for _, tr := range trs {
		if keep(tr) {
			out = append(out, tr)
		}
	}
	return out
}

func testDashboardZeroScope(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, _, _, _ := isolationData(t, s)
	var zero store.Scope
	from, to := dashBase.Add(-24*time.Hour), dashBase.Add(24*time.Hour)
	if got, err := s.ListTraces(ctx, zero, store.TraceFilter{}, nil, 100); err != nil || got == nil || len(got) != 0 {
		t.Errorf("ListTraces(zero scope) = %d, %v; want none", len(got), err)
	}
	if got, err := s.TracesSince(ctx, zero, store.TraceCursor{CreatedAt: from, ID: uuid.Nil.String()}, 100); err != nil || got == nil || len(got) != 0 {
		t.Errorf("TracesSince(zero scope) = %d, %v; want none", len(got), err)
	}
	for _, tr := range d.all[:3] {
		if _, err := s.ScopedTrace(ctx, zero, tr.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ScopedTrace(zero scope) = %v, want ErrNotFound", err)
		}
	}
	all, models := mustSummary(t, s, zero, from, to)
	if all != (store.Aggregate{}) || len(models) != 0 {
		t.Errorf("Summary(zero scope) = %+v, %+v; want nothing", all, models)
	}
	if got := mustSeries(t, s, zero, from, to, time.Hour); len(got) != 0 {
		t.Errorf("Timeseries(zero scope) = %+v, want none", got)
	}
}

func testListTracesFields(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	full := d.trace(tn.ID, dashBase)
	full.ErrorMessage = "upstream said: ünïcödé 'quoted' \"text\""
	sparse := store.Trace{ID: newTraceID(t), TenantID: strings.ToUpper(tn.ID), Endpoint: "/v1/unknown",
		Status: "upstream_unreachable", HTTPStatus: 502, UsageSource: "none", LatencyUS: 5, OverheadUS: 4,
		CreatedAt: dashBase.Add(time.Second + 999), ChainID: d.chain, ChainSeq: 99,
		PrevHash: make([]byte, 32), Hash: randBytes(t, 32), CanonicalVersion: 2}
	d.add(full, sparse)
	got, err := s.ListTraces(t.Context(), store.TenantScope(tn.ID), store.TraceFilter{}, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.TraceSummary{summaryOf(sparse), summaryOf(full)}
	if len(got) != 2 {
		t.Fatalf("ListTraces = %d rows, want 2", len(got))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) || got[i].CreatedAt.Location() != time.UTC {
			t.Errorf("ListTraces[%d]\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	since, err := s.TracesSince(t.Context(), store.TenantScope(tn.ID), store.TraceCursor{CreatedAt: dashBase.Add(-time.Hour), ID: uuid.Nil.String()}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(since) != 2 || !reflect.DeepEqual(since[0], want[1]) || !reflect.DeepEqual(since[1], want[0]) {
		t.Errorf("TracesSince\n got %+v\nwant %+v reversed", since, want)
	}
}

// pageData: 30 traces, many sharing a created_at (ties broken by id).
func pageData(t *testing.T, s store.Store) (*dashData, store.Tenant) {
	tn := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	var batch []store.Trace
	for i := range 30 {
		batch = append(batch, d.trace(tn.ID, dashBase.Add(time.Duration(i/4)*time.Second)))
	}
	// Inserted in shuffled order.
	for i := len(batch) - 1; i > 0; i-- {
		j, _ := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		batch[i], batch[j.Int64()] = batch[j.Int64()], batch[i]
	}
	d.add(batch...)
	return d, tn
}

func testListTracesPages(t *testing.T, s store.Store) {
	d, tn := pageData(t, s)
	sc := store.TenantScope(tn.ID)
	want := ids(d.of(sc))
	for _, limit := range []int{1, 3, 4, 7, 29, 30, 31, 200} {
		checkIDs(t, fmt.Sprintf("pages of %d", limit), summaryIDs(listAll(t, s, sc, store.TraceFilter{}, limit)), want)
	}
	// A cursor inside a group of equal created_at continues within it.
	first, err := s.ListTraces(t.Context(), sc, store.TraceFilter{}, nil, 5)
	if err != nil {
		t.Fatal(err)
	}
	c := &store.TraceCursor{CreatedAt: first[4].CreatedAt, ID: strings.ToUpper(first[4].ID)}
	next, err := s.ListTraces(t.Context(), sc, store.TraceFilter{}, c, 5)
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, "page after an upper-case cursor", summaryIDs(next), want[5:10])
	// Before the oldest: nothing.
	oldest := d.of(sc)[len(want)-1]
	got, err := s.ListTraces(t.Context(), sc, store.TraceFilter{}, &store.TraceCursor{CreatedAt: oldest.CreatedAt, ID: oldest.ID}, 5)
	if err != nil || len(got) != 0 {
		t.Errorf("ListTraces(before the oldest) = %d, %v; want none", len(got), err)
	}
	// A cursor that is no trace's position works too.
	mid := &store.TraceCursor{CreatedAt: dashBase.Add(3*time.Second + time.Millisecond), ID: uuid.NewString()}
	got, err = s.ListTraces(t.Context(), sc, store.TraceFilter{}, mid, 100)
	if err != nil {
		t.Fatal(err)
	}
	var wantMid []string
	for _, tr := range d.of(sc) {
		if tr.CreatedAt.Before(mid.CreatedAt) {
			wantMid = append(wantMid, tr.ID)
		}
	}
	checkIDs(t, "ListTraces(before a between cursor)", summaryIDs(got), wantMid)
}

func testListTracesCursorStable(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, tn := pageData(t, s)
	sc := store.TenantScope(tn.ID)
	want := ids(d.of(sc))
	var seen []string
	var before *store.TraceCursor
	for page := 0; ; page++ {
		got, err := s.ListTraces(ctx, sc, store.TraceFilter{}, before, 4)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, summaryIDs(got)...)
		if len(got) < 4 {
			break
		}
		last := got[len(got)-1]
		before = &store.TraceCursor{CreatedAt: last.CreatedAt, ID: last.ID}
		// Between two fetches, newer traces arrive: one later than
		// everything, and one at the newest existing instant (its UUIDv7 id
		// sorts after the older ids there), plus another tenant's.
		other := mustTenant(t, s, fmt.Sprintf("other-%d", page))
		d.add(d.trace(tn.ID, dashBase.Add(time.Hour+time.Duration(page)*time.Second)),
			d.trace(tn.ID, dashBase.Add(7*time.Second)),
			d.trace(other.ID, dashBase.Add(2*time.Second)))
	}
	checkIDs(t, "pages fetched while traces arrive (no duplicates, no gaps)", seen, want)
}

func testListTracesFilters(t *testing.T, s store.Store) {
	a := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	models := []string{"gpt-4o", "gpt-4o-mini", "claude", ""}
	statuses := []string{"ok", "ok", "upstream_error", "rejected"}
	providers := []string{"openai-eu", "openai-us", "anthropic"}
	var batch []store.Trace
	for i := range 96 {
		batch = append(batch, d.trace(a.ID, dashBase.Add(time.Duration(i)*time.Minute), func(tr *store.Trace) {
			tr.RequestedModel = models[i%len(models)]
			tr.Status = statuses[(i/4)%len(statuses)]
			tr.ProviderInstance = providers[i%len(providers)]
			tr.Stream = i%5 < 2
			tr.LatencyUS = int64(1000 * (i % 13))
		}))
	}
	d.add(batch...)
	sc := store.TenantScope(a.ID)
	yes, no := true, false
	from, to := dashBase.Add(20*time.Minute), dashBase.Add(50*time.Minute)
	for _, f := range []store.TraceFilter{
		{},
		{Model: "gpt-4o"}, {Model: "gpt-4o-mini"}, {Model: "nope"},
		{Status: "upstream_error"}, {Status: "rejected"}, {Status: "OK"},
		{Provider: "anthropic"}, {Provider: "openai"},
		{Stream: &yes}, {Stream: &no},
		{From: from}, {To: to}, {From: from, To: to},
		{From: from.Add(time.Nanosecond), To: to.Add(time.Nanosecond)},
		{From: from.Add(-time.Nanosecond), To: to.Add(-time.Nanosecond)},
		{From: to, To: from}, {From: from, To: from},
		{MinLatencyUS: 6000}, {MinLatencyUS: 12000}, {MinLatencyUS: 12001}, {MinLatencyUS: -5},
		{Model: "gpt-4o", Status: "ok", Provider: "openai-eu", Stream: &yes, From: from, MinLatencyUS: 1},
		{Model: "claude", Status: "upstream_error", Stream: &no, To: to},
	} {
		var want []string
		for _, tr := range d.of(sc) {
			if (f.Model == "" || tr.RequestedModel == f.Model) && (f.Status == "" || tr.Status == f.Status) &&
				(f.Provider == "" || tr.ProviderInstance == f.Provider) && (f.Stream == nil || tr.Stream == *f.Stream) &&
				(f.From.IsZero() || !tr.CreatedAt.Before(f.From)) && (f.To.IsZero() || tr.CreatedAt.Before(f.To)) &&
				tr.LatencyUS >= f.MinLatencyUS {
				want = append(want, tr.ID)
			}
		}
		checkIDs(t, fmt.Sprintf("ListTraces(%+v)", f), summaryIDs(listAll(t, s, sc, f, 5)), want)
	}
}

func testListTracesBadArguments(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, tn := pageData(t, s)
	sc := store.TenantScope(tn.ID)
	for _, limit := range []int{0, -1} {
		if got, err := s.ListTraces(ctx, sc, store.TraceFilter{}, nil, limit); err != nil || got == nil || len(got) != 0 {
			t.Errorf("ListTraces(limit %d) = %d, %v; want none", limit, len(got), err)
		}
		if got, err := s.TracesSince(ctx, sc, store.TraceCursor{CreatedAt: dashBase, ID: uuid.NewString()}, limit); err != nil || got == nil || len(got) != 0 {
			t.Errorf("TracesSince(limit %d) = %d, %v; want none", limit, len(got), err)
		}
	}
	for _, c := range []store.TraceCursor{{CreatedAt: dashBase, ID: "not-a-uuid"}, {ID: uuid.NewString()}} {
		if _, err := s.ListTraces(ctx, sc, store.TraceFilter{}, &c, 10); err == nil {
			t.Errorf("ListTraces(cursor %+v): want an error", c)
		}
		if _, err := s.TracesSince(ctx, sc, c, 10); err == nil {
			t.Errorf("TracesSince(cursor %+v): want an error", c)
		}
	}
	for _, w := range []time.Duration{0, -time.Hour, 1500 * time.Nanosecond} {
		if _, err := s.Timeseries(ctx, sc, dashBase, dashBase.Add(time.Hour), w); err == nil {
			t.Errorf("Timeseries(width %s): want an error", w)
		}
	}
}

func testTracesSince(t *testing.T, s store.Store) {
	ctx := t.Context()
	d, tn := pageData(t, s)
	sc := store.TenantScope(tn.ID)
	asc := d.of(sc)
	slices.Reverse(asc)
	// Walking the tail in small steps yields every trace once, in order.
	var walked []string
	cur := store.TraceCursor{CreatedAt: dashBase.Add(-time.Hour), ID: uuid.NewString()}
	for range 100 {
		got, err := s.TracesSince(ctx, sc, cur, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		walked = append(walked, summaryIDs(got)...)
		cur = store.TraceCursor{CreatedAt: got[len(got)-1].CreatedAt, ID: got[len(got)-1].ID}
	}
	checkIDs(t, "TracesSince walk", walked, ids(asc))
	// Strictly after: the cursor's own trace is not repeated; ties on
	// created_at follow by id.
	for i := 0; i < len(asc); i += 5 {
		got, err := s.TracesSince(ctx, sc, store.TraceCursor{CreatedAt: asc[i].CreatedAt, ID: asc[i].ID}, 1000)
		if err != nil {
			t.Fatal(err)
		}
		checkIDs(t, fmt.Sprintf("TracesSince(trace %d)", i), summaryIDs(got), ids(asc[i+1:]))
	}
	// A trace arriving later is what the tail returns next.
	last := asc[len(asc)-1]
	late := d.add(d.trace(tn.ID, dashBase.Add(time.Minute)))
	got, err := s.TracesSince(ctx, sc, store.TraceCursor{CreatedAt: last.CreatedAt, ID: last.ID}, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkIDs(t, "TracesSince after a new trace", summaryIDs(got), ids(late))
}

func testScopedTrace(t *testing.T, s store.Store) {
	ctx := t.Context()
	a, b := mustTenant(t, s, "acme"), mustTenant(t, s, "globex")
	d := newDashData(t, s)
	ta := d.add(d.trace(a.ID, dashBase))[0]
	tb := d.add(d.trace(b.ID, dashBase))[0]
	checkTrace(t, "ScopedTrace(A, A's)", mustScoped(t, s, store.TenantScope(a.ID), ta.ID), ta)
	checkTrace(t, "ScopedTrace(A, A's upper-case id)", mustScoped(t, s, store.TenantScope(a.ID), strings.ToUpper(ta.ID)), ta)
	checkTrace(t, "ScopedTrace(all, B's)", mustScoped(t, s, store.Scope{All: true}, tb.ID), tb)
	errA := func(id string) error {
		_, err := s.ScopedTrace(ctx, store.TenantScope(a.ID), id)
		return err
	}
	// Another tenant's id and an unknown id are answered alike.
	for _, id := range []string{tb.ID, uuid.NewString(), "not-a-uuid", ""} {
		if err := errA(id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ScopedTrace(A, %q) = %v, want ErrNotFound", id, err)
		}
	}
	unknown := uuid.NewString()
	if e1, e2 := errA(tb.ID), errA(unknown); strings.ReplaceAll(e1.Error(), tb.ID, "ID") != strings.ReplaceAll(e2.Error(), unknown, "ID") {
		t.Errorf("another tenant's trace and an unknown one give different errors: %q, %q", e1, e2)
	}
}

func mustScoped(t testing.TB, s store.Store, sc store.Scope, id string) store.Trace {
	t.Helper()
	tr, err := s.ScopedTrace(t.Context(), sc, id)
	if err != nil {
		t.Fatalf("ScopedTrace(%+v, %s): %v", sc, id, err)
	}
	return tr
}

// The hand-made set: latencies 1..100 µs (overhead 1000 + 2×latency) in
// shuffled order; model "a" has 1..60, model "b" 61..100.
func testSummaryPercentiles(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	var batch []store.Trace
	for i := 1; i <= 100; i++ {
		m := "a"
		if i > 60 {
			m = "b"
		}
		batch = append(batch, d.trace(tn.ID, dashBase.Add(time.Duration(i*7%100)*time.Second), model(m), latency(int64(i)),
			func(tr *store.Trace) { tr.OverheadUS = 1000 + 2*int64(i) }))
	}
	d.add(batch...)
	all, models := mustSummary(t, s, store.TenantScope(tn.ID), dashBase, dashBase.Add(time.Hour))
	if want := (store.Percentiles{P50: 50, P95: 95, P99: 99}); all.Latency != want {
		t.Errorf("latency percentiles of 1..100 = %+v, want %+v", all.Latency, want)
	}
	if want := (store.Percentiles{P50: 1100, P95: 1190, P99: 1198}); all.Overhead != want {
		t.Errorf("overhead percentiles = %+v, want %+v", all.Overhead, want)
	}
	if len(models) != 2 || models[0].Model != "a" || models[1].Model != "b" {
		t.Fatalf("models = %+v, want a (60 requests) then b (40)", models)
	}
	// a: 1..60 → positions ceil(30), ceil(57), ceil(59.4) = 30, 57, 60.
	if want := (store.Percentiles{P50: 30, P95: 57, P99: 60}); models[0].Latency != want || models[0].Requests != 60 {
		t.Errorf("model a: %d requests, latency %+v; want 60, %+v", models[0].Requests, models[0].Latency, want)
	}
	// b: 61..100 → positions 20, 38, 40 = 80, 98, 100.
	if want := (store.Percentiles{P50: 80, P95: 98, P99: 100}); models[1].Latency != want || models[1].Requests != 40 {
		t.Errorf("model b: %d requests, latency %+v; want 40, %+v", models[1].Requests, models[1].Latency, want)
	}
	// Ten values 1..10: p50 5, p95 and p99 10; one value: itself.
	small := mustTenant(t, s, "small")
	var ten []store.Trace
	for i := 1; i <= 10; i++ {
		ten = append(ten, d.trace(small.ID, dashBase.Add(time.Duration(i)*time.Second), latency(int64(11-i))))
	}
	d.add(ten...)
	if all, _ := mustSummary(t, s, store.TenantScope(small.ID), dashBase, dashBase.Add(time.Hour)); all.Latency != (store.Percentiles{P50: 5, P95: 10, P99: 10}) {
		t.Errorf("percentiles of 1..10 = %+v, want 5, 10, 10", all.Latency)
	}
	if all, _ := mustSummary(t, s, store.TenantScope(small.ID), dashBase.Add(3*time.Second), dashBase.Add(4*time.Second)); all.Latency != (store.Percentiles{P50: 8, P95: 8, P99: 8}) || all.Requests != 1 {
		t.Errorf("percentiles of one value 8 = %+v (%d requests)", all.Latency, all.Requests)
	}
}

func testSummarySums(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	// Nil tokens count as 0; nil costs are skipped (not a failure).
	trs := d.add(
		d.trace(tn.ID, dashBase, model("m1"), func(tr *store.Trace) {
			tr.PromptTokens, tr.CompletionTokens, tr.TotalTokens, tr.CachedPromptTokens, tr.CostMicros = ptr(10), ptr(5), ptr(15), ptr(2), ptr(700)
		}),
		d.trace(tn.ID, dashBase.Add(time.Second), model("m1"), status("upstream_timeout"), func(tr *store.Trace) {
			tr.PromptTokens, tr.CompletionTokens, tr.TotalTokens, tr.CachedPromptTokens, tr.CostMicros = nil, nil, nil, nil, nil
		}),
		d.trace(tn.ID, dashBase.Add(2*time.Second), model("m2"), status("client_disconnect"), func(tr *store.Trace) {
			tr.PromptTokens, tr.CompletionTokens, tr.TotalTokens, tr.CachedPromptTokens, tr.CostMicros = ptr(1), nil, ptr(1), nil, nil
		}),
		// Same request count as m2: ties are ordered by model name.
		d.trace(tn.ID, dashBase.Add(3*time.Second), model("m0"), func(tr *store.Trace) {
			tr.CostMicros = ptr(0)
		}),
	)
	all, models := mustSummary(t, s, store.TenantScope(tn.ID), dashBase, dashBase.Add(time.Minute))
	wantAll, wantModels := refSummary(trs, dashBase, dashBase.Add(time.Minute))
	checkSummary(t, "Summary", all, models, wantAll, wantModels)
	if all.Requests != 4 || all.Errors != 2 || all.PromptTokens != 10+1+812 || all.CostMicros != 700 {
		t.Errorf("Summary = %+v; want 4 requests, 2 errors, %d prompt tokens, 700 µ$", all, 10+1+812)
	}
	if len(models) != 3 || models[0].Model != "m1" || models[1].Model != "m0" || models[2].Model != "m2" {
		t.Errorf("model order = %+v, want m1 (2 requests), then m0 and m2 by name", models)
	}
}

func testSummaryWindow(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	sc := store.TenantScope(tn.ID)
	// Exactly at from: in; a microsecond before: out; exactly at to: out.
	at := func(off time.Duration) store.Trace {
		return d.trace(tn.ID, dashBase.Add(off), latency(int64(off/time.Microsecond)))
	}
	d.add(at(-time.Microsecond), at(0), at(time.Minute), at(time.Hour-time.Microsecond), at(time.Hour))
	all, _ := mustSummary(t, s, sc, dashBase, dashBase.Add(time.Hour))
	if all.Requests != 3 {
		t.Errorf("Summary[from, to) = %d requests, want 3", all.Requests)
	}
	// Bounds finer than a microsecond keep their meaning.
	if all, _ := mustSummary(t, s, sc, dashBase.Add(time.Nanosecond), dashBase.Add(time.Hour+time.Nanosecond)); all.Requests != 3 {
		t.Errorf("Summary(from+1ns, to+1ns) = %d requests, want 3 (60s, 1h-1µs, 1h)", all.Requests)
	}
	// Empty windows: nothing, without error.
	for _, w := range [][2]time.Time{
		{dashBase, dashBase}, {dashBase.Add(time.Hour), dashBase}, {dashBase.Add(2 * time.Hour), dashBase.Add(3 * time.Hour)},
		{{}, dashBase}, {dashBase, {}},
	} {
		all, models := mustSummary(t, s, sc, w[0], w[1])
		if all != (store.Aggregate{}) || len(models) != 0 {
			t.Errorf("Summary(%s, %s) = %+v, %+v; want nothing", w[0], w[1], all, models)
		}
		if got := mustSeries(t, s, sc, w[0], w[1], time.Minute); len(got) != 0 {
			t.Errorf("Timeseries(%s, %s) = %+v; want no bucket", w[0], w[1], got)
		}
	}
	// A tenant without traces.
	empty := mustTenant(t, s, "empty")
	if all, models := mustSummary(t, s, store.TenantScope(empty.ID), dashBase.Add(-time.Hour), dashBase.Add(time.Hour)); all != (store.Aggregate{}) || len(models) != 0 {
		t.Errorf("Summary(tenant without traces) = %+v, %+v", all, models)
	}
}

// randomTraces inserts n traces of tenants over 6 hours with random models,
// statuses, tokens (some nil), costs (some nil) and latencies, many equal.
func randomTraces(t *testing.T, d *dashData, tenants []string, n int) {
	r := func(k int64) int64 {
		v, _ := rand.Int(rand.Reader, big.NewInt(k))
		return v.Int64()
	}
	var batch []store.Trace
	for range n {
		at := dashBase.Add(time.Duration(r(int64(6*time.Hour/time.Microsecond))) * time.Microsecond)
		batch = append(batch, d.trace(tenants[r(int64(len(tenants)))], at, func(tr *store.Trace) {
			tr.RequestedModel = []string{"gpt-4o", "gpt-4o-mini", "claude", "llama"}[r(4)]
			tr.Status = []string{"ok", "ok", "ok", "upstream_error", "rejected"}[r(5)]
			tr.LatencyUS = r(50) * r(100_000)
			tr.OverheadUS = r(3000)
			tr.PromptTokens, tr.TotalTokens, tr.CostMicros = ptr(r(1000)), ptr(r(2000)), ptr(r(5000))
			if r(4) == 0 {
				tr.PromptTokens, tr.CostMicros = nil, nil
			}
			if r(5) == 0 {
				tr.TotalTokens, tr.CachedPromptTokens = nil, nil
			}
		}))
	}
	d.add(batch...)
}

func testSummaryReference(t *testing.T, s store.Store) {
	a, b := mustTenant(t, s, "acme"), mustTenant(t, s, "globex")
	d := newDashData(t, s)
	randomTraces(t, d, []string{a.ID, a.ID, b.ID}, 600)
	for _, w := range [][2]time.Time{
		{dashBase, dashBase.Add(6 * time.Hour)}, {dashBase.Add(time.Hour), dashBase.Add(2*time.Hour + 17*time.Minute)},
	} {
		for _, sc := range []store.Scope{store.TenantScope(a.ID), store.TenantScope(b.ID), {All: true}} {
			all, models := mustSummary(t, s, sc, w[0], w[1])
			wantAll, wantModels := refSummary(d.of(sc), w[0], w[1])
			checkSummary(t, fmt.Sprintf("Summary(%+v, %s..%s)", sc, w[0].Format(time.Kitchen), w[1].Format(time.Kitchen)),
				all, models, wantAll, wantModels)
		}
	}
}

func testTimeseriesBuckets(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	sc := store.TenantScope(tn.ID)
	// 10:00–13:00 with a gap at 11:xx; the window [10:30, 12:30).
	h := func(hh, mm int) time.Time { return time.Date(2025, 3, 10, hh, mm, 0, 0, time.UTC) }
	trs := d.add(
		d.trace(tn.ID, h(10, 10), latency(1)), // before the window
		d.trace(tn.ID, h(10, 30), latency(10), status("upstream_error")),
		d.trace(tn.ID, h(10, 59), latency(20)),
		d.trace(tn.ID, h(12, 0), latency(30), func(tr *store.Trace) { tr.TotalTokens, tr.CostMicros = nil, nil }),
		d.trace(tn.ID, h(12, 29), latency(40)),
		d.trace(tn.ID, h(12, 30), latency(50)), // at the window's end: out
	)
	got := mustSeries(t, s, sc, h(10, 30), h(12, 30), time.Hour)
	want := []store.Bucket{
		{Start: h(10, 0), Requests: 2, Errors: 1, TotalTokens: 2 * 908, CostMicros: 2 * 1817, LatencyP50: 10, LatencyP95: 20},
		{Start: h(12, 0), Requests: 2, TotalTokens: 908, CostMicros: 1817, LatencyP50: 30, LatencyP95: 40},
	}
	checkSeries(t, "Timeseries(1h)", got, want)
	checkSeries(t, "Timeseries(1h) against the reference", got, refSeries(trs, h(10, 30), h(12, 30), time.Hour))
	for _, w := range []time.Duration{time.Minute, 15 * time.Minute, 6 * time.Hour, 24 * time.Hour, 7 * time.Hour, 7*time.Second + 3*time.Microsecond} {
		checkSeries(t, fmt.Sprintf("Timeseries(%s)", w), mustSeries(t, s, sc, h(10, 30), h(12, 30), w), refSeries(trs, h(10, 30), h(12, 30), w))
	}
}

func testTimeseriesAlignment(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	d := newDashData(t, s)
	sc := store.TenantScope(tn.ID)
	at := time.Date(2025, 3, 10, 13, 47, 12, 345678000, time.UTC)
	d.add(d.trace(tn.ID, at))
	for w, start := range map[time.Duration]time.Time{
		time.Minute:      time.Date(2025, 3, 10, 13, 47, 0, 0, time.UTC),
		5 * time.Minute:  time.Date(2025, 3, 10, 13, 45, 0, 0, time.UTC),
		15 * time.Minute: time.Date(2025, 3, 10, 13, 45, 0, 0, time.UTC),
		time.Hour:        time.Date(2025, 3, 10, 13, 0, 0, 0, time.UTC),
		6 * time.Hour:    time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC),
		24 * time.Hour:   time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC),
		// Widths that do not divide a day are aligned to the Unix epoch.
		7 * 24 * time.Hour: time.Unix(at.Unix()/(7*86400)*(7*86400), 0).UTC(),
		7 * time.Hour:      time.Unix(at.Unix()/(7*3600)*(7*3600), 0).UTC(),
	} {
		// Whatever the window's own alignment (and zone).
		got := mustSeries(t, s, sc, at.Add(-time.Second).In(time.FixedZone("X", 5*3600+1800)), at.Add(time.Second), w)
		if len(got) != 1 || !got[0].Start.Equal(start) || got[0].Start.Location() != time.UTC || got[0].Requests != 1 {
			t.Errorf("Timeseries(%s) = %+v, want one bucket starting %s", w, got, start)
		}
	}
}

func testTimeseriesReference(t *testing.T, s store.Store) {
	a, b := mustTenant(t, s, "acme"), mustTenant(t, s, "globex")
	d := newDashData(t, s)
	randomTraces(t, d, []string{a.ID, b.ID, b.ID}, 500)
	from, to := dashBase.Add(17*time.Minute), dashBase.Add(5*time.Hour+3*time.Minute)
	for _, sc := range []store.Scope{store.TenantScope(a.ID), store.TenantScope(b.ID), {All: true}} {
		for _, w := range []time.Duration{5 * time.Minute, time.Hour} {
			checkSeries(t, fmt.Sprintf("Timeseries(%+v, %s)", sc, w), mustSeries(t, s, sc, from, to, w), refSeries(d.of(sc), from, to, w))
		}
	}
}
