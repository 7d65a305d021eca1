package providertest_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/providertest"
)

func referenceHarness(newProvider func() provider.Provider) providertest.Harness {
	return providertest.Harness{
		New: newProvider,
		Config: func(upstreamURL string) provider.Config {
			return provider.Config{
				Instance: "reference",
				Settings: []byte(`{"base_url":"` + upstreamURL + `"}`),
				Secrets:  map[string]string{"api_key": "sk-reference"},
			}
		},
		Model:         "gpt-ref",
		CallsUpstream: true,
		CheckUpstreamRequest: func(t *testing.T, r *http.Request, body []byte) {
			if got := r.Header.Get("Authorization"); got != "Bearer sk-reference" {
				t.Errorf("Authorization = %q", got)
			}
			if !strings.HasPrefix(r.URL.Path, "/v1/") {
				t.Errorf("path %q, want /v1/…", r.URL.Path)
			}
			if len(body) == 0 {
				t.Error("empty body")
			}
		},
	}
}

// The reference provider follows every rule: the suite passes.
func TestReferenceProvider(t *testing.T) {
	providertest.Run(t, referenceHarness(func() provider.Provider { return &refProvider{} }))
}
