package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

type sseChunk struct {
	Object  string `json:"object"`
	Choices []struct {
		Delta struct {
			Content *string `json:"content"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *struct {
		TotalTokens int `json:"total_tokens"`
	} `json:"usage"`
}

func post(t *testing.T, h http.Handler, path, body string) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestNonStream(t *testing.T) {
	h := NewHandler(Config{Chunks: 5})
	rec := post(t, h, "/v1/chat/completions", `{"model":"x","messages":[{"role":"user","content":"hi"}]}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content-type %q", ct)
	}
	var resp struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct {
				Role    string `json:"role"`
				Content string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage struct {
			PromptTokens     int `json:"prompt_tokens"`
			CompletionTokens int `json:"completion_tokens"`
			TotalTokens      int `json:"total_tokens"`
		} `json:"usage"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("decode: %v: %s", err, rec.Body.String())
	}
	if resp.Object != "chat.completion" || len(resp.Choices) != 1 || resp.Choices[0].Message.Role != "assistant" {
		t.Fatalf("unexpected response: %+v", resp)
	}
	if resp.Usage.CompletionTokens != 5 || resp.Usage.TotalTokens != resp.Usage.PromptTokens+5 {
		t.Fatalf("usage: %+v", resp.Usage)
	}
	if got := rec.Header().Get("Content-Length"); got == "" {
		t.Fatal("missing Content-Length")
	}
}

// readStream parses an SSE body into chunks; it requires a final [DONE].
func readStream(t *testing.T, body io.Reader) []sseChunk {
	t.Helper()
	var out []sseChunk
	sc := bufio.NewScanner(body)
	done := false
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected line %q", line)
		}
		if done {
			t.Fatalf("data after [DONE]: %q", line)
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c sseChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("decode %q: %v", data, err)
		}
		out = append(out, c)
	}
	if !done {
		t.Fatal("missing [DONE]")
	}
	return out
}

func countContent(chunks []sseChunk) (content int, usage int, finish int) {
	for _, c := range chunks {
		if c.Usage != nil {
			usage++
		}
		for _, ch := range c.Choices {
			if ch.Delta.Content != nil && *ch.Delta.Content != "" {
				content++
			}
			if ch.FinishReason != nil {
				finish++
			}
		}
	}
	return
}

func TestStreamWithoutUsage(t *testing.T) {
	h := NewHandler(Config{Chunks: 7})
	rec := post(t, h, "/v1/chat/completions", `{"model":"x","stream":true,"messages":[]}`)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content-type %q", ct)
	}
	if !rec.Flushed {
		t.Fatal("stream was not flushed")
	}
	chunks := readStream(t, rec.Body)
	content, usage, finish := countContent(chunks)
	if content != 7 {
		t.Fatalf("content chunks = %d, want 7", content)
	}
	if usage != 0 {
		t.Fatalf("usage chunks = %d, want 0", usage)
	}
	if finish != 1 {
		t.Fatalf("finish chunks = %d, want 1", finish)
	}
	for _, c := range chunks {
		if c.Object != "chat.completion.chunk" {
			t.Fatalf("object %q", c.Object)
		}
	}
}

func TestStreamWithUsage(t *testing.T) {
	h := NewHandler(Config{Chunks: 3})
	rec := post(t, h, "/v1/chat/completions",
		`{"model":"x","stream": true,"stream_options":{"include_usage": true},"messages":[]}`)
	chunks := readStream(t, rec.Body)
	content, usage, _ := countContent(chunks)
	if content != 3 || usage != 1 {
		t.Fatalf("content=%d usage=%d, want 3 and 1", content, usage)
	}
	last := chunks[len(chunks)-1]
	if last.Usage == nil || last.Usage.TotalTokens != promptTokens+3 || len(last.Choices) != 0 {
		t.Fatalf("last chunk should be usage-only: %+v", last)
	}
}

func TestStreamChunkCounts(t *testing.T) {
	for _, n := range []int{0, 1, 20, 100} {
		h := NewHandler(Config{Chunks: n})
		rec := post(t, h, "/v1/chat/completions", `{"stream":true}`)
		content, _, _ := countContent(readStream(t, rec.Body))
		if content != n {
			t.Errorf("chunks=%d: got %d content chunks", n, content)
		}
	}
}

func TestAzurePath(t *testing.T) {
	h := NewHandler(Config{Chunks: 2})
	rec := post(t, h, "/openai/deployments/gpt-4o/chat/completions?api-version=2024-06-01", `{"messages":[]}`)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"chat.completion"`) {
		t.Fatalf("azure non-stream: %d %s", rec.Code, rec.Body.String())
	}
	rec = post(t, h, "/openai/deployments/gpt-4o/chat/completions", `{"stream":true}`)
	content, _, _ := countContent(readStream(t, rec.Body))
	if content != 2 {
		t.Fatalf("azure stream content chunks = %d", content)
	}
}

func TestModelsAndErrors(t *testing.T) {
	h := NewHandler(Config{})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/models", nil))
	var m struct {
		Object string `json:"object"`
		Data   []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil || m.Object != "list" || len(m.Data) != 1 {
		t.Fatalf("models: %v %s", err, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/chat/completions", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET chat: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/nope", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("unknown path: %d", rec.Code)
	}
}

// TestRealServer exercises the tuned server over a real loopback socket,
// including per-event flushing.
func TestRealServer(t *testing.T) {
	srv := httptest.NewUnstartedServer(NewHandler(Config{Chunks: 4}))
	srv.Config = newServer(srv.Config.Handler)
	srv.Start()
	defer srv.Close()
	resp, err := http.Post(srv.URL+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	content, usage, _ := countContent(readStream(t, resp.Body))
	if content != 4 || usage != 1 {
		t.Fatalf("content=%d usage=%d", content, usage)
	}
}

// With Echo, each answer starts with its own request's last message, JSON
// escaping included; the rest of the answer is unchanged.
func TestEcho(t *testing.T) {
	h := NewHandler(Config{Chunks: 2, Echo: true})
	text := `tenant=a n=1 "quoted" \ é`
	msg, _ := json.Marshal(text)
	rec := post(t, h, "/v1/chat/completions", `{"messages":[{"role":"user","content":"first"},{"role":"user","content":`+string(msg)+`}]}`)
	var resp struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		t.Fatalf("decode: %v: %s", err, rec.Body.String())
	}
	if got := resp.Choices[0].Message.Content; got != text+" tok tok " {
		t.Fatalf("content %q", got)
	}
	if rec.Header().Get("Content-Length") != strconv.Itoa(rec.Body.Len()) {
		t.Fatalf("Content-Length %s for %d bytes", rec.Header().Get("Content-Length"), rec.Body.Len())
	}
	rec = post(t, h, "/v1/chat/completions", `{"stream":true,"messages":[{"role":"user","content":`+string(msg)+`}]}`)
	chunks := readStream(t, rec.Body)
	content, _, _ := countContent(chunks)
	if content != 3 || *chunks[1].Choices[0].Delta.Content != text {
		t.Fatalf("%d content chunks, the first %q", content, *chunks[1].Choices[0].Delta.Content)
	}
	// Without Echo, nothing of the request comes back.
	rec = post(t, NewHandler(Config{Chunks: 2}), "/v1/chat/completions", `{"messages":[{"role":"user","content":"tenant=a"}]}`)
	if strings.Contains(rec.Body.String(), "tenant=a") {
		t.Fatalf("echoed without Echo: %s", rec.Body.String())
	}
}

// Streams for SlowModel follow SlowChunks and SlowChunkGap; other models
// keep Chunks and ChunkGap.
func TestSlowModel(t *testing.T) {
	h := NewHandler(Config{Chunks: 2, SlowChunks: 5, SlowChunkGap: 20 * time.Millisecond})
	start := time.Now()
	rec := post(t, h, "/v1/chat/completions", `{"model":"`+SlowModel+`","stream":true}`)
	elapsed := time.Since(start)
	if content, _, _ := countContent(readStream(t, rec.Body)); content != 5 {
		t.Fatalf("slow model: %d content chunks, want 5", content)
	}
	if elapsed < 80*time.Millisecond {
		t.Fatalf("slow model stream took %v, want ≥ 4 gaps of 20ms", elapsed)
	}
	rec = post(t, h, "/v1/chat/completions", `{"model":"mock-model","stream":true}`)
	if content, _, _ := countContent(readStream(t, rec.Body)); content != 2 {
		t.Fatalf("other model: %d content chunks, want 2", content)
	}
}
