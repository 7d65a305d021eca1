package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/providertest"
)

const testKey = "sk-test-openai"

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name     string
		settings string
		secrets  map[string]string
		want     config
		err      []string // substrings of the error; nil: no error
	}{
		{
			name:     "defaults",
			settings: `{}`,
			want:     config{baseURL: defaultBaseURL, timeout: 10 * time.Minute, connectTimeout: 10 * time.Second, maxIdleConnsPerHost: 256},
		},
		{
			name:     "no settings at all",
			settings: ``,
			want:     config{baseURL: defaultBaseURL, timeout: 10 * time.Minute, connectTimeout: 10 * time.Second, maxIdleConnsPerHost: 256},
		},
		{
			name:     "everything",
			settings: `{"base_url":"http://localhost:8000/v1/","api_key":"sk-file","organization":"org-1","project":"proj-1","timeout":"90s","connect_timeout":"2s","max_idle_conns_per_host":32}`,
			want: config{baseURL: "http://localhost:8000/v1", apiKey: "sk-file", organization: "org-1", project: "proj-1",
				timeout: 90 * time.Second, connectTimeout: 2 * time.Second, maxIdleConnsPerHost: 32},
		},
		{
			name:     "secrets override settings",
			settings: `{"base_url":"https://api.openai.com/v1","api_key":"sk-file"}`,
			secrets:  map[string]string{"api_key": "sk-env", "base_url": "https://proxy.example/v1/", "max_idle_conns_per_host": "64"},
			want:     config{baseURL: "https://proxy.example/v1", apiKey: "sk-env", timeout: 10 * time.Minute, connectTimeout: 10 * time.Second, maxIdleConnsPerHost: 64},
		},
		{
			name:     "empty secret is unset",
			settings: `{"api_key":"sk-file"}`,
			secrets:  map[string]string{"api_key": ""},
			want:     config{baseURL: defaultBaseURL, apiKey: "sk-file", timeout: 10 * time.Minute, connectTimeout: 10 * time.Second, maxIdleConnsPerHost: 256},
		},
		{name: "unknown setting", settings: `{"base_ulr":"x","colour":"red"}`, err: []string{`"base_ulr": unknown setting (did you mean "base_url"?)`, `"colour": unknown setting (known: api_key, base_url,`}},
		{name: "unknown secret", settings: `{}`, secrets: map[string]string{"apikey": "sk-x"}, err: []string{`"apikey": unknown setting (did you mean "api_key"?)`}},
		{name: "bad duration", settings: `{"timeout":"soon"}`, err: []string{`setting "timeout": invalid duration string "soon"`}},
		{name: "duration as number", settings: `{"connect_timeout":10}`, err: []string{`setting "connect_timeout": expected a duration string such as "30s" or "10m", got number 10`}},
		{name: "negative duration", settings: `{"timeout":"-1s"}`, err: []string{`setting "timeout": invalid duration`}},
		{name: "base_url not a string", settings: `{"base_url":5}`, err: []string{`setting "base_url": expected a URL`}},
		{name: "base_url relative", settings: `{"base_url":"api.openai.com/v1"}`, err: []string{`setting "base_url": invalid URL`}},
		{name: "base_url with query", settings: `{"base_url":"https://x.example/v1?key=SECRET"}`, err: []string{`setting "base_url": invalid URL "https://x.example/v1": no query`}},
		{name: "max idle zero", settings: `{"max_idle_conns_per_host":0}`, err: []string{`setting "max_idle_conns_per_host": expected a positive integer, got number 0`}},
		{name: "secret never shown", settings: `{}`, secrets: map[string]string{"timeout": "SECRET"}, err: []string{`setting "timeout": invalid duration the value from the environment`}},
		{name: "several problems at once", settings: `{"timeout":"x","organization":1}`, err: []string{`"organization": expected a string, got number 1`, `"timeout": invalid duration`}},
		{name: "settings not an object", settings: `["base_url"]`, err: []string{"settings: expected a JSON object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(provider.Config{Instance: "openai", Settings: []byte(tt.settings), Secrets: tt.secrets})
			if tt.err == nil {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if got != tt.want {
					t.Errorf("config %+v, want %+v", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("no error, config %+v", got)
			}
			for _, want := range tt.err {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q shows a secret", err)
			}
		})
	}
}

func TestURLAndHeaders(t *testing.T) {
	c := config{baseURL: "https://api.openai.com/v1", apiKey: testKey, organization: "org-1", project: "proj-1"}
	for endpoint, want := range map[string]string{
		"chat/completions": "https://api.openai.com/v1/chat/completions",
		"embeddings":       "https://api.openai.com/v1/embeddings",
		"models":           "https://api.openai.com/v1/models",
	} {
		if got, err := c.url(endpoint, "gpt-4o"); err != nil || got != want {
			t.Errorf("url(%s) = %q, %v", endpoint, got, err)
		}
	}
	h := http.Header{}
	c.setHeaders(h)
	if h.Get("Authorization") != "Bearer "+testKey || h.Get("OpenAI-Organization") != "org-1" || h.Get("OpenAI-Project") != "proj-1" {
		t.Errorf("headers %v", h)
	}
	h = http.Header{}
	config{apiKey: testKey}.setHeaders(h)
	if len(h) != 1 {
		t.Errorf("headers %v, want only Authorization", h)
	}
}

func TestInfo(t *testing.T) {
	info, err := newProvider().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "openai" || info.Version != version || info.ProtocolVersion != provider.ProtocolVersion || len(info.Capabilities) != 4 {
		t.Errorf("info %+v", info)
	}
}

// recorder is a provider.StreamSender keeping what it gets.
type recorder struct {
	starts []provider.StreamStart
	events []provider.Event
}

func (r *recorder) Start(s provider.StreamStart) error { r.starts = append(r.starts, s); return nil }
func (r *recorder) Send(e provider.Event) error        { r.events = append(r.events, e); return nil }

// TestNoAPIKey: Loom starts without a key; calls answer 503 explaining
// what to set, without contacting the upstream.
func TestNoAPIKey(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	p := newProvider()
	ctx := context.Background()
	if err := p.Configure(ctx, provider.Config{Settings: []byte(`{"base_url":"` + srv.URL + `"}`)}); err != nil {
		t.Fatalf("Configure without api_key: %v", err)
	}
	req := &provider.Request{Model: "gpt-4o", Body: []byte(`{}`)}
	for name, call := range map[string]func() (*provider.Response, error){
		"chat":       func() (*provider.Response, error) { return p.ChatCompletions(ctx, req) },
		"embeddings": func() (*provider.Response, error) { return p.Embeddings(ctx, req) },
	} {
		resp, err := call()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if resp.Status != 503 || !strings.Contains(string(resp.Body), "no api_key configured (set OPENAI_API_KEY)") ||
			!strings.Contains(string(resp.Body), `"code":"provider_not_configured"`) || resp.Headers["Content-Type"] != "application/json" {
			t.Errorf("%s: %d %s", name, resp.Status, resp.Body)
		}
	}
	rec := &recorder{}
	end, err := p.ChatCompletionsStream(ctx, req, rec)
	if err != nil || len(rec.starts) != 1 || rec.starts[0].Status != 503 || len(rec.events) != 0 || !strings.Contains(string(end.Body), "OPENAI_API_KEY") {
		t.Errorf("stream: %v %+v %+v", err, rec, end)
	}
	if _, err := p.ListModels(ctx); err == nil || !strings.Contains(err.Error(), "OPENAI_API_KEY") {
		t.Errorf("ListModels: %v", err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the upstream was called %d times", n)
	}
}

func TestCalledBeforeConfigure(t *testing.T) {
	if _, err := newProvider().ChatCompletions(context.Background(), &provider.Request{}); err == nil {
		t.Error("no error")
	}
}

func TestConfigureRejectsBadSettings(t *testing.T) {
	err := newProvider().Configure(context.Background(), provider.Config{Settings: []byte(`{"base_url":"https://x","timeuot":"1s"}`)})
	if err == nil || !strings.Contains(err.Error(), `"timeuot"`) {
		t.Errorf("err = %v", err)
	}
}

func TestConformance(t *testing.T) {
	for _, withOrg := range []bool{true, false} {
		name := "with_organization"
		if !withOrg {
			name = "key_only"
		}
		t.Run(name, func(t *testing.T) {
			providertest.Run(t, providertest.Harness{
				New: func() provider.Provider { return newProvider() },
				Config: func(upstreamURL string) provider.Config {
					settings := `{"base_url":"` + upstreamURL + `/v1/","timeout":"30s"}`
					if withOrg {
						settings = `{"base_url":"` + upstreamURL + `/v1","organization":"org-test","project":"proj-test"}`
					}
					return provider.Config{
						Instance: "openai",
						Settings: []byte(settings),
						Secrets:  map[string]string{"api_key": testKey},
					}
				},
				Model:         "gpt-4o-mini",
				CallsUpstream: true,
				CheckUpstreamRequest: func(t *testing.T, r *http.Request, body []byte) {
					if got := r.Header.Values("Authorization"); len(got) != 1 || got[0] != "Bearer "+testKey {
						t.Errorf("Authorization = %q, want one %q", got, "Bearer "+testKey)
					}
					wantOrg, wantProject := "", ""
					if withOrg {
						wantOrg, wantProject = "org-test", "proj-test"
					}
					if got := r.Header.Get("OpenAI-Organization"); got != wantOrg {
						t.Errorf("OpenAI-Organization = %q, want %q", got, wantOrg)
					}
					if got := r.Header.Get("OpenAI-Project"); got != wantProject {
						t.Errorf("OpenAI-Project = %q, want %q", got, wantProject)
					}
					if r.URL.Path != "/v1/chat/completions" && r.URL.Path != "/v1/embeddings" {
						t.Errorf("path %q", r.URL.Path)
					}
					if r.Header.Get("Api-Key") != "" {
						t.Error("an api-key header reached OpenAI")
					}
				},
			})
		})
	}
}
