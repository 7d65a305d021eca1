package relay

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/loom-runtime/loom/sdk/provider"
)

// upstreamHeaders is what the OpenAI plugin relays from a typical answer.
var upstreamHeaders = map[string]string{
	"Content-Type":                   "application/json",
	"X-Request-Id":                   "req_0123456789abcdef",
	"Openai-Processing-Ms":           "312",
	"Openai-Version":                 "2020-10-01",
	"X-Ratelimit-Limit-Requests":     "10000",
	"X-Ratelimit-Remaining-Requests": "9999",
	"X-Ratelimit-Reset-Requests":     "6ms",
}

// BenchmarkCopyHeaders is the header work of every relayed answer.
func BenchmarkCopyHeaders(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		h := make(http.Header, 8)
		CopyHeaders(h, upstreamHeaders)
	}
}

// BenchmarkStreamSend relays a 20-chunk stream (start, events, [DONE]) to
// a recorder, tapped as the trace capture does.
func BenchmarkStreamSend(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}`)
	start := provider.StreamStart{Status: 200, Headers: upstreamHeaders}
	var tapped int
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		s := NewStream(w, false, nil)
		s.Tap = func(data []byte) { tapped += len(data) }
		if err := s.Start(start); err != nil {
			b.Fatal(err)
		}
		for range 20 {
			if err := s.Send(provider.Event{Data: chunk}); err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Send(provider.Event{Data: []byte("[DONE]")}); err != nil {
			b.Fatal(err)
		}
	}
}
