// Package providertest is the conformance suite for Loom provider plugins.
// A plugin author runs it from a test of their provider package:
//
//	func TestConformance(t *testing.T) {
//		providertest.Run(t, providertest.Harness{
//			New: func() provider.Provider { return myprovider.New() },
//			Config: func(upstreamURL string) provider.Config {
//				return provider.Config{
//					Instance: "test",
//					Settings: []byte(`{"base_url":"` + upstreamURL + `/v1"}`),
//					Secrets:  map[string]string{"api_key": "sk-test"},
//				}
//			},
//			Model:         "gpt-4o-mini",
//			CallsUpstream: true,
//		})
//	}
//
// Run checks the provider against the rules of package provider: bodies
// pass through byte for byte, upstream HTTP errors are results, not Go
// errors, streams relay each event as it arrives, failures are classified,
// cancellation reaches the upstream, and so on. It runs every check twice:
// calling the provider directly, and through the real plugin protocol
// (both gRPC halves of package plugin, in process), so what passes here
// works inside Loom.
//
// The upstream is a FakeUpstream speaking OpenAI's shapes, started afresh
// for each check.
package providertest

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	goplugin "github.com/hashicorp/go-plugin"

	"github.com/loom-runtime/loom/sdk/plugin"
	"github.com/loom-runtime/loom/sdk/provider"
)

// Harness describes the provider under test. See Run.
type Harness struct {
	// New returns a fresh, unconfigured provider. It is called for every
	// check.
	New func() provider.Provider
	// Config returns the configuration that points the provider at the
	// fake upstream, whose base URL ("http://127.0.0.1:PORT", no path, no
	// trailing slash) it is given, secrets included. Configure must
	// succeed with it even when nothing listens at that URL (the suite
	// checks unreachable upstreams this way).
	Config func(upstreamURL string) provider.Config
	// Model is the model to request (Request.Model and "model" in bodies).
	Model string
	// CallsUpstream is false for providers that answer themselves (such
	// as the echo example): the checks of upstream behaviour are skipped
	// and the provider's own answers are checked for OpenAI's shapes.
	CallsUpstream bool
	// CheckUpstreamRequest, when set, is called for each chat completion
	// and embeddings request the fake upstream received, after the call
	// returned, for provider-specific checks: URL path and query (e.g.
	// api-version), authentication headers. r's body is empty; body holds
	// it.
	CheckUpstreamRequest func(t *testing.T, r *http.Request, body []byte)
}

// Run runs the conformance suite against the provider h describes, as
// subtests "direct/…" and "grpc/…" of t.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.New == nil || h.Config == nil {
		t.Fatal("providertest: Harness.New and Harness.Config are required")
	}
	if h.Model == "" {
		t.Fatal("providertest: Harness.Model is required")
	}
	modes := []struct {
		name    string
		connect connector
	}{
		{"direct", direct},
		{"grpc", viaGRPC},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			s := &suite{h: h, connect: m.connect}
			ctx, cancel := s.ctx(t)
			defer cancel()
			info, err := s.connect(t, h.New()).Info(ctx)
			if err != nil {
				t.Fatalf("Info: %v", err)
			}
			s.caps = map[string]bool{}
			for _, c := range info.Capabilities {
				s.caps[c] = true
			}
			if h.CallsUpstream {
				s.runUpstream(t)
			} else {
				s.runSelf(t)
			}
		})
	}
}

// connector returns the provider the checks call: p itself, or a client
// of p through the plugin protocol.
type connector func(t *testing.T, p provider.Provider) provider.Provider

func direct(_ *testing.T, p provider.Provider) provider.Provider { return p }

func viaGRPC(t *testing.T, p provider.Provider) provider.Provider {
	t.Helper()
	client, server := goplugin.TestPluginGRPCConn(t, false, goplugin.PluginSet{
		plugin.PluginName: &plugin.ProviderPlugin{Impl: p},
	})
	t.Cleanup(func() {
		server.Stop()
		_ = client.Close()
	})
	pp, err := plugin.Dispense(client)
	if err != nil {
		t.Fatalf("dispensing the provider over gRPC: %v", err)
	}
	return pp
}

type suite struct {
	h       Harness
	connect connector
	caps    map[string]bool
}

// callTimeout bounds every call of the suite, so a hung provider fails
// the check instead of hanging the test binary.
const callTimeout = 20 * time.Second

func (s *suite) ctx(t *testing.T) (context.Context, context.CancelFunc) {
	return context.WithTimeout(t.Context(), callTimeout)
}

// configured returns a fresh provider (through the check's connector),
// configured to call upstreamURL.
func (s *suite) configured(t *testing.T, upstreamURL string) provider.Provider {
	t.Helper()
	p := s.connect(t, s.h.New())
	ctx, cancel := s.ctx(t)
	defer cancel()
	if err := p.Configure(ctx, s.h.Config(upstreamURL)); err != nil {
		t.Fatalf("Configure: %v", err)
	}
	return p
}

// setup starts a fake upstream and a provider configured to call it.
func (s *suite) setup(t *testing.T) (*FakeUpstream, provider.Provider) {
	t.Helper()
	u := NewFakeUpstream(t)
	return u, s.configured(t, u.URL)
}

// needs skips the check unless the provider reports capability c.
func (s *suite) needs(t *testing.T, c string) {
	t.Helper()
	if !s.caps[c] {
		t.Skipf("the provider does not report capability %q", c)
	}
}

// request is a Request for body with the harness's model.
func (s *suite) request(body []byte) *provider.Request {
	return &provider.Request{
		RequestID: "0190f3c2-6c1e-7c3a-9d4e-5a6b7c8d9e0f",
		Model:     s.h.Model,
		Body:      body,
	}
}

// checkUpstream hands the chat and embeddings requests the fake upstream
// received to Harness.CheckUpstreamRequest.
func (s *suite) checkUpstream(t *testing.T, u *FakeUpstream) {
	t.Helper()
	if s.h.CheckUpstreamRequest == nil {
		return
	}
	for _, r := range u.Requests() {
		path := strings.TrimSuffix(r.Request.URL.Path, "/")
		if strings.HasSuffix(path, "/chat/completions") || strings.HasSuffix(path, "/embeddings") {
			s.h.CheckUpstreamRequest(t, r.Request, r.Body)
		}
	}
}

// closedURL is the base URL of a local port nothing listens on.
func closedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "http://" + addr
}

// header looks name up in h case-insensitively.
func header(h map[string]string, name string) (string, bool) {
	for k, v := range h {
		if strings.EqualFold(k, name) {
			return v, true
		}
	}
	return "", false
}

func usageOf(prompt, completion, total, cached, reasoning int64) *provider.Usage {
	return &provider.Usage{
		PromptTokens:       prompt,
		CompletionTokens:   completion,
		TotalTokens:        total,
		CachedPromptTokens: cached,
		ReasoningTokens:    reasoning,
	}
}

func checkUsage(t *testing.T, what string, got, want *provider.Usage) {
	t.Helper()
	switch {
	case got == nil && want == nil:
	case got == nil:
		t.Errorf("%s: Usage is nil, want %+v (parsed from usage, usage.prompt_tokens_details.cached_tokens and usage.completion_tokens_details.reasoning_tokens)", what, *want)
	case want == nil:
		t.Errorf("%s: Usage = %+v, want nil", what, *got)
	case *got != *want:
		t.Errorf("%s: Usage = %+v, want %+v (parsed from usage, usage.prompt_tokens_details.cached_tokens and usage.completion_tokens_details.reasoning_tokens)", what, *got, *want)
	}
}

func checkTimings(t *testing.T, what string, tm provider.Timings) {
	t.Helper()
	if tm.FirstByte <= 0 || tm.Total <= 0 || tm.FirstByte > tm.Total {
		t.Errorf("%s: Timings = {FirstByte: %v, Total: %v}, want 0 < FirstByte <= Total", what, tm.FirstByte, tm.Total)
	}
}

func checkInfo(t *testing.T, info provider.Info) {
	t.Helper()
	if info.Name == "" {
		t.Error("Info.Name is empty")
	}
	if info.Version == "" {
		t.Error("Info.Version is empty")
	}
	if info.ProtocolVersion != provider.ProtocolVersion {
		t.Errorf("Info.ProtocolVersion = %d, want provider.ProtocolVersion (%d)", info.ProtocolVersion, provider.ProtocolVersion)
	}
	if len(info.Capabilities) == 0 {
		t.Error("Info.Capabilities is empty")
	}
	known := map[string]bool{
		provider.CapChatCompletions: true,
		provider.CapChatStream:      true,
		provider.CapEmbeddings:      true,
		provider.CapListModels:      true,
	}
	seen := map[string]bool{}
	for _, c := range info.Capabilities {
		if !known[c] {
			t.Errorf("Info.Capabilities: unknown capability %q (use the provider.Cap… constants)", c)
		}
		if seen[c] {
			t.Errorf("Info.Capabilities: %q listed twice", c)
		}
		seen[c] = true
	}
	for i, m := range info.Models {
		if m.ID == "" {
			t.Errorf("Info.Models[%d].ID is empty", i)
		}
	}
}
