package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/internal/testdb"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/sqlite"
	"github.com/loom-runtime/loom/core/trace"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// providerMap serves in-process providers by name.
type providerMap map[string]Provider

func (m providerMap) Provider(name string) (Provider, bool) { p, ok := m[name]; return p, ok }

// newRecorder is a real trace recorder on st.
func newRecorder(t *testing.T, st *sqlite.Store) *trace.Recorder {
	t.Helper()
	kr, err := seal.NewKeyring(bytes.Repeat([]byte{1}, 32), st)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := trace.Start(context.Background(), trace.Options{Store: st, Keyring: kr, SpoolDir: filepath.Join(t.TempDir(), "spool")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rec.Close(context.Background()) })
	return rec
}

type fixture struct {
	srv  *httptest.Server
	st   *sqlite.Store
	key  string
	logs *syncBuffer
	s    *Server
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	st := testdb.SQLite(t)
	tn, err := st.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := auth.NewKey()
	if _, err := st.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Prefix: auth.DisplayPrefix(key), Hash: auth.HashKey(key)}); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	s := New(Options{Store: st, Auth: auth.New(st, auth.Options{Logger: log}), Logger: log,
		Router: router.New(&config.Config{}), Providers: providerMap{}, Recorder: newRecorder(t, st)})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return &fixture{srv: srv, st: st, key: key, logs: logs, s: s}
}

func (f *fixture) do(t *testing.T, method, path, key string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

type errorBody struct {
	Error struct {
		Message *string `json:"message"`
		Type    *string `json:"type"`
		Code    *string `json:"code"`
	} `json:"error"`
}

func wantError(t *testing.T, resp *http.Response, body []byte, status int, typ, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var e errorBody
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("body %s is not JSON: %v", body, err)
	}
	if e.Error.Message == nil || *e.Error.Message == "" || e.Error.Type == nil || e.Error.Code == nil {
		t.Fatalf("body %s lacks message/type/code", body)
	}
	if *e.Error.Type != typ || *e.Error.Code != code {
		t.Fatalf("got type %q code %q, want %q %q", *e.Error.Type, *e.Error.Code, typ, code)
	}
}

func TestRoutes(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name, method, path string
		key                bool
		status             int
		typ, code          string
	}{
		{"healthz", "GET", "/healthz", false, 200, "", ""},
		{"readyz", "GET", "/readyz", false, 200, "", ""},
		{"models with key", "GET", "/v1/models", true, 200, "", ""},
		{"models without key", "GET", "/v1/models", false, 401, "invalid_request_error", "invalid_api_key"},
		{"unknown v1 path with key", "GET", "/v1/nope", true, 404, "invalid_request_error", "unknown_url"},
		{"unknown v1 path without key", "GET", "/v1/nope", false, 401, "invalid_request_error", "invalid_api_key"},
		{"unknown root path", "GET", "/nope", false, 404, "invalid_request_error", "unknown_url"},
		{"wrong method", "DELETE", "/v1/models", true, 405, "invalid_request_error", "method_not_allowed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key := ""
			if tt.key {
				key = f.key
			}
			resp, body := f.do(t, tt.method, tt.path, key)
			id, err := uuid.Parse(resp.Header.Get("X-Request-Id"))
			if err != nil || id.Version() != 7 {
				t.Fatalf("x-request-id %q is not a UUIDv7", resp.Header.Get("X-Request-Id"))
			}
			if tt.code != "" {
				wantError(t, resp, body, tt.status, tt.typ, tt.code)
				return
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tt.status, body)
			}
		})
	}
}

func TestModelsShape(t *testing.T) {
	f := newFixture(t)
	resp, body := f.do(t, "GET", "/v1/models", f.key)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	var list struct {
		Object string            `json:"object"`
		Data   []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &list); err != nil || list.Object != "list" || list.Data == nil {
		t.Fatalf("body %s is not an OpenAI model list", body)
	}
}

func TestReadyzFollowsTheStore(t *testing.T) {
	f := newFixture(t)
	f.st.Close()
	resp, body := f.do(t, "GET", "/readyz", "")
	wantError(t, resp, body, 503, "server_error", "store_unavailable")
	resp, _ = f.do(t, "GET", "/healthz", "")
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d while the store is down: the process is up", resp.StatusCode)
	}
}

func TestRequestIDsAreUnique(t *testing.T) {
	f := newFixture(t)
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		resp, _ := f.do(t, "GET", "/healthz", "")
		id := resp.Header.Get("X-Request-Id")
		if seen[id] {
			t.Fatalf("request id %s repeated", id)
		}
		seen[id] = true
	}
}

func TestAccessLogNeverHasKeys(t *testing.T) {
	f := newFixture(t)
	f.do(t, "GET", "/v1/models", f.key)
	bad := "loom_" + strings.Repeat("x", 49)
	f.do(t, "GET", "/v1/models", bad)
	for _, h := range []string{"x-api-key", "api-key"} {
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/models", nil)
		req.Header.Set(h, f.key)
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	logs := f.logs.String()
	if strings.Contains(logs, f.key) || strings.Contains(logs, f.key[13:]) || strings.Contains(logs, bad) {
		t.Fatalf("a key reached the log:\n%s", logs)
	}
	if !strings.Contains(logs, "tenant=acme") || !strings.Contains(logs, "error_code=invalid_api_key") {
		t.Fatalf("access log lacks tenant or error code:\n%s", logs)
	}
}

func TestPanicBecomes500(t *testing.T) {
	f := newFixture(t)
	h := f.s.requestID(f.s.accessLog(f.s.recover(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	}))))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	resp := rec.Result()
	wantError(t, resp, rec.Body.Bytes(), 500, "server_error", "internal_error")
	if !strings.Contains(f.logs.String(), "boom") {
		t.Fatal("panic not logged")
	}
}

func TestServeShutsDownGracefully(t *testing.T) {
	f := newFixture(t)
	slow := make(chan struct{})
	f.s.router.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		close(slow)
		time.Sleep(200 * time.Millisecond)
		w.Write([]byte("done"))
	})
	f.s.o.ShutdownTimeout = 5 * time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- f.s.Serve(ctx, ln) }()

	got := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/slow")
		if err != nil {
			got <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		got <- string(b)
	}()
	<-slow
	cancel()
	if body := <-got; body != "done" {
		t.Fatalf("in-flight request got %q during shutdown", body)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepting after shutdown")
	}
}
