package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/loom-runtime/loom/sdk/provider"
)

// version is the plugin's version, reported in Info. Release builds may
// set it with -ldflags "-X main.version=1.2.3".
var version = "1.0.0"

// defaultModel is the model the echo provider lists and reports when a
// request names none.
const defaultModel = "echo-1"

// settings are the provider's settings from loom.hcl:
//
//	provider "echo" {
//	  plugin = "echo"
//	  settings {
//	    delay_ms = 50   # optional pause between streamed words
//	  }
//	}
type settings struct {
	// DelayMS pauses between streamed words, in milliseconds (default 0),
	// to simulate a slow upstream.
	DelayMS int `json:"delay_ms"`
}

// echo is the provider. Its methods are called concurrently.
type echo struct {
	mu  sync.RWMutex
	cfg settings
	seq atomic.Uint64 // for response ids
}

func newEcho() *echo { return &echo{} }

var _ provider.Provider = (*echo)(nil)

func (e *echo) Info(context.Context) (provider.Info, error) {
	return provider.Info{
		Name:            "echo",
		Version:         version,
		ProtocolVersion: provider.ProtocolVersion,
		Capabilities: []string{
			provider.CapChatCompletions,
			provider.CapChatStream,
			provider.CapEmbeddings,
			provider.CapListModels,
		},
		Models: models(),
	}, nil
}

// Configure reads the settings. Unknown settings are an error, so a typo
// in loom.hcl stops Loom's start with a clear message instead of being
// ignored.
func (e *echo) Configure(_ context.Context, cfg provider.Config) error {
	var s settings
	if len(bytes.TrimSpace(cfg.Settings)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(cfg.Settings))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			return fmt.Errorf("echo settings: %v (the only setting is delay_ms)", err)
		}
	}
	if s.DelayMS < 0 || s.DelayMS > 60_000 {
		return fmt.Errorf("echo settings: delay_ms = %d, want 0 to 60000", s.DelayMS)
	}
	e.mu.Lock()
	e.cfg = s
	e.mu.Unlock()
	return nil
}

func (e *echo) settings() settings {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.cfg
}

func models() []provider.Model {
	return []provider.Model{{ID: defaultModel, OwnedBy: "loom-examples", Created: 1700000000}}
}

func (e *echo) ListModels(context.Context) ([]provider.Model, error) {
	return models(), nil
}

// chatRequest is the part of an OpenAI chat completion request echo reads.
type chatRequest struct {
	Model    string `json:"model"`
	Messages []struct {
		Role    string          `json:"role"`
		Content json.RawMessage `json:"content"`
	} `json:"messages"`
	Stream        bool `json:"stream"`
	StreamOptions *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

// text returns a message content's text: the string, or the text parts of
// an array of content parts joined with newlines (images and other parts
// are skipped).
func text(content json.RawMessage) (string, error) {
	if len(content) == 0 || string(content) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(content, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(content, &parts); err != nil {
		return "", errors.New("content must be a string or an array of content parts")
	}
	var texts []string
	for _, p := range parts {
		if p.Type == "text" {
			texts = append(texts, p.Text)
		}
	}
	return strings.Join(texts, "\n"), nil
}

// exchange is a parsed chat request: what to answer and how it counts.
type exchange struct {
	model        string
	reply        string
	promptTokens int64
	includeUsage bool
}

// parseChat reads a chat request. An error is the client's fault: it is
// answered with 400, as an upstream would.
func parseChat(req *provider.Request) (*exchange, error) {
	var cr chatRequest
	if err := json.Unmarshal(req.Body, &cr); err != nil {
		return nil, fmt.Errorf("the request body is not valid JSON: %v", err)
	}
	x := &exchange{model: req.Model, includeUsage: cr.StreamOptions != nil && cr.StreamOptions.IncludeUsage}
	if x.model == "" {
		x.model = cr.Model
	}
	if x.model == "" {
		x.model = defaultModel
	}
	found := false
	for i, m := range cr.Messages {
		t, err := text(m.Content)
		if err != nil {
			return nil, fmt.Errorf("messages[%d]: %v", i, err)
		}
		x.promptTokens += countTokens(t)
		if m.Role == "user" {
			x.reply, found = t, true
		}
	}
	if !found {
		return nil, errors.New("messages must contain a user message to echo")
	}
	return x, nil
}

// countTokens approximates a token count: whitespace-separated words.
// Real tokenizers count differently; echo only needs plausible numbers.
func countTokens(s string) int64 {
	return int64(len(strings.Fields(s)))
}

func (x *exchange) usage() *provider.Usage {
	c := countTokens(x.reply)
	return &provider.Usage{PromptTokens: x.promptTokens, CompletionTokens: c, TotalTokens: x.promptTokens + c}
}

// OpenAI's response shapes, as structs so the JSON fields come in OpenAI's
// order.

type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "chat.completion"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *wireUsage   `json:"usage"`
}

type chatChoice struct {
	Index        int          `json:"index"`
	Message      *chatMessage `json:"message,omitempty"` // chat.completion
	Delta        *chatMessage `json:"delta,omitempty"`   // chat.completion.chunk
	Logprobs     any          `json:"logprobs"`
	FinishReason *string      `json:"finish_reason"`
}

type chatMessage struct {
	Role    string  `json:"role,omitempty"`
	Content *string `json:"content,omitempty"`
	Refusal any     `json:"refusal,omitempty"`
}

type chatChunk struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"` // "chat.completion.chunk"
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"` // empty in the usage chunk
	Usage   *wireUsage   `json:"usage,omitempty"`
}

type embedding struct {
	Object    string `json:"object"` // "embedding"
	Index     int    `json:"index"`
	Embedding any    `json:"embedding"` // []float32, or a base64 string
}

type embeddingList struct {
	Object string      `json:"object"` // "list"
	Data   []embedding `json:"data"`
	Model  string      `json:"model"`
	Usage  struct {
		PromptTokens int64 `json:"prompt_tokens"`
		TotalTokens  int64 `json:"total_tokens"`
	} `json:"usage"`
}

// wireUsage is OpenAI's usage object.
type wireUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

func toWire(u *provider.Usage) *wireUsage {
	return &wireUsage{PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
}

var jsonHeaders = map[string]string{"Content-Type": "application/json"}

// badRequest is the 400 answer an OpenAI upstream gives a malformed request.
func badRequest(err error, start time.Time) *provider.Response {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{
		"message": err.Error(), "type": "invalid_request_error", "param": nil, "code": nil,
	}})
	return &provider.Response{Status: 400, Headers: jsonHeaders, Body: body, Timings: since(start, start)}
}

// since returns timings for a call that started at start and produced its
// first byte at first.
func since(start, first time.Time) provider.Timings {
	now := time.Now()
	return provider.Timings{FirstByte: max(first.Sub(start), 1), Total: max(now.Sub(start), 1)}
}

func canceled(ctx context.Context) *provider.Failure {
	return &provider.Failure{Kind: provider.FailureCanceled, Message: "echo: " + context.Cause(ctx).Error()}
}

func (e *echo) ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	start := time.Now()
	if ctx.Err() != nil {
		return &provider.Response{Failure: canceled(ctx)}, nil
	}
	x, err := parseChat(req)
	if err != nil {
		return badRequest(err, start), nil
	}
	u := x.usage()
	stop := "stop"
	body, err := json.Marshal(chatCompletion{
		ID:      e.id("chatcmpl"),
		Object:  "chat.completion",
		Created: start.Unix(),
		Model:   x.model,
		Choices: []chatChoice{{
			Message:      &chatMessage{Role: "assistant", Content: &x.reply},
			FinishReason: &stop,
		}},
		Usage: toWire(u),
	})
	if err != nil {
		return nil, err
	}
	return &provider.Response{
		Status:  200,
		Headers: jsonHeaders,
		Body:    body,
		Usage:   u,
		Model:   x.model,
		Timings: since(start, time.Now()),
	}, nil
}

func (e *echo) id(prefix string) string {
	return fmt.Sprintf("%s-echo%d", prefix, e.seq.Add(1))
}

// words cuts s into pieces that concatenate back to s exactly: each word
// with the whitespace after it (whitespace before the first word stays
// with it).
func words(s string) []string {
	var out []string
	start, prevSpace, seenWord := 0, true, false
	for i, r := range s {
		space := unicode.IsSpace(r)
		if !space && prevSpace {
			if seenWord {
				out = append(out, s[start:i])
				start = i
			}
			seenWord = true
		}
		prevSpace = space
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

func (e *echo) ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	start := time.Now()
	if ctx.Err() != nil {
		return &provider.StreamEnd{Failure: canceled(ctx)}, nil
	}
	x, err := parseChat(req)
	if err != nil {
		bad := badRequest(err, start)
		if err := out.Start(provider.StreamStart{Status: bad.Status, Headers: bad.Headers}); err != nil {
			return &provider.StreamEnd{Failure: stopped(err)}, nil
		}
		return &provider.StreamEnd{Body: bad.Body, Timings: bad.Timings}, nil
	}
	if err := out.Start(provider.StreamStart{Status: 200, Headers: map[string]string{"Content-Type": "text/event-stream"}}); err != nil {
		return &provider.StreamEnd{Failure: stopped(err)}, nil
	}

	id, created := e.id("chatcmpl"), start.Unix()
	chunk := func(choices []chatChoice, usage *wireUsage) []byte {
		b, _ := json.Marshal(chatChunk{
			ID: id, Object: "chat.completion.chunk", Created: created, Model: x.model,
			Choices: choices, Usage: usage,
		})
		return b
	}
	delta := func(m *chatMessage, finish *string) []byte {
		return chunk([]chatChoice{{Delta: m, FinishReason: finish}}, nil)
	}
	end := &provider.StreamEnd{Usage: x.usage(), Model: x.model}
	var first time.Time
	send := func(data []byte, usageOnly bool) error {
		if first.IsZero() {
			first = time.Now()
		}
		return out.Send(provider.Event{Data: data, UsageOnly: usageOnly})
	}
	fail := func(f *provider.Failure) (*provider.StreamEnd, error) {
		end.Failure = f
		end.Timings = since(start, first)
		return end, nil
	}

	delay := time.Duration(e.settings().DelayMS) * time.Millisecond
	empty, stop := "", "stop"
	if err := send(delta(&chatMessage{Role: "assistant", Content: &empty}, nil), false); err != nil {
		return fail(stopped(err))
	}
	for _, w := range words(x.reply) {
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-ctx.Done():
				t.Stop()
				return fail(canceled(ctx))
			case <-t.C:
			}
		} else if ctx.Err() != nil {
			return fail(canceled(ctx))
		}
		if err := send(delta(&chatMessage{Content: &w}, nil), false); err != nil {
			return fail(stopped(err))
		}
	}
	if err := send(delta(&chatMessage{}, &stop), false); err != nil {
		return fail(stopped(err))
	}
	if x.includeUsage {
		// The usage chunk: no choices, usage set. UsageOnly tells Loom.
		if err := send(chunk([]chatChoice{}, toWire(end.Usage)), true); err != nil {
			return fail(stopped(err))
		}
	}
	if err := send([]byte("[DONE]"), false); err != nil {
		return fail(stopped(err))
	}
	end.Timings = since(start, first)
	return end, nil
}

// stopped is the failure for a stream Loom stopped taking (Send failed).
func stopped(err error) *provider.Failure {
	return &provider.Failure{Kind: provider.FailureCanceled, Message: "echo: stream stopped: " + err.Error()}
}

// embeddingsRequest is the part of an OpenAI embeddings request echo reads.
type embeddingsRequest struct {
	Model          string          `json:"model"`
	Input          json.RawMessage `json:"input"`
	EncodingFormat string          `json:"encoding_format"`
	Dimensions     int             `json:"dimensions"`
}

// defaultDimensions is the size of echo's vectors unless the request asks
// for another (1 to maxDimensions).
const (
	defaultDimensions = 8
	maxDimensions     = 4096
)

// inputs returns the texts of an embeddings input: a string, an array of
// strings, an array of token ids or an array of such arrays (token arrays
// are embedded from their JSON text).
func inputs(raw json.RawMessage) ([]string, error) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, nil
	}
	var ss []string
	if json.Unmarshal(raw, &ss) == nil && len(ss) > 0 {
		return ss, nil
	}
	var tokens []int64
	if json.Unmarshal(raw, &tokens) == nil && len(tokens) > 0 {
		return []string{string(raw)}, nil
	}
	var arrays []json.RawMessage
	if json.Unmarshal(raw, &arrays) == nil && len(arrays) > 0 {
		out := make([]string, len(arrays))
		for i, a := range arrays {
			if json.Unmarshal(a, &tokens) != nil {
				return nil, errors.New("input must be a string, an array of strings or of token arrays")
			}
			out[i] = string(a)
		}
		return out, nil
	}
	return nil, errors.New("input must be a non-empty string, array of strings or of token arrays")
}

// vector is a deterministic unit vector derived from SHA-256 of text, so
// the same input always gets the same embedding: each dimension takes 4
// bytes of SHA-256(block number, text), 8 dimensions per block.
func vector(text string, dims int) []float32 {
	v := make([]float32, dims)
	var h [sha256.Size]byte
	var norm float64
	for i := range v {
		if i%8 == 0 {
			h = sha256.Sum256(fmt.Appendf(nil, "%d\x00%s", i/8, text))
		}
		x := float64(binary.LittleEndian.Uint32(h[(i%8)*4:]))/math.MaxUint32*2 - 1
		v[i] = float32(x)
		norm += x * x
	}
	if norm > 0 {
		n := math.Sqrt(norm)
		for i := range v {
			v[i] = float32(float64(v[i]) / n)
		}
	}
	return v
}

func (e *echo) Embeddings(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	start := time.Now()
	if ctx.Err() != nil {
		return &provider.Response{Failure: canceled(ctx)}, nil
	}
	var er embeddingsRequest
	if err := json.Unmarshal(req.Body, &er); err != nil {
		return badRequest(fmt.Errorf("the request body is not valid JSON: %v", err), start), nil
	}
	texts, err := inputs(er.Input)
	if err != nil {
		return badRequest(err, start), nil
	}
	dims := defaultDimensions
	if er.Dimensions != 0 {
		if er.Dimensions < 1 || er.Dimensions > maxDimensions {
			return badRequest(fmt.Errorf("dimensions must be between 1 and %d", maxDimensions), start), nil
		}
		dims = er.Dimensions
	}
	if er.EncodingFormat != "" && er.EncodingFormat != "float" && er.EncodingFormat != "base64" {
		return badRequest(errors.New(`encoding_format must be "float" or "base64"`), start), nil
	}
	model := req.Model
	if model == "" {
		model = er.Model
	}
	if model == "" {
		model = defaultModel
	}
	list := embeddingList{Object: "list", Data: make([]embedding, len(texts)), Model: model}
	var tokens int64
	for i, t := range texts {
		tokens += countTokens(t)
		v := vector(t, dims)
		var emb any = v
		if er.EncodingFormat == "base64" {
			// OpenAI's base64 format: little-endian float32s.
			buf := make([]byte, 4*len(v))
			for j, f := range v {
				binary.LittleEndian.PutUint32(buf[4*j:], math.Float32bits(f))
			}
			emb = base64.StdEncoding.EncodeToString(buf)
		}
		list.Data[i] = embedding{Object: "embedding", Index: i, Embedding: emb}
	}
	list.Usage.PromptTokens, list.Usage.TotalTokens = tokens, tokens
	u := &provider.Usage{PromptTokens: tokens, TotalTokens: tokens}
	body, err := json.Marshal(list)
	if err != nil {
		return nil, err
	}
	return &provider.Response{Status: 200, Headers: jsonHeaders, Body: body, Usage: u, Model: model, Timings: since(start, time.Now())}, nil
}
