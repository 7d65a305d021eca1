package relay

import (
	"net/http"
	"testing"
)

// Whatever a plugin returns, credential headers never reach the client.
func TestCopyHeadersDropsCredentials(t *testing.T) {
	h := http.Header{}
	CopyHeaders(h, map[string]string{
		"authorization": "Bearer sk-1", "PROXY-AUTHORIZATION": "Basic x", "Api-Key": "az-1",
		"x-api-key": "k", "Cookie": "c=1", "set-cookie": "s=1",
		"x-request-id": "req-1", "Retry-After": "7",
	})
	want := http.Header{"X-Upstream-Request-Id": {"req-1"}, "Retry-After": {"7"}}
	if len(h) != len(want) || h.Get("X-Upstream-Request-Id") != "req-1" || h.Get("Retry-After") != "7" {
		t.Fatalf("copied %v, want %v", h, want)
	}
}
