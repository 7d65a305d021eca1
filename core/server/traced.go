package server

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/internal/fault"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/sdk/sse"
)

// Recorder takes the traces of served requests (trace.Recorder).
type Recorder interface {
	// Admit reserves room for a trace of the tenant's request (see
	// trace.Recorder.Admit): trace.ErrTenantShare still reserves it, for
	// the trace of the refusal; any other error reserves nothing.
	Admit(tenantID string) (trace.Admission, error)
	// Submit hands a finished record over without blocking.
	Submit(rec *trace.Record)
}

// capture is the trace of one request, filled in as the request goes.
type capture struct {
	rec       *trace.Record
	tenant    string // the tenant's name, for metrics
	maxBody   int64
	submitted bool
	// bodyHeld is the request-body memory reserved for the request; it is
	// given back when the request ends.
	bodyHeld int64
	// release, when set, runs once the error answer is written (it ends a
	// body read left blocked by a stalled client).
	release func()
}

// tap records one relayed SSE event, as written to the client, up to the
// capture limit.
func (c *capture) tap(data []byte) {
	if c.rec.ResponseTruncated {
		return
	}
	if c.maxBody > 0 && int64(len(c.rec.Response)+len(data)+8) > c.maxBody {
		c.rec.ResponseTruncated = true
		return
	}
	c.rec.Response = sse.AppendEvent(c.rec.Response, data)
}

// keep returns what the trace keeps of a request or response body: all
// of it, or, past trace.max_body_bytes, a copy of its start (a slice of it
// would keep the whole body in memory until the trace is written).
func (c *capture) keep(b []byte) (kept []byte, truncated bool) {
	if c.maxBody <= 0 || int64(len(b)) <= c.maxBody {
		return b, false
	}
	return append([]byte(nil), b[:c.maxBody]...), true
}

// tracedFunc is a /v1 handler that fills in its request's capture.
type tracedFunc func(w http.ResponseWriter, r *http.Request, c *capture) error

// traced runs a /v1 handler so that every authenticated request yields
// exactly one trace, whatever happens to it. The handler either commits
// the trace itself right before its final write (so sync durability can
// hold the response), or returns an error, which is traced, then written.
func (s *Server) traced(endpoint string, h tracedFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		p, _ := auth.FromContext(r.Context())
		admission, admitted := s.o.Recorder.Admit(p.TenantID)
		if admitted != nil && !errors.Is(admitted, trace.ErrTenantShare) {
			refuseUnread(w, r)
			writeError(w, capacityError(admitted))
			return
		}
		s.inflight.Add(1)
		defer s.inflight.Done()
		id, err := uuid.NewV7()
		if err != nil {
			id = uuid.New()
		}
		c := &capture{maxBody: s.o.MaxTraceBodyBytes, tenant: p.TenantName, rec: &trace.Record{
			ID: id.String(), TenantID: p.TenantID, RequestID: RequestID(r.Context()), Endpoint: endpoint,
			Start: start, ConfigHash: s.o.ConfigHash, Admission: admission,
		}}
		defer func() { s.bodies.give(p.TenantID, c.bodyHeld) }()
		defer s.tracePanic(w, c)
		fault.Point(r, "admitted")
		if admitted != nil {
			refuseUnread(w, r)
			err = tenantShareError()
		} else {
			err = h(w, r, c)
		}
		if c.submitted {
			return
		}
		if err == nil {
			err = apierror.Internal(errors.New("handler returned without recording its trace"))
		}
		e := s.traceError(r.Context(), c, err)
		s.commit(c, e.Status)
		// Answer even a client that seems gone: one that only closed its
		// side of the connection (say, after less body than it announced)
		// still reads, and would otherwise get an empty 200.
		writeError(w, e)
		if c.release != nil {
			if f, ok := w.(http.Flusher); ok {
				f.Flush()
			}
			c.release()
		}
	})
}

// refuseUnread prepares the answer to a request refused before its body
// was read: retry in a second, on another connection. Without closing it,
// net/http would first read the rest of the body, for as long as a client
// trickling it pleases, before sending the refusal.
func refuseUnread(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Retry-After", "1")
	if r.ContentLength != 0 {
		w.Header().Set("Connection", "close")
	}
}

// tenantShareError is the 429 for a request past its tenant's share of
// the trace capacity.
func tenantShareError() *apierror.Error {
	return &apierror.Error{Status: http.StatusTooManyRequests, Type: apierror.TypeRateLimit, Code: "tenant_capacity_exhausted",
		Message: "This tenant has as many requests in flight as its share of Loom's capacity allows (trace.tenant_share_percent of trace.queue_size); retry when some have finished."}
}

// capacityError is the answer to a request Loom cannot trace, naming the
// cause: a tenant past its share (429), or Loom as a whole (503).
func capacityError(err error) *apierror.Error {
	if errors.Is(err, trace.ErrRefusalsFull) {
		return tenantShareError()
	}
	msg := "Loom has as many requests in flight as it can trace (trace.queue_size), so it is not taking more; retry shortly."
	if errors.Is(err, trace.ErrSpoolFull) {
		msg = "Loom cannot record more traces right now (its store is unreachable and its spool is full), so it is not serving requests; retry shortly."
	}
	return &apierror.Error{Status: http.StatusServiceUnavailable, Type: apierror.TypeServer, Code: "trace_capacity_exhausted", Message: msg}
}

// tracePanic, deferred by traced, makes a handler that panics still yield
// its one trace (internal_error) and give back the trace slot its request
// was admitted with; without it a panicking request held its slot for
// good, and enough of them refused every tenant. The panic goes on to the
// recover middleware, which answers 500, or cuts the connection when the
// answer had already started.
func (s *Server) tracePanic(w http.ResponseWriter, c *capture) {
	v := recover()
	if v == nil {
		return
	}
	if !c.submitted {
		rec := c.rec
		rec.Status, rec.HTTPStatus = trace.StatusInternalError, http.StatusInternalServerError
		rec.Error = "Loom failed while serving this request (a panic, logged with its request id)"
		if rw, ok := w.(*recorder); ok && rw.wroteHeader {
			rec.HTTPStatus = rw.status // the answer had started; it is cut short
		} else {
			rec.Response = apierror.Internal(nil).Body()
		}
		s.commit(c, rec.HTTPStatus)
	}
	panic(v)
}

// traceError fills the capture from a failed request and returns what the client gets.
func (s *Server) traceError(ctx context.Context, c *capture, err error) *apierror.Error {
	rec := c.rec
	if ctx.Err() != nil {
		rec.Status = s.disconnectStatus()
		rec.HTTPStatus = 499
		rec.Error = "client closed the request before the answer was complete"
		return apierror.New(499, apierror.TypeInvalidRequest, "client_closed_request", rec.Error)
	}
	e := apierror.As(err)
	rec.HTTPStatus, rec.Error = e.Status, e.Message
	rec.Response = e.Body()
	switch e.Code {
	case "upstream_timeout":
		rec.Status = trace.StatusUpstreamTimeout
	case "upstream_unreachable":
		rec.Status = trace.StatusUpstreamUnreachable
	case "upstream_bad_response":
		rec.Status = trace.StatusUpstreamError
	case "plugin_failed":
		rec.Status = trace.StatusPluginFailure
	default:
		if e.Status >= 500 {
			rec.Status = trace.StatusInternalError
		} else {
			rec.Status = trace.StatusRejected
		}
	}
	return e
}

// disconnectStatus names a request cut short: by the client, or by Loom
// shutting down (which cancels every request still running at its deadline).
func (s *Server) disconnectStatus() string {
	if s.forced.Load() {
		return trace.StatusShutdown
	}
	return trace.StatusClientDisconnect
}

// commit hands the finished trace to the recorder; with sync durability it
// waits until the trace is durable, before the response completes.
func (s *Server) commit(c *capture, status int) {
	if c.submitted {
		return
	}
	c.submitted = true
	rec := c.rec
	if rec.HTTPStatus == 0 {
		rec.HTTPStatus = status
	}
	rec.End = time.Now()
	if s.o.Metrics != nil {
		total, overhead := rec.End.Sub(rec.Start), time.Duration(-1)
		if !rec.Dispatched.IsZero() {
			overhead = rec.Overhead(rec.End)
		}
		s.o.Metrics.ObserveRequest(c.tenant, rec.RequestedModel, rec.Status, total, overhead)
	}
	s.o.Recorder.Submit(rec)
	if err := rec.Durable(); err != nil {
		s.log.Error("trace not durable", "trace_id", rec.ID, "error", err)
	}
}

// writeError sends an error to the client in the OpenAI format and lets
// the access log see it.
func writeError(w http.ResponseWriter, err error) {
	e := apierror.Write(w, err)
	if rec, ok := w.(*recorder); ok {
		rec.err = e
	}
}
