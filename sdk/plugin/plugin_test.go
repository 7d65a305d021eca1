package plugin

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loom-runtime/loom/sdk/internal/providerpb"
	"github.com/loom-runtime/loom/sdk/provider"
)

// TestProtocolPinned fails when the protocol identity changes. If it fails
// because you changed one of these on purpose: stop. Every plugin binary
// already built and installed was compiled with the old values, and Loom
// will refuse to start it (cookie, protocol version) or fail every call
// (service name). An incompatible protocol change needs a new protocol
// version served side by side with the old one in VersionedPlugins (and a
// new proto package), not an edit of the existing one.
func TestProtocolPinned(t *testing.T) {
	const why = "; bumping or changing it breaks every installed plugin (see the comment on TestProtocolPinned)"
	if provider.ProtocolVersion != 1 {
		t.Errorf("provider.ProtocolVersion = %d, pinned to 1%s", provider.ProtocolVersion, why)
	}
	if Handshake.ProtocolVersion != 1 {
		t.Errorf("Handshake.ProtocolVersion = %d, pinned to 1%s", Handshake.ProtocolVersion, why)
	}
	if Handshake.MagicCookieKey != "LOOM_PROVIDER_PLUGIN" || Handshake.MagicCookieValue != "g4tHixm8D2TUcysv6oJHRdTcJk43xL5a" {
		t.Errorf("Handshake cookie = %s=%s, pinned to LOOM_PROVIDER_PLUGIN=g4tHixm8D2TUcysv6oJHRdTcJk43xL5a%s",
			Handshake.MagicCookieKey, Handshake.MagicCookieValue, why)
	}
	if PluginName != "provider" {
		t.Errorf("PluginName = %q, pinned to \"provider\"%s", PluginName, why)
	}
	if got := providerpb.Provider_ServiceDesc.ServiceName; got != "loom.provider.v1.Provider" {
		t.Errorf("gRPC service name = %q, pinned to loom.provider.v1.Provider%s", got, why)
	}
	vp := VersionedPlugins()
	if len(vp) != 1 || vp[1] == nil || vp[1][PluginName] == nil {
		t.Errorf("VersionedPlugins() = %v, want {1: {%q: …}}", vp, PluginName)
	}
	if MaxMessageBytes != 64<<20 {
		t.Errorf("MaxMessageBytes = %d, want 64 MiB (the proto file documents it)", MaxMessageBytes)
	}
}

// Every field of every type crosses both halves unchanged.
func TestRoundTripEveryField(t *testing.T) {
	s := &scripted{}
	fill(&s.info, 100)
	fill(&s.resp, 200)
	fill(&s.models, 300)
	fill(&s.start, 400)
	fill(&s.end, 600)
	s.events = []provider.Event{
		{Data: []byte(`{"choices":[{"delta":{"content":"a"}}]}`)},
		{Data: []byte("line one\nline two\r\n\x00\xff")},
		{Data: []byte(`{"choices":[],"usage":{"total_tokens":3}}`), UsageOnly: true},
		{Data: []byte("[DONE]")},
	}
	p, _, _ := connect(t, s)
	ctx := t.Context()

	info, err := p.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(info, s.info) {
		t.Errorf("Info:\n got %s\nwant %s", show(info), show(s.info))
	}

	var cfg provider.Config
	fill(&cfg, 700)
	if err := p.Configure(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.got.cfg, cfg) {
		t.Errorf("Config:\n got %s\nwant %s", show(s.got.cfg), show(cfg))
	}

	for _, call := range []struct {
		name string
		f    func(context.Context, *provider.Request) (*provider.Response, error)
	}{{"ChatCompletions", p.ChatCompletions}, {"Embeddings", p.Embeddings}} {
		var req provider.Request
		fill(&req, 800)
		resp, err := call.f(ctx, &req)
		if err != nil {
			t.Fatalf("%s: %v", call.name, err)
		}
		if !reflect.DeepEqual(s.got.req, &req) {
			t.Errorf("%s request:\n got %s\nwant %s", call.name, show(s.got.req), show(&req))
		}
		if !reflect.DeepEqual(resp, s.resp) {
			t.Errorf("%s response:\n got %s\nwant %s", call.name, show(resp), show(s.resp))
		}
	}

	models, err := p.ListModels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(models, s.models) {
		t.Errorf("ListModels:\n got %s\nwant %s", show(models), show(s.models))
	}

	var req provider.Request
	fill(&req, 900)
	var out sink
	end, err := p.ChatCompletionsStream(ctx, &req, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.got.req, &req) {
		t.Errorf("stream request:\n got %s\nwant %s", show(s.got.req), show(&req))
	}
	if len(out.starts) != 1 || !reflect.DeepEqual(out.starts[0], *s.start) {
		t.Errorf("stream starts = %+v, want [%+v]", out.starts, *s.start)
	}
	if !reflect.DeepEqual(out.events, s.events) {
		t.Errorf("stream events:\n got %s\nwant %s", show(out.events), show(s.events))
	}
	if !reflect.DeepEqual(end, s.end) {
		t.Errorf("stream end:\n got %s\nwant %s", show(end), show(s.end))
	}
}

// Nil and zero values stay nil and zero (no Usage or Failure appears).
func TestRoundTripZero(t *testing.T) {
	s := &scripted{resp: &provider.Response{Status: 204}, end: nil, start: &provider.StreamStart{Status: 200}}
	p, _, _ := connect(t, s)
	resp, err := p.ChatCompletions(t.Context(), &provider.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(resp, s.resp) {
		t.Errorf("got %+v, want %+v", resp, s.resp)
	}
	end, err := p.ChatCompletionsStream(t.Context(), &provider.Request{}, &sink{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(end, &provider.StreamEnd{}) {
		t.Errorf("a nil StreamEnd from the provider arrives as %+v, want an empty one", end)
	}
}

func TestFailureKinds(t *testing.T) {
	s := &scripted{}
	p, _, _ := connect(t, s)
	for _, kind := range []provider.FailureKind{provider.FailureNone, provider.FailureTimeout,
		provider.FailureUnreachable, provider.FailureProtocol, provider.FailureCanceled} {
		f := &provider.Failure{Kind: kind, Message: "upstream said " + kind.String()}
		s.resp = &provider.Response{Failure: f}
		s.end = &provider.StreamEnd{Failure: f}
		resp, err := p.ChatCompletions(t.Context(), &provider.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(resp.Failure, f) {
			t.Errorf("unary failure %v: got %+v", kind, resp.Failure)
		}
		end, err := p.ChatCompletionsStream(t.Context(), &provider.Request{}, &sink{})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(end.Failure, f) {
			t.Errorf("stream failure %v: got %+v", kind, end.Failure)
		}
	}
	// A kind the SDK does not know arrives as FailureProtocol.
	s.resp = &provider.Response{Failure: &provider.Failure{Kind: 42, Message: "new kind"}}
	resp, err := p.ChatCompletions(t.Context(), &provider.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Failure.Kind != provider.FailureProtocol || resp.Failure.Message != "new kind" {
		t.Errorf("unknown kind arrived as %+v, want FailureProtocol", resp.Failure)
	}
}

func TestErrUnsupported(t *testing.T) {
	s := &scripted{err: provider.ErrUnsupported}
	p, _, _ := connect(t, s)
	ctx := t.Context()
	_, errInfo := p.Info(ctx)
	errConfigure := p.Configure(ctx, provider.Config{})
	_, errChat := p.ChatCompletions(ctx, &provider.Request{})
	_, errStream := p.ChatCompletionsStream(ctx, &provider.Request{}, &sink{})
	_, errEmb := p.Embeddings(ctx, &provider.Request{})
	_, errModels := p.ListModels(ctx)
	for name, err := range map[string]error{"Info": errInfo, "Configure": errConfigure,
		"ChatCompletions": errChat, "ChatCompletionsStream": errStream, "Embeddings": errEmb, "ListModels": errModels} {
		if err != provider.ErrUnsupported || !errors.Is(err, provider.ErrUnsupported) {
			t.Errorf("%s: got %v, want provider.ErrUnsupported", name, err)
		}
		if IsPluginGone(err) {
			t.Errorf("%s: IsPluginGone(ErrUnsupported) = true", name)
		}
	}
}

// A method the plugin does not have (an older plugin) reads as unsupported.
func TestUnimplementedMethodIsUnsupported(t *testing.T) {
	if err := fromRPCError("X", status.Error(codes.Unimplemented, "unknown method X")); err != provider.ErrUnsupported {
		t.Errorf("got %v, want provider.ErrUnsupported", err)
	}
}

func TestProviderErrors(t *testing.T) {
	s := &scripted{err: errors.New("settings: base_url is required")}
	p, _, _ := connect(t, s)
	err := p.Configure(t.Context(), provider.Config{})
	if err == nil {
		t.Fatal("Configure succeeded")
	}
	if want := "provider plugin: Configure: settings: base_url is required"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
	var ce *CallError
	if !errors.As(err, &ce) || ce.Method != "Configure" || status.Code(err) != codes.Unknown {
		t.Errorf("error %#v is not a *CallError for Configure with code Unknown", err)
	}
	if IsPluginGone(err) {
		t.Error("IsPluginGone = true for an error the provider returned")
	}

	// A provider cannot make its error look like a dead plugin.
	s.err = status.Error(codes.Unavailable, "some upstream gRPC service is down")
	_, err = p.ChatCompletions(t.Context(), &provider.Request{})
	if err == nil || IsPluginGone(err) {
		t.Errorf("a provider's UNAVAILABLE error: got %v (gone: %v), want an error that is not IsPluginGone", err, IsPluginGone(err))
	}

	// A nil response without error is the plugin's bug.
	s.err = nil
	s.resp = nil
	_, err = p.ChatCompletions(t.Context(), &provider.Request{})
	if status.Code(err) != codes.Internal || IsPluginGone(err) {
		t.Errorf("nil response: got %v, want an Internal error", err)
	}
}

// A stream whose provider breaks the StreamSender contract fails.
func TestStreamContractViolations(t *testing.T) {
	for name, f := range map[string]func(context.Context, provider.StreamSender) (*provider.StreamEnd, error){
		"send before start": func(_ context.Context, out provider.StreamSender) (*provider.StreamEnd, error) {
			if err := out.Send(provider.Event{Data: []byte("x")}); err == nil {
				return nil, errors.New("Send before Start succeeded")
			}
			return &provider.StreamEnd{}, nil
		},
		"start twice": func(_ context.Context, out provider.StreamSender) (*provider.StreamEnd, error) {
			_ = out.Start(provider.StreamStart{Status: 200})
			if err := out.Start(provider.StreamStart{Status: 200}); err == nil {
				return nil, errors.New("second Start succeeded")
			}
			return &provider.StreamEnd{}, nil
		},
	} {
		t.Run(strings.ReplaceAll(name, " ", "_"), func(t *testing.T) {
			p, _, _ := connect(t, &scripted{stream: f})
			_, err := p.ChatCompletionsStream(t.Context(), &provider.Request{}, &sink{})
			if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "StreamSender") {
				t.Errorf("got %v, want an Internal error naming the violation", err)
			}
		})
	}
}

// Header values that are not UTF-8 do not break the call.
func TestInvalidUTF8(t *testing.T) {
	s := &scripted{resp: &provider.Response{Status: 200, Headers: map[string]string{"X-Latin1": "caf\xe9"},
		Failure: &provider.Failure{Kind: provider.FailureProtocol, Message: "bad \xff byte"}}}
	p, _, _ := connect(t, s)
	resp, err := p.ChatCompletions(t.Context(), &provider.Request{Headers: map[string]string{"X-In": "\xfe"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.Headers["X-Latin1"]; got != "caf\uFFFD" {
		t.Errorf("header = %q, want %q", got, "caf\uFFFD")
	}
	if resp.Failure.Message != "bad \uFFFD byte" {
		t.Errorf("failure message = %q", resp.Failure.Message)
	}
	if got := s.got.req.Headers["X-In"]; got != "\uFFFD" {
		t.Errorf("request header = %q", got)
	}
}

// A 20 MiB response body crosses go-plugin's test connection (whose server
// keeps gRPC's default 4 MiB receive limit, so the 20 MiB request body is
// tested through Serve in TestServe).
func TestLargeResponseBody(t *testing.T) {
	big := make([]byte, 20<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	s := &scripted{resp: &provider.Response{Status: 200, Body: big}}
	p, _, _ := connect(t, s)
	resp, err := p.ChatCompletions(t.Context(), &provider.Request{Body: []byte("{}")})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(resp.Body, big) {
		t.Errorf("20 MiB body: got %d bytes, not the same", len(resp.Body))
	}
}

// When the caller's ctx ends, the result is a Failure, not an error.
func TestCallerCtxEndsIsFailure(t *testing.T) {
	s := &scripted{block: true}
	p, _, _ := connect(t, s)

	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	resp, err := p.ChatCompletions(ctx, &provider.Request{})
	if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureCanceled {
		t.Errorf("cancelled: got %+v, %v; want Failure Canceled", resp, err)
	}

	ctx, cancel = context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	resp, err = p.Embeddings(ctx, &provider.Request{})
	if err != nil || resp.Failure == nil || resp.Failure.Kind != provider.FailureTimeout {
		t.Errorf("deadline: got %+v, %v; want Failure Timeout", resp, err)
	}
}
