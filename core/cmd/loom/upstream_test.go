package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// mockUpstream is the only mocked part of these tests: an OpenAI- and
// Azure-compatible upstream that records what it receives and what it sends.
// Its behaviour is chosen by the requested model:
//
//	rate-limited  429 with Retry-After
//	server-error  500
//	hang          never answers until the request is cancelled
//	cut           streams two events, then drops the connection
//	slowstream    streams 20 events 100ms apart
//	hangstream    streams one event, then nothing until the request is cancelled
//	huge          a 40 MB answer
//	leak-key      (also azure/leak-key…) a misbehaving upstream that hands the
//	              credential it received back in response headers and the body:
//	              leak-key a 2xx answer or stream, leak-key-401 and leak-key-500
//	              OpenAI's "Incorrect API key provided: …" error
//	anything else a normal answer (stream or not)
//
// Whatever the model, a request's metadata can ask for more:
//
//	metadata.mock_model   the answer names this model instead of the requested
//	                      one (an upstream reporting a model Loom has no price for)
//	metadata.mock_status  the upstream refuses with this HTTP status and an
//	                      OpenAI error body
type mockUpstream struct {
	*httptest.Server
	mu       sync.Mutex
	requests []upstreamRequest
	arrival  chan struct{}       // closed and replaced at each request
	sent     map[string][]string // Loom request id → event payloads sent
	canceled map[string]bool     // Loom request id → the upstream saw its request end early
}

type upstreamRequest struct {
	Method, Path, Query string
	Header              http.Header
	Body                map[string]any
	RawBody             []byte
	RequestID           string // X-Client-Request-Id: Loom's request id
}

func newMockUpstream(t *testing.T) *mockUpstream {
	t.Helper()
	m := &mockUpstream{sent: map[string][]string{}, canceled: map[string]bool{}, arrival: make(chan struct{})}
	m.Server = httptest.NewServer(http.HandlerFunc(m.serve))
	t.Cleanup(m.Close)
	return m
}

func (m *mockUpstream) record(r *http.Request) upstreamRequest {
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	json.Unmarshal(raw, &body)
	ur := upstreamRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(),
		Body: body, RawBody: raw, RequestID: r.Header.Get("X-Client-Request-Id")}
	m.mu.Lock()
	m.requests = append(m.requests, ur)
	close(m.arrival)
	m.arrival = make(chan struct{})
	m.mu.Unlock()
	return ur
}

// waitFor shows match every request the upstream has received and will
// receive, in order, each once, until match returns true; it gives up
// after timeout (a guard against hanging, not a wait).
func (m *mockUpstream) waitFor(timeout time.Duration, match func(upstreamRequest) bool) error {
	guard := time.NewTimer(timeout)
	defer guard.Stop()
	for seen := 0; ; {
		m.mu.Lock()
		fresh, next := m.requests[seen:], m.arrival
		m.mu.Unlock()
		for _, r := range fresh {
			if match(r) {
				return nil
			}
		}
		seen += len(fresh)
		select {
		case <-next:
		case <-guard.C:
			return fmt.Errorf("the upstream did not receive the awaited request within %v (%d received)", timeout, seen)
		}
	}
}

// Requests returns what the upstream received so far.
func (m *mockUpstream) Requests() []upstreamRequest {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]upstreamRequest(nil), m.requests...)
}

// Find returns the request with Loom's request id.
func (m *mockUpstream) Find(requestID string) (upstreamRequest, bool) {
	for _, r := range m.Requests() {
		if r.RequestID == requestID {
			return r, true
		}
	}
	return upstreamRequest{}, false
}

func (m *mockUpstream) Sent(requestID string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.sent[requestID]...)
}

func (m *mockUpstream) Canceled(requestID string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.canceled[requestID]
}

func (m *mockUpstream) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/models") {
		m.record(r)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"gpt-ok","object":"model","created":1700000000,"owned_by":"mock"},{"id":"gpt-4o","object":"model","created":1700000000,"owned_by":"mock"}]}`)
		return
	}
	req := m.record(r)
	model, _ := req.Body["model"].(string)
	stream, _ := req.Body["stream"].(bool)
	meta, _ := req.Body["metadata"].(map[string]any)
	if status, _ := meta["mock_status"].(string); status != "" {
		code, err := strconv.Atoi(status)
		if err != nil || code < 400 || code > 599 {
			code = http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		fmt.Fprintf(w, `{"error":{"message":"The mock refused with %d.","type":"server_error","param":null,"code":null}}`, code)
		return
	}
	if leak := strings.TrimPrefix(model, "azure/"); strings.HasPrefix(leak, "leak-key") {
		m.leakKey(w, r, req, leak, stream)
		return
	}
	w.Header().Set("X-Request-Id", "upstream-req-123")
	w.Header().Set("Openai-Processing-Ms", "12")
	switch model {
	case "rate-limited":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"message":"Rate limit reached for requests","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
		return
	case "server-error":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"message":"The server had an error while processing your request.","type":"server_error","param":null,"code":null}}`)
		return
	case "huge": // a 40 MB answer
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-huge","object":"chat.completion","created":1700000000,"model":"huge","choices":[{"index":0,"message":{"role":"assistant","content":"%s"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`,
			strings.Repeat("x", 40<<20))
		return
	case "hang":
		<-r.Context().Done()
		m.markCanceled(req.RequestID)
		return
	}
	if strings.HasSuffix(r.URL.Path, "/embeddings") {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":3,"total_tokens":3}}`)
		return
	}
	if reply, _ := meta["mock_model"].(string); reply != "" {
		model = reply
	}
	if !stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-mock1","object":"chat.completion","created":1700000000,"model":%q,`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock","refusal":null},"logprobs":null,"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":11,"completion_tokens":4,"total_tokens":15,"prompt_tokens_details":{"cached_tokens":3},"completion_tokens_details":{"reasoning_tokens":0}}}`, model)
		return
	}
	m.stream(w, r, req, model)
}

func (m *mockUpstream) markCanceled(id string) {
	m.mu.Lock()
	m.canceled[id] = true
	m.mu.Unlock()
}

// streamEvents is what a normal stream sends (usage last if asked for).
func streamEvents(model string, includeUsage bool, words int) []string {
	var ev []string
	chunk := func(delta, finish string) string {
		fin := "null"
		if finish != "" {
			fin = fmt.Sprintf("%q", finish)
		}
		return fmt.Sprintf(`{"id":"chatcmpl-mock2","object":"chat.completion.chunk","created":1700000000,"model":%q,"choices":[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]}`, model, delta, fin)
	}
	ev = append(ev, chunk(`{"role":"assistant","content":""}`, ""))
	for i := 0; i < words; i++ {
		ev = append(ev, chunk(fmt.Sprintf(`{"content":"word%d "}`, i), ""))
	}
	ev = append(ev, chunk(`{}`, "stop"))
	if includeUsage {
		ev = append(ev, fmt.Sprintf(`{"id":"chatcmpl-mock2","object":"chat.completion.chunk","created":1700000000,"model":%q,"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":%d,"total_tokens":%d}}`, model, words, 9+words))
	}
	return append(ev, "[DONE]")
}

func (m *mockUpstream) stream(w http.ResponseWriter, r *http.Request, req upstreamRequest, model string) {
	opts, _ := req.Body["stream_options"].(map[string]any)
	includeUsage, _ := opts["include_usage"].(bool)
	words, gap := 5, 2*time.Millisecond
	if model == "slowstream" {
		words, gap = 20, 100*time.Millisecond
	}
	events := streamEvents(model, includeUsage, words)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	flusher := w.(http.Flusher)
	bw := bufio.NewWriter(w)
	for i, ev := range events {
		if model == "cut" && i == 2 {
			bw.Flush()
			flusher.Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			return
		}
		// Alternate line endings: the relay must pass payloads through whatever the framing.
		if i%2 == 0 {
			fmt.Fprintf(bw, "data: %s\n\n", ev)
		} else {
			fmt.Fprintf(bw, ": keep-alive comment\r\ndata: %s\r\n\r\n", ev)
		}
		bw.Flush()
		flusher.Flush()
		m.mu.Lock()
		m.sent[req.RequestID] = append(m.sent[req.RequestID], ev)
		m.mu.Unlock()
		if model == "hangstream" {
			<-r.Context().Done()
			m.markCanceled(req.RequestID)
			return
		}
		select {
		case <-r.Context().Done():
			m.markCanceled(req.RequestID)
			return
		case <-time.After(gap):
		}
	}
}

// leakedSecret is the credential a request carried: the Bearer token, or
// Azure's api-key.
func leakedSecret(r *http.Request) string {
	if _, tok, ok := strings.Cut(r.Header.Get("Authorization"), " "); ok {
		return tok
	}
	return r.Header.Get("Api-Key")
}

// leakKey answers as an upstream that should never be trusted with its own
// key: it reflects it in relayed and other response headers, and in the
// body — OpenAI's "Incorrect API key" error (leak-key-401, leak-key-500), or
// a completion whose content, and one stream event, quote it (leak-key).
func (m *mockUpstream) leakKey(w http.ResponseWriter, r *http.Request, req upstreamRequest, model string, stream bool) {
	secret := leakedSecret(r)
	h := w.Header()
	h.Set("X-Request-Id", "req-"+secret)
	h.Set("X-Ratelimit-Remaining-Requests", secret)
	h.Set("Openai-Organization", secret)
	h.Set("Authorization", "Bearer "+secret)
	h.Set("Api-Key", secret)
	h.Set("Set-Cookie", "session="+secret)
	h.Set("X-Echoed-Key", secret)
	h.Set("Content-Type", "application/json")
	switch model {
	case "leak-key-401":
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`, secret)
		return
	case "leak-key-500":
		w.WriteHeader(http.StatusInternalServerError)
		fmt.Fprintf(w, `{"error":{"message":"The server had an error while processing the request of key %s.","type":"server_error","param":null,"code":null}}`, secret)
		return
	}
	if !stream {
		fmt.Fprintf(w, `{"id":"chatcmpl-leak","object":"chat.completion","created":1700000000,"model":"leak-key",`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"You called with %s","refusal":null},"logprobs":null,"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":5,"completion_tokens":4,"total_tokens":9}}`, secret)
		return
	}
	opts, _ := req.Body["stream_options"].(map[string]any)
	includeUsage, _ := opts["include_usage"].(bool)
	events := streamEvents("leak-key", includeUsage, 3)
	quote := `{"id":"chatcmpl-mock2","object":"chat.completion.chunk","created":1700000000,"model":"leak-key","choices":[{"index":0,"delta":{"content":"key ` + secret + ` "},"logprobs":null,"finish_reason":null}]}`
	events = append(events[:2], append([]string{quote}, events[2:]...)...)
	h.Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	for _, ev := range events {
		fmt.Fprintf(w, "data: %s\n\n", ev)
		w.(http.Flusher).Flush()
		m.mu.Lock()
		m.sent[req.RequestID] = append(m.sent[req.RequestID], ev)
		m.mu.Unlock()
	}
}
