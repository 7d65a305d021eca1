package plugin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/loom-runtime/loom/sdk/provider"
)

// asPluginEnv makes the test binary a plugin: it calls Serve instead of
// running tests (TestServeSubprocess and TestServeWithoutCookie start it
// so).
const asPluginEnv = "LOOM_SDK_TEST_AS_PLUGIN"

func TestMain(m *testing.M) {
	if os.Getenv(asPluginEnv) == "1" {
		Serve(helper{})
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// helper is the provider of the plugin processes and Serve tests. It
// answers ChatCompletions with the request body repeated `repeat` times
// (a JSON body {"repeat": N} asks for that), or blocks until its ctx ends
// when the body is "block".
type helper struct{}

func (helper) Info(context.Context) (provider.Info, error) {
	return provider.Info{Name: "helper", Version: "1.0.0", ProtocolVersion: provider.ProtocolVersion,
		Capabilities: []string{provider.CapChatCompletions}}, nil
}

func (helper) Configure(_ context.Context, cfg provider.Config) error {
	hclog.L().Debug("helper configured", "instance", cfg.Instance)
	if cfg.Instance == "bad" {
		return errors.New("instance bad is not allowed")
	}
	return nil
}

func (helper) ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	if string(req.Body) == "block" {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	var r struct{ Repeat int }
	_ = json.Unmarshal(req.Body, &r)
	return &provider.Response{Status: 200, Body: bytes.Repeat(req.Body, max(r.Repeat, 1))}, nil
}

func (helper) ChatCompletionsStream(context.Context, *provider.Request, provider.StreamSender) (*provider.StreamEnd, error) {
	return nil, provider.ErrUnsupported
}

func (helper) Embeddings(context.Context, *provider.Request) (*provider.Response, error) {
	return nil, provider.ErrUnsupported
}

func (helper) ListModels(context.Context) ([]provider.Model, error) { return nil, nil }

// bigBody is a JSON body of about n bytes.
func bigBody(n int) []byte {
	pad := strings.Repeat("x", n)
	return []byte(`{"repeat":1,"pad":"` + pad + `"}`)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServe serves in go-plugin's test mode and connects like the host
// does (Reattach instead of launching), so Serve's gRPC server options and
// GRPCDialOptions are both in play: a 20 MiB request and response pass.
func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	reattach := make(chan *goplugin.ReattachConfig, 1)
	closed := make(chan struct{})
	go Serve(helper{}, WithLogger(hclog.NewNullLogger()), WithTestConfig(&goplugin.ServeTestConfig{
		Context: ctx, ReattachConfigCh: reattach, CloseCh: closed,
	}))
	var rc *goplugin.ReattachConfig
	select {
	case rc = <-reattach:
	case <-time.After(5 * time.Second):
		t.Fatal("Serve sent no reattach config")
	}
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig: Handshake,
		// go-plugin takes the plugin set from Plugins when reattaching.
		Plugins:          VersionedPlugins()[rc.ProtocolVersion],
		Reattach:         rc,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		GRPCDialOptions:  GRPCDialOptions(),
		Logger:           hclog.NewNullLogger(),
	})
	defer func() {
		client.Kill()
		cancel()
		<-closed
	}()
	rpc, err := client.Client()
	if err != nil {
		t.Fatal(err)
	}
	p, err := Dispense(rpc)
	if err != nil {
		t.Fatal(err)
	}
	body := bigBody(20 << 20)
	resp, err := p.ChatCompletions(ctx, &provider.Request{Body: body})
	if err != nil {
		t.Fatalf("20 MiB round trip: %v", err)
	}
	if !slices.Equal(resp.Body, body) {
		t.Errorf("20 MiB round trip: body of %d bytes differs", len(resp.Body))
	}
	// Beyond MaxMessageBytes the call fails cleanly, and the plugin lives on.
	_, err = p.ChatCompletions(ctx, &provider.Request{Body: bigBody(MaxMessageBytes)})
	if err == nil || IsPluginGone(err) {
		t.Errorf("a request over MaxMessageBytes: got %v, want a ResourceExhausted error", err)
	}
	if _, err := p.Info(ctx); err != nil {
		t.Errorf("Info after an oversized request: %v", err)
	}
}

// TestServeSubprocess launches the test binary as a real plugin, the way
// Loom does: go-plugin Client with Cmd, SecureConfig, a minimal
// environment, AutoMTLS. Then it kills the plugin mid-call.
func TestServeSubprocess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a plugin process")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	_, err = io.Copy(h, f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{asPluginEnv + "=1", LogLevelEnv + "=debug"}
	var logs syncBuffer
	client := goplugin.NewClient(&goplugin.ClientConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: VersionedPlugins(),
		Cmd:              cmd,
		SecureConfig:     &goplugin.SecureConfig{Checksum: h.Sum(nil), Hash: sha256.New()},
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		GRPCDialOptions:  GRPCDialOptions(),
		AutoMTLS:         true,
		Logger:           hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace}),
	})
	defer client.Kill()
	rpc, err := client.Client()
	if err != nil {
		t.Fatalf("starting the plugin: %v\nlogs:\n%s", err, logs.String())
	}
	if v := client.NegotiatedVersion(); v != provider.ProtocolVersion {
		t.Errorf("negotiated protocol version %d, want %d", v, provider.ProtocolVersion)
	}
	p, err := Dispense(rpc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	info, err := p.Info(ctx)
	if err != nil || info.Name != "helper" {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	if err := p.Configure(ctx, provider.Config{Instance: "bad"}); err == nil ||
		err.Error() != "provider plugin: Configure: instance bad is not allowed" || IsPluginGone(err) {
		t.Errorf("Configure(bad) = %v", err)
	}
	if err := p.Configure(ctx, provider.Config{Instance: "good"}); err != nil {
		t.Fatal(err)
	}
	body := bigBody(20 << 20)
	resp, err := p.ChatCompletions(ctx, &provider.Request{Body: body})
	if err != nil || !slices.Equal(resp.Body, body) {
		t.Fatalf("20 MiB round trip through a plugin process: %v", err)
	}
	// The plugin's hclog.L() debug line reached the host's logger.
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "helper configured") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "helper configured") {
		t.Errorf("the plugin's debug log did not reach the host (LOOM_PLUGIN_LOG_LEVEL=debug):\n%s", logs.String())
	}

	// Kill the process mid-call: the host sees IsPluginGone.
	pid := client.ReattachConfig().Pid
	errc := make(chan error, 1)
	go func() {
		_, err := p.ChatCompletions(ctx, &provider.Request{Body: []byte("block")})
		errc <- err
	}()
	time.Sleep(100 * time.Millisecond)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !IsPluginGone(err) {
			t.Errorf("call in flight when the plugin died: %v, IsPluginGone = false", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the call in flight did not return after the plugin died")
	}
	_, err = p.Info(ctx)
	if !IsPluginGone(err) {
		t.Errorf("call after the plugin died: %v, IsPluginGone = false", err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for !client.Exited() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !client.Exited() {
		t.Error("client.Exited() is false after the plugin was killed")
	}
}

// Run by hand (no cookie), the plugin refuses to start, explains why on
// stderr and prints nothing on stdout.
func TestServeWithoutCookie(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = []string{asPluginEnv + "=1"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout = %q, want nothing", stdout.String())
	}
	if !strings.Contains(stderr.String(), "This binary is a plugin") {
		t.Errorf("stderr = %q, want go-plugin's explanation", stderr.String())
	}
}
