package openaicompat

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/loom-runtime/loom/sdk/provider"
)

// discard is a StreamSender that drops everything.
type discard struct{ n int }

func (*discard) Start(provider.StreamStart) error { return nil }
func (d *discard) Send(provider.Event) error      { d.n++; return nil }

// benchStream is an OpenAI stream of n content chunks (with "usage":null,
// as OpenAI sends when usage is requested), a usage chunk and [DONE].
func benchStream(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, "data: {\"id\":\"chatcmpl-AbC123\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_0ba0d124f1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"token%d \"},\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\n\n", i)
	}
	b.WriteString("data: " + usageOnly + "\n\ndata: [DONE]\n\n")
	return b.Bytes()
}

// BenchmarkRelay measures the relay path alone (SSE parsing, usage
// detection, Send) on an in-memory body of 1000 chunks.
func BenchmarkRelay(b *testing.B) {
	stream := benchStream(1000)
	u := upstreamFor(b, "http://127.0.0.1:1", UpstreamOptions{})
	b.ReportAllocs()
	b.SetBytes(int64(len(stream)))
	for b.Loop() {
		c, err := u.newCall(context.Background(), http.MethodPost, EndpointChatCompletions, chatRequest("{}"), "text/event-stream")
		if err != nil {
			b.Fatal(err)
		}
		d := &discard{}
		end := u.relay(c, io.NopCloser(bytes.NewReader(stream)), d)
		c.cancel()
		if end.Failure != nil || end.Usage == nil || d.n != 1002 {
			b.Fatalf("%+v %d", end.Failure, d.n)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1002), "ns/event")
}

// BenchmarkStreamHTTP measures a whole stream call over loopback HTTP: 100
// chunks per call.
func BenchmarkStreamHTTP(b *testing.B) {
	stream := benchStream(100)
	srv := newBenchServer(b, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.Write(stream)
	})
	u := upstreamFor(b, srv, UpstreamOptions{})
	req := chatRequest(chatBody)
	b.ReportAllocs()
	for b.Loop() {
		end, err := u.Stream(context.Background(), req, &discard{})
		if err != nil || end.Failure != nil {
			b.Fatal(err, end.Failure)
		}
	}
}

func BenchmarkDo(b *testing.B) {
	srv := newBenchServer(b, func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answerBody)
	})
	u := upstreamFor(b, srv, UpstreamOptions{})
	req := chatRequest(chatBody)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := u.Do(context.Background(), EndpointChatCompletions, req)
		if err != nil || resp.Failure != nil {
			b.Fatal(err, resp.Failure)
		}
	}
}

func newBenchServer(b *testing.B, h http.HandlerFunc) string {
	b.Helper()
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv.URL
}

func BenchmarkInspectChunk(b *testing.B) {
	content := []byte(`{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1","choices":[{"index":0,"delta":{"content":"token "},"logprobs":null,"finish_reason":null}],"usage":null}`)
	b.Run("content-chunk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			inspectChunk(content, false)
		}
	})
	b.Run("first-chunk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			inspectChunk(content, true)
		}
	})
	b.Run("usage-chunk", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			inspectChunk([]byte(usageOnly), false)
		}
	})
}

// BenchmarkParseBody compares parseBody on a large embeddings answer with
// decoding the same two fields through encoding/json (the baseline).
func BenchmarkParseBody(b *testing.B) {
	var sb strings.Builder
	sb.WriteString(`{"object":"list","data":[`)
	for i := range 2000 {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`{"object":"embedding","index":` + fmt.Sprint(i) + `,"embedding":[`)
		for j := range 256 {
			if j > 0 {
				sb.WriteString(",")
			}
			sb.WriteString("-0.0028842222")
		}
		sb.WriteString("]}")
	}
	sb.WriteString(`],"model":"text-embedding-3-small","usage":{"prompt_tokens":5,"total_tokens":5}}`)
	body := []byte(sb.String())
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if u, m := parseBody(body); u == nil || m == "" {
				b.Fatal("no usage")
			}
		}
	})
	b.Run("encoding-json-baseline", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			var v struct {
				Model string     `json:"model"`
				Usage *usageJSON `json:"usage"`
			}
			if err := json.Unmarshal(body, &v); err != nil || v.Usage == nil {
				b.Fatal(err)
			}
		}
	})
}
