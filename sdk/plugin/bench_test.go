package plugin

import (
	"context"
	"net"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/loom-runtime/loom/sdk/internal/providerpb"
	"github.com/loom-runtime/loom/sdk/provider"
)

// benchPair serves p over a Unix socket with the options Loom and Serve
// use (GRPCServerOptions, GRPCDialOptions; go-plugin's mTLS aside) and
// returns the host half.
func benchPair(b *testing.B, p provider.Provider) *GRPCClient {
	b.Helper()
	sock := filepath.Join(b.TempDir(), "plugin.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	srv := newGRPCServer(nil)
	providerpb.RegisterProviderServer(srv, &grpcServer{impl: p})
	go srv.Serve(ln)
	conn, err := grpc.NewClient("unix://"+sock, append(GRPCDialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		srv.Stop()
	})
	return &GRPCClient{client: providerpb.NewProviderClient(conn)}
}

var (
	benchRequest = &provider.Request{
		RequestID: "01937a4c-9a7e-7cc4-b5de-0123456789ab",
		Model:     "gpt-4o-mini",
		Body:      []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about the sea, please, in plain words."}],"temperature":0.7,"max_tokens":64}`),
	}
	benchResponse = &provider.Response{
		Status:  200,
		Headers: map[string]string{"Content-Type": "application/json", "X-Request-Id": "req_0123456789abcdef", "Openai-Processing-Ms": "312"},
		Body:    []byte(`{"id":"chatcmpl-AbC123","object":"chat.completion","created":1731000000,"model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"The sea breathes in long slow waves."},"finish_reason":"stop"}],"usage":{"prompt_tokens":31,"completion_tokens":9,"total_tokens":40}}`),
		Usage:   &provider.Usage{PromptTokens: 31, CompletionTokens: 9, TotalTokens: 40},
		Model:   "gpt-4o-mini-2024-07-18",
	}
)

// BenchmarkChatCompletions is one unary call through the plugin protocol:
// conversion, gRPC on both sides, a Unix socket in between.
func BenchmarkChatCompletions(b *testing.B) {
	c := benchPair(b, &scripted{resp: benchResponse})
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.ChatCompletions(context.Background(), benchRequest)
		if err != nil || resp.Status != 200 {
			b.Fatal(resp, err)
		}
	}
}

// BenchmarkChatCompletionsParallel is the same with calls from every core.
func BenchmarkChatCompletionsParallel(b *testing.B) {
	c := benchPair(b, &scripted{resp: benchResponse})
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.ChatCompletions(context.Background(), benchRequest)
			if err != nil || resp.Status != 200 {
				b.Error(resp, err)
				return
			}
		}
	})
}

// BenchmarkChatCompletionsStream relays a 20-event stream through the
// plugin protocol.
func BenchmarkChatCompletionsStream(b *testing.B) {
	chunk := []byte(`{"id":"chatcmpl-AbC123","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}`)
	events := make([]provider.Event, 20)
	for i := range events {
		events[i] = provider.Event{Data: chunk}
	}
	c := benchPair(b, &scripted{start: &provider.StreamStart{Status: 200}, events: events, end: &provider.StreamEnd{}})
	b.ReportAllocs()
	for b.Loop() {
		k := &sink{}
		if _, err := c.ChatCompletionsStream(context.Background(), benchRequest, k); err != nil || len(k.events) != 20 {
			b.Fatal(err, len(k.events))
		}
	}
}
