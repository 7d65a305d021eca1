package plugin

import (
	"bytes"
	"io"
	"net/http"
	"regexp"
	"testing"

	"github.com/hashicorp/go-hclog"
)

// The profiling listener serves pprof on a loopback address and logs
// where; any other address is refused.
func TestPprof(t *testing.T) {
	var logs bytes.Buffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logs, JSONFormat: true})
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:0", "example.com:0", "127.0.0.1"} {
		if _, err := startPprof(addr, log); err == nil {
			t.Fatalf("%s: accepted", addr)
		}
	}
	srv, err := startPprof("127.0.0.1:0", log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	m := regexp.MustCompile(`"addr":"(127\.0\.0\.1:\d+)"`).FindStringSubmatch(logs.String())
	if m == nil {
		t.Fatalf("no address logged: %s", logs.String())
	}
	resp, err := http.Get("http://" + m[1] + "/debug/pprof/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(body) == 0 {
		t.Fatalf("status %d, body %q", resp.StatusCode, body)
	}
}
