package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/providertest"
)

const testKey = "azure-test-key"

func defaults(c config) config {
	if c.apiVersion == "" {
		c.apiVersion = defaultAPIVersion
	}
	if c.timeout == 0 {
		c.timeout = 10 * time.Minute
	}
	if c.connectTimeout == 0 {
		c.connectTimeout = 10 * time.Second
	}
	if c.maxIdleConnsPerHost == 0 {
		c.maxIdleConnsPerHost = 256
	}
	return c
}

func TestParseConfig(t *testing.T) {
	deps := map[string]string{"gpt-4o": "prod-gpt4o", "text-embedding-3-small": "emb"}
	tests := []struct {
		name     string
		settings string
		secrets  map[string]string
		want     config
		err      []string
	}{
		{name: "defaults", settings: `{}`, want: defaults(config{})},
		{
			name:     "everything",
			settings: `{"endpoint":"https://res.openai.azure.com/","api_key":"k","api_version":"2025-01-01-preview","deployments":{"gpt-4o":"prod-gpt4o","text-embedding-3-small":"emb"},"timeout":"2m","connect_timeout":"3s","max_idle_conns_per_host":8}`,
			want: config{endpoint: "https://res.openai.azure.com", apiKey: "k", apiVersion: "2025-01-01-preview", deployments: deps,
				timeout: 2 * time.Minute, connectTimeout: 3 * time.Second, maxIdleConnsPerHost: 8},
		},
		{
			name:     "nested block as a list of one object",
			settings: `{"deployments":[{"gpt-4o":"prod-gpt4o","text-embedding-3-small":"emb"}]}`,
			want:     defaults(config{deployments: deps}),
		},
		{
			name:     "nested block repeated",
			settings: `{"deployments":[{"gpt-4o":"prod-gpt4o"},{"text-embedding-3-small":"emb"}]}`,
			want:     defaults(config{deployments: deps}),
		},
		{
			name:     "deployments from the environment as JSON",
			settings: `{"deployments":{"x":"y"}}`,
			secrets:  map[string]string{"deployments": `{"gpt-4o":"prod-gpt4o","text-embedding-3-small":"emb"}`},
			want:     defaults(config{deployments: deps}),
		},
		{
			name:     "secrets override settings",
			settings: `{"endpoint":"https://file.openai.azure.com","api_key":"file-key","api_version":"2024-06-01"}`,
			secrets:  map[string]string{"endpoint": "https://env.openai.azure.com", "api_key": "env-key"},
			want:     defaults(config{endpoint: "https://env.openai.azure.com", apiKey: "env-key", apiVersion: "2024-06-01"}),
		},
		{
			name:     "endpoint behind a gateway path",
			settings: `{"endpoint":"https://apim.example.com/aoai//"}`,
			want:     defaults(config{endpoint: "https://apim.example.com/aoai"}),
		},
		{name: "unknown setting", settings: `{"deployment":{"a":"b"},"region":"x"}`, err: []string{`"deployment": unknown setting (did you mean "deployments"?)`, `"region": unknown setting`}},
		{name: "deployment not a string", settings: `{"deployments":{"gpt-4o":4}}`, err: []string{`setting "deployments.gpt-4o": expected a non-empty string, got number 4`}},
		{name: "deployments not a block", settings: `{"deployments":"gpt-4o"}`, err: []string{`setting "deployments": expected a block`}},
		{name: "deployments list of strings", settings: `{"deployments":["a"]}`, err: []string{`setting "deployments": expected a block of name = "value" pairs, got a list holding string "a"`}},
		{name: "deployment given twice", settings: `{"deployments":[{"a":"x"},{"a":"y"}]}`, err: []string{`setting "deployments.a": given twice`}},
		{name: "empty api_version", settings: `{"api_version":" "}`, err: []string{`setting "api_version": empty`}},
		{name: "bad endpoint", settings: `{"endpoint":"myres.openai.azure.com"}`, err: []string{`setting "endpoint": invalid URL`}},
		{name: "bad endpoint from env", secrets: map[string]string{"endpoint": "%zz SECRET"}, err: []string{`setting "endpoint": not a URL`}},
		{name: "bad timeout", settings: `{"timeout":"1 hour"}`, err: []string{`setting "timeout": invalid duration string "1 hour"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseConfig(provider.Config{Instance: "azure", Settings: []byte(tt.settings), Secrets: tt.secrets})
			if tt.err == nil {
				if err != nil {
					t.Fatalf("error %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
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

func TestURL(t *testing.T) {
	c := defaults(config{
		endpoint:    "https://res.openai.azure.com",
		deployments: map[string]string{"gpt-4o": "prod-gpt4o", "odd": "my dep/x"},
	})
	base := "https://res.openai.azure.com/openai/deployments/"
	tests := []struct{ endpoint, model, want string }{
		{"chat/completions", "azure/direct-dep", base + "direct-dep/chat/completions?api-version=2024-10-21"},
		{"chat/completions", "gpt-4o", base + "prod-gpt4o/chat/completions?api-version=2024-10-21"},
		{"embeddings", "gpt-4o", base + "prod-gpt4o/embeddings?api-version=2024-10-21"},
		{"chat/completions", "gpt-35-turbo", base + "gpt-35-turbo/chat/completions?api-version=2024-10-21"},
		{"chat/completions", "azure/gpt-4o", base + "gpt-4o/chat/completions?api-version=2024-10-21"}, // the prefix wins over the map
		{"chat/completions", "odd", base + "my%20dep%2Fx/chat/completions?api-version=2024-10-21"},
		{"chat/completions", "azure/a?b#c", base + "a%3Fb%23c/chat/completions?api-version=2024-10-21"},
	}
	for _, tt := range tests {
		if got, err := c.url(tt.endpoint, tt.model); err != nil || got != tt.want {
			t.Errorf("url(%s, %s) = %q, %v; want %q", tt.endpoint, tt.model, got, err, tt.want)
		}
	}
	c.apiVersion = "2025-01-01-preview&x=1"
	if got, _ := c.url("chat/completions", "d"); got != base+"d/chat/completions?api-version=2025-01-01-preview%26x%3D1" {
		t.Errorf("api-version not escaped: %s", got)
	}
	h := http.Header{}
	config{apiKey: testKey}.setHeaders(h)
	if len(h) != 1 || h.Get("api-key") != testKey {
		t.Errorf("headers %v", h)
	}
}

func TestListModels(t *testing.T) {
	p := newProvider()
	ctx := context.Background()
	// No endpoint and no key: the configured deployments are still listed.
	err := p.Configure(ctx, provider.Config{Settings: []byte(`{"deployments":[{"gpt-4o":"prod-gpt4o","gpt-4o-mini":"mini","small":"mini"}]}`)})
	if err != nil {
		t.Fatal(err)
	}
	models, err := p.ListModels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range models {
		ids = append(ids, m.ID)
		if m.OwnedBy != "azure" {
			t.Errorf("model %+v", m)
		}
	}
	want := []string{"azure/mini", "azure/prod-gpt4o", "gpt-4o", "gpt-4o-mini", "small"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("ids %q, want %q", ids, want)
	}
}

type recorder struct {
	starts []provider.StreamStart
	events []provider.Event
}

func (r *recorder) Start(s provider.StreamStart) error { r.starts = append(r.starts, s); return nil }
func (r *recorder) Send(e provider.Event) error        { r.events = append(r.events, e); return nil }

// TestMissingSettings: without endpoint or key Loom starts; calls answer
// 503 saying what to set, without any network call.
func TestMissingSettings(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	tests := []struct {
		settings string
		want     string
	}{
		{`{}`, "The azure provider has no endpoint and no api_key configured (set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY)."},
		{`{"endpoint":"` + srv.URL + `"}`, "The azure provider has no api_key configured (set AZURE_OPENAI_API_KEY)."},
		{`{"api_key":"k"}`, "The azure provider has no endpoint configured (set AZURE_OPENAI_ENDPOINT)."},
	}
	ctx := context.Background()
	for _, tt := range tests {
		p := newProvider()
		if err := p.Configure(ctx, provider.Config{Settings: []byte(tt.settings)}); err != nil {
			t.Fatalf("%s: Configure: %v", tt.settings, err)
		}
		req := &provider.Request{Model: "gpt-4o", Body: []byte(`{}`)}
		for _, call := range []func() (*provider.Response, error){
			func() (*provider.Response, error) { return p.ChatCompletions(ctx, req) },
			func() (*provider.Response, error) { return p.Embeddings(ctx, req) },
		} {
			resp, err := call()
			if err != nil || resp.Status != 503 || !strings.Contains(string(resp.Body), tt.want) {
				t.Errorf("%s: %v %d %s", tt.settings, err, resp.Status, resp.Body)
			}
		}
		rec := &recorder{}
		end, err := p.ChatCompletionsStream(ctx, req, rec)
		if err != nil || len(rec.starts) != 1 || rec.starts[0].Status != 503 || !strings.Contains(string(end.Body), tt.want) {
			t.Errorf("%s: stream %v %+v %s", tt.settings, err, rec.starts, end.Body)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the upstream was called %d times", n)
	}
}

func TestModelWithoutDeployment(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	p := newProvider()
	ctx := context.Background()
	if err := p.Configure(ctx, provider.Config{Settings: []byte(`{"endpoint":"` + srv.URL + `"}`), Secrets: map[string]string{"api_key": testKey}}); err != nil {
		t.Fatal(err)
	}
	for _, model := range []string{"azure/", ""} {
		resp, err := p.ChatCompletions(ctx, &provider.Request{Model: model, Body: []byte(`{}`)})
		if err != nil || resp.Status != 404 || !strings.Contains(string(resp.Body), "DeploymentNotFound") {
			t.Errorf("model %q: %v %+v", model, err, resp)
		}
	}
	if calls.Load() != 0 {
		t.Error("the upstream was called")
	}
}

func TestInfo(t *testing.T) {
	info, err := newProvider().Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "azure" || info.Version != version || info.ProtocolVersion != provider.ProtocolVersion || len(info.Capabilities) != 4 {
		t.Errorf("info %+v", info)
	}
}

func TestConformance(t *testing.T) {
	const deployment = "loom-test-deployment"
	providertest.Run(t, providertest.Harness{
		New: func() provider.Provider { return newProvider() },
		Config: func(upstreamURL string) provider.Config {
			return provider.Config{
				Instance: "azure",
				// The deployments block as HCL v1 hands it over: a list of
				// one object.
				Settings: []byte(`{"api_version":"2024-10-21","deployments":[{"gpt-4o-mini":"` + deployment + `"}]}`),
				Secrets:  map[string]string{"endpoint": upstreamURL, "api_key": testKey},
			}
		},
		Model:         "gpt-4o-mini",
		CallsUpstream: true,
		CheckUpstreamRequest: func(t *testing.T, r *http.Request, body []byte) {
			if r.URL.Path != "/openai/deployments/"+deployment+"/chat/completions" && r.URL.Path != "/openai/deployments/"+deployment+"/embeddings" {
				t.Errorf("path %q, want /openai/deployments/%s/…", r.URL.Path, deployment)
			}
			if got := r.URL.Query().Get("api-version"); got != "2024-10-21" {
				t.Errorf("api-version = %q", got)
			}
			if got := r.Header.Values("Api-Key"); len(got) != 1 || got[0] != testKey {
				t.Errorf("api-key = %q, want one %q", got, testKey)
			}
			if got := r.Header.Get("Authorization"); got != "" {
				t.Errorf("Authorization = %q, want none", got)
			}
		},
	})
}

// TestDotSegmentDeployments: "." and ".." never reach the upstream's path
// (url.PathEscape leaves them as they are, and a URL normaliser resolves
// /openai/deployments/../chat/completions to /openai/chat/completions).
func TestDotSegmentDeployments(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	p := newProvider()
	ctx := context.Background()
	settings := `{"endpoint":"` + srv.URL + `","deployments":{"up":"..x","dots":"..."}}`
	if err := p.Configure(ctx, provider.Config{Settings: []byte(settings), Secrets: map[string]string{"api_key": testKey}}); err != nil {
		t.Fatal(err)
	}
	for _, model := range []string{"azure/.", "azure/..", ".", ".."} {
		resp, err := p.ChatCompletions(ctx, &provider.Request{Model: model, Body: []byte(`{}`)})
		if err != nil || resp.Status != 400 || !strings.Contains(string(resp.Body), `"code":"invalid_deployment"`) {
			t.Errorf("model %q: %v %d %s", model, err, resp.Status, resp.Body)
		}
		rec := &recorder{}
		end, err := p.ChatCompletionsStream(ctx, &provider.Request{Model: model, Body: []byte(`{}`)}, rec)
		if err != nil || len(rec.starts) != 1 || rec.starts[0].Status != 400 || !strings.Contains(string(end.Body), "invalid_deployment") {
			t.Errorf("model %q stream: %v %+v", model, err, rec.starts)
		}
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("the upstream was called %d times", n)
	}
	// Names that merely contain dots are deployments like any other.
	c := defaults(config{endpoint: "https://res.openai.azure.com"})
	for _, model := range []string{"azure/..x", "azure/...", "azure/v1.5", "azure/.hidden"} {
		if u, err := c.url("chat/completions", model); err != nil || strings.Contains(u, "/../") || strings.Contains(u, "/./") {
			t.Errorf("url(%s) = %q, %v", model, u, err)
		}
	}
	for _, model := range []string{"azure/.", "azure/.."} {
		if u, err := c.url("chat/completions", model); err == nil {
			t.Errorf("url(%s) = %q, want an error", model, u)
		}
	}
	// A dot segment in the deployments block is a configuration error.
	for _, d := range []string{".", ".."} {
		_, err := parseConfig(provider.Config{Settings: []byte(`{"deployments":{"gpt-4o":"` + d + `"}}`)})
		if err == nil || !strings.Contains(err.Error(), `setting "deployments.gpt-4o"`) {
			t.Errorf("deployment %q: %v", d, err)
		}
	}
}
