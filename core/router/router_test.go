package router

import (
	"testing"

	"github.com/loom-runtime/loom/core/config"
)

func testConfig() *config.Config {
	return &config.Config{Tenants: []config.TenantRoutes{
		{Tenant: "default", Routes: []config.Route{
			{Match: "azure/*", Provider: "azure"},
			{Match: "echo/*", Provider: "echo", Model: "*"},
			{Match: "gpt-4o", Provider: "openai", Model: "gpt-4o-2024-08-06"},
			{Match: "*", Provider: "openai"},
		}},
		{Tenant: "acme", Routes: []config.Route{
			{Match: "fast-*-v*", Provider: "echo", Model: "echo-*"},
			{Match: "claude-*", Provider: "thirdparty"},
		}},
		{Tenant: "empty"},
	}}
}

func TestRoute(t *testing.T) {
	r := New(testConfig())
	tests := []struct {
		tenant, model string
		provider, up  string
		ok            bool
	}{
		{"anyone", "azure/my-deploy", "azure", "azure/my-deploy", true},
		{"anyone", "echo/hello", "echo", "hello", true},
		{"anyone", "echo/", "echo", "", true},
		{"anyone", "gpt-4o", "openai", "gpt-4o-2024-08-06", true},
		{"anyone", "gpt-4o-mini", "openai", "gpt-4o-mini", true},
		{"anyone", "azure", "openai", "azure", true}, // "azure/*" needs the slash
		{"acme", "fast-small-v2", "echo", "echo-small", true},
		{"acme", "claude-3", "thirdparty", "claude-3", true},
		{"acme", "gpt-4o", "", "", false},                        // acme's own table has no catch-all: no fallback to default
		{"empty", "gpt-4o", "openai", "gpt-4o-2024-08-06", true}, // an empty block uses the default table
	}
	for _, tt := range tests {
		got, ok := r.Route(tt.tenant, tt.model)
		if ok != tt.ok || got.Provider != tt.provider || got.Model != tt.up {
			t.Errorf("Route(%q, %q) = %+v, %v; want %s %q %v", tt.tenant, tt.model, got, ok, tt.provider, tt.up, tt.ok)
		}
	}
}

func TestNoDefaultTable(t *testing.T) {
	r := New(&config.Config{})
	if _, ok := r.Route("x", "gpt-4o"); ok {
		t.Fatal("routed without any table")
	}
}

func TestReachable(t *testing.T) {
	r := New(testConfig())
	models := map[string][]string{"azure": {"azure/d1"}, "echo": {"echo-1"}, "openai": {"gpt-4o"}}
	var ids []string
	for _, rc := range r.Reachable("anyone") {
		for _, m := range models[rc.Provider] {
			if id, ok := rc.ClientID(m); ok {
				if got, _ := r.Route("anyone", id); got.Provider == rc.Provider {
					ids = append(ids, rc.Provider+":"+id)
				}
			}
		}
	}
	want := map[string]bool{"azure:azure/d1": true, "echo:echo/echo-1": true, "openai:gpt-4o": true}
	for _, id := range ids {
		if !want[id] {
			t.Errorf("unexpected %s", id)
		}
		delete(want, id)
	}
	if len(want) != 0 {
		t.Errorf("missing %v (got %v)", want, ids)
	}
}

func BenchmarkRoute(b *testing.B) {
	r := New(testConfig())
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.Route("anyone", "gpt-4o-mini")
	}
}
