package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/loom-runtime/loom/core/store"
)

// traceByRequest waits for the tenant's n traces and returns them by request id.
func traceByRequest(t *testing.T, st store.Store, tenant string, n int64) map[string]store.Trace {
	t.Helper()
	waitTraces(t, st, tenant, n)
	out := map[string]store.Trace{}
	for _, tr := range traces(t, st, tenant) {
		out[tr.RequestID] = tr
	}
	return out
}

// pricingView is what the dashboard's trace detail says about a trace's price.
type pricingView struct {
	CostMicros    *int64  `json:"cost_micros"`
	UsageSource   string  `json:"usage_source"`
	ReportedModel *string `json:"reported_model"`
	PricedModel   *string `json:"priced_model"`
	PricingNote   *string `json:"pricing_note"`
}

func (p *proxyEnv) pricingOf(t *testing.T, traceID string) pricingView {
	t.Helper()
	code, body := get(t, p.gw.url+"/api/v1/traces/"+traceID, "Authorization", "Bearer "+p.key)
	if code != 200 {
		t.Fatalf("GET trace %s: %d %s", traceID, code, body)
	}
	var v pricingView
	if err := json.Unmarshal([]byte(body), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func str(s *string) string {
	if s == nil {
		return "<null>"
	}
	return *s
}

// cost shows an optional number (a cost, a token count).
func cost(c *int64) string {
	if c == nil {
		return "<null>"
	}
	return fmt.Sprint(*c)
}

// What a request costs: a reply naming a model the catalog does not list
// is priced under the model Loom routed the request to, and the trace says
// so; an upstream that refuses (4xx/5xx) is not charged; a stream the
// upstream broke off keeps its estimate.
func TestUsageAndPrice(t *testing.T) {
	p := startProxy(t)
	body := func(model string, stream bool, meta string) string {
		m := ""
		if meta != "" {
			m = `,"metadata":{` + meta + `}`
		}
		return fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hello there"}]%s}`, model, stream, m)
	}
	const unlisted = "gpt-4o-unlisted-preview"
	note := "priced as gpt-4o: the upstream reported " + unlisted + ", which has no price"
	cases := []struct {
		name, body   string
		status       int
		usage        string // usage source
		cost         string // µ$, or <null>
		priced, rep  string // priced_model, reported_model (<null> when absent)
		noteContains string // "" = no note
	}{
		// gpt-4o at $2.50 in, $1.25 cached, $10 out per 1M: 8×2.5 + 3×1.25 + 4×10 = 63.75 → 64 µ$.
		{"reported model has a price", body("gpt-4o", false, ""), 200, "provider", "64", "gpt-4o", "gpt-4o", ""},
		{"reported model unpriced: routed model prices it", body("gpt-4o", false, `"mock_model":"`+unlisted+`"`), 200, "provider", "64", "gpt-4o", unlisted, note},
		// 9×2.5 + 5×10 = 72.5 → 73 µ$.
		{"stream: reported model unpriced", body("gpt-4o", true, `"mock_model":"`+unlisted+`"`), 200, "provider", "73", "gpt-4o", unlisted, note},
		{"rewritten route: routed model prices it", body("rewrite/gpt-4o", false, `"mock_model":"`+unlisted+`"`), 200, "provider", "64", "gpt-4o", unlisted, note},
		{"nothing priced", body("unlisted-model", false, ""), 200, "provider", "<null>", "<null>", "unlisted-model", "not priced"},
		{"upstream 500", body("gpt-4o", false, `"mock_status":"500"`), 500, "none", "<null>", "<null>", "<null>", ""},
		{"upstream 400", body("gpt-4o", false, `"mock_status":"400"`), 400, "none", "<null>", "<null>", "<null>", ""},
		{"stream: upstream 429", body("gpt-4o", true, `"mock_status":"429"`), 429, "none", "<null>", "<null>", "<null>", ""},
		{"stream: upstream 503", body("gpt-4o", true, `"mock_status":"503"`), 503, "none", "<null>", "<null>", "<null>", ""},
		// The upstream produced output before it broke off: estimated, and
		// "cut" has no price.
		{"stream broken off mid-way", body("cut", true, ""), 200, "estimated", "<null>", "<null>", "<null>", "not priced"},
	}
	ids := make([]string, len(cases))
	for i, c := range cases {
		resp, b := p.post(t, "/v1/chat/completions", p.key, c.body)
		if resp.StatusCode != c.status {
			t.Fatalf("%s: status %d, want %d: %s", c.name, resp.StatusCode, c.status, b)
		}
		ids[i] = resp.Header.Get("X-Request-Id")
	}
	byRequest := traceByRequest(t, openStore(t, p), "acme", int64(len(cases)))
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tr, ok := byRequest[ids[i]]
			if !ok {
				t.Fatalf("no trace for request %s", ids[i])
			}
			if tr.UsageSource != c.usage || cost(tr.CostMicros) != c.cost {
				t.Errorf("trace: usage %s cost %s µ$ (prompt tokens %s), want usage %s cost %s", tr.UsageSource, cost(tr.CostMicros), cost(tr.PromptTokens), c.usage, c.cost)
			}
			if c.usage == "none" && (tr.PromptTokens != nil || tr.CompletionTokens != nil || tr.TotalTokens != nil) {
				t.Errorf("tokens counted for a request the upstream refused: %s %s %s", cost(tr.PromptTokens), cost(tr.CompletionTokens), cost(tr.TotalTokens))
			}
			v := p.pricingOf(t, tr.ID)
			if cost(v.CostMicros) != c.cost || v.UsageSource != c.usage {
				t.Errorf("dashboard: usage %s cost %s", v.UsageSource, cost(v.CostMicros))
			}
			if str(v.PricedModel) != c.priced || (c.rep != "<null>" && str(v.ReportedModel) != c.rep) {
				t.Errorf("dashboard: priced_model %s reported_model %s, want %s %s", str(v.PricedModel), str(v.ReportedModel), c.priced, c.rep)
			}
			switch {
			case c.noteContains == "" && v.PricingNote != nil:
				t.Errorf("dashboard: pricing_note %q, want none", *v.PricingNote)
			case c.noteContains != "" && !strings.Contains(str(v.PricingNote), c.noteContains):
				t.Errorf("dashboard: pricing_note %s, want one containing %q", str(v.PricingNote), c.noteContains)
			}
		})
	}
}

// A provider without credentials answers 503 without calling its upstream:
// nothing was used, so nothing is counted or charged.
func TestProviderWithoutCredentialsIsNotCharged(t *testing.T) {
	p := startProxy(t, "OPENAI_API_KEY=")
	var ids []string
	for _, stream := range []bool{false, true} {
		resp, b := p.post(t, "/v1/chat/completions", p.key, chatBody("gpt-4o", stream))
		if resp.StatusCode != 503 || !strings.Contains(string(b), "OPENAI_API_KEY") {
			t.Fatalf("stream=%v: %d %s, want 503 naming OPENAI_API_KEY", stream, resp.StatusCode, b)
		}
		ids = append(ids, resp.Header.Get("X-Request-Id"))
	}
	if n := len(p.up.Requests()); n != 0 {
		t.Fatalf("the upstream was called %d times", n)
	}
	byRequest := traceByRequest(t, openStore(t, p), "acme", int64(len(ids)))
	for i, id := range ids {
		tr, ok := byRequest[id]
		if !ok {
			t.Fatalf("no trace for request %s", id)
		}
		if tr.UsageSource != "none" || tr.PromptTokens != nil || tr.CostMicros != nil {
			t.Errorf("stream=%v: usage %s, prompt tokens %s, cost %s µ$: charged for a request that never went upstream",
				i == 1, tr.UsageSource, cost(tr.PromptTokens), cost(tr.CostMicros))
		}
	}
}
