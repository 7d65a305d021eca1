package providertest_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// refProvider is a small, straightforward OpenAI pass-through provider,
// written only to test the suite: a provider that follows the rules must
// pass it.
type refProvider struct {
	baseURL string
	apiKey  string
	client  *http.Client

	// Knobs for broken variants (see broken_test.go).
	reencode   bool // re-encode request bodies
	errOnHTTP  bool // return upstream errors as Go errors
	ignoreSend bool // keep sending after Send failed
}

func (p *refProvider) Info(context.Context) (provider.Info, error) {
	return provider.Info{
		Name:            "reference",
		Version:         "0.0.1",
		ProtocolVersion: provider.ProtocolVersion,
		Capabilities: []string{provider.CapChatCompletions, provider.CapChatStream,
			provider.CapEmbeddings, provider.CapListModels},
	}, nil
}

func (p *refProvider) Configure(_ context.Context, cfg provider.Config) error {
	var s struct {
		BaseURL string `json:"base_url"`
	}
	if err := json.Unmarshal(cfg.Settings, &s); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	if v := cfg.Secrets["base_url"]; v != "" {
		s.BaseURL = v
	}
	if s.BaseURL == "" {
		return errors.New("settings: base_url is required")
	}
	p.baseURL = strings.TrimSuffix(s.BaseURL, "/")
	p.apiKey = cfg.Secrets["api_key"]
	p.client = &http.Client{}
	return nil
}

// call sends body to path; the caller closes the response body and calls
// done.
type call struct {
	resp      *http.Response
	start     time.Time
	firstByte time.Duration
	ctx       context.Context
	parent    context.Context
	done      context.CancelFunc
}

func (c *call) timings() provider.Timings {
	fb := c.firstByte
	total := time.Since(c.start)
	if fb <= 0 || fb > total {
		fb = total
	}
	return provider.Timings{FirstByte: fb, Total: total}
}

func (c *call) failure(err error) *provider.Failure {
	switch {
	case c.parent.Err() != nil:
		return &provider.Failure{Kind: provider.FailureCanceled, Message: "canceled: " + err.Error()}
	case errors.Is(c.ctx.Err(), context.DeadlineExceeded):
		return &provider.Failure{Kind: provider.FailureTimeout, Message: "upstream timeout: " + err.Error()}
	case c.resp == nil:
		return &provider.Failure{Kind: provider.FailureUnreachable, Message: "upstream unreachable: " + err.Error()}
	}
	return &provider.Failure{Kind: provider.FailureProtocol, Message: "upstream protocol: " + err.Error()}
}

func (p *refProvider) do(ctx context.Context, path string, req *provider.Request) (*call, error) {
	c := &call{parent: ctx}
	if req.Timeout > 0 {
		c.ctx, c.done = context.WithTimeout(ctx, req.Timeout)
	} else {
		c.ctx, c.done = context.WithCancel(ctx)
	}
	body := req.Body
	if p.reencode {
		var v any
		_ = json.Unmarshal(body, &v)
		body, _ = json.Marshal(v)
	}
	hr, err := http.NewRequestWithContext(c.ctx, http.MethodPost, p.baseURL+path, bytes.NewReader(body))
	if err != nil {
		c.done()
		return nil, err
	}
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Authorization", "Bearer "+p.apiKey)
	hr = hr.WithContext(httptrace.WithClientTrace(hr.Context(), &httptrace.ClientTrace{
		GotFirstResponseByte: func() { c.firstByte = time.Since(c.start) },
	}))
	c.start = time.Now()
	c.resp, err = p.client.Do(hr)
	if err != nil {
		c.resp = nil
		return c, err
	}
	return c, nil
}

func relay(h http.Header) map[string]string {
	out := map[string]string{}
	for k := range h {
		lk := strings.ToLower(k)
		if lk == "content-type" || lk == "retry-after" || lk == "x-request-id" ||
			lk == "openai-processing-ms" || strings.HasPrefix(lk, "x-ratelimit-") {
			out[k] = h.Get(k)
		}
	}
	return out
}

type wire struct {
	Model   string            `json:"model"`
	Choices []json.RawMessage `json:"choices"`
	Usage   *struct {
		PromptTokens        int64 `json:"prompt_tokens"`
		CompletionTokens    int64 `json:"completion_tokens"`
		TotalTokens         int64 `json:"total_tokens"`
		PromptTokensDetails struct {
			CachedTokens int64 `json:"cached_tokens"`
		} `json:"prompt_tokens_details"`
		CompletionTokensDetails struct {
			ReasoningTokens int64 `json:"reasoning_tokens"`
		} `json:"completion_tokens_details"`
	} `json:"usage"`
}

func (w *wire) usage() *provider.Usage {
	if w.Usage == nil {
		return nil
	}
	return &provider.Usage{
		PromptTokens:       w.Usage.PromptTokens,
		CompletionTokens:   w.Usage.CompletionTokens,
		TotalTokens:        w.Usage.TotalTokens,
		CachedPromptTokens: w.Usage.PromptTokensDetails.CachedTokens,
		ReasoningTokens:    w.Usage.CompletionTokensDetails.ReasoningTokens,
	}
}

func (p *refProvider) unary(ctx context.Context, path string, req *provider.Request) (*provider.Response, error) {
	c, err := p.do(ctx, path, req)
	if c == nil {
		return nil, err
	}
	defer c.done()
	if err != nil {
		return &provider.Response{Failure: c.failure(err)}, nil
	}
	defer c.resp.Body.Close()
	body, err := io.ReadAll(c.resp.Body)
	if err != nil {
		return &provider.Response{Failure: c.failure(err)}, nil
	}
	if p.errOnHTTP && c.resp.StatusCode >= 400 {
		return nil, fmt.Errorf("upstream status %d", c.resp.StatusCode)
	}
	out := &provider.Response{Status: c.resp.StatusCode, Headers: relay(c.resp.Header), Body: body, Timings: c.timings()}
	if c.resp.StatusCode < 300 {
		var w wire
		if json.Unmarshal(body, &w) == nil {
			out.Usage, out.Model = w.usage(), w.Model
		}
	}
	return out, nil
}

func (p *refProvider) ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return p.unary(ctx, "/v1/chat/completions", req)
}

func (p *refProvider) Embeddings(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return p.unary(ctx, "/v1/embeddings", req)
}

func (p *refProvider) ListModels(context.Context) ([]provider.Model, error) {
	return []provider.Model{{ID: "gpt-ref", OwnedBy: "reference"}}, nil
}

func (p *refProvider) ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	c, err := p.do(ctx, "/v1/chat/completions", req)
	if c == nil {
		return nil, err
	}
	defer c.done()
	if err != nil {
		return &provider.StreamEnd{Failure: c.failure(err)}, nil
	}
	defer c.resp.Body.Close()
	if err := out.Start(provider.StreamStart{Status: c.resp.StatusCode, Headers: relay(c.resp.Header)}); err != nil {
		return &provider.StreamEnd{Failure: &provider.Failure{Kind: provider.FailureCanceled, Message: err.Error()}}, nil
	}
	if c.resp.StatusCode >= 400 {
		body, _ := io.ReadAll(c.resp.Body)
		return &provider.StreamEnd{Body: body, Timings: c.timings()}, nil
	}
	end := &provider.StreamEnd{}
	r := bufio.NewReader(c.resp.Body)
	var data [][]byte
	sawDone := false
	sendFailed := false
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			end.Timings = c.timings()
			if errors.Is(err, io.EOF) && sawDone {
				return end, nil
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("stream ended without [DONE]")
			}
			end.Failure = c.failure(err)
			return end, nil
		}
		line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
		if len(line) > 0 {
			if v, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				v, _ = bytes.CutPrefix(v, []byte(" "))
				data = append(data, v)
			}
			continue
		}
		if data == nil {
			continue
		}
		ev := provider.Event{Data: bytes.Join(data, []byte("\n"))}
		data = nil
		if string(ev.Data) == "[DONE]" {
			sawDone = true
		} else {
			var w wire
			if json.Unmarshal(ev.Data, &w) == nil {
				if w.Model != "" {
					end.Model = w.Model
				}
				if u := w.usage(); u != nil {
					end.Usage = u
					ev.UsageOnly = len(w.Choices) == 0
				}
			}
		}
		if sendFailed && !p.ignoreSend {
			continue
		}
		if err := out.Send(ev); err != nil {
			sendFailed = true
			if !p.ignoreSend {
				c.done()
				return &provider.StreamEnd{Failure: &provider.Failure{Kind: provider.FailureCanceled, Message: err.Error()}}, nil
			}
		}
	}
}
