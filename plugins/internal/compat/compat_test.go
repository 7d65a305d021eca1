package compat

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/loom-runtime/loom/sdk/openaicompat"
	"github.com/loom-runtime/loom/sdk/provider"
)

type sink struct{ starts []provider.StreamStart }

func (s *sink) Start(st provider.StreamStart) error { s.starts = append(s.starts, st); return nil }
func (s *sink) Send(provider.Event) error           { return errors.New("no events expected") }

func TestProvider(t *testing.T) {
	ctx := context.Background()
	info := provider.Info{Name: "x", Capabilities: AllCapabilities}
	var setup *Setup
	var setupErr error
	p := New(info, func(provider.Config) (*Setup, error) { return setup, setupErr })

	got, _ := p.Info(ctx)
	got.Capabilities[0] = "changed"
	if again, _ := p.Info(ctx); again.Capabilities[0] != provider.CapChatCompletions {
		t.Error("Info hands out its own slice")
	}

	if _, err := p.ChatCompletions(ctx, &provider.Request{}); !errors.Is(err, errNotConfigured) {
		t.Errorf("before Configure: %v", err)
	}
	if _, err := p.ListModels(ctx); !errors.Is(err, errNotConfigured) {
		t.Errorf("ListModels before Configure: %v", err)
	}

	setupErr = errors.New(`setting "x": bad`)
	if err := p.Configure(ctx, provider.Config{}); err != setupErr {
		t.Errorf("Configure error = %v", err)
	}
	setupErr, setup = nil, &Setup{}
	if err := p.Configure(ctx, provider.Config{}); err == nil {
		t.Error("an empty Setup was accepted")
	}

	notReady := &openaicompat.LocalError{Status: http.StatusUnauthorized, Message: "no key", Type: "t", Code: "c"}
	setup = &Setup{NotReady: notReady}
	if err := p.Configure(ctx, provider.Config{}); err != nil {
		t.Fatal(err)
	}
	resp, err := p.Embeddings(ctx, &provider.Request{})
	if err != nil || resp.Status != 401 {
		t.Errorf("NotReady: %v %+v", err, resp)
	}
	s := &sink{}
	if end, err := p.ChatCompletionsStream(ctx, &provider.Request{}, s); err != nil || len(s.starts) != 1 || len(end.Body) == 0 {
		t.Errorf("NotReady stream: %v %+v", err, end)
	}
	if _, err := p.ListModels(ctx); err == nil || err.Error() != "list models: no key" {
		t.Errorf("ListModels NotReady: %v", err)
	}
	if _, err := p.ChatCompletions(ctx, nil); err == nil {
		t.Error("nil request accepted")
	}

	u, err := openaicompat.NewUpstream(openaicompat.UpstreamOptions{URL: func(string, string) (string, error) { return "http://127.0.0.1:1/x", nil }})
	if err != nil {
		t.Fatal(err)
	}
	refused := &openaicompat.LocalError{Status: http.StatusNotFound, Message: "no", Type: "t", Code: "c"}
	setup = &Setup{Upstream: u, Check: func(*provider.Request) *openaicompat.LocalError { return refused },
		ListModels: func(context.Context) ([]provider.Model, error) { return []provider.Model{{ID: "m"}}, nil }}
	if err := p.Configure(ctx, provider.Config{}); err != nil {
		t.Fatal(err)
	}
	if resp, err := p.ChatCompletions(ctx, &provider.Request{}); err != nil || resp.Status != 404 {
		t.Errorf("Check: %v %+v", err, resp)
	}
	if models, err := p.ListModels(ctx); err != nil || len(models) != 1 {
		t.Errorf("Setup.ListModels: %v %v", models, err)
	}
}
