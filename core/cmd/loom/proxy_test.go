package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
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

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/loom-runtime/loom/core/internal/testbin"
	"github.com/loom-runtime/loom/sdk/plugin"
	"github.com/loom-runtime/loom/sdk/sse"
)

// proxyEnv is a running gateway with real plugin processes in front of the mock upstream.
type proxyEnv struct {
	gw       *gateway
	up       *mockUpstream
	dir, key string
	narrow   string // key of a tenant whose routes reach gpt-* only
	env      []string
}

const upstreamKey = "sk-upstream-secret-0123456789"

func proxyConfig(pluginsDir, upstream, closed string) string {
	return fmt.Sprintf(`
plugins_dir = %q
store {
  driver = "sqlite"
  dsn    = "loom.db"
}
provider "openai" {
  settings { base_url = "%s/v1" }
  env { api_key = "OPENAI_API_KEY" }
}
provider "azure" {
  settings {
    api_version = "2024-10-21"
    deployments { "gpt-4o" = "gpt4o-deployment" }
  }
  env {
    endpoint = "AZURE_OPENAI_ENDPOINT"
    api_key  = "AZURE_OPENAI_API_KEY"
  }
}
provider "echo" {
  plugin = "echo"
}
provider "impatient" {
  plugin = "openai"
  settings {
    base_url = "%s/v1"
    timeout  = "300ms"
  }
  env { api_key = "OPENAI_API_KEY" }
}
provider "dead" {
  plugin = "openai"
  settings { base_url = "http://%s/v1" }
  env { api_key = "OPENAI_API_KEY" }
}
tenant "default" {
  route {
    match    = "azure/*"
    provider = "azure"
  }
  route {
    match    = "echo/*"
    provider = "echo"
    model    = "*"
  }
  route {
    match    = "timeout/*"
    provider = "impatient"
    model    = "*"
  }
  route {
    match    = "dead/*"
    provider = "dead"
    model    = "*"
  }
  route {
    match    = "rewrite/*"
    provider = "openai"
    model    = "*"
  }
  route {
    match    = "*"
    provider = "openai"
  }
}
tenant "narrow" {
  route {
    match    = "gpt-*"
    provider = "openai"
  }
}
`, pluginsDir, upstream, upstream, closed)
}

func startProxy(t *testing.T, extraEnv ...string) *proxyEnv {
	t.Helper()
	up := newMockUpstream(t)
	p := startProxyTo(t, up.URL, extraEnv...)
	p.up = up
	return p
}

// startProxyTo is startProxy with the providers pointed at upstream (its
// up is nil). A variable of extraEnv overrides the default's.
func startProxyTo(t *testing.T, upstream string, extraEnv ...string) *proxyEnv {
	t.Helper()
	return startProxyOf(t, filepath.Join(testbin.Dir(t), "loom"), upstream, extraEnv...)
}

// startProxyOf is startProxyTo serving with the loom binary bin (e.g.
// testbin.FaultLoom's); the CLI steps use the same binary.
func startProxyOf(t *testing.T, bin, upstream string, extraEnv ...string) *proxyEnv {
	t.Helper()
	dir := t.TempDir()
	closed := freeAddr(t) // nothing listens there
	writeFile(t, filepath.Join(dir, "loom.hcl"), proxyConfig(filepath.Join(testbin.Dir(t), "plugins"), upstream, closed))
	env := append([]string{
		"LOOM_MASTER_KEY=" + testMasterKey,
		"OPENAI_API_KEY=" + upstreamKey,
		"AZURE_OPENAI_ENDPOINT=" + upstream,
		"AZURE_OPENAI_API_KEY=" + azureKey,
		"LOOM_ADMIN_TOKEN=admin-token-secret",
		"LOOM_LOG_LEVEL=debug",
	}, extraEnv...)
	mustRun(t, dir, env, "tenant", "create", "acme")
	mustRun(t, dir, env, "tenant", "create", "narrow")
	key := lastLine(mustRun(t, dir, env, "key", "create", "--tenant", "acme"))
	narrow := lastLine(mustRun(t, dir, env, "key", "create", "--tenant", "narrow"))
	srv := testbin.ServeOf(t, bin, dir, env)
	srv.WaitHealthy(t, 20*time.Second)
	gw := &gateway{srv: srv, cmd: srv.Cmd, url: srv.URL, stdout: srv.Stdout, stderr: srv.Stderr}
	return &proxyEnv{gw: gw, dir: dir, key: key, narrow: narrow, env: env}
}

func (p *proxyEnv) client(opts ...option.RequestOption) *openai.Client {
	c := openai.NewClient(append([]option.RequestOption{
		option.WithBaseURL(p.gw.url + "/v1/"), option.WithAPIKey(p.key), option.WithMaxRetries(0),
	}, opts...)...)
	return &c
}

// post sends a raw request and returns the response (body read). It ends
// the test if the request fails: call it from the test's goroutine only.
func (p *proxyEnv) post(t *testing.T, path, key, body string, header ...string) (*http.Response, []byte) {
	t.Helper()
	resp, b, err := p.send(path, key, body, header...)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// send is post for any goroutine: it returns the error.
func (p *proxyEnv) send(path, key, body string, header ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequest("POST", p.gw.url+path, strings.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b, nil
}

func TestProxy(t *testing.T) {
	p := startProxy(t)
	ctx := context.Background()
	msgs := []openai.ChatCompletionMessageParamUnion{openai.UserMessage("Say hello")}

	t.Run("openai-go non-stream", func(t *testing.T) {
		var raw *http.Response
		c, err := p.client().Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "gpt-ok", Messages: msgs}, option.WithResponseInto(&raw))
		if err != nil {
			t.Fatal(err)
		}
		if c.Choices[0].Message.Content != "Hello from the mock" || c.Usage.PromptTokensDetails.CachedTokens != 3 {
			t.Fatalf("completion %+v", c)
		}
		if ms, err := strconv.ParseFloat(raw.Header.Get("X-Loom-Overhead-Ms"), 64); err != nil || ms < 0 {
			t.Fatalf("x-loom-overhead-ms = %q", raw.Header.Get("X-Loom-Overhead-Ms"))
		}
		if raw.Header.Get("X-Upstream-Request-Id") != "upstream-req-123" || !strings.HasPrefix(raw.Header.Get("X-Request-Id"), "0") {
			t.Fatalf("request id headers: %v", raw.Header)
		}
		up, ok := p.up.Find(raw.Header.Get("X-Request-Id"))
		if !ok {
			t.Fatal("upstream did not see Loom's request id")
		}
		if up.Path != "/v1/chat/completions" || up.Header.Get("Authorization") != "Bearer "+upstreamKey {
			t.Fatalf("upstream saw %s with auth %q", up.Path, up.Header.Get("Authorization"))
		}
	})

	for _, usage := range []bool{false, true} {
		t.Run(fmt.Sprintf("openai-go stream include_usage=%v", usage), func(t *testing.T) {
			params := openai.ChatCompletionNewParams{Model: "gpt-ok", Messages: msgs}
			if usage {
				params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			var raw *http.Response
			s := p.client().Chat.Completions.NewStreaming(ctx, params, option.WithResponseInto(&raw))
			var acc openai.ChatCompletionAccumulator
			sawUsageChunk := false
			for s.Next() {
				ch := s.Current()
				acc.AddChunk(ch)
				if len(ch.Choices) == 0 && ch.Usage.TotalTokens > 0 {
					sawUsageChunk = true
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			if got := acc.Choices[0].Message.Content; got != "word0 word1 word2 word3 word4 " {
				t.Fatalf("assembled %q", got)
			}
			if sawUsageChunk != usage {
				t.Fatalf("usage chunk seen = %v, client asked = %v", sawUsageChunk, usage)
			}
			up, _ := p.up.Find(raw.Header.Get("X-Request-Id"))
			if so, _ := up.Body["stream_options"].(map[string]any); so["include_usage"] != true {
				t.Fatalf("upstream was not asked for usage: %s", up.RawBody)
			}
		})
	}

	t.Run("stream payloads identical and in order", func(t *testing.T) {
		for _, usage := range []bool{false, true} {
			body := `{"model":"gpt-ok","stream":true,"messages":[{"role":"user","content":"hi"}]}`
			if usage {
				body = `{"model":"gpt-ok","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
			}
			req, _ := http.NewRequest("POST", p.gw.url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+p.key)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
				t.Fatalf("content type %q", ct)
			}
			var got []string
			rd := sse.NewReader(resp.Body, 1<<20)
			for {
				ev, err := rd.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(ev.Data))
			}
			resp.Body.Close()
			sent := p.up.Sent(resp.Header.Get("X-Request-Id"))
			want := sent
			if !usage { // the usage chunk Loom asked for is withheld, nothing else
				want = append(append([]string(nil), sent[:len(sent)-2]...), sent[len(sent)-1])
			}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Fatalf("client got:\n%s\nupstream sent:\n%s", strings.Join(got, "\n"), strings.Join(sent, "\n"))
			}
		}
	})

	t.Run("curl", func(t *testing.T) {
		out, err := exec.Command("curl", "-sS", "--fail-with-body", p.gw.url+"/v1/chat/completions",
			"-H", "Authorization: Bearer "+p.key, "-H", "Content-Type: application/json",
			"-d", `{"model":"echo/echo-1","messages":[{"role":"user","content":"hello from curl"}]}`).CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "hello from curl") {
			t.Fatalf("echo answered %s", out)
		}
		out, err = exec.Command("curl", "-sSN", "--fail-with-body", p.gw.url+"/v1/chat/completions",
			"-H", "x-api-key: "+p.key, "-d", `{"model":"echo/echo-1","stream":true,"messages":[{"role":"user","content":"one two three"}]}`).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "data: [DONE]") || !strings.Contains(string(out), "three") {
			t.Fatalf("curl stream: %v\n%s", err, out)
		}
	})

	t.Run("azure", func(t *testing.T) {
		for _, model := range []string{"azure/my-deploy", "azure/gpt-4o"} {
			resp, body := p.post(t, "/v1/chat/completions", "", `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`, "api-key", p.key)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %d %s", model, resp.StatusCode, body)
			}
			up, _ := p.up.Find(resp.Header.Get("X-Request-Id"))
			deployment := strings.TrimPrefix(model, "azure/")
			if up.Path != "/openai/deployments/"+deployment+"/chat/completions" || up.Query != "api-version=2024-10-21" {
				t.Fatalf("azure upstream saw %s?%s", up.Path, up.Query)
			}
			if up.Header.Get("Api-Key") != azureKey || up.Header.Get("Authorization") != "" {
				t.Fatalf("azure auth headers: api-key %q authorization %q", up.Header.Get("Api-Key"), up.Header.Get("Authorization"))
			}
		}
		// The Azure OpenAI path of the official SDK reaches Azure too.
		s := p.client().Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{Model: "azure/my-deploy", Messages: msgs})
		n := 0
		for s.Next() {
			n++
		}
		if s.Err() != nil || n == 0 {
			t.Fatalf("azure stream: %v after %d chunks", s.Err(), n)
		}
	})

	t.Run("embeddings", func(t *testing.T) {
		e, err := p.client().Embeddings.New(ctx, openai.EmbeddingNewParams{Model: "text-embedding-3-small",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("hi")}})
		if err != nil || len(e.Data) != 1 {
			t.Fatalf("embeddings: %v %+v", err, e)
		}
	})

	t.Run("models", func(t *testing.T) {
		code, body := get(t, p.gw.url+"/v1/models", "Authorization", "Bearer "+p.key)
		for _, id := range []string{`"gpt-ok"`, `"azure/gpt4o-deployment"`, `"echo/echo-1"`} {
			if code != 200 || !strings.Contains(body, id) {
				t.Fatalf("models %d lacks %s: %s", code, id, body)
			}
		}
		code, body = get(t, p.gw.url+"/v1/models", "Authorization", "Bearer "+p.narrow)
		if code != 200 || strings.Contains(body, "echo") || strings.Contains(body, "azure") || !strings.Contains(body, `"gpt-ok"`) {
			t.Fatalf("narrow tenant's models: %s", body)
		}
	})

	t.Run("secrets stay where they belong", func(t *testing.T) {
		resp, body := p.post(t, "/v1/chat/completions", p.key, `{"model":"gpt-ok","messages":[{"role":"user","content":"hi"}]}`,
			"X-Api-Key", p.key, "Api-Key", p.key, "OpenAI-Beta", "assistants=v2", "Cookie", "session=1")
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		up, _ := p.up.Find(resp.Header.Get("X-Request-Id"))
		if up.Header.Get("Openai-Beta") != "assistants=v2" || up.Header.Get("Cookie") != "" {
			t.Fatalf("forwarded headers wrong: %v", up.Header)
		}
		for _, r := range p.up.Requests() {
			for k, vs := range r.Header {
				for _, v := range vs {
					if strings.Contains(v, "loom_") {
						t.Fatalf("the client's Loom key reached the upstream in %s", k)
					}
				}
			}
		}
		var all bytes.Buffer
		for k, vs := range resp.Header {
			fmt.Fprintln(&all, k, vs)
		}
		all.Write(body)
		if strings.Contains(all.String(), upstreamKey) {
			t.Fatal("the provider key reached the client")
		}
		if strings.Contains(p.gw.stderr.String(), upstreamKey) || strings.Contains(p.gw.stderr.String(), p.key) {
			t.Fatal("a secret reached Loom's log")
		}
	})

	t.Run("plugins get a minimal environment", func(t *testing.T) {
		plugins := childPids(t, p.gw.cmd.Process.Pid, "loom-provider-")
		if len(plugins) != 5 {
			t.Fatalf("%d plugin processes, want 5", len(plugins))
		}
		for _, pid := range plugins {
			environ, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range strings.Split(string(environ), "\x00") {
				name, _, _ := strings.Cut(kv, "=")
				if kv == "" || strings.HasPrefix(name, "PLUGIN_") || name == "LOOM_PLUGIN_LOG_LEVEL" || name == plugin.Handshake.MagicCookieKey {
					continue // go-plugin's handshake variables, the magic cookie and the log level
				}
				t.Errorf("plugin %d has %s in its environment", pid, name)
			}
			for _, secret := range []string{testMasterKey, upstreamKey, azureKey, "admin-token-secret", "loom.db"} {
				if strings.Contains(string(environ), secret) {
					t.Errorf("plugin %d environment holds a secret", pid)
				}
			}
		}
	})

	t.Run("plugin logs come through loom's log with the instance name", func(t *testing.T) {
		if !strings.Contains(p.gw.stderr.String(), "loom.plugin.echo.loom-provider-echo:") {
			t.Fatalf("no plugin-originated log line under loom.plugin.echo:\n%s", p.gw.stderr.String())
		}
	})

	t.Run("metrics and pprof behind the admin token", func(t *testing.T) {
		if code, _ := get(t, p.gw.url+"/metrics"); code != 401 {
			t.Fatalf("/metrics without the admin token: %d", code)
		}
		if code, _ := get(t, p.gw.url+"/metrics", "Authorization", "Bearer "+p.key); code != 401 {
			t.Fatalf("/metrics with a tenant key: %d", code)
		}
		code, body := get(t, p.gw.url+"/metrics", "Authorization", "Bearer admin-token-secret")
		for _, want := range []string{`loom_requests_total{model="gpt-ok",status="ok",tenant="acme"}`, "loom_gateway_overhead_seconds_bucket",
			"loom_trace_queue_depth", "loom_traces_written_total", `loom_plugin_restarts_total{provider="echo"}`} {
			if code != 200 || !strings.Contains(body, want) {
				t.Fatalf("/metrics %d lacks %s", code, want)
			}
		}
		if code, _ := get(t, p.gw.url+"/debug/pprof/", "Authorization", "Bearer admin-token-secret"); code != 200 {
			t.Fatalf("pprof with the admin token: %d", code)
		}
		if code, _ := get(t, p.gw.url+"/debug/pprof/heap"); code != 401 {
			t.Fatalf("pprof without the admin token: %d", code)
		}
	})

	t.Run("errors", func(t *testing.T) {
		chat := func(model string) string {
			return `{"model":"` + model + `","messages":[{"role":"user","content":"hi"}]}`
		}
		big := `{"model":"gpt-ok","messages":[{"role":"user","content":"` + strings.Repeat("a", 11<<20) + `"}]}`
		tests := []struct {
			name, key, path, body string
			status                int
			typ, code             string
			header                [2]string
		}{
			{"no key", "", "/v1/chat/completions", chat("gpt-ok"), 401, "invalid_request_error", "invalid_api_key", [2]string{}},
			{"malformed JSON", p.key, "/v1/chat/completions", `{"model":`, 400, "invalid_request_error", "invalid_json", [2]string{}},
			{"missing model", p.key, "/v1/chat/completions", `{"messages":[]}`, 400, "invalid_request_error", "missing_required_parameter", [2]string{}},
			{"missing messages", p.key, "/v1/chat/completions", `{"model":"gpt-ok"}`, 400, "invalid_request_error", "missing_required_parameter", [2]string{}},
			{"wrong type", p.key, "/v1/chat/completions", `{"model":"gpt-ok","messages":"hi"}`, 400, "invalid_request_error", "invalid_type", [2]string{}},
			{"embeddings without input", p.key, "/v1/embeddings", `{"model":"x"}`, 400, "invalid_request_error", "missing_required_parameter", [2]string{}},
			{"body too large", p.key, "/v1/chat/completions", big, 413, "invalid_request_error", "request_too_large", [2]string{}},
			{"no route", p.narrow, "/v1/chat/completions", chat("claude-3"), 404, "invalid_request_error", "model_not_found", [2]string{}},
			{"upstream 429", p.key, "/v1/chat/completions", chat("rate-limited"), 429, "requests", "rate_limit_exceeded", [2]string{"Retry-After", "7"}},
			{"upstream 500", p.key, "/v1/chat/completions", chat("server-error"), 500, "server_error", "", [2]string{}},
			{"upstream timeout", p.key, "/v1/chat/completions", chat("timeout/hang"), 504, "server_error", "upstream_timeout", [2]string{}},
			{"upstream unreachable", p.key, "/v1/chat/completions", chat("dead/gpt-ok"), 502, "server_error", "upstream_unreachable", [2]string{}},
			{"stream: upstream 429", p.key, "/v1/chat/completions", `{"model":"rate-limited","stream":true,"messages":[]}`, 429, "requests", "rate_limit_exceeded", [2]string{"Retry-After", "7"}},
			{"stream: upstream timeout", p.key, "/v1/chat/completions", `{"model":"timeout/hang","stream":true,"messages":[]}`, 504, "server_error", "upstream_timeout", [2]string{}},
			{"stream: unreachable", p.key, "/v1/chat/completions", `{"model":"dead/x","stream":true,"messages":[]}`, 502, "server_error", "upstream_unreachable", [2]string{}},
			{"wrong method", p.key, "/v1/models", `{}`, 405, "invalid_request_error", "method_not_allowed", [2]string{}},
			{"unknown endpoint", p.key, "/v1/assistants", `{}`, 404, "invalid_request_error", "unknown_url", [2]string{}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := p.post(t, tt.path, tt.key, tt.body)
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d: %.300s", resp.StatusCode, tt.status, body)
				}
				var e struct {
					Error struct {
						Message string  `json:"message"`
						Type    string  `json:"type"`
						Code    *string `json:"code"`
					} `json:"error"`
				}
				if err := json.Unmarshal(body, &e); err != nil || e.Error.Message == "" {
					t.Fatalf("not an OpenAI error: %.300s", body)
				}
				code := ""
				if e.Error.Code != nil {
					code = *e.Error.Code
				}
				if e.Error.Type != tt.typ || code != tt.code {
					t.Fatalf("type %q code %q, want %q %q (%s)", e.Error.Type, code, tt.typ, tt.code, e.Error.Message)
				}
				if tt.header[0] != "" && resp.Header.Get(tt.header[0]) != tt.header[1] {
					t.Fatalf("%s = %q, want %q", tt.header[0], resp.Header.Get(tt.header[0]), tt.header[1])
				}
			})
		}
	})

	t.Run("mid-stream upstream failure", func(t *testing.T) {
		resp, body := p.post(t, "/v1/chat/completions", p.key, `{"model":"cut","stream":true,"messages":[]}`)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"error"`) || strings.Contains(string(body), "data: [DONE]") {
			t.Fatalf("cut stream: %d\n%s", resp.StatusCode, body)
		}
	})

	t.Run("client disconnect cancels the upstream", func(t *testing.T) {
		for _, stream := range []bool{false, true} {
			ctx, cancel := context.WithCancel(ctx)
			body := fmt.Sprintf(`{"model":"hang","stream":%v,"messages":[]}`, stream)
			req, _ := http.NewRequestWithContext(ctx, "POST", p.gw.url+"/v1/chat/completions", strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+p.key)
			before := len(p.up.Requests())
			go func() {
				for len(p.up.Requests()) == before {
					time.Sleep(5 * time.Millisecond)
				}
				cancel()
			}()
			http.DefaultClient.Do(req)
			var id string
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) {
				reqs := p.up.Requests()
				id = reqs[len(reqs)-1].RequestID
				if p.up.Canceled(id) {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if !p.up.Canceled(id) {
				t.Fatalf("stream=%v: upstream request not cancelled after the client left", stream)
			}
		}
	})
}

// childPids lists the processes whose parent is pid whose command line contains name.
func childPids(t *testing.T, pid int, name string) []int {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		cpid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command (which may contain spaces) start after the last ')'.
		rest := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(rest) < 2 || rest[1] != strconv.Itoa(pid) {
			continue
		}
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.Contains(string(cmdline), name) && rest[0] != "Z" {
			out = append(out, cpid)
		}
	}
	return out
}

func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	rest := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(rest) > 0 && rest[0] != "Z"
}

func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("plugin process %d still running", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// SIGKILL the openai plugin processes while requests are in flight (all 20
// held by the upstream): those get 502 plugin_failed, later ones succeed
// once the host has restarted them.
func TestPluginCrashUnderLoad(t *testing.T) {
	p := startProxy(t)
	pid := p.gw.cmd.Process.Pid
	victims := childPids(t, pid, "loom-provider-openai")
	if len(victims) != 3 { // openai, impatient, dead
		t.Fatalf("found %d openai plugin processes, want 3", len(victims))
	}
	var wg sync.WaitGroup
	results := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body, err := p.send("/v1/chat/completions", p.key, `{"model":"hang","messages":[]}`)
			if err != nil {
				t.Error(err)
				return
			}
			var e struct{ Error struct{ Code string } }
			json.Unmarshal(body, &e)
			results <- fmt.Sprintf("%d %s", resp.StatusCode, e.Error.Code)
		}()
	}
	held := 0
	if err := p.up.waitFor(2*time.Minute, func(r upstreamRequest) bool {
		if r.Body["model"] == "hang" {
			held++
		}
		return held == 20
	}); err != nil {
		t.Fatalf("%v: %d of the 20 requests reached it", err, held)
	}
	for _, v := range victims {
		syscall.Kill(v, syscall.SIGKILL)
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r != "502 plugin_failed" {
			t.Fatalf("in-flight request during the crash got %q, want 502 plugin_failed", r)
		}
	}
	// Later calls succeed (the first may wait for the restart).
	for i := 0; i < 10; i++ {
		resp, body := p.post(t, "/v1/chat/completions", p.key, `{"model":"gpt-ok","messages":[]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("after restart: %d %s", resp.StatusCode, body)
		}
	}
	if !strings.Contains(p.gw.stderr.String(), "plugin restarted") {
		t.Fatal("no restart logged")
	}
	after := childPids(t, pid, "loom-provider-")
	if code := p.gw.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	waitGone(t, after)
}

// No plugin process outlives loom, however it exits.
func TestNoOrphanPlugins(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			p := startProxy(t)
			plugins := childPids(t, p.gw.cmd.Process.Pid, "loom-provider-")
			if len(plugins) != 5 {
				t.Fatalf("%d plugin processes, want 5", len(plugins))
			}
			p.gw.stop(t, sig)
			waitGone(t, plugins)
		})
	}
	t.Run("start failure", func(t *testing.T) {
		// The second provider's binary does not exist: the first, already
		// started, must be killed before loom exits with the error.
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "loom.hcl"), fmt.Sprintf(`
plugins_dir = %q
provider "echo" { plugin = "echo" }
provider "ghost" { plugin = "ghost" }
`, filepath.Join(testbin.Dir(t), "plugins")))
		cmd := loomCmd(t, dir, []string{"LOOM_MASTER_KEY=" + testMasterKey, "LOOM_LISTEN=" + freeAddr(t)}, "serve")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err == nil || !strings.Contains(stderr.String(), "loom-provider-ghost") {
			t.Fatalf("serve with a missing plugin: %v\n%s", err, stderr.String())
		}
		// Tests run one at a time and each waits for its plugins to exit, so
		// any process still running the echo binary now is an orphan.
		deadline := time.Now().Add(5 * time.Second)
		for {
			out, _ := exec.Command("pgrep", "-f", filepath.Join(testbin.Dir(t), "plugins", "loom-provider-echo")).Output()
			if len(bytes.TrimSpace(out)) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("orphaned echo plugin processes: %s", out)
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

func TestSHA256Pin(t *testing.T) {
	bin := filepath.Join(testbin.Dir(t), "plugins", "loom-provider-echo")
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	good := fmt.Sprintf("%x", sha256.Sum256(b))
	bad := strings.Repeat("0", 64)
	for _, tt := range []struct {
		pin string
		ok  bool
	}{{good, true}, {bad, false}} {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "loom.hcl"), fmt.Sprintf(`
provider "echo" {
  plugin = "echo"
  sha256 = %q
}
tenant "default" {
  route {
    match    = "*"
    provider = "echo"
  }
}
`, tt.pin))
		env := []string{"LOOM_MASTER_KEY=" + testMasterKey}
		if tt.ok {
			gw := startServe(t, dir, env)
			gw.stop(t, syscall.SIGTERM)
			continue
		}
		r := runLoom(t, dir, append(env, "LOOM_LISTEN="+freeAddr(t)), "serve")
		if r.code != 1 || !strings.Contains(r.stderr, "does not match its sha256 pin") {
			t.Fatalf("bad pin: exit %d\n%s", r.code, r.stderr)
		}
	}
}

// A client that never finishes its headers is cut off after
// server.read_header_timeout; a stream that lasts far longer is not.
func TestServerTimeouts(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "loom.hcl"), `
provider "echo" {
  plugin   = "echo"
  settings { delay_ms = 100 }
}
tenant "default" {
  route {
    match    = "*"
    provider = "echo"
  }
}
`)
	env := []string{"LOOM_MASTER_KEY=" + testMasterKey, "LOOM_SERVER_READ_HEADER_TIMEOUT=300ms", "LOOM_SERVER_IDLE_TIMEOUT=300ms"}
	mustRun(t, dir, env, "tenant", "create", "acme")
	key := lastLine(mustRun(t, dir, env, "key", "create", "--tenant", "acme"))
	gw := startServe(t, dir, env)

	conn, err := net.Dial("tcp", strings.TrimPrefix(gw.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	conn.Write([]byte("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: "))
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	io.ReadAll(conn) // returns when the server closes the connection
	// Cut by the configured 300ms, not the 10s default (the bound leaves a
	// busy machine seconds of slack).
	if d := time.Since(start); d > 8*time.Second {
		t.Fatalf("slow-header connection held for %v", d)
	}

	start = time.Now()
	resp, body := (&proxyEnv{gw: gw}).post(t, "/v1/chat/completions", key,
		`{"model":"echo-1","stream":true,"messages":[{"role":"user","content":"a b c d e f g h i j k l"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "data: [DONE]") {
		t.Fatalf("long stream cut: %d\n%s", resp.StatusCode, body)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("stream took %v; the test needs it to outlast the timeouts", d)
	}
}
