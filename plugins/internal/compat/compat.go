// Package compat is the provider.Provider the first-party plugins share:
// every call goes to an OpenAI-compatible upstream through openaicompat;
// a plugin only supplies its Info and how its configuration becomes a
// Setup (URLs, authentication, timeouts).
package compat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/loom-runtime/loom/sdk/openaicompat"
	"github.com/loom-runtime/loom/sdk/provider"
)

// Setup is what a configuration makes of a provider.
type Setup struct {
	// Upstream answers the calls.
	Upstream *openaicompat.Upstream
	// NotReady, when set, answers every call instead of the upstream: the
	// configuration lacks what calling it needs (a key, an endpoint). Loom
	// can start without it; clients learn what is missing.
	NotReady *openaicompat.LocalError
	// Check, when set, may refuse a request before it goes upstream.
	Check func(req *provider.Request) *openaicompat.LocalError
	// ListModels, when set, lists the models instead of the upstream.
	ListModels func(ctx context.Context) ([]provider.Model, error)
}

// Provider implements provider.Provider on top of a Setup.
type Provider struct {
	info      provider.Info
	configure func(provider.Config) (*Setup, error)
	setup     atomic.Pointer[Setup]
}

var _ provider.Provider = (*Provider)(nil)

// AllCapabilities are the capabilities of a provider backed by an
// OpenAI-compatible upstream.
var AllCapabilities = []string{provider.CapChatCompletions, provider.CapChatStream, provider.CapEmbeddings, provider.CapListModels}

// New returns a Provider described by info whose Configure calls
// configure.
func New(info provider.Info, configure func(provider.Config) (*Setup, error)) *Provider {
	return &Provider{info: info, configure: configure}
}

// Info describes the plugin.
func (p *Provider) Info(context.Context) (provider.Info, error) {
	info := p.info
	info.Capabilities = slices.Clone(info.Capabilities)
	info.Models = slices.Clone(info.Models)
	return info, nil
}

// Configure builds the Setup the calls use.
func (p *Provider) Configure(_ context.Context, cfg provider.Config) error {
	s, err := p.configure(cfg)
	if err != nil {
		return err
	}
	if s.Upstream == nil && s.NotReady == nil {
		return errors.New("compat: a Setup needs an Upstream or NotReady")
	}
	if old := p.setup.Swap(s); old != nil && old.Upstream != nil && old.Upstream != s.Upstream {
		old.Upstream.Client().CloseIdleConnections()
	}
	return nil
}

// errNotConfigured is a fault of the caller: Loom configures a plugin
// before calling it.
var errNotConfigured = errors.New("the provider was called before Configure")

// ready returns the Setup for req, or the local answer that replaces the
// upstream's.
func (p *Provider) ready(req *provider.Request) (*Setup, *openaicompat.LocalError, error) {
	s := p.setup.Load()
	if s == nil {
		return nil, nil, errNotConfigured
	}
	if req == nil {
		return nil, nil, errors.New("nil Request")
	}
	if s.NotReady != nil {
		return s, s.NotReady, nil
	}
	if s.Check != nil {
		if le := s.Check(req); le != nil {
			return s, le, nil
		}
	}
	return s, nil, nil
}

// ChatCompletions performs a chat completion.
func (p *Provider) ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return p.do(ctx, openaicompat.EndpointChatCompletions, req)
}

// Embeddings creates embeddings.
func (p *Provider) Embeddings(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	return p.do(ctx, openaicompat.EndpointEmbeddings, req)
}

func (p *Provider) do(ctx context.Context, endpoint string, req *provider.Request) (*provider.Response, error) {
	s, local, err := p.ready(req)
	if err != nil {
		return nil, err
	}
	if local != nil {
		return local.Response(), nil
	}
	return s.Upstream.Do(ctx, endpoint, req)
}

// ChatCompletionsStream performs a streaming chat completion.
func (p *Provider) ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	s, local, err := p.ready(req)
	if err != nil {
		return nil, err
	}
	if local != nil {
		return local.Stream(out)
	}
	return s.Upstream.Stream(ctx, req, out)
}

// ListModels lists the models the provider reaches.
func (p *Provider) ListModels(ctx context.Context) ([]provider.Model, error) {
	s := p.setup.Load()
	switch {
	case s == nil:
		return nil, errNotConfigured
	case s.ListModels != nil:
		return s.ListModels(ctx)
	case s.NotReady != nil:
		return nil, fmt.Errorf("list models: %s", s.NotReady.Message)
	}
	return s.Upstream.ListModels(ctx)
}
