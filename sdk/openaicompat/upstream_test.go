package openaicompat

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

const testKey = "sk-test-SECRET-key"

// received is a request the fake upstream got.
type received struct {
	method, path, query string
	header              http.Header
	body                []byte
}

// fake is an httptest server whose handler a test sets, recording every
// request.
type fake struct {
	*httptest.Server
	mu       sync.Mutex
	handler  func(w http.ResponseWriter, r *http.Request, body []byte)
	requests []received
	done     chan struct{} // closed at cleanup, releases blocked handlers
}

func newFake(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte)) *fake {
	t.Helper()
	return newFakeWith(t, h, nil)
}

// newFakeWith is newFake with a chance to configure the server before it
// starts.
func newFakeWith(t *testing.T, h func(w http.ResponseWriter, r *http.Request, body []byte), configure func(*httptest.Server)) *fake {
	t.Helper()
	f := &fake{handler: h, done: make(chan struct{})}
	f.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.requests = append(f.requests, received{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Clone(), body})
		h := f.handler
		f.mu.Unlock()
		h(w, r, body)
	}))
	if configure != nil {
		configure(f.Server)
	}
	f.Start()
	t.Cleanup(func() {
		close(f.done)
		f.Close()
	})
	return f
}

func (f *fake) setHandler(h func(w http.ResponseWriter, r *http.Request, body []byte)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.handler = h
}

func (f *fake) received() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.requests...)
}

// upstreamFor returns an Upstream calling base + "/v1/<endpoint>", with a
// bearer key.
func upstreamFor(t testing.TB, base string, o UpstreamOptions) *Upstream {
	t.Helper()
	if o.URL == nil {
		o.URL = func(endpoint, model string) (string, error) { return base + "/v1/" + endpoint, nil }
	}
	if o.SetHeaders == nil {
		o.SetHeaders = func(h http.Header) { h.Set("Authorization", "Bearer "+testKey) }
	}
	if o.Client == nil {
		o.Client = NewHTTPClient(ClientOptions{})
		t.Cleanup(o.Client.CloseIdleConnections)
	}
	u, err := NewUpstream(o)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func chatRequest(body string) *provider.Request {
	return &provider.Request{RequestID: "0190f3c2-6c1e-7c3a-9d4e-5a6b7c8d9e0f", Model: "gpt-4o-mini", Body: []byte(body)}
}

const chatBody = `{"model": "gpt-4o-mini" ,"messages":[{"role":"user","content":"Say \"hi\" \u00e9"}], "max_tokens":1e2}` + "\n"

const answerBody = `{
  "id": "chatcmpl-1",
  "object": "chat.completion",
  "model": "gpt-4o-mini-2024-07-18",
  "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi \"usage\": {}"}, "finish_reason": "stop"}],
  "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
    "prompt_tokens_details": {"cached_tokens": 3}, "completion_tokens_details": {"reasoning_tokens": 4}}
}
`

func TestDoSendsRequestUnchanged(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answerBody)
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{UserAgent: "loom-test/1"})
	req := chatRequest(chatBody)
	req.Headers = map[string]string{
		"OpenAI-Beta":         "assistants=v2",
		"authorization":       "Bearer loom_clientkey",
		"Api-Key":             "loom_clientkey",
		"X-Api-Key":           "loom_clientkey",
		"X-Loom-Tenant":       "acme",
		"Content-Type":        "text/plain",
		"X-Client-Request-Id": "spoofed",
		"X-Bad":               "a\r\nInjected: yes",
		"Host":                "evil.example",
	}
	resp, err := u.Do(context.Background(), EndpointChatCompletions, req)
	if err != nil || resp.Failure != nil {
		t.Fatalf("Do: %v %+v", err, resp.Failure)
	}
	got := f.received()
	if len(got) != 1 {
		t.Fatalf("%d requests", len(got))
	}
	r := got[0]
	if r.method != http.MethodPost || r.path != "/v1/chat/completions" {
		t.Errorf("request %s %s", r.method, r.path)
	}
	if !bytes.Equal(r.body, []byte(chatBody)) {
		t.Errorf("body %q, want %q", r.body, chatBody)
	}
	want := map[string]string{
		"Authorization":       "Bearer " + testKey,
		"Content-Type":        "application/json",
		"Accept":              "application/json",
		"Openai-Beta":         "assistants=v2",
		"X-Client-Request-Id": req.RequestID,
		"User-Agent":          "loom-test/1",
		"Api-Key":             "",
		"X-Api-Key":           "",
		"X-Loom-Tenant":       "",
		"X-Bad":               "",
		"Injected":            "",
		"X-Request-Id":        "",
	}
	for k, v := range want {
		if g := r.header.Get(k); g != v {
			t.Errorf("upstream header %s = %q, want %q", k, g, v)
		}
	}
	if vs := r.header.Values("Authorization"); len(vs) != 1 {
		t.Errorf("Authorization sent %d times: %q", len(vs), vs)
	}
	for k, vs := range r.header {
		for _, v := range vs {
			if strings.Contains(v, "loom_") {
				t.Errorf("a Loom key reached the upstream in %s: %q", k, v)
			}
		}
	}
}

func TestDoSuccess(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("X-Request-Id", "req_123")
		h.Set("Apim-Request-Id", "apim-1")
		h.Set("Openai-Processing-Ms", "42")
		h.Set("Openai-Version", "2020-10-01")
		h.Set("X-Ratelimit-Remaining-Tokens", "999")
		h.Set("x-ratelimit-reset-requests", "1s")
		h.Set("Set-Cookie", "session=1")
		h.Set("Server", "fake")
		h.Set("Openai-Organization", "org-secret")
		io.WriteString(w, answerBody)
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	resp, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest(chatBody))
	if err != nil || resp.Failure != nil {
		t.Fatalf("Do: %v %+v", err, resp.Failure)
	}
	if resp.Status != 200 || string(resp.Body) != answerBody {
		t.Errorf("status %d body %q", resp.Status, resp.Body)
	}
	wantHeaders := map[string]string{
		"Content-Type":                 "application/json",
		"X-Request-Id":                 "req_123",
		"Apim-Request-Id":              "apim-1",
		"Openai-Processing-Ms":         "42",
		"Openai-Version":               "2020-10-01",
		"X-Ratelimit-Remaining-Tokens": "999",
		"X-Ratelimit-Reset-Requests":   "1s",
	}
	if !equalMaps(resp.Headers, wantHeaders) {
		t.Errorf("headers %v, want %v", resp.Headers, wantHeaders)
	}
	wantUsage := provider.Usage{PromptTokens: 19, CompletionTokens: 10, TotalTokens: 29, CachedPromptTokens: 3, ReasoningTokens: 4}
	if resp.Usage == nil || *resp.Usage != wantUsage {
		t.Errorf("usage %+v, want %+v", resp.Usage, wantUsage)
	}
	if resp.Model != "gpt-4o-mini-2024-07-18" {
		t.Errorf("model %q", resp.Model)
	}
	if resp.Timings.FirstByte <= 0 || resp.Timings.FirstByte > resp.Timings.Total {
		t.Errorf("timings %+v", resp.Timings)
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestDoEmbeddingsAndEmptyBody(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.HasSuffix(r.URL.Path, "/embeddings") {
			io.WriteString(w, `{"object":"list","data":[],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}`)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	resp, err := u.Do(context.Background(), EndpointEmbeddings, chatRequest(`{"input":"x"}`))
	if err != nil || resp.Failure != nil {
		t.Fatalf("Do: %v %+v", err, resp.Failure)
	}
	if resp.Usage == nil || *resp.Usage != (provider.Usage{PromptTokens: 5, TotalTokens: 5}) || resp.Model != "text-embedding-3-small" {
		t.Errorf("usage %+v model %q", resp.Usage, resp.Model)
	}
	resp, err = u.Do(context.Background(), EndpointChatCompletions, chatRequest(`{}`))
	if err != nil || resp.Failure != nil || resp.Status != 204 || len(resp.Body) != 0 || resp.Usage != nil {
		t.Fatalf("empty answer: %v %+v", err, resp)
	}
	if resp.Timings.FirstByte <= 0 {
		t.Errorf("timings %+v", resp.Timings)
	}
}

func TestDoUpstreamErrorIsAResult(t *testing.T) {
	for _, status := range []int{400, 401, 404, 429, 500, 503, 307} {
		errBody := `{"error":{"message":"nope","type":"x","param":null,"code":"y"}}`
		f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "7")
			w.Header().Set("Retry-After-Ms", "6500")
			w.Header().Set("Location", "http://elsewhere.example/")
			w.WriteHeader(status)
			io.WriteString(w, errBody)
		})
		u := upstreamFor(t, f.URL, UpstreamOptions{})
		resp, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest(chatBody))
		if err != nil {
			t.Fatalf("%d: error %v", status, err)
		}
		if resp.Failure != nil || resp.Status != status || string(resp.Body) != errBody || resp.Usage != nil {
			t.Errorf("%d: got %+v", status, resp)
		}
		if resp.Headers["Retry-After"] != "7" || resp.Headers["Retry-After-Ms"] != "6500" {
			t.Errorf("%d: headers %v", status, resp.Headers)
		}
		if n := len(f.received()); n != 1 {
			t.Errorf("%d: the upstream got %d requests (a redirect must not be followed)", status, n)
		}
	}
}

func TestDoTimeout(t *testing.T) {
	// One upstream never answers; the other sends headers, then stalls.
	for _, stallBody := range []bool{false, true} {
		f := newFake(t, nil)
		f.setHandler(func(w http.ResponseWriter, r *http.Request, body []byte) {
			if stallBody {
				w.WriteHeader(200)
				io.WriteString(w, `{"partial":`)
				w.(http.Flusher).Flush()
			}
			select {
			case <-r.Context().Done():
			case <-f.done:
			}
		})
		for _, perRequest := range []bool{true, false} {
			o := UpstreamOptions{}
			req := chatRequest(chatBody)
			if perRequest {
				req.Timeout = 200 * time.Millisecond
				o.Timeout = time.Hour
			} else {
				o.Timeout = 200 * time.Millisecond
			}
			u := upstreamFor(t, f.URL, o)
			start := time.Now()
			resp, err := u.Do(context.Background(), EndpointChatCompletions, req)
			elapsed := time.Since(start)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Failure == nil || resp.Failure.Kind != provider.FailureTimeout || resp.Status != 0 {
				t.Errorf("stallBody=%v perRequest=%v: got %+v, failure %+v", stallBody, perRequest, resp, resp.Failure)
			} else if !strings.Contains(resp.Failure.Message, "200ms") {
				t.Errorf("message %q does not name the timeout", resp.Failure.Message)
			}
			if elapsed > 3*time.Second {
				t.Errorf("took %v", elapsed)
			}
		}
	}
}

func TestDoCanceled(t *testing.T) {
	f := newFake(t, nil)
	f.setHandler(func(w http.ResponseWriter, r *http.Request, body []byte) {
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	resp, err := u.Do(ctx, EndpointChatCompletions, chatRequest(chatBody))
	if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureCanceled {
		t.Fatalf("got %v %+v", err, resp)
	}
	// A deadline of the caller's own is a timeout, not a cancellation.
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	resp, err = u.Do(ctx, EndpointChatCompletions, chatRequest(chatBody))
	if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureTimeout {
		t.Fatalf("got %v %+v", err, resp)
	}
}

// closedURL is the base URL of a local port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func TestDoUnreachable(t *testing.T) {
	base := closedURL(t)
	u := upstreamFor(t, base, UpstreamOptions{URL: func(endpoint, model string) (string, error) {
		return base + "/openai/deployments/d/" + endpoint + "?api-version=2024-10-21&sig=SECRETSIG", nil
	}})
	resp, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest(chatBody))
	if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureUnreachable || resp.Status != 0 {
		t.Fatalf("got %v %+v", err, resp)
	}
	msg := resp.Failure.Message
	if strings.Contains(msg, "SECRET") || strings.Contains(msg, "?") || !strings.Contains(msg, "/openai/deployments/d/chat/completions") {
		t.Errorf("message %q: want the URL without its query", msg)
	}
	// DNS failure.
	u = upstreamFor(t, "http://loom-test.invalid", UpstreamOptions{})
	resp, _ = u.Do(context.Background(), EndpointChatCompletions, chatRequest(chatBody))
	if resp.Failure == nil || resp.Failure.Kind != provider.FailureUnreachable {
		t.Errorf("DNS failure: %+v", resp.Failure)
	}
}

func TestDoConnectionClosedBeforeAnswer(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		conn.Close()
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	resp, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest(chatBody))
	if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureUnreachable {
		t.Fatalf("got %v %+v", err, resp)
	}
}

func TestDoMalformedAnswer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			c.Read(buf)
			io.WriteString(c, "SPEAKING NONSENSE\r\n\r\n")
			c.Close()
		}
	}()
	u := upstreamFor(t, "http://"+l.Addr().String(), UpstreamOptions{})
	resp, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest(chatBody))
	if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureProtocol {
		t.Fatalf("got %v %+v", err, resp.Failure)
	}
}

func TestDoBodyTooLarge(t *testing.T) {
	for _, chunked := range []bool{false, true} {
		f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
			if !chunked {
				w.Header().Set("Content-Length", "2000")
			}
			w.Write(bytes.Repeat([]byte("x"), 2000))
		})
		u := upstreamFor(t, f.URL, UpstreamOptions{MaxBodyBytes: 1000})
		resp, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest(chatBody))
		if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureProtocol || !strings.Contains(resp.Failure.Message, "larger than 1000 bytes") {
			t.Fatalf("chunked=%v: got %v %+v", chunked, err, resp.Failure)
		}
	}
}

func TestConfigurationFaultsAreErrors(t *testing.T) {
	if _, err := NewUpstream(UpstreamOptions{}); err == nil {
		t.Error("NewUpstream without URL: no error")
	}
	for _, url := range []string{"", "/v1/chat/completions", "ftp://host/x", "http://[::1"} {
		u := upstreamFor(t, "", UpstreamOptions{URL: func(string, string) (string, error) { return url, nil }})
		if _, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest("{}")); err == nil {
			t.Errorf("URL %q: no error", url)
		}
	}
	u := upstreamFor(t, "", UpstreamOptions{URL: func(string, string) (string, error) { return "", errors.New("no deployment") }})
	if _, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest("{}")); err == nil || !strings.Contains(err.Error(), "no deployment") {
		t.Errorf("URL error: %v", err)
	}
	if _, err := u.Do(context.Background(), EndpointChatCompletions, nil); err == nil {
		t.Error("nil request: no error")
	}
}

func TestListModels(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Header.Get("Authorization") != "Bearer "+testKey {
			w.WriteHeader(401)
			io.WriteString(w, `{"error":{"message":"Incorrect API key provided: sk-***","type":"invalid_request_error","code":"invalid_api_key"}}`)
			return
		}
		io.WriteString(w, `{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1715367049,"owned_by":"system"},{"id":""}]}`)
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	models, err := u.ListModels(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 1 || models[0] != (provider.Model{ID: "gpt-4o", OwnedBy: "system", Created: 1715367049}) {
		t.Errorf("models %+v", models)
	}
	r := f.received()[0]
	if r.method != http.MethodGet || r.path != "/v1/models" || len(r.body) != 0 {
		t.Errorf("request %s %s %q", r.method, r.path, r.body)
	}
	bad := upstreamFor(t, f.URL, UpstreamOptions{SetHeaders: func(h http.Header) { h.Set("Authorization", "Bearer wrong-SECRET") }})
	_, err = bad.ListModels(context.Background())
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "invalid_api_key") || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("err = %v", err)
	}
	_, err = upstreamFor(t, closedURL(t), UpstreamOptions{}).ListModels(context.Background())
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("unreachable: %v", err)
	}
}

func TestLocalError(t *testing.T) {
	e := &LocalError{Status: 401, Message: `no "api_key" <configured>`, Type: "invalid_request_error", Code: "invalid_api_key"}
	resp := e.Response()
	want := `{"error":{"message":"no \"api_key\" \u003cconfigured\u003e","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`
	if resp.Status != 401 || string(resp.Body) != want || resp.Headers["Content-Type"] != "application/json" {
		t.Errorf("response %+v %s", resp, resp.Body)
	}
	rec := &recorder{}
	end, err := e.Stream(rec)
	if err != nil || string(end.Body) != want || len(rec.starts) != 1 || rec.starts[0].Status != 401 || len(rec.events) != 0 {
		t.Errorf("stream: %v %+v %+v", err, end, rec)
	}
}

func TestNewHTTPClient(t *testing.T) {
	c := NewHTTPClient(ClientOptions{})
	tr := c.Transport.(*http.Transport)
	if c.Timeout != 0 || tr.ResponseHeaderTimeout != 0 {
		t.Error("an overall or response-header timeout would cut long streams")
	}
	if tr.Proxy != nil || !tr.ForceAttemptHTTP2 || tr.MaxIdleConnsPerHost != 256 || tr.TLSHandshakeTimeout != 10*time.Second || tr.DisableKeepAlives {
		t.Errorf("transport %+v", tr)
	}
	c = NewHTTPClient(ClientOptions{MaxIdleConnsPerHost: 8, TLSHandshakeTimeout: time.Second})
	tr = c.Transport.(*http.Transport)
	if tr.MaxIdleConnsPerHost != 8 || tr.TLSHandshakeTimeout != time.Second {
		t.Errorf("options not applied: %+v", tr)
	}
}

// TestHTTP2 checks the client speaks HTTP/2 to a TLS upstream offering it,
// custom TLS configuration included.
func TestHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
		io.WriteString(w, `{"model":"m"}`)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the bad certificate check makes it complain
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	client := NewHTTPClient(ClientOptions{TLSConfig: &tls.Config{RootCAs: pool}})
	defer client.CloseIdleConnections()
	u := upstreamFor(t, srv.URL, UpstreamOptions{Client: client})
	resp, err := u.Do(context.Background(), EndpointChatCompletions, chatRequest("{}"))
	if err != nil || resp.Failure != nil || resp.Status != 200 {
		t.Fatalf("%v %+v", err, resp)
	}
	res, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2", res.Proto)
	}
	// An untrusted certificate is a failure to reach the upstream.
	u = upstreamFor(t, srv.URL, UpstreamOptions{})
	resp, _ = u.Do(context.Background(), EndpointChatCompletions, chatRequest("{}"))
	if resp.Failure == nil || resp.Failure.Kind != provider.FailureUnreachable {
		t.Errorf("bad certificate: %+v", resp.Failure)
	}
}

func TestRelayedHeader(t *testing.T) {
	for name, want := range map[string]bool{
		"content-type": true, "Retry-After": true, "retry-after-ms": true, "x-ratelimit-limit-tokens": true,
		"X-RateLimit-Remaining-Requests": true, "openai-processing-ms": true, "openai-version": true,
		"x-request-id": true, "apim-request-id": true,
		"x-ratelimit-": false, "set-cookie": false, "content-length": false, "openai-organization": false,
		"authorization": false, "server": false, "content-encoding": false,
	} {
		if got := RelayedHeader(name); got != want {
			t.Errorf("RelayedHeader(%q) = %v", name, got)
		}
	}
}
