package providertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// UpstreamHandler answers one request to a FakeUpstream. body is the
// request body, already read.
type UpstreamHandler func(w http.ResponseWriter, r *http.Request, body []byte)

// UpstreamRequest is a request a FakeUpstream received.
type UpstreamRequest struct {
	// Request is a copy of the request: method, URL (path and query),
	// headers. Its Body is empty and its context is not the original's.
	Request *http.Request
	// Body is the request body as received.
	Body []byte
}

// FakeUpstream is an OpenAI-compatible HTTP server for provider tests.
//
// By default it answers POST …/chat/completions (a chat.completion, or an
// SSE stream of chat.completion.chunk events when the body has
// "stream": true), POST …/embeddings and GET …/models with canned bodies in
// OpenAI's shapes, whatever comes before those suffixes, so OpenAI-style
// ("/v1/chat/completions") and Azure-style
// ("/openai/deployments/D/chat/completions?api-version=…") paths both work.
// Other paths get a 404 with an OpenAI error body. SetHandler replaces this
// behaviour. Every request is recorded (see Requests).
type FakeUpstream struct {
	// URL is the server's base URL, "http://127.0.0.1:PORT", no trailing
	// slash.
	URL string

	srv  *httptest.Server
	done chan struct{} // closed at cleanup: releases blocked handlers

	mu       sync.Mutex
	handler  UpstreamHandler
	requests []UpstreamRequest
}

// NewFakeUpstream starts a FakeUpstream, closed when the test ends.
func NewFakeUpstream(t testing.TB) *FakeUpstream {
	t.Helper()
	u := &FakeUpstream{done: make(chan struct{})}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	u.URL = u.srv.URL
	t.Cleanup(u.Close)
	return u
}

// Close releases handlers still waiting (see Done) and stops the server.
// It is safe to call more than once.
func (u *FakeUpstream) Close() {
	u.mu.Lock()
	select {
	case <-u.done:
	default:
		close(u.done)
	}
	u.mu.Unlock()
	u.srv.Close()
}

// Done is closed when the upstream is closing. A handler that waits for
// something (a client that goes away, a test step) must also give up when
// Done is closed, or Close blocks.
func (u *FakeUpstream) Done() <-chan struct{} { return u.done }

// SetHandler makes h answer the requests from now on; nil restores the
// default OpenAI behaviour.
func (u *FakeUpstream) SetHandler(h UpstreamHandler) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.handler = h
}

// Requests returns the requests received so far, oldest first.
func (u *FakeUpstream) Requests() []UpstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]UpstreamRequest(nil), u.requests...)
}

func (u *FakeUpstream) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	rec := r.Clone(context.Background())
	rec.Body = http.NoBody
	u.mu.Lock()
	u.requests = append(u.requests, UpstreamRequest{Request: rec, Body: body})
	h := u.handler
	u.mu.Unlock()
	if h == nil {
		h = defaultUpstream
	}
	h(w, r, body)
}

// defaultUpstream is FakeUpstream's OpenAI behaviour.
func defaultUpstream(w http.ResponseWriter, r *http.Request, body []byte) {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/chat/completions"):
		var req struct {
			Stream bool `json:"stream"`
		}
		_ = json.Unmarshal(body, &req)
		if req.Stream {
			writeStream(w, upstreamStream)
			return
		}
		writeJSON(w, http.StatusOK, upstreamChatBody)
	case r.Method == http.MethodPost && strings.HasSuffix(path, "/embeddings"):
		writeJSON(w, http.StatusOK, upstreamEmbeddingsBody)
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/models"):
		writeJSON(w, http.StatusOK, upstreamModelsBody)
	default:
		writeJSON(w, http.StatusNotFound, `{"error":{"message":"fake upstream: no route for `+r.Method+` `+path+`","type":"invalid_request_error","param":null,"code":"not_found"}}`)
	}
}

// upstreamHeaders are sent with every canned answer.
var upstreamHeaders = map[string]string{
	"X-Request-Id":                   "req_fakeupstream",
	"Openai-Processing-Ms":           "12",
	"X-Ratelimit-Remaining-Requests": "99",
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	for k, v := range upstreamHeaders {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// writeStream sends raw SSE bytes, flushing after each event so the client
// sees them as separate reads.
func writeStream(w http.ResponseWriter, raw string) {
	startStream(w)
	for _, chunk := range splitEvents(raw) {
		_, _ = io.WriteString(w, chunk)
		flush(w)
	}
}

func startStream(w http.ResponseWriter) {
	for k, v := range upstreamHeaders {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	flush(w)
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// splitEvents cuts raw SSE text after each blank line (LF or CRLF), keeping
// every byte.
func splitEvents(raw string) []string {
	var out []string
	for raw != "" {
		i := -1
		for _, sep := range []string{"\r\n\r\n", "\n\n", "\n\r\n", "\r\n\n"} {
			if j := strings.Index(raw, sep); j >= 0 && (i < 0 || j+len(sep) < i) {
				i = j + len(sep)
			}
		}
		if i < 0 {
			i = len(raw)
		}
		out = append(out, raw[:i])
		raw = raw[i:]
	}
	return out
}

// The canned upstream answers. The model the upstream "used" differs from
// the one requested, as OpenAI's dated snapshots do, so a provider that
// reports the requested model instead of the upstream's is caught.
const upstreamModel = "gpt-fake-2024-08-06"

// upstreamChatBody is pretty-printed, like OpenAI's: a provider that
// re-encodes it instead of passing it through is caught.
const upstreamChatBody = `{
  "id": "chatcmpl-fakeupstream",
  "object": "chat.completion",
  "created": 1723000000,
  "model": "gpt-fake-2024-08-06",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello from the fake upstream \u2713 <b>&amp;</b>",
        "refusal": null
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 3,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 4,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "system_fingerprint": "fp_fake"
}
`

// The usage of upstreamChatBody.
var upstreamChatUsage = usageOf(19, 10, 29, 3, 4)

const upstreamEmbeddingsBody = `{
  "object": "list",
  "data": [
    {"object": "embedding", "index": 0, "embedding": [0.0023064255, -0.009327292, 0.015797347]},
    {"object": "embedding", "index": 1, "embedding": [-0.0028842222, 0.011932109, -0.0030421433]}
  ],
  "model": "text-embedding-fake-002",
  "usage": {"prompt_tokens": 5, "total_tokens": 5}
}
`

const upstreamModelsBody = `{"object":"list","data":[{"id":"gpt-fake-2024-08-06","object":"model","created":1723000000,"owned_by":"fake-upstream"},{"id":"text-embedding-fake-002","object":"model","created":1671217299,"owned_by":"fake-upstream"}]}`

// streamEvent is one event of upstreamStream: its raw bytes on the wire
// and the data payload a provider must report.
type streamEvent struct {
	raw       string
	data      string
	usageOnly bool
}

// upstreamEvents is the canned stream: a comment, CRLF and LF line endings,
// an event with three data lines (the second with two spaces after the
// colon: only one is removed), a usage-only chunk and [DONE].
var upstreamEvents = []streamEvent{
	{
		raw: ": fake upstream keep-alive\r\n\r\n",
	},
	{
		raw:  "data: " + chunk(`{"role":"assistant","content":"","refusal":null}`, "null") + "\r\n\r\n",
		data: chunk(`{"role":"assistant","content":"","refusal":null}`, "null"),
	},
	{
		raw:  "data: " + chunk(`{"content":"Hel"}`, "null") + "\n\n",
		data: chunk(`{"content":"Hel"}`, "null"),
	},
	{
		raw: "data: {\"id\":\"chatcmpl-fakestream\",\"object\":\"chat.completion.chunk\",\r\n" +
			"data:  \"created\":1723000000,\"model\":\"gpt-fake-2024-08-06\",\r\n" +
			"data: \"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u2713\"},\"finish_reason\":null}]}\r\n\r\n",
		data: "{\"id\":\"chatcmpl-fakestream\",\"object\":\"chat.completion.chunk\",\n" +
			" \"created\":1723000000,\"model\":\"gpt-fake-2024-08-06\",\n" +
			"\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo \\u2713\"},\"finish_reason\":null}]}",
	},
	{
		raw:  "data: " + chunk(`{}`, `"stop"`) + "\n\n",
		data: chunk(`{}`, `"stop"`),
	},
	{
		raw:       "data: " + usageChunk + "\n\n",
		data:      usageChunk,
		usageOnly: true,
	},
	{
		raw:  "data: [DONE]\n\n",
		data: "[DONE]",
	},
}

const usageChunk = `{"id":"chatcmpl-fakestream","object":"chat.completion.chunk","created":1723000000,"model":"gpt-fake-2024-08-06","system_fingerprint":"fp_fake","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":3,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":5},"completion_tokens_details":{"reasoning_tokens":1}}}`

// The usage of usageChunk.
var upstreamStreamUsage = usageOf(21, 3, 24, 5, 1)

func chunk(delta, finish string) string {
	return `{"id":"chatcmpl-fakestream","object":"chat.completion.chunk","created":1723000000,"model":"gpt-fake-2024-08-06","system_fingerprint":"fp_fake","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":` + finish + `}]}`
}

var upstreamStream = func() string {
	var b bytes.Buffer
	for _, e := range upstreamEvents {
		b.WriteString(e.raw)
	}
	return b.String()
}()

// upstreamErrorBody is the body of every canned error answer.
func upstreamErrorBody(status int) string {
	return `{"error":{"message":"fake upstream error ` + http.StatusText(status) + `","type":"fake_error","param":null,"code":"fake_` + strings.ReplaceAll(strings.ToLower(http.StatusText(status)), " ", "_") + `"}}`
}
