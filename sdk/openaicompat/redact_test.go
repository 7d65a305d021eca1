package openaicompat

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
)

func TestCredentials(t *testing.T) {
	h := http.Header{}
	h.Set("Authorization", "Bearer sk-long-secret-1")
	h.Set("Api-Key", "az-secret-22")
	h.Set("X-Api-Key", "short") // too short to redact safely
	h.Set("OpenAI-Organization", "org-not-a-secret")
	var got []string
	for _, s := range credentials(h) {
		got = append(got, string(s))
	}
	want := "sk-long-secret-1|az-secret-22"
	if strings.Join(got, "|") != want {
		t.Fatalf("credentials %q, want %s", got, want)
	}
	s := credentials(h)
	if r := string(s.redact([]byte(`{"k":"Bearer sk-long-secret-1","a":"az-secret-22 sk-long-secret-1x"}`))); r != `{"k":"Bearer [redacted]","a":"[redacted] [redacted]x"}` {
		t.Fatalf("redacted %s", r)
	}
	b := []byte("nothing to hide")
	if r := s.redact(b); &r[0] != &b[0] {
		t.Fatal("a body without a credential was copied")
	}
}

// An upstream that reflects the key it was sent — in relayed headers, an
// error body, a 2xx body, a stream event — has it masked before anything
// leaves the plugin; payloads without it pass byte for byte.
func TestUpstreamKeyNeverComesBack(t *testing.T) {
	const quoting = `{"choices":[{"index":0,"delta":{"content":"your key ` + testKey + `"}}]}`
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		_, key, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		w.Header().Set("X-Request-Id", "req-"+key)
		w.Header().Set("X-Ratelimit-Limit-Requests", key)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(string(body), `"stream":true`) && strings.Contains(string(body), "bad"):
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s.","code":"invalid_api_key"}}`, key)
		case strings.Contains(string(body), `"stream":true`):
			startSSE(w)
			writeEvents(w, "data: "+chunk1+"\n\ndata: "+quoting+"\n\ndata: [DONE]\n\n")
		case strings.Contains(string(body), "bad"):
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s.","code":"invalid_api_key"}}`, key)
		default:
			fmt.Fprintf(w, `{"choices":[{"message":{"content":"you are %s"}}]}`, key)
		}
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	ctx := context.Background()
	check := func(what string, headers map[string]string, body string, want string) {
		t.Helper()
		if headers["X-Request-Id"] != "req-"+Redacted || headers["X-Ratelimit-Limit-Requests"] != Redacted {
			t.Errorf("%s: headers %v", what, headers)
		}
		if body != want {
			t.Errorf("%s: body %s, want %s", what, body, want)
		}
	}
	for _, tt := range []struct{ body, want string }{
		{`{"model":"ok"}`, `{"choices":[{"message":{"content":"you are [redacted]"}}]}`},
		{`{"model":"bad"}`, `{"error":{"message":"Incorrect API key provided: [redacted].","code":"invalid_api_key"}}`},
	} {
		resp, err := u.Do(ctx, EndpointChatCompletions, chatRequest(tt.body))
		if err != nil {
			t.Fatal(err)
		}
		check("Do "+tt.body, resp.Headers, string(resp.Body), tt.want)
	}

	rec := &recorder{}
	end, err := u.Stream(ctx, chatRequest(`{"model":"bad","stream":true}`), rec)
	if err != nil || len(rec.starts) != 1 {
		t.Fatalf("stream error: %v, %d starts", err, len(rec.starts))
	}
	check("Stream 401", rec.starts[0].Headers, string(end.Body), `{"error":{"message":"Incorrect API key provided: [redacted].","code":"invalid_api_key"}}`)

	rec = &recorder{}
	end, err = u.Stream(ctx, chatRequest(`{"model":"ok","stream":true}`), rec)
	if err != nil || end.Failure != nil {
		t.Fatalf("stream: %v %+v", err, end)
	}
	got := strings.Join(rec.eventData(), "\n")
	want := strings.Join([]string{chunk1, strings.ReplaceAll(quoting, testKey, Redacted), "[DONE]"}, "\n")
	if got != want {
		t.Fatalf("events\n%s\nwant\n%s", got, want)
	}
	if rec.starts[0].Headers["X-Ratelimit-Limit-Requests"] != Redacted {
		t.Fatalf("stream headers %v", rec.starts[0].Headers)
	}

	// A failure message quoting the key (here: a malformed status line).
	f.setHandler(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		conn, buf, _ := w.(http.Hijacker).Hijack()
		defer conn.Close()
		io.WriteString(buf, "HTTP/1.1 "+testKey+"\r\n\r\n")
		buf.Flush()
	})
	resp, err := u.Do(ctx, EndpointChatCompletions, chatRequest(`{}`))
	if err != nil || resp.Failure == nil {
		t.Fatalf("malformed answer: %v %+v", err, resp)
	}
	if strings.Contains(resp.Failure.Message, testKey) || !strings.Contains(resp.Failure.Message, Redacted) {
		t.Fatalf("failure message %q", resp.Failure.Message)
	}
}

// The cost of masking on the stream path: one scan per credential of an
// event that does not quote it (the common case), without allocating.
func BenchmarkRedactEvent(b *testing.B) {
	h := http.Header{}
	h.Set("Authorization", "Bearer sk-proj-"+strings.Repeat("x", 150))
	s := credentials(h)
	ev := []byte(chunk2)
	b.ReportAllocs()
	b.SetBytes(int64(len(ev)))
	for b.Loop() {
		if out := s.redact(ev); len(out) != len(ev) {
			b.Fatal("changed")
		}
	}
}
