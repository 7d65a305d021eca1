package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/providertest"
)

// The conformance suite, directly and through the plugin protocol.
func TestConformance(t *testing.T) {
	providertest.Run(t, providertest.Harness{
		New: func() provider.Provider { return newEcho() },
		Config: func(string) provider.Config {
			return provider.Config{Instance: "echo", Settings: []byte(`{}`)}
		},
		Model:         "echo-1",
		CallsUpstream: false,
	})
}

func configured(t *testing.T, settings string) *echo {
	t.Helper()
	e := newEcho()
	if err := e.Configure(t.Context(), provider.Config{Instance: "echo", Settings: []byte(settings)}); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestConfigure(t *testing.T) {
	for _, s := range []string{"", "{}", `{"delay_ms":0}`, `{"delay_ms":25}`} {
		if err := newEcho().Configure(t.Context(), provider.Config{Settings: []byte(s)}); err != nil {
			t.Errorf("settings %q: %v", s, err)
		}
	}
	for _, s := range []string{`{"delay":5}`, `{"delay_ms":-1}`, `{"delay_ms":"5"}`, `[1]`} {
		if err := newEcho().Configure(t.Context(), provider.Config{Settings: []byte(s)}); err == nil {
			t.Errorf("settings %q accepted", s)
		}
	}
}

type chatAnswer struct {
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage struct {
		PromptTokens     int64 `json:"prompt_tokens"`
		CompletionTokens int64 `json:"completion_tokens"`
		TotalTokens      int64 `json:"total_tokens"`
	} `json:"usage"`
}

func TestChatEchoesLastUserMessage(t *testing.T) {
	e := configured(t, "")
	body := `{"model":"echo-1","messages":[
		{"role":"system","content":"be nice"},
		{"role":"user","content":"first"},
		{"role":"assistant","content":"first"},
		{"role":"user","content":[{"type":"text","text":"look at"},{"type":"image_url","image_url":{"url":"data:,"}},{"type":"text","text":"this  picture"}]}]}`
	resp, err := e.ChatCompletions(t.Context(), &provider.Request{Model: "echo-1", Body: []byte(body)})
	if err != nil || resp.Status != 200 {
		t.Fatalf("%+v, %v", resp, err)
	}
	var a chatAnswer
	if err := json.Unmarshal(resp.Body, &a); err != nil {
		t.Fatal(err)
	}
	if got := a.Choices[0].Message.Content; got != "look at\nthis  picture" {
		t.Errorf("reply %q", got)
	}
	// Words: "be nice" 2 + "first" 1 + "first" 1 + "look at this picture" 4.
	if a.Usage.PromptTokens != 8 || a.Usage.CompletionTokens != 4 || a.Usage.TotalTokens != 12 {
		t.Errorf("usage %+v", a.Usage)
	}
	if *resp.Usage != (provider.Usage{PromptTokens: 8, CompletionTokens: 4, TotalTokens: 12}) || resp.Model != "echo-1" {
		t.Errorf("Usage %+v, Model %q", *resp.Usage, resp.Model)
	}
}

func TestChatBadRequests(t *testing.T) {
	e := configured(t, "")
	for _, body := range []string{`not json`, `{"messages":[]}`, `{"messages":[{"role":"user","content":42}]}`} {
		resp, err := e.ChatCompletions(t.Context(), &provider.Request{Body: []byte(body)})
		if err != nil || resp.Status != 400 || !strings.Contains(string(resp.Body), `"invalid_request_error"`) {
			t.Errorf("%s: %+v, %v; want a 400 result", body, resp, err)
		}
		rec := &recorder{}
		end, err := e.ChatCompletionsStream(t.Context(), &provider.Request{Body: []byte(body)}, rec)
		if err != nil || len(rec.starts) != 1 || rec.starts[0].Status != 400 || len(rec.events) != 0 || len(end.Body) == 0 {
			t.Errorf("stream %s: %+v, %+v, %v; want start 400 and the body in the end", body, rec, end, err)
		}
	}
}

type recorder struct {
	starts []provider.StreamStart
	events []provider.Event
	times  []time.Time
}

func (r *recorder) Start(s provider.StreamStart) error { r.starts = append(r.starts, s); return nil }
func (r *recorder) Send(e provider.Event) error {
	r.events = append(r.events, e)
	r.times = append(r.times, time.Now())
	return nil
}

func TestStreamWordByWord(t *testing.T) {
	e := configured(t, `{"delay_ms":20}`)
	msg := "  Hello,\n big   world! "
	body, _ := json.Marshal(map[string]any{
		"model":          "echo-1",
		"messages":       []any{map[string]any{"role": "user", "content": msg}},
		"stream":         true,
		"stream_options": map[string]any{"include_usage": true},
	})
	rec := &recorder{}
	end, err := e.ChatCompletionsStream(t.Context(), &provider.Request{Body: body}, rec)
	if err != nil || end.Failure != nil {
		t.Fatalf("%+v, %v", end, err)
	}
	// role chunk, 3 words, finish chunk, usage chunk, [DONE]
	if len(rec.events) != 7 {
		t.Fatalf("%d events: %+v", len(rec.events), rec.events)
	}
	var text strings.Builder
	for i, ev := range rec.events[:5] {
		var c struct {
			Choices []struct {
				Delta struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal(ev.Data, &c); err != nil || len(c.Choices) != 1 {
			t.Fatalf("event %d: %s", i, ev.Data)
		}
		text.WriteString(c.Choices[0].Delta.Content)
		if (i == 0) != (c.Choices[0].Delta.Role == "assistant") {
			t.Errorf("event %d: role %q", i, c.Choices[0].Delta.Role)
		}
		if (i == 4) != (c.Choices[0].FinishReason != nil && *c.Choices[0].FinishReason == "stop") {
			t.Errorf("event %d: finish_reason %v", i, c.Choices[0].FinishReason)
		}
	}
	if text.String() != msg {
		t.Errorf("streamed text %q, want %q", text.String(), msg)
	}
	if !rec.events[5].UsageOnly || string(rec.events[6].Data) != "[DONE]" {
		t.Errorf("tail: %+v", rec.events[5:])
	}
	if *end.Usage != (provider.Usage{PromptTokens: 3, CompletionTokens: 3, TotalTokens: 6}) {
		t.Errorf("usage %+v", *end.Usage)
	}
	// delay_ms spaces the words.
	if d := rec.times[3].Sub(rec.times[1]); d < 35*time.Millisecond {
		t.Errorf("two words %v apart with delay_ms 20", d)
	}

	// Without include_usage there is no usage chunk, but StreamEnd has it.
	body, _ = json.Marshal(map[string]any{"messages": []any{map[string]any{"role": "user", "content": "hi"}}, "stream": true})
	rec = &recorder{}
	end, err = e.ChatCompletionsStream(t.Context(), &provider.Request{Body: body}, rec)
	if err != nil || end.Usage == nil {
		t.Fatalf("%+v, %v", end, err)
	}
	for _, ev := range rec.events {
		if ev.UsageOnly {
			t.Error("usage chunk without include_usage")
		}
	}
}

func TestStreamHonoursCancel(t *testing.T) {
	e := configured(t, `{"delay_ms":1000}`)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	body := `{"messages":[{"role":"user","content":"one two three four"}],"stream":true}`
	start := time.Now()
	end, err := e.ChatCompletionsStream(ctx, &provider.Request{Body: []byte(body)}, &recorder{})
	if err != nil || end.Failure == nil || end.Failure.Kind != provider.FailureCanceled {
		t.Fatalf("%+v, %v", end, err)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("took %v to notice the cancellation", time.Since(start))
	}
}

func TestEmbeddings(t *testing.T) {
	e := configured(t, "")
	get := func(body string) (map[string]any, *provider.Response) {
		t.Helper()
		resp, err := e.Embeddings(t.Context(), &provider.Request{Body: []byte(body)})
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		_ = json.Unmarshal(resp.Body, &m)
		return m, resp
	}
	a, resp := get(`{"model":"echo-1","input":["hello world","x"]}`)
	b, _ := get(`{"model":"echo-1","input":["hello world","y"]}`)
	if resp.Status != 200 || resp.Usage.PromptTokens != 3 {
		t.Fatalf("%d %+v", resp.Status, resp.Usage)
	}
	da, db := a["data"].([]any), b["data"].([]any)
	if len(da) != 2 || len(da[0].(map[string]any)["embedding"].([]any)) != defaultDimensions {
		t.Fatalf("data %v", da)
	}
	// Same input, same vector; different input, different vector.
	if !equalJSON(da[0], db[0]) || equalJSON(da[1], db[1]) {
		t.Error("embeddings are not a function of the input")
	}
	m, _ := get(`{"input":"hi","encoding_format":"base64","dimensions":16}`)
	raw, err := base64.StdEncoding.DecodeString(m["data"].([]any)[0].(map[string]any)["embedding"].(string))
	if err != nil || len(raw) != 16*4 {
		t.Errorf("base64 embedding: %d bytes, %v", len(raw), err)
	}
	for _, body := range []string{`{"input":[]}`, `{"input":{}}`, `{"input":"x","dimensions":99999}`, `{"input":"x","encoding_format":"hex"}`} {
		if _, resp := get(body); resp.Status != 400 {
			t.Errorf("%s: status %d, want 400", body, resp.Status)
		}
	}
	if _, resp := get(`{"input":[[1,2,3],[4,5]]}`); resp.Status != 200 {
		t.Errorf("token arrays: status %d", resp.Status)
	}
}

func equalJSON(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}
