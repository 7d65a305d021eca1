// Package trace records every request: the plaintext record the request path
// builds, the recorder that seals, prices, chains and writes records in
// batches (spooling to disk while the store is away), and the verification
// of the hash chains.
package trace

import (
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// Statuses name the outcome of a request.
const (
	StatusOK                  = "ok"
	StatusUpstreamError       = "upstream_error"       // the upstream answered 4xx/5xx/429
	StatusProviderUnavailable = "provider_unavailable" // the provider answered 5xx without calling its upstream, e.g. it has no credentials
	StatusUpstreamTimeout     = "upstream_timeout"     // the upstream did not answer in time
	StatusUpstreamUnreachable = "upstream_unreachable" // the upstream could not be reached
	StatusPluginFailure       = "plugin_failure"       // the provider plugin crashed or broke the protocol
	StatusClientDisconnect    = "client_disconnect"    // the client left before the answer was complete
	StatusStreamFailure       = "stream_failure"       // the upstream stream broke off mid-way
	StatusRejected            = "rejected"             // Loom refused the request (400/404/405/413)
	StatusShutdown            = "shutdown"             // cut off by Loom shutting down
	StatusInternalError       = "internal_error"       // Loom itself failed (a bug: see its log)
)

// Usage sources.
const (
	UsageProvider  = "provider"
	UsageEstimated = "estimated"
	UsageNone      = "none"
)

// Record is one request as the request path saw it, in plaintext. The
// recorder turns it into a sealed, priced, chained store.Trace.
type Record struct {
	ID        string // UUIDv7
	TenantID  string
	RequestID string
	Endpoint  string
	Stream    bool

	RequestedModel   string
	UpstreamModel    string // the model Loom asked the provider for
	ReportedModel    string // the model the upstream says it used (priced first, see Recorder)
	ProviderInstance string
	PluginName       string
	PluginVersion    string

	Status     string
	HTTPStatus int
	Error      string

	Request []byte // as received, up to trace.max_body_bytes
	// RequestTruncated: Request was cut at trace.max_body_bytes.
	RequestTruncated bool
	Response         []byte // as returned (non-stream) or the SSE stream as relayed
	// ResponseTruncated: Response was cut at trace.max_body_bytes (a
	// stream's at an event boundary).
	ResponseTruncated bool
	// Message is the assembled final message of a stream (JSON), nil otherwise.
	Message []byte
	// Completion is the assembled completion text (for token estimation).
	Completion string

	// Usage as reported by the provider; nil when it reported none.
	Usage *provider.Usage

	Start time.Time
	// Received is when Loom had read the request body, or stopped reading
	// it (zero: no body was read; Start stands for it).
	Received time.Time
	// Dispatched and Returned bracket the call to the provider; both are
	// zero when no provider was called.
	Dispatched, Returned time.Time
	End                  time.Time
	TTFB                 time.Duration // to the client's first byte; 0 when none was sent
	Upstream             time.Duration // upstream total as the provider measured it; 0 when unknown or no upstream call happened
	UpstreamTTFB         time.Duration
	ConfigHash           string
	// Admission is what Recorder.Admit reserved for this record.
	Admission Admission

	// done, when set, is closed (after err is set) once the trace is durable
	// (sync durability).
	done chan struct{}
	err  error
}

// Durable waits until the recorder has made the trace durable (in the store
// or the spool). It returns at once for records submitted without waiting.
func (r *Record) Durable() error {
	if r.done == nil {
		return nil
	}
	<-r.done
	return r.err
}

// Overhead is the time Loom itself spent on the request, up to end: from
// the end of the body read to the provider call, from the provider's
// return on, and the hop to the provider process (the call's time beyond
// the upstream's own, when the provider measured it). The client's upload
// and the upstream's answer are not Loom's time: a slow upload refused
// with 413, or a stream the client left (whose upstream time is unknown),
// shows only what Loom did.
func (r *Record) Overhead(end time.Time) time.Duration {
	from := r.Received
	if from.IsZero() {
		from = r.Start
	}
	if r.Dispatched.IsZero() {
		return max(0, end.Sub(from))
	}
	returned := r.Returned
	if returned.IsZero() { // still in the provider call (a panic, say)
		returned = end
	}
	d := r.Dispatched.Sub(from) + end.Sub(returned)
	if r.Upstream > 0 {
		d += max(0, returned.Sub(r.Dispatched)-r.Upstream)
	}
	return max(0, d)
}
