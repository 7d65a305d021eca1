// Package dash holds what both stores share to answer the dashboard
// (store.DashboardStore): scope resolution, argument normalisation, bucket
// alignment, and the aggregation of per-group results into store.Aggregate
// values, percentiles included.
//
// # Percentiles
//
// A percentile is PostgreSQL's percentile_disc: for N values sorted
// ascending v[1] ≤ … ≤ v[N] and a fraction p, it is v[k] with
// k = max(1, ceil(p × N)) (computed in float64, as PostgreSQL does), i.e. the
// smallest value whose cumulative fraction reaches p — always one of the
// values, never an interpolation. For the latencies 1, 2, …, 100: p50 = 50,
// p95 = 95, p99 = 99; for 1, 2, …, 10: p50 = 5, p95 = 10, p99 = 10. An empty
// set has percentile 0.
//
// Both stores compute it here, in Go, from the raw values each query hands
// back per group (PostgreSQL with array_agg, SQLite with a Go aggregate
// function), so the definition is the same on both by construction.
package dash

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/validate"
)

// The fractions of store.Percentiles.
const (
	P50 = 0.50
	P95 = 0.95
	P99 = 0.99
)

// Scope is a resolved store.Scope.
type Scope struct {
	// TenantID is the canonical id of the one tenant in scope; empty when All.
	TenantID string
	// All: every tenant.
	All bool
}

// ResolveScope returns what s lets a query see, and false when it sees
// nothing: the zero Scope, or a TenantID that is not a UUID (it can match no
// row). A TenantID always narrows: Scope{TenantID: x, All: true} is the
// tenant x alone, never everything.
func ResolveScope(s store.Scope) (Scope, bool) {
	if s.TenantID != "" {
		id, ok := validate.ID(s.TenantID)
		if !ok {
			return Scope{}, false
		}
		return Scope{TenantID: id}, true
	}
	if s.All {
		return Scope{All: true}, true
	}
	return Scope{}, false
}

// Window normalises [from, to) to the stored precision (UTC, microseconds)
// and reports false when it is empty (to ≤ from, or either bound is zero).
func Window(from, to time.Time) (time.Time, time.Time, bool) {
	if from.IsZero() || to.IsZero() {
		return time.Time{}, time.Time{}, false
	}
	from, to = ceilMicro(from), ceilMicro(to)
	return from, to, from.Before(to)
}

// ceilMicro is t in UTC rounded up to the microsecond. Every stored time is
// a whole microsecond, so for a stored c: c >= t ⇔ c >= ceilMicro(t) and
// c < t ⇔ c < ceilMicro(t); the bounds of [from, to) keep their meaning.
func ceilMicro(t time.Time) time.Time {
	u := validate.Time(t)
	if u.Before(t) {
		u = u.Add(time.Microsecond)
	}
	return u
}

// Filter is a store.TraceFilter normalised for a query.
type Filter struct {
	Model, Status, Provider string
	Stream                  *bool
	From, To                time.Time // zero: unbounded
	MinLatencyUS            int64     // 0: none
	// Empty: the filter matches nothing (an empty time range).
	Empty bool
}

// NormalizeFilter returns f ready for a query: times in UTC rounded up to
// the microsecond (see ceilMicro), and Empty when From ≥ To.
func NormalizeFilter(f store.TraceFilter) Filter {
	out := Filter{Model: f.Model, Status: f.Status, Provider: f.Provider, Stream: f.Stream, MinLatencyUS: f.MinLatencyUS}
	if !f.From.IsZero() {
		out.From = ceilMicro(f.From)
	}
	if !f.To.IsZero() {
		out.To = ceilMicro(f.To)
	}
	if !out.From.IsZero() && !out.To.IsZero() && !out.From.Before(out.To) {
		out.Empty = true
	}
	if out.MinLatencyUS < 0 {
		out.MinLatencyUS = 0
	}
	return out
}

// Cursor returns the cursor normalised (canonical id, UTC microsecond
// time), and false when it is unusable: a zero time or an id that is not a
// UUID. Callers treat an unusable cursor as "nothing before/after it".
func Cursor(c store.TraceCursor) (store.TraceCursor, bool) {
	id, ok := validate.ID(c.ID)
	if !ok || c.CreatedAt.IsZero() {
		return store.TraceCursor{}, false
	}
	return store.TraceCursor{CreatedAt: validate.Time(c.CreatedAt), ID: id}, true
}

// ErrBucketWidth is returned for a time-series bucket width that is not a
// positive whole number of microseconds.
var ErrBucketWidth = errors.New("bucket width must be a positive whole number of microseconds")

// CheckWidth reports ErrBucketWidth unless width is a positive whole number
// of microseconds.
func CheckWidth(width time.Duration) error {
	if width <= 0 || width%time.Microsecond != 0 {
		return fmt.Errorf("%w (got %s)", ErrBucketWidth, width)
	}
	return nil
}

// BucketIndex is the number of the bucket of the given width holding the
// instant unixNanos: buckets are aligned to the Unix epoch (bucket k covers
// [k×width, (k+1)×width) after 1970-01-01T00:00:00Z), floored for instants
// before it.
func BucketIndex(unixNanos int64, width time.Duration) int64 {
	w := int64(width)
	q := unixNanos / w
	if unixNanos%w != 0 && unixNanos < 0 {
		q--
	}
	return q
}

// BucketStart is the start of bucket k of the given width.
func BucketStart(k int64, width time.Duration) time.Time {
	return time.Unix(0, k*int64(width)).UTC()
}

// Percentile is percentile_disc(p) of sorted (ascending) values; 0 when empty.
func Percentile(sorted []int64, p float64) int64 {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	return sorted[rank(n, p)]
}

// rank is the 0-based position of percentile_disc(p) among n sorted values.
func rank(n int, p float64) int {
	k := int(math.Ceil(p * float64(n)))
	return min(max(k, 1), n) - 1
}

// PercentilesOf is the p50, p95 and p99 of sorted values.
func PercentilesOf(sorted []int64) store.Percentiles {
	return store.Percentiles{P50: Percentile(sorted, P50), P95: Percentile(sorted, P95), P99: Percentile(sorted, P99)}
}

// Select returns percentile_disc of each fraction in ps over values, which
// may be in any order. It reorders values (selection, not a full sort:
// linear time on average); each result is what Percentile would give on
// the sorted values. All zeros when values is empty.
func Select(values []int64, ps ...float64) []int64 {
	out := make([]int64, len(ps))
	if len(values) == 0 {
		return out
	}
	lo := 0 // every value of values[:lo] is ≤ every value of values[lo:]
	for i, p := range ps {
		k := rank(len(values), p)
		if k >= lo {
			nthElement(values[lo:], k-lo)
			lo = k
		} else {
			nthElement(values[:lo], k)
		}
		out[i] = values[k]
	}
	return out
}

// selectPercentiles is Select for P50, P95 and P99.
func selectPercentiles(values []int64) store.Percentiles {
	v := Select(values, P50, P95, P99)
	return store.Percentiles{P50: v[0], P95: v[1], P99: v[2]}
}

// nthElement reorders v so that v[k] is the value a sort would put there,
// with v[:k] ≤ v[k] ≤ v[k+1:]: quickselect with a median-of-three pivot and
// Hoare partitioning (equal values split evenly), falling back to a sort for
// short ranges or when partitions keep coming out lopsided.
func nthElement(v []int64, k int) {
	lo, hi := 0, len(v) // the range [lo, hi) holds position k
	budget := 2 * bitsLen(len(v))
	for hi-lo > 16 {
		if budget == 0 {
			slices.Sort(v[lo:hi])
			return
		}
		budget--
		mid := lo + (hi-lo)/2
		a, b, c := v[lo], v[mid], v[hi-1]
		pivot := max(min(a, b), min(max(a, b), c)) // median of three
		i, j := lo, hi-1
		for i <= j {
			for v[i] < pivot {
				i++
			}
			for v[j] > pivot {
				j--
			}
			if i <= j {
				v[i], v[j] = v[j], v[i]
				i++
				j--
			}
		}
		// Now v[lo:j+1] ≤ pivot, v[j+1:i] == pivot, v[i:hi] ≥ pivot.
		switch {
		case k <= j:
			hi = j + 1
		case k >= i:
			lo = i
		default:
			return
		}
	}
	slices.Sort(v[lo:hi])
}

func bitsLen(n int) int {
	b := 0
	for ; n > 0; n >>= 1 {
		b++
	}
	return b
}

// Group is the raw result of one group of a summary query: the sums and
// the latency and overhead values of its traces, in any order.
type Group struct {
	Model                                       string
	Requests, Errors                            int64
	PromptTokens, CompletionTokens, TotalTokens int64
	CachedPromptTokens, CostMicros              int64
	Latency, Overhead                           []int64 // one per trace, any order
}

// Summarize turns groups (one per model, or per tenant and model; several
// groups may share a model) into the overall aggregate and one aggregate
// per model, ordered by requests descending then model. The value slices
// of groups are reordered.
func Summarize(groups []Group) (store.Aggregate, []store.ModelAggregate) {
	byModel := map[string][]*Group{}
	var order []string
	var overall Group
	n := 0
	for i := range groups {
		g := &groups[i]
		if g.Requests == 0 {
			continue
		}
		if byModel[g.Model] == nil {
			order = append(order, g.Model)
		}
		byModel[g.Model] = append(byModel[g.Model], g)
		addSums(&overall, g)
		n += len(g.Latency)
	}
	// The overall percentiles need every value: copy them out before the
	// per-model selections reorder the groups' slices (any order will do).
	allLat, allOvh := make([]int64, 0, n), make([]int64, 0, n)
	for _, m := range order {
		for _, g := range byModel[m] {
			allLat = append(allLat, g.Latency...)
			allOvh = append(allOvh, g.Overhead...)
		}
	}
	models := make([]store.ModelAggregate, 0, len(order))
	for _, m := range order {
		gs := byModel[m]
		sums := Group{Model: m}
		lat, ovh := gs[0].Latency, gs[0].Overhead
		for i, g := range gs {
			addSums(&sums, g)
			if i > 0 {
				lat = append(slices.Clip(lat), g.Latency...)
				ovh = append(slices.Clip(ovh), g.Overhead...)
			}
		}
		models = append(models, store.ModelAggregate{Model: m, Aggregate: aggregate(&sums, lat, ovh)})
	}
	slices.SortFunc(models, func(x, y store.ModelAggregate) int {
		if c := cmp.Compare(y.Requests, x.Requests); c != 0 {
			return c
		}
		return cmp.Compare(x.Model, y.Model)
	})
	return aggregate(&overall, allLat, allOvh), models
}

func addSums(dst, g *Group) {
	dst.Requests += g.Requests
	dst.Errors += g.Errors
	dst.PromptTokens += g.PromptTokens
	dst.CompletionTokens += g.CompletionTokens
	dst.TotalTokens += g.TotalTokens
	dst.CachedPromptTokens += g.CachedPromptTokens
	dst.CostMicros += g.CostMicros
}

// aggregate is g's sums with the percentiles of latency and overhead
// (which it reorders).
func aggregate(g *Group, latency, overhead []int64) store.Aggregate {
	return store.Aggregate{
		Requests: g.Requests, Errors: g.Errors,
		PromptTokens: g.PromptTokens, CompletionTokens: g.CompletionTokens, TotalTokens: g.TotalTokens,
		CachedPromptTokens: g.CachedPromptTokens, CostMicros: g.CostMicros,
		Latency: selectPercentiles(latency), Overhead: selectPercentiles(overhead),
	}
}

// SeriesBucket is the raw result of one time-series bucket of one query.
type SeriesBucket struct {
	Index                   int64 // BucketIndex of its start
	Requests, Errors        int64
	TotalTokens, CostMicros int64
	Latency                 []int64 // one per trace, any order
}

// Series merges buckets (several may share an index, e.g. one per tenant)
// into store.Buckets of the given width, oldest first, leaving out empty
// ones. The Latency slices are reordered.
func Series(buckets []SeriesBucket, width time.Duration) []store.Bucket {
	byIndex := map[int64]*SeriesBucket{}
	for i := range buckets {
		b := &buckets[i]
		if b.Requests == 0 {
			continue
		}
		a := byIndex[b.Index]
		if a == nil {
			byIndex[b.Index] = b
			continue
		}
		a.Requests += b.Requests
		a.Errors += b.Errors
		a.TotalTokens += b.TotalTokens
		a.CostMicros += b.CostMicros
		a.Latency = append(slices.Clip(a.Latency), b.Latency...)
	}
	out := make([]store.Bucket, 0, len(byIndex))
	for k, a := range byIndex {
		p := Select(a.Latency, P50, P95)
		out = append(out, store.Bucket{
			Start: BucketStart(k, width), Requests: a.Requests, Errors: a.Errors,
			TotalTokens: a.TotalTokens, CostMicros: a.CostMicros, LatencyP50: p[0], LatencyP95: p[1],
		})
	}
	slices.SortFunc(out, func(x, y store.Bucket) int { return x.Start.Compare(y.Start) })
	return out
}

// SummaryColumns are the traces columns of a store.TraceSummary, in the
// order both stores' scanSummary read them.
const SummaryColumns = `id, tenant_id, request_id, endpoint, stream, requested_model, upstream_model,
	provider_instance, status, http_status, error_message, prompt_tokens, completion_tokens, total_tokens,
	cached_prompt_tokens, usage_source, cost_micros, latency_us, overhead_us, ttfb_us, upstream_us, created_at`
