package dash

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
)

func seq(from, to int64) []int64 {
	var out []int64
	for v := from; v <= to; v++ {
		out = append(out, v)
	}
	return out
}

func TestPercentileDisc(t *testing.T) {
	for _, c := range []struct {
		values []int64
		p      float64
		want   int64
	}{
		{seq(1, 100), P50, 50}, {seq(1, 100), P95, 95}, {seq(1, 100), P99, 99}, {seq(1, 100), 1, 100},
		{seq(1, 100), 0, 1}, {seq(1, 100), 0.001, 1}, {seq(1, 100), 0.011, 2},
		{seq(1, 10), P50, 5}, {seq(1, 10), P95, 10}, {seq(1, 10), P99, 10},
		{seq(1, 60), P50, 30}, {seq(1, 60), P95, 57}, {seq(1, 60), P99, 60},
		{seq(61, 100), P50, 80}, {seq(61, 100), P95, 98}, {seq(61, 100), P99, 100},
		{seq(1, 2), P50, 1}, {seq(1, 3), P50, 2}, {seq(1, 4), P50, 2},
		{[]int64{7}, P50, 7}, {[]int64{7}, P99, 7},
		{nil, P50, 0},
		{[]int64{-5, 0, 0, 0, 9}, P50, 0},
	} {
		if got := Percentile(c.values, c.p); got != c.want {
			t.Errorf("Percentile(%d values %v…, %g) = %d, want %d", len(c.values), c.values[:min(3, len(c.values))], c.p, got, c.want)
		}
	}
}

func TestResolveScope(t *testing.T) {
	id := uuid.NewString()
	for _, c := range []struct {
		in   store.Scope
		want Scope
		ok   bool
	}{
		{store.Scope{}, Scope{}, false},
		{store.TenantScope(id), Scope{TenantID: id}, true},
		{store.TenantScope(strings.ToUpper(id)), Scope{TenantID: id}, true},
		{store.Scope{TenantID: id, All: true}, Scope{TenantID: id}, true}, // never wider than the tenant
		{store.Scope{All: true}, Scope{All: true}, true},
		{store.TenantScope("acme"), Scope{}, false},
		{store.Scope{TenantID: "acme", All: true}, Scope{}, false},
	} {
		got, ok := ResolveScope(c.in)
		if got != c.want || ok != c.ok {
			t.Errorf("ResolveScope(%+v) = %+v, %v; want %+v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestWindowRoundsUpToTheMicrosecond(t *testing.T) {
	base := time.Date(2025, 3, 10, 12, 0, 0, 0, time.FixedZone("X", 3600))
	from, to, ok := Window(base.Add(time.Nanosecond), base.Add(time.Hour+999*time.Nanosecond))
	if !ok || !from.Equal(base.Add(time.Microsecond)) || !to.Equal(base.Add(time.Hour+time.Microsecond)) || from.Location() != time.UTC {
		t.Errorf("Window = %s, %s, %v", from, to, ok)
	}
	for _, w := range [][2]time.Time{{base, base}, {base.Add(time.Nanosecond), base.Add(2 * time.Nanosecond)}, {base, base.Add(-1)}, {{}, base}, {base, {}}} {
		if _, _, ok := Window(w[0], w[1]); ok {
			t.Errorf("Window(%s, %s) is not empty", w[0], w[1])
		}
	}
	f := NormalizeFilter(store.TraceFilter{From: base.Add(time.Nanosecond), To: base.Add(time.Nanosecond), MinLatencyUS: -3})
	if !f.Empty || f.MinLatencyUS != 0 {
		t.Errorf("NormalizeFilter = %+v, want empty and no latency bound", f)
	}
	if f := NormalizeFilter(store.TraceFilter{From: base}); f.Empty || !f.To.IsZero() || !f.From.Equal(base) {
		t.Errorf("NormalizeFilter(from only) = %+v", f)
	}
}

func TestBuckets(t *testing.T) {
	for _, c := range []struct {
		at    time.Time
		width time.Duration
		start time.Time
	}{
		{time.Date(2025, 3, 10, 13, 47, 12, 0, time.UTC), time.Hour, time.Date(2025, 3, 10, 13, 0, 0, 0, time.UTC)},
		{time.Date(2025, 3, 10, 13, 0, 0, 0, time.UTC), time.Hour, time.Date(2025, 3, 10, 13, 0, 0, 0, time.UTC)},
		{time.Date(2025, 3, 10, 12, 59, 59, 999999000, time.UTC), time.Hour, time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)},
		{time.Date(2025, 3, 10, 13, 47, 12, 0, time.UTC), 24 * time.Hour, time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC)},
		{time.Unix(0, 0), time.Hour, time.Unix(0, 0)},
		{time.Unix(-1, 0), time.Hour, time.Unix(-3600, 0)},
		{time.Unix(-3600, 0), time.Hour, time.Unix(-3600, 0)},
		{time.Unix(7*3600+5, 0), 7 * time.Hour, time.Unix(7*3600, 0)},
	} {
		k := BucketIndex(c.at.UnixNano(), c.width)
		if got := BucketStart(k, c.width); !got.Equal(c.start) || got.Location() != time.UTC {
			t.Errorf("bucket of %s by %s starts %s, want %s", c.at, c.width, got, c.start)
		}
	}
	for _, w := range []time.Duration{0, -time.Second, time.Nanosecond, 1500 * time.Nanosecond} {
		if CheckWidth(w) == nil {
			t.Errorf("CheckWidth(%s) accepted", w)
		}
	}
	if err := CheckWidth(time.Microsecond); err != nil {
		t.Error(err)
	}
}

// Select agrees with sorting, on random data with and without many
// duplicates, for every percentile position.
func TestSelectAgreesWithSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 2, 3, 10, 17, 100, 1000, 100_000} {
		for _, spread := range []int64{1, 3, 1000, 1 << 40} {
			v := make([]int64, n)
			for i := range v {
				v[i] = r.Int64N(spread) - spread/2
			}
			if n == 1000 && spread == 1000 {
				slices.Sort(v) // sorted input
			}
			if n == 100_000 && spread == 1000 {
				slices.Sort(v)
				slices.Reverse(v) // reversed input
			}
			sorted := slices.Clone(v)
			slices.Sort(sorted)
			ps := []float64{0, 0.001, 0.25, P50, 0.5, 0.9, P95, P99, 0.999, 1}
			shuffled := slices.Clone(ps)
			r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			for _, ps := range [][]float64{ps, shuffled} {
				got := Select(slices.Clone(v), ps...)
				for i, p := range ps {
					if want := Percentile(sorted, p); got[i] != want {
						t.Errorf("n %d spread %d: Select p%g = %d, sorting gives %d", n, spread, p*100, got[i], want)
					}
				}
			}
		}
	}
}

func TestSummarizeMergesGroupsOfAModel(t *testing.T) {
	// Two tenants' groups of model "a" and one of "b": per-model and overall
	// percentiles over the union, sums added, zero-request groups ignored.
	groups := []Group{
		{Model: "a", Requests: 3, Errors: 1, TotalTokens: 10, CostMicros: 5, Latency: []int64{30, 10, 20}, Overhead: []int64{3, 1, 2}},
		{Model: "b", Requests: 1, Latency: []int64{100}, Overhead: []int64{9}},
		{Model: "a", Requests: 2, PromptTokens: 4, Latency: []int64{50, 40}, Overhead: []int64{5, 4}},
		{Model: "c"},
	}
	all, models := Summarize(groups)
	if all.Requests != 6 || all.Errors != 1 || all.TotalTokens != 10 || all.PromptTokens != 4 || all.CostMicros != 5 {
		t.Errorf("overall sums = %+v", all)
	}
	if all.Latency != (store.Percentiles{P50: 30, P95: 100, P99: 100}) {
		t.Errorf("overall latency = %+v", all.Latency)
	}
	if len(models) != 2 || models[0].Model != "a" || models[0].Requests != 5 || models[1].Model != "b" {
		t.Fatalf("models = %+v", models)
	}
	if models[0].Latency != (store.Percentiles{P50: 30, P95: 50, P99: 50}) || models[0].Overhead != (store.Percentiles{P50: 3, P95: 5, P99: 5}) {
		t.Errorf("model a = %+v", models[0])
	}
	if all, models := Summarize(nil); all != (store.Aggregate{}) || models == nil || len(models) != 0 {
		t.Errorf("Summarize(nil) = %+v, %#v", all, models)
	}
}

func TestSeriesMergesBucketsOfAnIndex(t *testing.T) {
	got := Series([]SeriesBucket{
		{Index: 5, Requests: 2, Errors: 1, TotalTokens: 3, CostMicros: 4, Latency: []int64{9, 1}},
		{Index: 3, Requests: 1, Latency: []int64{7}},
		{Index: 5, Requests: 1, Latency: []int64{5}},
		{Index: 4},
	}, time.Hour)
	want := []store.Bucket{
		{Start: time.Unix(3*3600, 0).UTC(), Requests: 1, LatencyP50: 7, LatencyP95: 7},
		{Start: time.Unix(5*3600, 0).UTC(), Requests: 3, Errors: 1, TotalTokens: 3, CostMicros: 4, LatencyP50: 5, LatencyP95: 9},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Series = %+v, want %+v", got, want)
	}
}
