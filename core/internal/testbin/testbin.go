// Package testbin builds Loom's real binaries for tests that run them as a
// user would: bin/loom and the provider plugins, compiled once per test
// process, and runs bin/loom (CLI commands, and `loom serve` until it is healthy).
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	once    sync.Once
	dir     string
	buildEr error
	out     []byte
)

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testbin: cannot locate source")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Dir builds bin/loom, every plugin under plugins/ and the echo example into a temporary
// directory shared by the test process and returns it: <dir>/loom and
// <dir>/plugins/loom-provider-<name>. The directory is removed by Cleanup.
func Dir(t testing.TB) string {
	t.Helper()
	root := RepoRoot(t)
	once.Do(func() {
		dir, buildEr = os.MkdirTemp("", "loom-testbin-")
		if buildEr != nil {
			return
		}
		// Readable by every user: tests run the binaries as other users too.
		if buildEr = os.Chmod(dir, 0o755); buildEr != nil {
			return
		}
		targets := [][2]string{{"loom", "core/cmd/loom"}}
		plugins, _ := filepath.Glob(filepath.Join(root, "plugins", "*", "main.go"))
		for _, p := range plugins {
			name := filepath.Base(filepath.Dir(p))
			targets = append(targets, [2]string{filepath.Join("plugins", "loom-provider-"+name), filepath.Join("plugins", name)})
		}
		// The example plugin is a module of its own, as a third party's would be.
		targets = append(targets, [2]string{filepath.Join("plugins", "loom-provider-echo"), "examples/echo-provider"})
		for _, tg := range targets {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, tg[0]), ".")
			cmd.Dir = filepath.Join(root, tg[1])
			if out, buildEr = cmd.CombinedOutput(); buildEr != nil {
				return
			}
		}
	})
	if buildEr != nil {
		t.Fatalf("testbin: build failed: %v\n%s", buildEr, out)
	}
	return dir
}

var (
	mockOnce sync.Once
	mockDir  string
	mockErr  error
	mockOut  []byte
)

// Mock builds core/cmd/loom-mock, the fast mock upstream, into a temporary
// directory (once per test process) and returns the binary's path. Tests
// that need the upstream in a process of its own (file descriptors, CPU)
// run it. The directory is removed by Cleanup.
func Mock(t testing.TB) string {
	t.Helper()
	root := RepoRoot(t)
	mockOnce.Do(func() {
		if mockDir, mockErr = os.MkdirTemp("", "loom-testbin-mock-"); mockErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", filepath.Join(mockDir, "loom-mock"), ".")
		cmd.Dir = filepath.Join(root, "core", "cmd", "loom-mock")
		mockOut, mockErr = cmd.CombinedOutput()
	})
	if mockErr != nil {
		t.Fatalf("testbin: build loom-mock failed: %v\n%s", mockErr, mockOut)
	}
	return filepath.Join(mockDir, "loom-mock")
}

var (
	faultOnce sync.Once
	faultErr  error
	faultOut  []byte
)

// FaultLoom builds core/cmd/loom with the loomfault tag (see
// core/internal/fault: a request's X-Loom-Fault header makes the handler
// panic at the point it names) next to Dir's binaries, once per test
// process, and returns its path. Use it with ServeOf or CommandOf.
func FaultLoom(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(Dir(t), "loom-fault")
	faultOnce.Do(func() {
		cmd := exec.Command("go", "build", "-tags", "loomfault", "-o", bin, ".")
		cmd.Dir = filepath.Join(RepoRoot(t), "core", "cmd", "loom")
		faultOut, faultErr = cmd.CombinedOutput()
	})
	if faultErr != nil {
		t.Fatalf("testbin: build loom with the loomfault tag failed: %v\n%s", faultErr, faultOut)
	}
	return bin
}

// Cleanup removes the built binaries; call it from TestMain after m.Run.
func Cleanup() {
	for _, d := range []string{dir, mockDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
}
