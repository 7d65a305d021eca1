package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestAzureDotSegmentDeployments: a model naming the deployment "." or
// ".." is refused by the azure plugin with a 400; its request never
// reaches the upstream (where /openai/deployments/../chat/completions
// would resolve to another endpoint), and it is traced.
func TestAzureDotSegmentDeployments(t *testing.T) {
	p := startProxy(t)
	type sent struct{ model, rid string }
	var all []sent
	for _, model := range []string{"azure/.", "azure/.."} {
		for _, stream := range []bool{false, true} {
			resp, body := p.post(t, "/v1/chat/completions", p.key, chatBody(model, stream))
			var env struct {
				Error struct{ Type, Code, Message string }
			}
			if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &env) != nil ||
				env.Error.Type != "invalid_request_error" || env.Error.Code != "invalid_deployment" {
				t.Errorf("%s (stream %v): %d %s", model, stream, resp.StatusCode, body)
			}
			all = append(all, sent{model, resp.Header.Get("X-Request-Id")})
		}
	}
	// A deployment whose name only contains dots still goes through.
	resp, body := p.post(t, "/v1/chat/completions", p.key, chatBody("azure/v1.5", false))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("azure/v1.5: %d %s", resp.StatusCode, body)
	}
	if up, ok := p.up.Find(resp.Header.Get("X-Request-Id")); !ok || up.Path != "/openai/deployments/v1.5/chat/completions" {
		t.Fatalf("azure/v1.5 reached the upstream at %q (%v)", up.Path, ok)
	}
	for _, s := range all {
		if up, ok := p.up.Find(s.rid); ok {
			t.Errorf("%s reached the upstream at %s", s.model, up.Path)
		}
	}
	for _, up := range p.up.Requests() {
		if strings.Contains(up.Path, "/./") || strings.Contains(up.Path, "/../") {
			t.Errorf("the upstream received the path %q", up.Path)
		}
	}
	// Every refused request has its trace.
	st := openStore(t, p)
	waitTraces(t, st, "acme", int64(len(all)+1))
	byRequest := map[string]int{}
	for _, tr := range traces(t, st, "acme") {
		byRequest[tr.RequestID] = tr.HTTPStatus
	}
	for _, s := range all {
		if got, ok := byRequest[s.rid]; !ok || got != http.StatusBadRequest {
			t.Errorf("%s: trace with HTTP status %d (found %v), want 400", s.model, got, ok)
		}
	}
}
