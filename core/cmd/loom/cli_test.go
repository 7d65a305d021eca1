package main

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/internal/testbin"
	"github.com/loom-runtime/loom/core/internal/testpg"
)

func TestMain(m *testing.M) {
	code := testpg.Main(m)
	testbin.Cleanup()
	os.Exit(code)
}

// A base64 master key, as an operator would set it.
const testMasterKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

func storeEnv(t *testing.T, backend string) []string {
	t.Helper()
	if backend == "postgres" {
		return []string{"LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN=" + testpg.DSN(t)}
	}
	return []string{"LOOM_STORE_DRIVER=sqlite", "LOOM_STORE_DSN=" + filepath.Join(t.TempDir(), "loom.db")}
}

// loomCmd is the real bin/loom run in dir with a minimal environment.
func loomCmd(t *testing.T, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	return testbin.Command(t, dir, env, args...)
}

type result struct {
	stdout, stderr string
	code           int
}

func runLoom(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	r := testbin.Run(t, dir, env, args...)
	return result{r.Stdout, r.Stderr, r.Code}
}

func mustRun(t *testing.T, dir string, env []string, args ...string) string {
	t.Helper()
	return testbin.MustRun(t, dir, env, args...)
}

// lastLine is what `loom key create` promises: the key alone on the last line.
func lastLine(s string) string { return testbin.LastLine(s) }

type lockedBuffer = testbin.LockedBuffer

func freeAddr(t *testing.T) string {
	t.Helper()
	return testbin.FreeAddr(t)
}

// gateway is a running `loom serve`.
type gateway struct {
	srv    *testbin.Server
	cmd    *exec.Cmd
	url    string
	stdout *lockedBuffer
	stderr *lockedBuffer
}

// startServeNoWait starts `loom serve` without waiting for it to listen.
func startServeNoWait(t *testing.T, dir string, env []string, args ...string) *gateway {
	t.Helper()
	s := testbin.Serve(t, dir, env, args...)
	return &gateway{srv: s, cmd: s.Cmd, url: s.URL, stdout: s.Stdout, stderr: s.Stderr}
}

// startServe starts `loom serve` and waits until /healthz answers.
func startServe(t *testing.T, dir string, env []string, args ...string) *gateway {
	t.Helper()
	s := startServeNoWait(t, dir, env, args...)
	s.srv.WaitHealthy(t, 2*time.Minute) // a guard against hanging, not a wait
	return s
}

// stop signals the server and returns its exit code (-1 if killed).
func (s *gateway) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	return s.srv.Stop(t, sig)
}

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue finds one unlabelled sample in a Prometheus text exposition.
func metricValue(exposition, name string) (float64, bool) {
	for _, line := range strings.Split(exposition, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f, err == nil
		}
	}
	return 0, false
}

// gaugeValue reads one unlabelled metric from the gateway's /metrics.
func gaugeValue(t *testing.T, gw *gateway, name string) float64 {
	t.Helper()
	code, body := get(t, gw.url+"/metrics", "Authorization", "Bearer admin-token-secret")
	v, ok := metricValue(body, name)
	if code != http.StatusOK || !ok {
		t.Fatalf("/metrics: %d, no %s:\n%s", code, name, body)
	}
	return v
}

// prodConfig is a config without the dev block: keys must come from the environment.
const prodConfig = `
store {
  driver = "sqlite"
  dsn    = "loom.db"
}
provider "openai" {
  env { api_key = "OPENAI_API_KEY" }
}
tenant "default" {
  route {
    match    = "*"
    provider = "openai"
  }
}
`

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The acceptance path of the Foundation: tenant and key from the CLI, then
// the key works against a running gateway — on SQLite and on PostgreSQL.
func TestTenantKeyLifecycle(t *testing.T) {
	for _, backend := range []string{"sqlite", "postgres"} {
		t.Run(backend, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "loom.hcl"), prodConfig)
			env := append(storeEnv(t, backend), "LOOM_MASTER_KEY="+testMasterKey, "LOOM_AUTH_CACHE_TTL=200ms")

			out := mustRun(t, dir, env, "tenant", "create", "acme")
			if !strings.Contains(out, "created tenant acme") {
				t.Fatalf("tenant create said %q", out)
			}
			if r := runLoom(t, dir, env, "tenant", "create", "acme"); r.code == 0 || !strings.Contains(r.stderr, "already exists") {
				t.Fatalf("duplicate tenant: exit %d, stderr %q", r.code, r.stderr)
			}
			if r := runLoom(t, dir, env, "tenant", "create", "Bad Name"); r.code != 2 {
				t.Fatalf("invalid tenant name: exit %d, stderr %q", r.code, r.stderr)
			}
			key := lastLine(mustRun(t, dir, env, "key", "create", "--tenant", "acme", "--label", "ci"))
			if err := auth.ParseKey(key); err != nil {
				t.Fatalf("last line %q is not a key: %v", key, err)
			}
			other := lastLine(mustRun(t, dir, env, "key", "create", "--config", "loom.hcl", "--tenant=acme"))
			if r := runLoom(t, dir, env, "key", "create", "--tenant", "nobody"); r.code != 1 || !strings.Contains(r.stderr, "no tenant") {
				t.Fatalf("key for unknown tenant: exit %d, stderr %q", r.code, r.stderr)
			}

			list := mustRun(t, dir, env, "key", "list", "--tenant", "acme")
			if !strings.Contains(list, auth.DisplayPrefix(key)) || !strings.Contains(list, "ci") || strings.Contains(list, key) {
				t.Fatalf("key list:\n%s", list)
			}
			tenants := mustRun(t, dir, env, "tenant", "list")
			if !strings.Contains(tenants, "acme") || !strings.Contains(tenants, "active") {
				t.Fatalf("tenant list:\n%s", tenants)
			}

			srv := startServe(t, dir, env)
			for _, h := range []string{"Authorization", "x-api-key", "api-key"} {
				v := key
				if h == "Authorization" {
					v = "Bearer " + key
				}
				if code, body := get(t, srv.url+"/v1/models", h, v); code != 200 {
					t.Fatalf("%s: GET /v1/models = %d %s", h, code, body)
				}
			}
			if code, body := get(t, srv.url+"/v1/models"); code != 401 || !strings.Contains(body, `"code":"invalid_api_key"`) {
				t.Fatalf("no key: %d %s", code, body)
			}
			if code, _ := get(t, srv.url+"/readyz"); code != 200 {
				t.Fatalf("readyz %d", code)
			}

			// Revoke one key: it stops within the cache TTL; the other keeps working.
			var keyID string
			for _, line := range strings.Split(mustRun(t, dir, env, "key", "list", "--tenant", "acme"), "\n") {
				if strings.Contains(line, auth.DisplayPrefix(key)) {
					keyID = strings.Fields(line)[0]
				}
			}
			if out := mustRun(t, dir, env, "key", "revoke", keyID); !strings.Contains(out, "revoked") {
				t.Fatalf("revoke said %q", out)
			}
			if r := runLoom(t, dir, env, "key", "revoke", "00000000-0000-0000-0000-000000000000"); r.code != 1 {
				t.Fatalf("revoke unknown: exit %d", r.code)
			}
			waitStatus(t, srv.url+"/v1/models", key, 401)
			if code, _ := get(t, srv.url+"/v1/models", "Authorization", "Bearer "+other); code != 200 {
				t.Fatalf("unrevoked key refused: %d", code)
			}
			if !strings.Contains(mustRun(t, dir, env, "key", "list", "--tenant", "acme"), "T") {
				t.Fatal("key list shows no times")
			}

			// Disable the tenant: its keys stop within the TTL; enable brings them back.
			mustRun(t, dir, env, "tenant", "disable", "acme")
			waitStatus(t, srv.url+"/v1/models", other, 401)
			mustRun(t, dir, env, "tenant", "enable", "acme")
			waitStatus(t, srv.url+"/v1/models", other, 200)

			if code := srv.stop(t, syscall.SIGTERM); code != 0 {
				t.Fatalf("exit %d after SIGTERM\n%s", code, srv.stderr.String())
			}
			// Last use is recorded (flushed at shutdown at the latest).
			for _, line := range strings.Split(mustRun(t, dir, env, "key", "list", "--tenant", "acme"), "\n") {
				if strings.Contains(line, auth.DisplayPrefix(other)) && strings.Count(line, "T") < 2 {
					t.Fatalf("last used not recorded: %q", line)
				}
			}
			if logs := srv.stderr.String(); strings.Contains(logs, key) || strings.Contains(logs, other) {
				t.Fatal("a raw key reached the log")
			}
		})
	}
}

// waitStatus polls until the key gets the wanted status (within 3s, well
// above the 200ms TTL the test configures).
func waitStatus(t *testing.T, url, key string, want int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		code, body := get(t, url, "Authorization", "Bearer "+key)
		if code == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %d (%s), want %d within the TTL", code, body, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// make run's first start: dev master key generated with mode 0600, a dev
// tenant and key printed; the second start reuses both.
func TestDevFirstRun(t *testing.T) {
	dir := t.TempDir()
	cfg, err := os.ReadFile(filepath.Join(testbin.RepoRoot(t), "loom.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "loom.hcl"), string(cfg))

	srv := startServe(t, dir, nil)
	key := ""
	sc := bufio.NewScanner(strings.NewReader(srv.stdout.String()))
	for sc.Scan() {
		if f := strings.TrimSpace(sc.Text()); strings.HasPrefix(f, "loom_") {
			key = f
		}
	}
	if err := auth.ParseKey(key); err != nil {
		t.Fatalf("no dev key printed; stdout:\n%s", srv.stdout.String())
	}
	if !strings.Contains(srv.stderr.String(), "WARNING") || !strings.Contains(srv.stderr.String(), "DEVELOPMENT master key") {
		t.Fatalf("no loud warning about the dev key:\n%s", srv.stderr.String())
	}
	info, err := os.Stat(filepath.Join(dir, ".loom", "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("master key mode %v, want 0600", info.Mode().Perm())
	}
	keyFile, _ := os.ReadFile(filepath.Join(dir, ".loom", "master.key"))
	if code, body := get(t, srv.url+"/v1/models", "Authorization", "Bearer "+key); code != 200 {
		t.Fatalf("dev key: %d %s", code, body)
	}
	if code := srv.stop(t, os.Interrupt); code != 0 {
		t.Fatalf("exit %d after SIGINT", code)
	}

	srv = startServe(t, dir, nil)
	if strings.Contains(srv.stdout.String(), "loom_") {
		t.Fatalf("second start printed a new key:\n%s", srv.stdout.String())
	}
	if again, _ := os.ReadFile(filepath.Join(dir, ".loom", "master.key")); !bytes.Equal(again, keyFile) {
		t.Fatal("master key changed between runs")
	}
	if code, _ := get(t, srv.url+"/v1/models", "Authorization", "Bearer "+key); code != 200 {
		t.Fatalf("dev key refused after restart: %d", code)
	}
	srv.stop(t, syscall.SIGTERM)

	// A key file others can read is refused.
	os.Chmod(filepath.Join(dir, ".loom", "master.key"), 0o644)
	r := runLoom(t, dir, []string{"LOOM_LISTEN=" + freeAddr(t)}, "serve")
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 600") {
		t.Fatalf("world-readable key: exit %d\n%s", r.code, r.stderr)
	}
}

func TestServeRefusesToStart(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "loom.hcl"), prodConfig)
	writeFile(t, filepath.Join(dir, "bad.hcl"), `
listen = 5
store {
  drvier = "sqlite"
}
tenant "default" {
  route {
    match    = "*"
    provider = "opneai"
  }
}
`)
	tests := []struct {
		name   string
		env    []string
		args   []string
		code   int
		stderr []string
	}{
		{"invalid config", nil, []string{"serve", "--config", "bad.hcl"}, 2,
			[]string{"bad.hcl: listen:", "bad.hcl: store.drvier:", `bad.hcl: tenant.default.route[0].provider: provider "opneai" is not defined`}},
		{"missing config file", nil, []string{"serve", "--config", "nope.hcl"}, 2, []string{"nope.hcl"}},
		{"no master key", nil, []string{"serve"}, 1, []string{"LOOM_MASTER_KEY is not set"}},
		{"malformed master key", []string{"LOOM_MASTER_KEY=short"}, []string{"serve"}, 2,
			[]string{"LOOM_MASTER_KEY (environment)", "32 bytes"}},
		{"bad driver from env", []string{"LOOM_STORE_DRIVER=mysql", "LOOM_MASTER_KEY=" + testMasterKey}, []string{"serve"}, 2,
			[]string{"LOOM_STORE_DRIVER (environment)"}},
		{"unreachable postgres", []string{"LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN=postgres://loom@127.0.0.1:1/loom?connect_timeout=2", "LOOM_MASTER_KEY=" + testMasterKey},
			[]string{"serve"}, 1, []string{"open postgres store"}},
		{"unknown command", nil, []string{"frobnicate"}, 2, []string{`unknown command "frobnicate"`, "Usage:"}},
		{"missing tenant flag", nil, []string{"key", "create"}, 2, []string{"--tenant"}},
		{"extra argument", nil, []string{"tenant", "list", "extra"}, 2, []string{"takes no arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runLoom(t, dir, append(tt.env, "LOOM_LISTEN="+freeAddr(t)), tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstderr: %s", r.code, tt.code, r.stderr)
			}
			for _, want := range tt.stderr {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if r.stdout != "" {
				t.Errorf("errors leaked to stdout: %q", r.stdout)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	out := mustRun(t, t.TempDir(), nil, "version")
	if !strings.HasPrefix(out, "loom ") {
		t.Fatalf("version printed %q", out)
	}
}

// Several processes starting at once on one fresh PostgreSQL database all
// succeed: migrations run under an advisory lock.
func TestConcurrentMigrateOnPostgres(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "loom.hcl"), prodConfig)
	env := storeEnv(t, "postgres")
	var wg sync.WaitGroup
	results := make([]result, 6)
	for i := range results {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			results[i] = runLoom(t, dir, env, "migrate")
		}(i)
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Fatalf("migrate #%d: exit %d: %s", i, r.code, r.stderr)
		}
	}
	out := mustRun(t, dir, env, "tenant", "list")
	if strings.TrimSpace(out) != strings.TrimSpace("NAME  STATUS  CREATED  ID") {
		t.Fatalf("fresh store lists %q", out)
	}
}
