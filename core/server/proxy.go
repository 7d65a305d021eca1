package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/internal/fault"
	"github.com/loom-runtime/loom/core/pluginhost"
	"github.com/loom-runtime/loom/core/relay"
	"github.com/loom-runtime/loom/core/request"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/sdk/provider"
)

// Provider is a provider instance as the server uses it (pluginhost.Instance).
type Provider interface {
	Name() string
	ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error)
	ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error)
	Embeddings(ctx context.Context, req *provider.Request) (*provider.Response, error)
	ListModels(ctx context.Context) ([]provider.Model, error)
}

// Providers finds provider instances by name.
type Providers interface {
	Provider(name string) (Provider, bool)
}

// forwardedHeaders are the client headers that belong upstream. Everything
// else — Authorization, api-key, x-api-key (the client's Loom key), cookies,
// hop-by-hop headers — stays at Loom.
var forwardedHeaders = []string{"OpenAI-Beta", "Idempotency-Key", "X-Stainless-Retry-Count"}

// readBody reads the request body once, within the size limit and
// server.body_timeout.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request, c *capture) ([]byte, error) {
	// From here on the time is Loom's again, whether the read succeeded
	// or not (see trace.Record.Overhead).
	defer func() { c.rec.Received = time.Now() }()
	limit := s.o.MaxBodyBytes
	if limit <= 0 {
		limit = 10 << 20
	}
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	// The body's memory is reserved before it is read: all of a declared
	// length at once, a chunked body as it arrives.
	var src io.Reader = http.MaxBytesReader(w, r.Body, limit)
	if r.ContentLength > 0 {
		if err := s.bodies.take(c.rec.TenantID, r.ContentLength); err != nil {
			refuseUnread(w, r)
			return nil, bodyMemoryError(err)
		}
		c.bodyHeld = r.ContentLength
	} else if r.ContentLength < 0 {
		br := &budgetedReader{r: src, b: s.bodies, tenant: c.rec.TenantID}
		defer func() { c.bodyHeld = br.held }()
		src = br
	}
	var body []byte
	var err error
	if s.o.BodyTimeout > 0 && r.ContentLength != 0 {
		body, err = s.readPaced(w, r, c, src)
	} else {
		body, err = readAll(src, r.ContentLength)
	}
	var mbe *http.MaxBytesError
	switch {
	case errors.Is(err, errBodyTenantShare) || errors.Is(err, errBodyMemory):
		refuseUnread(w, r)
		return nil, bodyMemoryError(err)
	case errors.As(err, &mbe):
		return nil, tooLarge(limit)
	case err == errBodyStalled:
		return nil, apierror.New(http.StatusRequestTimeout, apierror.TypeInvalidRequest, "body_timeout",
			fmt.Sprintf("The client paused for more than %v while sending the request body (server.body_timeout).", s.o.BodyTimeout))
	case err != nil:
		return nil, apierror.New(http.StatusBadRequest, apierror.TypeInvalidRequest, "body_read_failed",
			"Loom could not read the request body: "+err.Error())
	}
	// Read to its end: closing it spares net/http an attempt to drain it
	// when the response starts.
	_ = r.Body.Close()
	return body, nil
}

var errBodyStalled = errors.New("request body stalled")

// readPaced reads the body while watching the pauses between its reads: a
// client silent for longer than server.body_timeout gets a 408, a slow but
// steady upload does not. net/http cannot answer a request once a read of
// its body has failed, so the read runs aside: on a stall the answer is
// written first (full duplex, connection closing), then c.release ends the
// blocked read.
func (s *Server) readPaced(w http.ResponseWriter, r *http.Request, c *capture, src io.Reader) ([]byte, error) {
	type result struct {
		body []byte
		err  error
	}
	// Progress is kept as an offset from base on the monotonic clock, so
	// a step of the wall clock cannot make a steady upload look stalled.
	base := time.Now()
	var last atomic.Int64 // time.Since(base) at the latest progress
	done := make(chan result, 1)
	go func() {
		b, err := readAll(&pacedReader{r: src, base: base, last: &last}, r.ContentLength)
		done <- result{b, err}
	}()
	t := time.NewTimer(s.o.BodyTimeout)
	defer t.Stop()
	for {
		select {
		case res := <-done:
			return res.body, res.err
		case <-r.Context().Done():
			// The client left, or Loom is shutting down: end the read.
			_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			res := <-done
			return res.body, res.err
		case <-t.C:
			if idle := time.Since(base) - time.Duration(last.Load()); idle < s.o.BodyTimeout {
				t.Reset(s.o.BodyTimeout - idle)
				continue
			}
			rc := http.NewResponseController(w)
			_ = rc.EnableFullDuplex()
			w.Header().Set("Connection", "close")
			c.release = func() {
				_ = rc.SetReadDeadline(time.Now())
				<-done
			}
			return nil, errBodyStalled
		}
	}
}

// pacedReader notes when the body last made progress.
type pacedReader struct {
	r    io.Reader
	base time.Time
	last *atomic.Int64
}

func (p *pacedReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.last.Store(int64(time.Since(p.base)))
	}
	return n, err
}

// readAll is io.ReadAll with the buffer sized from the declared length
// (plus one byte to see EOF), so a body is read without regrowing.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size < 0 || size > 1<<20 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err != nil {
			if err == io.EOF {
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than declared: grow
		}
	}
}

// bodyMemoryError is the answer to a body that would pass the memory
// budget for request bodies: the tenant's share (429) or Loom's (503).
func bodyMemoryError(err error) error {
	if errors.Is(err, errBodyTenantShare) {
		return &apierror.Error{Status: http.StatusTooManyRequests, Type: apierror.TypeRateLimit, Code: "tenant_capacity_exhausted",
			Message: "This tenant's request bodies in flight hold its share of Loom's memory for bodies (trace.tenant_share_percent of server.body_memory_bytes); retry when some have finished."}
	}
	return &apierror.Error{Status: http.StatusServiceUnavailable, Type: apierror.TypeServer, Code: "body_memory_exhausted",
		Message: "Loom holds as many request bodies as server.body_memory_bytes allows; retry shortly."}
}

func tooLarge(limit int64) error {
	return apierror.New(http.StatusRequestEntityTooLarge, apierror.TypeInvalidRequest, "request_too_large",
		fmt.Sprintf("The request body is larger than this gateway accepts (%d bytes).", limit))
}

func badRequest(err error) error {
	var re *request.Error
	if errors.As(err, &re) {
		return &apierror.Error{Status: http.StatusBadRequest, Type: apierror.TypeInvalidRequest,
			Code: re.Code, Param: re.Param, Message: re.Message}
	}
	return apierror.Internal(err)
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// call is one proxied request on its way through the gateway.
type call struct {
	principal auth.Principal
	peek      request.Peeked
	target    router.Target
	provider  Provider
	req       *provider.Request
	cap       *capture
}

// prepare reads, checks and routes a request, recording what it learns;
// streams tells whether the endpoint streams (and so asks for usage).
func (s *Server) prepare(w http.ResponseWriter, r *http.Request, tc *capture, validate func(request.Peeked) error, streams bool) (*call, error) {
	c := &call{cap: tc}
	c.principal, _ = auth.FromContext(r.Context())
	body, err := s.readBody(w, r, c.cap)
	if err != nil {
		return nil, err
	}
	tc.rec.Request, tc.rec.RequestTruncated = tc.keep(body)
	if c.peek, err = request.Peek(body); err != nil {
		return nil, badRequest(err)
	}
	// A model name too long to be one is refused below; its trace keeps
	// the start of it (the whole body is in the trace, sealed).
	tc.rec.RequestedModel, tc.rec.Stream = truncateUTF8(c.peek.Model, request.MaxModelBytes), c.peek.Stream
	if err := validate(c.peek); err != nil {
		return nil, badRequest(err)
	}
	target, ok := s.o.Router.Route(c.principal.TenantName, c.peek.Model)
	if !ok {
		return nil, &apierror.Error{Status: http.StatusNotFound, Type: apierror.TypeInvalidRequest, Code: "model_not_found", Param: "model",
			Message: fmt.Sprintf("The model `%s` does not exist or you do not have access to it.", c.peek.Model)}
	}
	c.target = target
	tc.rec.UpstreamModel, tc.rec.ProviderInstance = target.Model, target.Provider
	p, ok := s.o.Providers.Provider(target.Provider)
	if !ok {
		return nil, apierror.Internal(fmt.Errorf("route %q names provider %q, which is not running", target.Route, target.Provider))
	}
	c.provider = p
	if info, ok := p.(interface{ Info() provider.Info }); ok {
		i := info.Info()
		tc.rec.PluginName, tc.rec.PluginVersion = i.Name, i.Version
	}
	var edit request.Edit
	if target.Model != c.peek.Model {
		edit.Model = target.Model
	}
	// A stream asks the upstream for usage, whatever the client asked:
	// the trace needs it (the relay drops the usage chunk for a client
	// that did not ask for it).
	edit.IncludeUsage = streams && c.peek.Stream
	if body, err = request.Rewrite(body, c.peek, edit); err != nil {
		return nil, badRequest(err)
	}
	c.req = &provider.Request{RequestID: RequestID(r.Context()), Model: target.Model, Body: body, Headers: upstreamHeaders(r)}
	return c, nil
}

// upstreamHeaders are the forwardedHeaders of r, but for a value that
// holds the client's Loom key (pasted into the wrong header, say).
func upstreamHeaders(r *http.Request) map[string]string {
	var h map[string]string
	key, keyed := "", false
	for _, k := range forwardedHeaders {
		v := r.Header.Get(k)
		if v == "" {
			continue
		}
		if !keyed {
			key, _ = auth.KeyFromRequest(r)
			keyed = true
		}
		if key != "" && strings.Contains(v, key) {
			continue
		}
		if h == nil {
			h = make(map[string]string, 2)
		}
		h[k] = v
	}
	return h
}

// pluginError maps a failed plugin call to the client's error.
func (s *Server) pluginError(ctx context.Context, c *call, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err() // the client left: nothing to answer
	case errors.Is(err, provider.ErrUnsupported):
		return apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "unsupported_endpoint",
			fmt.Sprintf("Provider %q does not support this endpoint.", c.target.Provider))
	case errors.Is(err, pluginhost.ErrPluginFailed):
		return &apierror.Error{Status: http.StatusBadGateway, Type: apierror.TypeServer, Code: "plugin_failed",
			Message: strings.TrimPrefix(err.Error(), pluginhost.ErrPluginFailed.Error()+": "), Err: err}
	default:
		return &apierror.Error{Status: http.StatusBadGateway, Type: apierror.TypeServer, Code: "plugin_failed",
			Message: fmt.Sprintf("The provider plugin for %q failed.", c.target.Provider), Err: err}
	}
}

// failureError maps an upstream that could not be used to the client's error.
func failureError(c *call, f *provider.Failure) *apierror.Error {
	switch f.Kind {
	case provider.FailureTimeout:
		return apierror.New(http.StatusGatewayTimeout, apierror.TypeServer, "upstream_timeout",
			fmt.Sprintf("Provider %q did not answer in time: %s", c.target.Provider, f.Message))
	case provider.FailureUnreachable:
		return apierror.New(http.StatusBadGateway, apierror.TypeServer, "upstream_unreachable",
			fmt.Sprintf("Provider %q could not be reached: %s", c.target.Provider, f.Message))
	default:
		return apierror.New(http.StatusBadGateway, apierror.TypeServer, "upstream_bad_response",
			fmt.Sprintf("Provider %q failed: %s", c.target.Provider, f.Message))
	}
}

func (s *Server) chatCompletions(w http.ResponseWriter, r *http.Request, tc *capture) error {
	c, err := s.prepare(w, r, tc, request.Peeked.ValidateChat, true)
	if err != nil {
		return err
	}
	fault.Point(r, "routed")
	if c.peek.Stream {
		return s.stream(w, r, c)
	}
	tc.rec.Dispatched = time.Now()
	resp, err := c.provider.ChatCompletions(r.Context(), c.req)
	tc.rec.Returned = time.Now()
	if err != nil {
		return s.pluginError(r.Context(), c, err)
	}
	return s.writeUnary(w, r, c, resp)
}

func (s *Server) embeddings(w http.ResponseWriter, r *http.Request, tc *capture) error {
	c, err := s.prepare(w, r, tc, request.Peeked.ValidateEmbeddings, false)
	if err != nil {
		return err
	}
	tc.rec.Dispatched = time.Now()
	resp, err := c.provider.Embeddings(r.Context(), c.req)
	tc.rec.Returned = time.Now()
	if err != nil {
		return s.pluginError(r.Context(), c, err)
	}
	return s.writeUnary(w, r, c, resp)
}

// recordUpstream copies what the provider measured into the trace.
func recordUpstream(rec *trace.Record, t provider.Timings, usage *provider.Usage, model string) {
	rec.Upstream, rec.UpstreamTTFB = t.Total, t.FirstByte
	if usage != nil {
		u := *usage
		rec.Usage = &u
	}
	if model != "" {
		rec.ReportedModel = model
	}
}

// errorStatus names an error answer from the provider. A provider that
// measured no upstream call answered by itself: a 5xx then means it cannot
// serve (no credentials, say) and a 4xx that it refused the request, and
// neither is an upstream error (nor billed as one).
func errorStatus(c *call, status int, t provider.Timings) (traceStatus, message string) {
	switch {
	case t.Total > 0:
		return trace.StatusUpstreamError, fmt.Sprintf("upstream answered %d", status)
	case status >= 500:
		return trace.StatusProviderUnavailable, fmt.Sprintf("provider %q answered %d without calling its upstream", c.target.Provider, status)
	default:
		return trace.StatusRejected, fmt.Sprintf("provider %q refused the request (%d) without calling its upstream", c.target.Provider, status)
	}
}

// writeUnary relays a non-stream answer as returned, with the time Loom
// itself spent in x-loom-overhead-ms.
func (s *Server) writeUnary(w http.ResponseWriter, r *http.Request, c *call, resp *provider.Response) error {
	rec := c.cap.rec
	recordUpstream(rec, resp.Timings, resp.Usage, resp.Model)
	if resp.Failure != nil {
		return failureError(c, resp.Failure)
	}
	rec.Response, rec.ResponseTruncated = c.cap.keep(resp.Body)
	rec.HTTPStatus = resp.Status
	rec.Status = trace.StatusOK
	if resp.Status >= 400 {
		rec.Status, rec.Error = errorStatus(c, resp.Status, resp.Timings)
	}
	h := w.Header()
	relay.CopyHeaders(h, resp.Headers)
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	overhead := rec.Overhead(time.Now())
	h.Set("X-Loom-Overhead-Ms", strconv.FormatFloat(float64(overhead.Microseconds())/1000, 'f', 3, 64))
	h.Set("Content-Length", strconv.Itoa(len(resp.Body)))
	rec.TTFB = time.Since(rec.Start)
	s.commit(c.cap, resp.Status) // sync durability: the answer waits for its trace
	w.WriteHeader(resp.Status)
	if _, err := w.Write(resp.Body); err != nil {
		s.log.Debug("client left while the answer was written", "request_id", rec.RequestID, "error", err)
		return nil
	}
	// Send the answer now: net/http would only flush it once the handler
	// chain returned, after the access log line is written.
	_ = http.NewResponseController(w).Flush()
	return nil
}

// stream relays a streaming chat completion.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, c *call) error {
	rec := c.cap.rec
	out := relay.NewStream(w, c.peek.IncludeUsage, nil)
	out.Tap = fault.Tap(r, "streaming", c.cap.tap)
	out.HoldDone = s.o.HoldDone
	rec.Dispatched = time.Now()
	end, err := c.provider.ChatCompletionsStream(r.Context(), c.req, out)
	rec.Returned = time.Now()
	if end != nil {
		recordUpstream(rec, end.Timings, end.Usage, end.Model)
	}
	if !out.FirstByte.IsZero() {
		rec.TTFB = out.FirstByte.Sub(rec.Start)
	}
	switch {
	case r.Context().Err() != nil:
		// The client left (or Loom is shutting down); the upstream call was cancelled with it.
		rec.Status, rec.HTTPStatus = s.disconnectStatus(), 499
		if out.Committed() {
			rec.HTTPStatus = out.Status()
		}
		rec.Error = "client closed the request before the stream ended"
		s.commit(c.cap, rec.HTTPStatus)
		return nil
	case err != nil && !out.Committed():
		return s.pluginError(r.Context(), c, err)
	case err != nil:
		s.log.Error("plugin failed mid-stream", "request_id", c.req.RequestID, "provider", c.target.Provider, "error", err)
		e := s.pluginError(r.Context(), c, err).(*apierror.Error)
		rec.Status, rec.HTTPStatus, rec.Error = trace.StatusPluginFailure, out.Status(), e.Message
		out.Fail(e.Body())
		s.commit(c.cap, out.Status())
		out.Finish()
		return nil
	case end == nil:
		return apierror.Internal(errors.New("plugin returned neither an end nor an error"))
	}
	if !out.Committed() {
		// The stream never opened: an upstream error status with its body,
		// or an upstream that could not be reached.
		if end.Failure != nil && out.Status() == 0 {
			return failureError(c, end.Failure)
		}
		status := out.Status()
		if status == 0 {
			status = http.StatusBadGateway
		}
		rec.HTTPStatus = status
		rec.Response, rec.ResponseTruncated = c.cap.keep(end.Body)
		rec.Status, rec.Error = errorStatus(c, status, end.Timings)
		h := w.Header()
		relay.CopyHeaders(h, out.Headers())
		if h.Get("Content-Type") == "" {
			h.Set("Content-Type", "application/json")
		}
		rec.TTFB = time.Since(rec.Start)
		s.commit(c.cap, status)
		w.WriteHeader(status)
		_, _ = w.Write(end.Body)
		return nil
	}
	rec.HTTPStatus = out.Status()
	switch {
	case end.Failure != nil && end.Failure.Kind != provider.FailureCanceled:
		e := failureError(c, end.Failure)
		rec.Status, rec.Error = trace.StatusStreamFailure, e.Message
		out.Fail(e.Body())
		s.commit(c.cap, rec.HTTPStatus)
		out.Finish()
	case !out.SawDone():
		rec.Status, rec.Error = trace.StatusStreamFailure, "the upstream stream ended without [DONE]"
		s.commit(c.cap, rec.HTTPStatus)
	default:
		rec.Status = trace.StatusOK
		s.commit(c.cap, rec.HTTPStatus)
		out.Finish() // with sync durability, [DONE] waited for the trace
	}
	return nil
}

// modelsCache keeps each provider's model list for a while: listing asks
// the upstream, which is slow and may need credentials.
type modelsCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	entries map[string]modelsEntry
}

type modelsEntry struct {
	models  []provider.Model
	fetched time.Time
}

func (m *modelsCache) get(ctx context.Context, p Provider) []provider.Model {
	m.mu.Lock()
	e, ok := m.entries[p.Name()]
	m.mu.Unlock()
	if ok && time.Since(e.fetched) < m.ttl {
		return e.models
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	models, err := p.ListModels(ctx)
	if err != nil {
		return e.models // keep serving the last good list
	}
	m.mu.Lock()
	m.entries[p.Name()] = modelsEntry{models: models, fetched: time.Now()}
	m.mu.Unlock()
	return models
}

// listModels answers with the models this tenant's routes can reach.
func (s *Server) listModels(w http.ResponseWriter, r *http.Request, tc *capture) error {
	p, _ := auth.FromContext(r.Context())
	seen := map[string]bool{}
	data := []model{}
	for _, reach := range s.o.Router.Reachable(p.TenantName) {
		prov, ok := s.o.Providers.Provider(reach.Provider)
		if !ok {
			continue
		}
		for _, m := range s.models.get(r.Context(), prov) {
			id, ok := reach.ClientID(m.ID)
			if !ok || seen[id] {
				continue
			}
			// Only list what really routes to this provider.
			if t, ok := s.o.Router.Route(p.TenantName, id); !ok || t.Provider != reach.Provider {
				continue
			}
			seen[id] = true
			owner := m.OwnedBy
			if owner == "" {
				owner = reach.Provider
			}
			data = append(data, model{ID: id, Object: "model", Created: m.Created, OwnedBy: owner})
		}
	}
	sort.Slice(data, func(i, j int) bool { return data[i].ID < data[j].ID })
	body, err := json.Marshal(struct {
		Object string  `json:"object"`
		Data   []model `json:"data"`
	}{Object: "list", Data: data})
	if err != nil {
		return apierror.Internal(fmt.Errorf("encode model list: %w", err))
	}
	tc.rec.Status, tc.rec.Response = trace.StatusOK, body
	tc.rec.TTFB = time.Since(tc.rec.Start)
	s.commit(tc, http.StatusOK)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
	return nil
}
