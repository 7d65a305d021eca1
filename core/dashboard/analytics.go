package dashboard

import (
	"fmt"
	"net/http"
	"time"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/store"
)

// windows are the analytics windows, each with its default bucket width
// (giving 24 to 60 buckets).
var windows = map[string]struct {
	d      time.Duration
	bucket string
}{
	"1h":  {time.Hour, "1m"},
	"24h": {24 * time.Hour, "1h"},
	"7d":  {7 * 24 * time.Hour, "6h"},
	"30d": {30 * 24 * time.Hour, "1d"},
}

// bucketWidths are the time-series bucket widths; each divides a day, so
// buckets aligned to the width are aligned to UTC midnight too.
var bucketWidths = map[string]time.Duration{
	"1m": time.Minute, "5m": 5 * time.Minute, "15m": 15 * time.Minute,
	"1h": time.Hour, "6h": 6 * time.Hour, "1d": 24 * time.Hour,
}

// maxBuckets bounds a time series (30d in 15m buckets is 2,881).
const maxBuckets = 3000

// window parses ?window= and returns its name and the interval [from, to)
// ending now.
func (a *API) window(r *http.Request) (name string, from, to time.Time, err error) {
	name = r.URL.Query().Get("window")
	if name == "" {
		name = "24h"
	}
	w, ok := windows[name]
	if !ok {
		return "", from, to, invalid("window", "Invalid 'window': expected 1h, 24h, 7d or 30d.")
	}
	to = a.now().UTC().Truncate(time.Microsecond)
	return name, to.Add(-w.d), to, nil
}

type percentilesJSON struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

func percentilesOf(p store.Percentiles) percentilesJSON {
	return percentilesJSON{P50: ms(p.P50), P95: ms(p.P95), P99: ms(p.P99)}
}

type tokenTotalsJSON struct {
	Prompt     int64 `json:"prompt"`
	Completion int64 `json:"completion"`
	Total      int64 `json:"total"`
	Cached     int64 `json:"cached"`
}

type aggregateJSON struct {
	Requests   int64           `json:"requests"`
	Errors     int64           `json:"errors"`
	ErrorRate  float64         `json:"error_rate"`
	Tokens     tokenTotalsJSON `json:"tokens"`
	CostMicros int64           `json:"cost_micros"`
	CostUSD    float64         `json:"cost_usd"`
	LatencyMS  percentilesJSON `json:"latency_ms"`
	OverheadMS percentilesJSON `json:"overhead_ms"`
}

func aggregateOf(g store.Aggregate) aggregateJSON {
	out := aggregateJSON{
		Requests: g.Requests, Errors: g.Errors,
		Tokens: tokenTotalsJSON{Prompt: g.PromptTokens, Completion: g.CompletionTokens, Total: g.TotalTokens,
			Cached: g.CachedPromptTokens},
		CostMicros: g.CostMicros, CostUSD: usd(g.CostMicros),
		LatencyMS: percentilesOf(g.Latency), OverheadMS: percentilesOf(g.Overhead),
	}
	if g.Requests > 0 {
		out.ErrorRate = float64(g.Errors) / float64(g.Requests)
	}
	return out
}

type modelAggregateJSON struct {
	Model string `json:"model"`
	aggregateJSON
}

type summaryResponse struct {
	Window  string               `json:"window"`
	From    stamp                `json:"from"`
	To      stamp                `json:"to"`
	Overall aggregateJSON        `json:"overall"`
	ByModel []modelAggregateJSON `json:"by_model"`
}

// summary: GET /analytics/summary.
func (a *API) summary(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := a.viewOf(r, c)
	if err != nil {
		return err
	}
	name, from, to, err := a.window(r)
	if err != nil {
		return err
	}
	overall, models, err := a.o.Store.Summary(r.Context(), v.scope, from, to)
	if err != nil {
		return apierror.Internal(fmt.Errorf("summary: %w", err))
	}
	// models come most requests first, ties by name: the store's order,
	// which its conformance suite pins.
	out := summaryResponse{Window: name, From: stamp(from), To: stamp(to), Overall: aggregateOf(overall),
		ByModel: make([]modelAggregateJSON, 0, len(models))}
	for _, m := range models {
		out.ByModel = append(out.ByModel, modelAggregateJSON{Model: m.Model, aggregateJSON: aggregateOf(m.Aggregate)})
	}
	return writeJSON(w, http.StatusOK, out)
}

type bucketLatencyJSON struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
}

type bucketJSON struct {
	Start      stamp             `json:"start"`
	Requests   int64             `json:"requests"`
	Errors     int64             `json:"errors"`
	Tokens     int64             `json:"tokens"`
	CostMicros int64             `json:"cost_micros"`
	CostUSD    float64           `json:"cost_usd"`
	LatencyMS  bucketLatencyJSON `json:"latency_ms"`
}

type timeseriesResponse struct {
	Window  string       `json:"window"`
	Bucket  string       `json:"bucket"`
	From    stamp        `json:"from"`
	To      stamp        `json:"to"`
	Buckets []bucketJSON `json:"buckets"`
}

// timeseries: GET /analytics/timeseries. The window is [now - window,
// now), exactly that of the summary; buckets are aligned to their width
// in UTC, and every bucket meeting the window is present, so the first
// and last may be partial.
func (a *API) timeseries(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := a.viewOf(r, c)
	if err != nil {
		return err
	}
	name, from, to, err := a.window(r)
	if err != nil {
		return err
	}
	bucket := r.URL.Query().Get("bucket")
	if bucket == "" {
		bucket = windows[name].bucket
	}
	width, ok := bucketWidths[bucket]
	if !ok {
		return invalid("bucket", "Invalid 'bucket': expected 1m, 5m, 15m, 1h, 6h or 1d.")
	}
	first, last := from.Truncate(width), to.Add(-time.Microsecond).Truncate(width)
	n := int(last.Sub(first)/width) + 1
	if n > maxBuckets {
		return invalid("bucket", "Invalid 'bucket': %s buckets over %s would be %d buckets; at most %d are allowed.",
			bucket, name, n, maxBuckets)
	}
	rows, err := a.o.Store.Timeseries(r.Context(), v.scope, from, to, width)
	if err != nil {
		return apierror.Internal(fmt.Errorf("timeseries: %w", err))
	}
	out := timeseriesResponse{Window: name, Bucket: bucket, From: stamp(from), To: stamp(to), Buckets: make([]bucketJSON, n)}
	for i := range out.Buckets {
		out.Buckets[i].Start = stamp(first.Add(time.Duration(i) * width))
	}
	for _, b := range rows {
		off := b.Start.Sub(first)
		i := int(off / width)
		if off < 0 || off%width != 0 || i >= n {
			return apierror.Internal(fmt.Errorf("timeseries: store returned bucket %s outside the grid %s + n×%s (n < %d)",
				b.Start.UTC().Format(time.RFC3339Nano), first.Format(time.RFC3339), width, n))
		}
		out.Buckets[i] = bucketJSON{Start: out.Buckets[i].Start, Requests: b.Requests, Errors: b.Errors,
			Tokens: b.TotalTokens, CostMicros: b.CostMicros, CostUSD: usd(b.CostMicros),
			LatencyMS: bucketLatencyJSON{P50: ms(b.LatencyP50), P95: ms(b.LatencyP95)}}
	}
	return writeJSON(w, http.StatusOK, out)
}
