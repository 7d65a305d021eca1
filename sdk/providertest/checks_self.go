package providertest

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// runSelf runs the checks for a provider that answers itself: its answers
// must have OpenAI's shapes.
func (s *suite) runSelf(t *testing.T) {
	t.Run("info", s.checkInfo)
	t.Run("configure", s.checkConfigure)
	t.Run("unsupported_calls", s.checkUnsupported)
	t.Run("chat_completions", s.checkSelfChat)
	t.Run("chat_completions_stream", s.checkSelfStream)
	t.Run("chat_completions_stream/cancel", func(t *testing.T) { s.checkSelfStop(t, false) })
	t.Run("chat_completions_stream/sender_error", func(t *testing.T) { s.checkSelfStop(t, true) })
	t.Run("embeddings", s.checkSelfEmbeddings)
	t.Run("list_models", s.checkListModels)
}

// selfBody is a chat request body for a self-answering provider.
func (s *suite) selfBody(stream bool, words int) []byte {
	msg := "Hello conformance suite"
	for i := 3; i < words; i++ {
		msg += " word"
	}
	req := map[string]any{
		"model": s.h.Model,
		"messages": []map[string]any{
			{"role": "system", "content": "Be brief."},
			{"role": "user", "content": msg},
		},
	}
	if stream {
		req["stream"] = true
		req["stream_options"] = map[string]any{"include_usage": true}
	}
	b, err := json.Marshal(req)
	if err != nil {
		panic(err)
	}
	return b
}

// wireUsage is OpenAI's usage object.
type wireUsage struct {
	PromptTokens        *int64 `json:"prompt_tokens"`
	CompletionTokens    *int64 `json:"completion_tokens"`
	TotalTokens         *int64 `json:"total_tokens"`
	PromptTokensDetails struct {
		CachedTokens int64 `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
	CompletionTokensDetails struct {
		ReasoningTokens int64 `json:"reasoning_tokens"`
	} `json:"completion_tokens_details"`
}

// usage converts u, reporting missing fields.
func (u *wireUsage) usage(t *testing.T, what string) *provider.Usage {
	t.Helper()
	if u.PromptTokens == nil || u.CompletionTokens == nil || u.TotalTokens == nil {
		t.Errorf("%s: usage lacks prompt_tokens, completion_tokens or total_tokens", what)
		return nil
	}
	return usageOf(*u.PromptTokens, *u.CompletionTokens, *u.TotalTokens,
		u.PromptTokensDetails.CachedTokens, u.CompletionTokensDetails.ReasoningTokens)
}

func (s *suite) checkSelfChat(t *testing.T) {
	s.needs(t, provider.CapChatCompletions)
	_, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	resp, err := p.ChatCompletions(ctx, s.request(s.selfBody(false, 3)))
	if err != nil {
		t.Fatalf("ChatCompletions: %v", err)
	}
	if resp == nil {
		t.Fatal("ChatCompletions returned a nil Response and no error")
	}
	if resp.Failure != nil {
		t.Fatalf("Failure = %+v, want nil", *resp.Failure)
	}
	if resp.Status != http.StatusOK {
		t.Errorf("Status = %d, want 200", resp.Status)
	}
	var body struct {
		Object  string `json:"object"`
		Model   string `json:"model"`
		Choices []struct {
			Message *struct {
				Role    string  `json:"role"`
				Content *string `json:"content"`
			} `json:"message"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage *wireUsage `json:"usage"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		t.Fatalf("Body is not a JSON object: %v\n%s", err, resp.Body)
	}
	if body.Object != "chat.completion" {
		t.Errorf("Body: object = %q, want \"chat.completion\"", body.Object)
	}
	if len(body.Choices) == 0 {
		t.Error("Body: no choices")
	}
	for i, c := range body.Choices {
		if c.Message == nil || c.Message.Role != "assistant" || c.Message.Content == nil {
			t.Errorf("Body: choices[%d] lacks an assistant message with content", i)
		}
		if c.FinishReason == "" {
			t.Errorf("Body: choices[%d] has no finish_reason", i)
		}
	}
	if body.Usage == nil {
		t.Fatal("Body: no usage")
	}
	checkUsage(t, "ChatCompletions (Response.Usage against the body's usage)", resp.Usage, body.Usage.usage(t, "Body"))
	if ct, ok := header(resp.Headers, "Content-Type"); ok && !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Headers[Content-Type] = %q, want application/json", ct)
	}
}

func (s *suite) checkSelfStream(t *testing.T) {
	s.needs(t, provider.CapChatStream)
	_, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	rec := newRecorder()
	end, err := p.ChatCompletionsStream(ctx, s.request(s.selfBody(true, 3)), rec)
	if err != nil {
		t.Fatalf("ChatCompletionsStream: %v", err)
	}
	if end == nil {
		t.Fatal("ChatCompletionsStream returned a nil StreamEnd and no error")
	}
	if end.Failure != nil {
		t.Errorf("StreamEnd.Failure = %+v, want nil", *end.Failure)
	}
	starts, events, violations := rec.snapshot()
	for _, v := range violations {
		t.Errorf("StreamSender contract: %s", v)
	}
	if len(starts) != 1 || starts[0].Status != http.StatusOK {
		t.Fatalf("starts = %+v, want one with status 200", starts)
	}
	if len(events) < 2 {
		t.Fatalf("%d events, want at least one chunk and [DONE]", len(events))
	}
	last := events[len(events)-1]
	if string(last.Data) != "[DONE]" || last.UsageOnly {
		t.Errorf("last event = %q (UsageOnly %v), want [DONE] (UsageOnly false)", last.Data, last.UsageOnly)
	}
	var streamUsage *provider.Usage
	usageChunks := 0
	for i, ev := range events[:len(events)-1] {
		var c struct {
			Object  string            `json:"object"`
			Choices []json.RawMessage `json:"choices"`
			Usage   *wireUsage        `json:"usage"`
		}
		if err := json.Unmarshal(ev.Data, &c); err != nil {
			t.Errorf("event %d is not a JSON object: %v\n%s", i, err, ev.Data)
			continue
		}
		if c.Object != "chat.completion.chunk" {
			t.Errorf("event %d: object = %q, want \"chat.completion.chunk\"", i, c.Object)
		}
		isUsage := len(c.Choices) == 0 && c.Usage != nil
		if ev.UsageOnly != isUsage {
			t.Errorf("event %d: UsageOnly = %v, but the chunk has %d choices and usage %v: UsageOnly marks exactly the chunk with usage and no choices", i, ev.UsageOnly, len(c.Choices), c.Usage != nil)
		}
		if isUsage {
			usageChunks++
			streamUsage = c.Usage.usage(t, "usage chunk")
		}
	}
	if usageChunks != 1 {
		t.Errorf("%d usage-only chunks, want 1 (the request has stream_options.include_usage)", usageChunks)
	}
	if end.Usage == nil {
		t.Error("StreamEnd.Usage is nil")
	} else if streamUsage != nil {
		checkUsage(t, "StreamEnd (against the usage chunk)", end.Usage, streamUsage)
	}
}

// checkSelfStop: after ctx is cancelled (or Send returns an error) the
// provider returns promptly and calls Send no more.
func (s *suite) checkSelfStop(t *testing.T, senderErr bool) {
	s.needs(t, provider.CapChatStream)
	_, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	rec := newRecorder()
	stopped := make(chan struct{})
	rec.onEvent = func(n int, _ provider.Event) error {
		if n != 1 {
			return nil
		}
		close(stopped)
		if senderErr {
			return errors.New("providertest: the client went away")
		}
		cancel()
		return nil
	}
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		_, _ = p.ChatCompletionsStream(ctx, s.request(s.selfBody(true, 2000)), rec)
	}()
	select {
	case <-stopped:
	case <-returned:
		t.Fatal("ChatCompletionsStream returned without sending an event")
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	select {
	case <-returned:
	case <-time.After(3 * time.Second):
		t.Error("ChatCompletionsStream had not returned 3s after the stream was stopped")
	}
	if senderErr {
		rec.mu.Lock()
		after := rec.afterErr
		rec.mu.Unlock()
		if after > 0 {
			t.Errorf("Send called %d more times after it returned an error, want none: the provider must stop", after)
		}
	}
}

func (s *suite) checkSelfEmbeddings(t *testing.T) {
	s.needs(t, provider.CapEmbeddings)
	_, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	model, _ := json.Marshal(s.h.Model)
	resp, err := p.Embeddings(ctx, s.request([]byte(`{"model":`+string(model)+`,"input":["hello world","second input"]}`)))
	if err != nil {
		t.Fatalf("Embeddings: %v", err)
	}
	if resp == nil {
		t.Fatal("Embeddings returned a nil Response and no error")
	}
	if resp.Failure != nil {
		t.Fatalf("Failure = %+v, want nil", *resp.Failure)
	}
	if resp.Status != http.StatusOK {
		t.Errorf("Status = %d, want 200", resp.Status)
	}
	var body struct {
		Object string `json:"object"`
		Data   []struct {
			Object    string    `json:"object"`
			Index     int       `json:"index"`
			Embedding []float64 `json:"embedding"`
		} `json:"data"`
	}
	if err := json.Unmarshal(resp.Body, &body); err != nil {
		t.Fatalf("Body is not an embeddings list: %v\n%s", err, resp.Body)
	}
	if body.Object != "list" || len(body.Data) != 2 {
		t.Fatalf("Body: object %q with %d embeddings, want a list of 2", body.Object, len(body.Data))
	}
	for i, d := range body.Data {
		if d.Object != "embedding" || d.Index != i || len(d.Embedding) == 0 {
			t.Errorf("Body: data[%d] = {object %q, index %d, %d dimensions}, want an embedding with index %d", i, d.Object, d.Index, len(d.Embedding), i)
		}
	}
}
