package providertest_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/providertest"
)

// brokenEnv selects the broken variant TestBrokenHelper runs.
const brokenEnv = "PROVIDERTEST_BROKEN_VARIANT"

// TestBrokenHelper runs the suite against a broken reference provider. It
// only does so in the child process TestSuiteCatchesBrokenProviders starts
// (a failing Run cannot be observed from inside the same test).
func TestBrokenHelper(t *testing.T) {
	variant := os.Getenv(brokenEnv)
	if variant == "" {
		t.Skip("only run by TestSuiteCatchesBrokenProviders")
	}
	providertest.Run(t, referenceHarness(func() provider.Provider {
		p := &refProvider{}
		switch variant {
		case "reencode":
			p.reencode = true
		case "err_on_http":
			p.errOnHTTP = true
		case "ignore_send":
			p.ignoreSend = true
		}
		return p
	}))
}

// The suite fails providers that break the rules, with a message saying
// what is wrong.
func TestSuiteCatchesBrokenProviders(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite in child processes")
	}
	for variant, want := range map[string][]string{
		"reencode":    {"--- FAIL: TestBrokenHelper/direct/chat_completions ", "--- FAIL: TestBrokenHelper/grpc/chat_completions ", "body differs from Request.Body"},
		"err_on_http": {"--- FAIL: TestBrokenHelper/grpc/chat_completions/upstream_status_429", "an upstream HTTP error is a result"},
		"ignore_send": {"--- FAIL: TestBrokenHelper/direct/chat_completions_stream/sender_error", "more times after it returned an error"},
	} {
		t.Run(variant, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestBrokenHelper$", "-test.v")
			cmd.Env = append(os.Environ(), brokenEnv+"="+variant)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a provider with variant %q:\n%s", variant, out)
			}
			for _, w := range want {
				if !strings.Contains(string(out), w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
