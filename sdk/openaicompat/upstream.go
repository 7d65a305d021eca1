package openaicompat

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// Endpoints, as passed to a URLFunc and to Upstream.Do.
const (
	EndpointChatCompletions = "chat/completions"
	EndpointEmbeddings      = "embeddings"
	EndpointModels          = "models"
)

// Defaults of UpstreamOptions.
const (
	// DefaultTimeout bounds a call whose Request.Timeout is 0. LLM calls
	// are slow: a long completion streams for minutes.
	DefaultTimeout = 10 * time.Minute
	// DefaultMaxBodyBytes bounds a unary answer's body. It stays below the
	// plugin protocol's 64 MiB message limit.
	DefaultMaxBodyBytes = 48 << 20
	// DefaultMaxEventBytes bounds one stream event (see sse.Reader).
	DefaultMaxEventBytes = 8 << 20
)

// URLFunc returns the URL of endpoint (one of the Endpoint… constants) for
// model ("" for EndpointModels). An error is a configuration fault.
type URLFunc func(endpoint, model string) (string, error)

// UpstreamOptions configure an Upstream. URL is required.
type UpstreamOptions struct {
	// Client sends the requests (default: NewHTTPClient(ClientOptions{})).
	// Share one client between the Upstreams of a process.
	Client *http.Client
	// URL builds request URLs.
	URL URLFunc
	// SetHeaders sets authentication and other fixed headers on every
	// request. It runs last, so what it sets wins over forwarded client
	// headers. The credentials it sets in Authorization,
	// Proxy-Authorization, Api-Key or X-Api-Key are replaced by Redacted
	// wherever the upstream's answer reflects them.
	SetHeaders func(h http.Header)
	// Timeout bounds a call whose Request.Timeout is 0 (default
	// DefaultTimeout). It covers the whole call, stream included.
	Timeout time.Duration
	// UserAgent is sent as User-Agent (default: Go's).
	UserAgent string
	// MaxBodyBytes bounds a unary or error body (default
	// DefaultMaxBodyBytes); a larger one is a FailureProtocol.
	MaxBodyBytes int64
	// MaxEventBytes bounds one stream event (default
	// DefaultMaxEventBytes); a larger one ends the stream with a
	// FailureProtocol.
	MaxEventBytes int
}

// Upstream calls one OpenAI-compatible API. It is safe for concurrent use.
//
// Results follow package provider's rules: an answer from the upstream,
// whatever its HTTP status, is a result carrying the status, the body
// unchanged (but for the call's credentials: see Redacted) and the
// response headers worth relaying (RelayedHeader); a
// call that got no usable answer is a result with a Failure (timeout,
// unreachable, protocol, canceled); a Go error means a fault of the
// configuration or the caller.
type Upstream struct {
	o UpstreamOptions
}

// NewUpstream returns an Upstream configured by o.
func NewUpstream(o UpstreamOptions) (*Upstream, error) {
	if o.URL == nil {
		return nil, errors.New("openaicompat: UpstreamOptions.URL is required")
	}
	if o.Client == nil {
		o.Client = NewHTTPClient(ClientOptions{})
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if o.MaxEventBytes <= 0 {
		o.MaxEventBytes = DefaultMaxEventBytes
	}
	return &Upstream{o: o}, nil
}

// Client returns the HTTP client the Upstream uses.
func (u *Upstream) Client() *http.Client { return u.o.Client }

// call is one upstream request in flight.
type call struct {
	parent  context.Context // the caller's context
	ctx     context.Context // parent with the call's deadline
	cancel  context.CancelFunc
	timeout time.Duration
	req     *http.Request
	start   time.Time
	secrets secrets // the call's credentials, redacted from what comes back
}

// newCall builds the HTTP request for endpoint. Its context ends at the
// call's deadline; the caller must call c.cancel.
func (u *Upstream) newCall(ctx context.Context, method, endpoint string, req *provider.Request, accept string) (*call, error) {
	if req == nil {
		return nil, errors.New("openaicompat: nil Request")
	}
	raw, err := u.o.URL(endpoint, req.Model)
	if err != nil {
		return nil, fmt.Errorf("openaicompat: %s URL: %w", endpoint, err)
	}
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = u.o.Timeout
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	var body io.Reader
	if method != http.MethodGet {
		body = bytes.NewReader(req.Body)
	}
	hreq, err := http.NewRequestWithContext(cctx, method, raw, body)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("openaicompat: %s request: %w", endpoint, err)
	}
	if hreq.URL.Scheme != "http" && hreq.URL.Scheme != "https" || hreq.URL.Host == "" {
		cancel()
		return nil, fmt.Errorf("openaicompat: %s URL %q: want an absolute http or https URL", endpoint, redactURL(hreq.URL))
	}
	h := hreq.Header
	for k, v := range req.Headers {
		if forwardable(k, v) {
			h.Set(k, v)
		}
	}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	h.Set("Accept", accept)
	if id := req.RequestID; id != "" && len(id) <= 512 && printableASCII(id) {
		// OpenAI logs it with the request, so both sides can find a call.
		h.Set("X-Client-Request-Id", id)
	}
	if u.o.UserAgent != "" {
		h.Set("User-Agent", u.o.UserAgent)
	}
	if u.o.SetHeaders != nil {
		u.o.SetHeaders(h)
	}
	return &call{parent: ctx, ctx: cctx, cancel: cancel, timeout: timeout, req: hreq, secrets: credentials(h)}, nil
}

// send performs the request.
func (u *Upstream) send(c *call) (*http.Response, error) {
	c.start = time.Now()
	return u.o.Client.Do(c.req)
}

// notForwarded are request headers a client may not set upstream: Loom's
// and the upstream's credentials, headers this package sets, and
// connection-level headers.
var notForwarded = map[string]bool{
	"authorization": true, "proxy-authorization": true, "api-key": true, "x-api-key": true,
	"cookie": true, "host": true, "content-type": true, "content-length": true,
	"content-encoding": true, "accept": true, "accept-encoding": true, "user-agent": true,
	"x-client-request-id": true, "connection": true, "keep-alive": true, "proxy-connection": true,
	"te": true, "trailer": true, "transfer-encoding": true, "upgrade": true, "expect": true,
}

// forwardable reports whether a client header may be sent upstream.
// Loom filters Request.Headers already; this is the last line of defence
// (nothing may replace authentication, nothing malformed may break the
// request).
func forwardable(name, value string) bool {
	if name == "" || notForwarded[strings.ToLower(name)] || strings.HasPrefix(strings.ToLower(name), "x-loom-") {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	for i := 0; i < len(value); i++ {
		if c := value[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// RelayedHeader reports whether an upstream response header is one Loom
// relays to the client: Content-Type, rate-limit and retry hints, OpenAI's
// processing time and version, and the upstream's request ids.
func RelayedHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Content-Type", "Retry-After", "Retry-After-Ms", "Openai-Processing-Ms", "Openai-Version",
		"X-Request-Id", "Apim-Request-Id":
		return true
	}
	return len(name) > len("x-ratelimit-") && strings.EqualFold(name[:len("x-ratelimit-")], "x-ratelimit-")
}

// relayHeaders returns the relayed headers of h, in canonical form, values
// of a repeated header joined with ", ".
func relayHeaders(h http.Header) map[string]string {
	out := make(map[string]string, 8)
	for k, vs := range h {
		if len(vs) > 0 && RelayedHeader(k) {
			out[http.CanonicalHeaderKey(k)] = strings.Join(vs, ", ")
		}
	}
	return out
}

// Do sends req to endpoint (EndpointChatCompletions or EndpointEmbeddings)
// and returns the answer: see Upstream for what is a result and what is an
// error. Usage and the model are parsed from a 2xx body.
func (u *Upstream) Do(ctx context.Context, endpoint string, req *provider.Request) (*provider.Response, error) {
	c, err := u.newCall(ctx, http.MethodPost, endpoint, req, "application/json")
	if err != nil {
		return nil, err
	}
	defer c.cancel()
	resp, err := u.send(c)
	if err != nil {
		return &provider.Response{Failure: c.failure(err, phaseConnect), Timings: provider.Timings{Total: time.Since(c.start)}}, nil
	}
	defer resp.Body.Close()
	body, firstByte, err := readBody(resp.Body, resp.ContentLength, u.o.MaxBodyBytes, c.start)
	tm := provider.Timings{FirstByte: firstByte, Total: time.Since(c.start)}
	if err != nil {
		return &provider.Response{Failure: c.failure(err, phaseBody), Timings: tm}, nil
	}
	r := &provider.Response{
		Status:  resp.StatusCode,
		Headers: c.secrets.redactHeaders(relayHeaders(resp.Header)),
		Body:    c.secrets.redact(body),
		Timings: tm,
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		r.Usage, r.Model = parseBody(body)
	}
	return r, nil
}

// errTooLarge is returned by readBody for a body over the limit.
type errTooLarge struct{ limit int64 }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("upstream response body larger than %d bytes", e.limit)
}

// readBody reads a response body of at most limit bytes, and reports when
// its first byte arrived (for an empty body: when its end did).
func readBody(r io.Reader, contentLength, limit int64, start time.Time) ([]byte, time.Duration, error) {
	size := int64(4096)
	if contentLength > limit {
		return nil, 0, errTooLarge{limit}
	}
	if contentLength >= 0 {
		size = contentLength + 1 // room to see EOF without growing
	}
	buf := make([]byte, 0, size)
	var firstByte time.Duration
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		if n > 0 && firstByte == 0 {
			firstByte = max(time.Since(start), 1)
		}
		buf = buf[:len(buf)+n]
		if int64(len(buf)) > limit {
			return nil, firstByte, errTooLarge{limit}
		}
		if err == io.EOF {
			if firstByte == 0 {
				firstByte = max(time.Since(start), 1)
			}
			return buf, firstByte, nil
		}
		if err != nil {
			return nil, firstByte, err
		}
	}
}

// Phases of a call, for failure messages.
const (
	phaseConnect = iota // before the response headers
	phaseBody           // reading a unary body
	phaseStream         // reading a stream
)

// failure classifies err, which ended the call in phase, in a message
// without the call's credentials.
func (c *call) failure(err error, phase int) *provider.Failure {
	f := c.classify(err, phase)
	f.Message = c.secrets.redactString(f.Message)
	return f
}

func (c *call) classify(err error, phase int) *provider.Failure {
	target := redactURL(c.req.URL)
	switch {
	case c.parent.Err() != nil:
		if errors.Is(c.parent.Err(), context.DeadlineExceeded) {
			return &provider.Failure{Kind: provider.FailureTimeout, Message: "the caller's deadline passed before the upstream " + finished(phase)}
		}
		return &provider.Failure{Kind: provider.FailureCanceled, Message: "the request was canceled before the upstream " + finished(phase)}
	case errors.Is(c.ctx.Err(), context.DeadlineExceeded):
		return &provider.Failure{Kind: provider.FailureTimeout, Message: fmt.Sprintf("the upstream %s did not %s within the timeout of %v", target, finish(phase), c.timeout)}
	}
	var tooLarge errTooLarge
	if errors.As(err, &tooLarge) {
		return &provider.Failure{Kind: provider.FailureProtocol, Message: fmt.Sprintf("%s: %v", target, err)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its message repeats the URL, query included
	}
	switch {
	case phase == phaseConnect && strings.Contains(err.Error(), "malformed HTTP"):
		return &provider.Failure{Kind: provider.FailureProtocol, Message: fmt.Sprintf("the upstream %s sent an invalid HTTP response: %v", target, err)}
	case phase == phaseConnect:
		return &provider.Failure{Kind: provider.FailureUnreachable, Message: fmt.Sprintf("cannot reach the upstream %s: %v", target, err)}
	case phase == phaseBody:
		return &provider.Failure{Kind: provider.FailureProtocol, Message: fmt.Sprintf("reading the answer of the upstream %s: %v", target, err)}
	}
	return &provider.Failure{Kind: provider.FailureProtocol, Message: fmt.Sprintf("upstream stream ended before [DONE]: %v", err)}
}

func finished(phase int) string {
	switch phase {
	case phaseConnect:
		return "answered"
	case phaseBody:
		return "finished its answer"
	}
	return "finished the stream"
}

func finish(phase int) string {
	switch phase {
	case phaseConnect:
		return "answer"
	case phaseBody:
		return "finish its answer"
	}
	return "finish the stream"
}

// redactURL returns u without credentials and query: fit for messages.
func redactURL(u *url.URL) string {
	r := url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}
	return r.String()
}

// ListModels lists the upstream's models (GET …/models). Since a model
// list has no place for an upstream status, anything but a 2xx answer in
// OpenAI's list shape is an error here; its message has no secrets.
func (u *Upstream) ListModels(ctx context.Context) ([]provider.Model, error) {
	c, err := u.newCall(ctx, http.MethodGet, EndpointModels, &provider.Request{}, "application/json")
	if err != nil {
		return nil, err
	}
	defer c.cancel()
	resp, err := u.send(c)
	if err != nil {
		return nil, fmt.Errorf("list models: %s", c.failure(err, phaseConnect).Message)
	}
	defer resp.Body.Close()
	body, _, err := readBody(resp.Body, resp.ContentLength, u.o.MaxBodyBytes, c.start)
	if err != nil {
		return nil, fmt.Errorf("list models: %s", c.failure(err, phaseBody).Message)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("list models: the upstream %s answered %d%s", redactURL(c.req.URL), resp.StatusCode, errorSummary(c.secrets.redact(body)))
	}
	var list struct {
		Data []struct {
			ID      string `json:"id"`
			OwnedBy string `json:"owned_by"`
			Created int64  `json:"created"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("list models: the upstream %s answered with an invalid model list: %v", redactURL(c.req.URL), err)
	}
	models := make([]provider.Model, 0, len(list.Data))
	for _, m := range list.Data {
		if m.ID != "" {
			models = append(models, provider.Model{ID: m.ID, OwnedBy: m.OwnedBy, Created: m.Created})
		}
	}
	return models, nil
}

// errorSummary returns ": message (code)" from an OpenAI error body, or "".
func errorSummary(body []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error.Message == "" {
		return ""
	}
	msg := e.Error.Message
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	if e.Error.Code != nil {
		return fmt.Sprintf(": %s (%v)", msg, e.Error.Code)
	}
	return ": " + msg
}

// errorEnvelope is OpenAI's error body.
type errorEnvelope struct {
	Error errorObject `json:"error"`
}

type errorObject struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    string  `json:"code"`
}

// ErrorBody returns an error body in OpenAI's shape:
// {"error":{"message":…,"type":…,"param":null,"code":…}}, for answers a
// provider gives without calling its upstream.
func ErrorBody(message, typ, code string) []byte {
	b, _ := json.Marshal(errorEnvelope{Error: errorObject{Message: message, Type: typ, Code: code}})
	return b
}

// LocalError is an answer a provider gives itself, without calling its
// upstream (for instance when it lacks credentials): an HTTP status and an
// OpenAI error body.
type LocalError struct {
	Status  int
	Message string
	Type    string // OpenAI error type, e.g. "invalid_request_error"
	Code    string // OpenAI error code, e.g. "invalid_api_key"
}

// Response returns e as a unary result.
func (e *LocalError) Response() *provider.Response {
	return &provider.Response{
		Status:  e.Status,
		Headers: map[string]string{"Content-Type": "application/json"},
		Body:    ErrorBody(e.Message, e.Type, e.Code),
	}
}

// Stream answers a stream request with e: a StreamStart with its status,
// and its body in the StreamEnd.
func (e *LocalError) Stream(out provider.StreamSender) (*provider.StreamEnd, error) {
	if err := out.Start(provider.StreamStart{Status: e.Status, Headers: map[string]string{"Content-Type": "application/json"}}); err != nil {
		return &provider.StreamEnd{Failure: receiverStopped(err)}, nil
	}
	return &provider.StreamEnd{Body: ErrorBody(e.Message, e.Type, e.Code)}, nil
}

func receiverStopped(err error) *provider.Failure {
	return &provider.Failure{Kind: provider.FailureCanceled, Message: "the stream's receiver stopped taking events: " + err.Error()}
}
