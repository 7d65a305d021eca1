// Package metrics exposes Loom's Prometheus metrics: requests and latency
// by tenant, model and status, gateway overhead, the trace recorder's queue
// and spool, and plugin restarts — with label cardinality bounded.
package metrics

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

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
	MaxModels  = 100
)

// Metrics holds the collectors of one gateway process.
type Metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	overhead *prometheus.HistogramVec
	tenants  *bounded
	models   *bounded
	// observers caches the collectors of each label set (a series key),
	// saving the label hashing of WithLabelValues on every request. Its
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
		models:  newBounded(MaxModels),
	}
	reg.MustRegister(m.requests, m.latency, m.overhead)
	return m
}

// ObserveRequest records one finished request. overhead < 0 means the
// request never reached an upstream.
func (m *Metrics) ObserveRequest(tenant, model, status string, total, overhead time.Duration) {
	// A series is stored under its bounded labels, which equal the raw
	// ones when both were admitted: a hit on the raw key needs neither
	// bounded set (nor its lock).
	k := series{tenant, model, status}
	o, ok := m.observers.Load(k)
	if !ok {
		k = series{m.tenants.value(tenant), m.models.value(model), status}
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
	b.mu.RUnlock()
	if ok {
		return v
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
