// Package metrics exposes Loom's Prometheus metrics: requests and latency
// by tenant, model and status, gateway overhead, the trace recorder's queue
// and spool, and plugin restarts — with label cardinality bounded.
//
// Label values come from clients (model names) or operators (tenant
// names), so each is first made a well-formed, short label value
// (LabelValue), then admitted against a budget: the first MaxTenants
// tenants, and for each tenant its first MaxModelsPerTenant model names,
// get series of their own; later ones are counted under Other (a tenant
// past its budget as model="other" under its own tenant label). A tenant's
// model budget is its own, so no tenant's traffic can push another's
// models into Other, and the total stays bounded: at most
// (MaxTenants+1) × (MaxModelsPerTenant+1) tenant and model pairs.
package metrics

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Other replaces label values beyond a label's bound.
const Other = "other"

// Default bounds on distinct label values: client-chosen strings (model
// names) and tenant counts must not grow the series without limit.
const (
	MaxTenants = 200
	// MaxModelsPerTenant is each tenant's own budget of model names.
	MaxModelsPerTenant = 20
)

// MaxLabelBytes bounds the length of a tenant or model label value.
const MaxLabelBytes = 128

// Metrics holds the collectors of one gateway process.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	overhead *prometheus.HistogramVec
	tenants  *bounded
	// models holds each admitted tenant label's own model budget.
	models sync.Map // tenant label → *bounded
	// observers caches the collectors of each label set (a series key),
	// saving the label hashing of WithLabelValues on every request. Its
	// keys are label values as exposed (LabelValue, then bounded), so its
	// size is bounded by the bounded labels.
	observers sync.Map // series → *observer
}

type series struct{ tenant, model, status string }

type observer struct {
	requests prometheus.Counter
	latency  prometheus.Observer
	// overhead is set at the first request that reached an upstream, so
	// the series only exists once it has an observation.
	overhead atomic.Pointer[prometheus.Observer]
}

// latencyBuckets spans sub-millisecond gateway work to minute-long streams.
var latencyBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// overheadBuckets focus on the gateway's own time.
var overheadBuckets = []float64{.0001, .00025, .0005, .00075, .001, .0015, .002, .003, .005, .0075, .01, .025, .05, .1}

// New registers Loom's collectors (and the Go runtime and process ones).
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "loom_requests_total", Help: "Proxied requests by tenant, requested model and trace status.",
		}, []string{"tenant", "model", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "loom_request_duration_seconds", Help: "Total request latency as the client saw it.", Buckets: latencyBuckets,
		}, []string{"tenant", "model", "status"}),
		overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "loom_gateway_overhead_seconds", Help: "Time spent in Loom, excluding the upstream's (requests that reached an upstream).", Buckets: overheadBuckets,
		}, []string{"tenant", "model"}),
		tenants: newBounded(MaxTenants),
	}
	reg.MustRegister(m.requests, m.latency, m.overhead)
	return m
}

// ObserveRequest records one finished request. overhead < 0 means the
// request never reached an upstream.
func (m *Metrics) ObserveRequest(tenant, model, status string, total, overhead time.Duration) {
	// A series is stored under its exposed labels, which equal the raw
	// ones when both are well-formed and were admitted: a hit on the raw
	// key needs no sanitising and no bounded set (nor its lock). A key is
	// only ever stored with exposed labels, which LabelValue and the
	// budgets map to themselves, so a raw hit is the series they name.
	k := series{tenant, model, status}
	o, ok := m.observers.Load(k)
	if !ok {
		k = m.labels(tenant, model, status)
		o, ok = m.observers.Load(k)
	}
	if !ok {
		o, _ = m.observers.LoadOrStore(k, &observer{
			requests: m.requests.WithLabelValues(k.tenant, k.model, k.status),
			latency:  m.latency.WithLabelValues(k.tenant, k.model, k.status),
		})
	}
	obs := o.(*observer)
	obs.requests.Inc()
	obs.latency.Observe(total.Seconds())
	if overhead >= 0 {
		ov := obs.overhead.Load()
		if ov == nil {
			h := m.overhead.WithLabelValues(k.tenant, k.model)
			obs.overhead.Store(&h)
			ov = &h
		}
		(*ov).Observe(overhead.Seconds())
	}
}

// RecorderStats is what the trace recorder reports.
type RecorderStats struct {
	QueueDepth, SpoolBytes, Written, Spooled, Failed, Untraced int64
}

// WatchRecorder exports the recorder's state, read at scrape time.
func (m *Metrics) WatchRecorder(stats func() RecorderStats) {
	gauge := func(name, help string, f func(RecorderStats) int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return float64(f(stats())) })
	}
	counter := func(name, help string, f func(RecorderStats) int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(f(stats())) })
	}
	m.reg.MustRegister(
		gauge("loom_trace_queue_depth", "Traces admitted and not yet durable.", func(s RecorderStats) int64 { return s.QueueDepth }),
		gauge("loom_trace_spool_bytes", "Bytes of trace batches waiting in the spool.", func(s RecorderStats) int64 { return s.SpoolBytes }),
		counter("loom_traces_written_total", "Traces written to the store.", func(s RecorderStats) int64 { return s.Written }),
		counter("loom_traces_spooled_total", "Traces written to the spool.", func(s RecorderStats) int64 { return s.Spooled }),
		counter("loom_trace_write_failures_total", "Batches that could be written neither to the store nor to the spool.", func(s RecorderStats) int64 { return s.Failed }),
		counter("loom_trace_untraced_refusals_total", "Requests refused past their tenant's share of trace capacity while the refusal pool was full, so without a trace.", func(s RecorderStats) int64 { return s.Untraced }),
	)
}

// WatchPlugin exports a provider instance's restart count, read at scrape time.
func (m *Metrics) WatchPlugin(provider string, restarts func() int64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "loom_plugin_restarts_total", Help: "Plugin process restarts after a crash.",
		ConstLabels: prometheus.Labels{"provider": provider},
	}, func() float64 { return float64(restarts()) }))
}

// Handler serves the metrics in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// labels returns the exposed labels of a request: well-formed, short,
// and admitted (else Other) against the tenant bound and the tenant's own
// model budget.
func (m *Metrics) labels(tenant, model, status string) series {
	t := m.tenants.value(LabelValue(tenant))
	b, ok := m.models.Load(t)
	if !ok {
		b, _ = m.models.LoadOrStore(t, newBounded(MaxModelsPerTenant))
	}
	return series{t, b.(*bounded).value(LabelValue(model)), status}
}

// LabelValue makes s a well-formed, bounded label value: each byte that is
// not part of valid UTF-8 and each control character (U+0000–U+001F,
// U+007F–U+009F) becomes U+FFFD, and a result longer than MaxLabelBytes is
// cut at a character boundary and ends with "…" (U+2026), MaxLabelBytes
// bytes at most. A value that needs neither is returned as it is, and
// LabelValue(LabelValue(s)) == LabelValue(s).
func LabelValue(s string) string {
	clean := len(s) <= MaxLabelBytes
	for i := 0; clean && i < len(s); i++ {
		clean = s[i] >= 0x20 && s[i] < 0x7f
	}
	if clean {
		return s
	}
	const ellipsis = "…"
	buf := make([]byte, 0, MaxLabelBytes)
	cut := 0              // the longest prefix of buf that leaves room for the ellipsis
	for _, r := range s { // an invalid byte comes as utf8.RuneError
		if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
			r = utf8.RuneError
		}
		if len(buf)+utf8.RuneLen(r) > MaxLabelBytes {
			return string(append(buf[:cut], ellipsis...))
		}
		buf = utf8.AppendRune(buf, r)
		if len(buf) <= MaxLabelBytes-len(ellipsis) {
			cut = len(buf)
		}
	}
	return string(buf)
}

// bounded admits the first max distinct values of a label; later ones
// become Other.
type bounded struct {
	mu   sync.RWMutex
	max  int
	seen map[string]struct{}
}

func newBounded(max int) *bounded { return &bounded{max: max, seen: make(map[string]struct{}, max)} }

func (b *bounded) value(v string) string {
	b.mu.RLock()
	_, ok := b.seen[v]
	full := len(b.seen) >= b.max
	b.mu.RUnlock()
	if ok {
		return v
	}
	if full {
		return Other
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, ok := b.seen[v]; ok {
		return v
	}
	if len(b.seen) >= b.max {
		return Other
	}
	b.seen[v] = struct{}{}
	return v
}
