package server_test

import (
	"bufio"
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/internal/testbin"
	"github.com/loom-runtime/loom/core/internal/testdb"
	"github.com/loom-runtime/loom/core/pluginhost"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/server"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/trace"
)

type hostProviders struct{ h *pluginhost.Host }

func (p hostProviders) Provider(name string) (server.Provider, bool) {
	i, ok := p.h.Instance(name)
	return i, ok
}

// 1,000 clients walk away from slow streams (40 s each) served by the real echo plugin:
// the gateway must not keep a goroutine for any of them.
func TestNoGoroutineLeakAfterDisconnects(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	ctx := context.Background()
	st := testdb.SQLite(t)
	tn, _ := st.CreateTenant(ctx, "acme")
	key, _ := auth.NewKey()
	st.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Prefix: auth.DisplayPrefix(key), Hash: auth.HashKey(key)})

	cfg := &config.Config{
		Providers: []config.Provider{{Name: "echo", Plugin: "echo", Settings: map[string]any{"delay_ms": 20}}},
		Tenants:   []config.TenantRoutes{{Tenant: "default", Routes: []config.Route{{Match: "*", Provider: "echo"}}}},
	}
	host, err := pluginhost.Start(ctx, cfg.Providers, pluginhost.Options{PluginsDir: filepath.Join(testbin.Dir(t), "plugins"), LogLevel: "warn"})
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	kr, err := seal.NewKeyring(bytes.Repeat([]byte{1}, 32), st)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := trace.Start(ctx, trace.Options{Store: st, Keyring: kr, SpoolDir: filepath.Join(t.TempDir(), "spool")})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close(ctx)
	s := server.New(server.Options{Store: st, Auth: auth.New(st, auth.Options{}), Router: router.New(cfg), Providers: hostProviders{host}, Recorder: rec})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	body := `{"model":"echo-1","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 2000) + `"}]}`
	disconnect := func() {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		line, _ := bufio.NewReader(resp.Body).ReadString('\n') // first event arrived: the stream is live
		if !strings.HasPrefix(line, "data: ") {
			t.Errorf("first line %q", line)
		}
		cancel()
		resp.Body.Close()
	}
	// Warm up pools (HTTP keep-alive, gRPC) before taking the baseline.
	for i := 0; i < 20; i++ {
		disconnect()
	}
	time.Sleep(200 * time.Millisecond)
	client.CloseIdleConnections()
	base := runtime.NumGoroutine()

	sem := make(chan struct{}, 50)
	for i := 0; i < 1000; i++ {
		sem <- struct{}{}
		go func() { defer func() { <-sem }(); disconnect() }()
	}
	for i := 0; i < cap(sem); i++ {
		sem <- struct{}{}
	}
	client.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	n := runtime.NumGoroutine()
	for n > base+10 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > base+10 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines after 1,000 disconnects, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
	t.Logf("goroutines: %d before, %d after 1,000 disconnects", base, n)
}
