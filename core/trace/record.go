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
	ReportedModel    string // the model the upstream says it used (priced first)
	ProviderInstance string
	PluginName       string
	PluginVersion    string

	Status     string
	HTTPStatus int
	Error      string

	Request  []byte // as received
	Response []byte // as returned (non-stream) or the SSE stream as relayed
	// ResponseTruncated: Response was cut at trace.max_body_bytes.
	ResponseTruncated bool
	// Message is the assembled final message of a stream (JSON), nil otherwise.
	Message []byte
	// Completion is the assembled completion text (for token estimation).
	Completion string

	// Usage as reported by the provider; nil when it reported none.
	Usage *provider.Usage

	Start        time.Time
	End          time.Time
	TTFB         time.Duration // to the client's first byte; 0 when none was sent
	Upstream     time.Duration // upstream total; 0 when no upstream call happened
	UpstreamTTFB time.Duration
	ConfigHash   string

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
