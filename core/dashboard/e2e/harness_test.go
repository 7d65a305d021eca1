// Package e2e drives the dashboard in a real browser against a real gateway:
// bin/loom serve with the echo plugin, a tenant and key made with the CLI,
// traffic through /v1/chat/completions, then Chromium (via chromedp) signs
// in at /dashboard/ and checks what it shows against the API.
package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/dashboard/web"
	"github.com/loom-runtime/loom/core/internal/testbin"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// A base64 master key, as an operator would set it.
const masterKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="

const adminToken = "e2e-admin-token-0123456789abcdef"

const config = `
store {
  driver = "sqlite"
  dsn    = "loom.db"
}
provider "echo" {
  plugin = "echo"
}
tenant "default" {
  route {
    match    = "*"
    provider = "echo"
  }
}
`

// gateway is a running `loom serve` with one tenant and its key.
type gateway struct {
	url string
	key string
}

// startGateway writes a config with the echo provider, creates tenant acme
// and a key with the CLI, and starts `loom serve` on a free port.
func startGateway(t *testing.T) *gateway {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "loom.hcl"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"LOOM_MASTER_KEY=" + masterKey,
		"LOOM_TRACE_BATCH_INTERVAL=10ms",
		"LOOM_ADMIN_TOKEN=" + adminToken,
	}
	testbin.MustRun(t, dir, env, "tenant", "create", "acme")
	key := testbin.LastLine(testbin.MustRun(t, dir, env, "key", "create", "--tenant", "acme", "--label", "e2e"))
	if !strings.HasPrefix(key, "loom_") {
		t.Fatalf("key create printed %q", key)
	}

	srv := testbin.Serve(t, dir, env)
	t.Cleanup(func() {
		srv.Stop(t, syscall.SIGTERM)
		if t.Failed() {
			t.Logf("loom serve stderr:\n%s", srv.Stderr.String())
		}
	})
	srv.WaitHealthy(t, 30*time.Second)
	return &gateway{url: srv.URL, key: key}
}

// dashboardURL is where the browser opens the dashboard: the gateway's own
// /dashboard/, which must serve the embedded UI.
func (g *gateway) dashboardURL(t *testing.T) string {
	t.Helper()
	resp, err := http.Get(g.url + web.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`src="js/app.js"`)) {
		t.Fatalf("the gateway does not serve the dashboard at %s (status %d)", web.Prefix, resp.StatusCode)
	}
	return g.url + web.Prefix
}

// chat sends one chat completion and returns the status, the request id
// and the body.
func (g *gateway) chat(t *testing.T, body string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", g.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+g.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Request-Id"), b
}

// getJSON calls the dashboard API with the tenant key.
func (g *gateway) getJSON(t *testing.T, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest("GET", g.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+g.key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, b)
	}
}

// summary is a trace of GET /api/v1/traces (the fields the test reads).
type summary struct {
	ID        string `json:"id"`
	RequestID string `json:"request_id"`
	Stream    bool   `json:"stream"`
	Model     string `json:"model"`
	Status    string `json:"status"`
	Tokens    *struct {
		Total *int64 `json:"total"`
	} `json:"tokens"`
	CostMicros *int64  `json:"cost_micros"`
	LatencyMS  float64 `json:"latency_ms"`
	OverheadMS float64 `json:"overhead_ms"`
}

// listTraces pages through GET /api/v1/traces, newest first.
func (g *gateway) listTraces(t *testing.T) []summary {
	t.Helper()
	var all []summary
	cursor := ""
	for {
		var page struct {
			Data       []summary `json:"data"`
			NextCursor *string   `json:"next_cursor"`
		}
		q := url.Values{"limit": {"200"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		g.getJSON(t, "/api/v1/traces?"+q.Encode(), &page)
		all = append(all, page.Data...)
		if page.NextCursor == nil || *page.NextCursor == "" {
			return all
		}
		cursor = *page.NextCursor
	}
}

// waitTraces polls the listing until it holds n traces.
func (g *gateway) waitTraces(t *testing.T, n int) []summary {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		all := g.listTraces(t)
		if len(all) == n {
			return all
		}
		if len(all) > n || time.Now().After(deadline) {
			t.Fatalf("the API lists %d traces, want %d", len(all), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// totals are the numbers the summary cards must show, computed from the listing.
type totals struct {
	requests, errors, tokens, cost int64
	minLatency, maxLatency         float64
	minOverhead, maxOverhead       float64
}

func computeTotals(all []summary) totals {
	var s totals
	for i, tr := range all {
		s.requests++
		if tr.Status != "ok" {
			s.errors++
		}
		if tr.Tokens != nil && tr.Tokens.Total != nil {
			s.tokens += *tr.Tokens.Total
		}
		if tr.CostMicros != nil {
			s.cost += *tr.CostMicros
		}
		if i == 0 || tr.LatencyMS < s.minLatency {
			s.minLatency = tr.LatencyMS
		}
		if i == 0 || tr.LatencyMS > s.maxLatency {
			s.maxLatency = tr.LatencyMS
		}
		if i == 0 || tr.OverheadMS < s.minOverhead {
			s.minOverhead = tr.OverheadMS
		}
		if i == 0 || tr.OverheadMS > s.maxOverhead {
			s.maxOverhead = tr.OverheadMS
		}
	}
	return s
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func chatBody(model string, stream, usage bool, messages ...map[string]any) string {
	body := map[string]any{"model": model, "messages": messages}
	if stream {
		body["stream"] = true
		if usage {
			body["stream_options"] = map[string]any{"include_usage": true}
		}
	}
	b, _ := json.Marshal(body)
	return string(b)
}

func user(text string) map[string]any { return map[string]any{"role": "user", "content": text} }
