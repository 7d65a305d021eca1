package sdk

import (
	"os/exec"
	"strings"
	"testing"
)

// The SDK is what third-party plugins compile against: it must not pull in
// Loom's core or its heavy dependencies (database drivers, HTTP router).
func TestNoCoreDependencies(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	cmd := exec.Command(goBin, "list", "-deps", "-test", "./...")
	cmd.Dir = "."
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps -test ./...: %v\n%s", err, msg)
	}
	forbidden := []string{"jackc/pgx", "sqlite", "gorilla/mux", "github.com/loom-runtime/loom/core"}
	n := 0
	for _, pkg := range strings.Fields(string(out)) {
		n++
		for _, f := range forbidden {
			if strings.Contains(pkg, f) {
				t.Errorf("the SDK depends on %s (matches %q)", pkg, f)
			}
		}
	}
	if n < 10 {
		t.Errorf("go list returned %d packages; expected the SDK's dependency tree", n)
	}
}
