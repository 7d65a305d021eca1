package testbin

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// LockedBuffer is a bytes.Buffer that a child process writes to while the
// test reads it.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Command is the built bin/loom run in dir with a minimal environment: PATH,
// HOME=dir, LOOM_PLUGINS_DIR pointing at the built plugins, then env (a later
// entry overrides an earlier one).
func Command(t testing.TB, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	return CommandOf(t, filepath.Join(Dir(t), "loom"), dir, env, args...)
}

// CommandOf is Command running the loom binary bin (e.g. FaultLoom's).
func CommandOf(t testing.TB, bin, dir string, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir,
		"LOOM_PLUGINS_DIR=" + filepath.Join(Dir(t), "plugins")}, env...)
	return cmd
}

// Result is how a loom command ended.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Run runs a loom command to completion (see Command). A non-zero exit is a
// Result; only failing to run the binary fails t.
func Run(t testing.TB, dir string, env []string, args ...string) Result {
	t.Helper()
	cmd := Command(t, dir, env, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run loom %v: %v", args, err)
	}
	return Result{out.String(), errb.String(), code}
}

// MustRun runs a loom command, fails t unless it exits 0, and returns its stdout.
func MustRun(t testing.TB, dir string, env []string, args ...string) string {
	t.Helper()
	r := Run(t, dir, env, args...)
	if r.Code != 0 {
		t.Fatalf("loom %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.Code, r.Stdout, r.Stderr)
	}
	return r.Stdout
}

// LastLine is what `loom key create` promises: the key alone on the last line.
func LastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}

// Server is a running `loom serve`.
type Server struct {
	Cmd    *exec.Cmd
	URL    string // http://<its LOOM_LISTEN address>
	Stdout *LockedBuffer
	Stderr *LockedBuffer
	done   chan error
}

// Serve starts `loom serve` (see Command) on a free address without waiting
// for it to listen. When the test ends the server is killed if still running.
func Serve(t testing.TB, dir string, env []string, args ...string) *Server {
	t.Helper()
	return ServeWith(t, dir, env, nil, args...)
}

// ServeWith is Serve with prepare, when not nil, applied to the command
// before it starts (to run it as another user, say).
func ServeWith(t testing.TB, dir string, env []string, prepare func(*exec.Cmd), args ...string) *Server {
	t.Helper()
	return serve(t, filepath.Join(Dir(t), "loom"), dir, env, prepare, args...)
}

// ServeOf is Serve running the loom binary bin (e.g. FaultLoom's).
func ServeOf(t testing.TB, bin, dir string, env []string, args ...string) *Server {
	t.Helper()
	return serve(t, bin, dir, env, nil, args...)
}

func serve(t testing.TB, bin, dir string, env []string, prepare func(*exec.Cmd), args ...string) *Server {
	t.Helper()
	addr := FreeAddr(t)
	env = append(env[:len(env):len(env)], "LOOM_LISTEN="+addr)
	cmd := CommandOf(t, bin, dir, env, append([]string{"serve"}, args...)...)
	if prepare != nil {
		prepare(cmd)
	}
	s := &Server{Cmd: cmd, URL: "http://" + addr, Stdout: &LockedBuffer{}, Stderr: &LockedBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = s.Stdout, s.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- cmd.Wait() }()
	t.Cleanup(func() { s.Stop(t, syscall.SIGKILL) })
	return s
}

// WaitHealthy waits until /healthz answers 200, failing t if the server
// exits or timeout passes first.
func (s *Server) WaitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("loom serve exited early: %v\nstderr: %s", err, s.Stderr.String())
		default:
		}
		if resp, err := http.Get(s.URL + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("loom serve not healthy after %v\nstderr: %s", timeout, s.Stderr.String())
}

// Stop signals the server and returns its exit code (-1 if killed). A server
// that has not exited a minute after sig is killed and t fails.
func (s *Server) Stop(t testing.TB, sig os.Signal) int {
	t.Helper()
	if s.Cmd.ProcessState != nil {
		return s.Cmd.ProcessState.ExitCode()
	}
	_ = s.Cmd.Process.Signal(sig)
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		_ = s.Cmd.Process.Kill()
		<-s.done
		t.Errorf("loom serve did not exit within a minute of %v\nstderr: %s", sig, s.Stderr.String())
	}
	return s.Cmd.ProcessState.ExitCode()
}

// WaitExit waits for a server that should refuse to start to exit, and
// returns its exit code. It fails t if the server answers /healthz instead
// (it started), or has done neither after timeout.
func (s *Server) WaitExit(t testing.TB, timeout time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-s.done:
			s.done <- err
			return s.Cmd.ProcessState.ExitCode()
		default:
		}
		if resp, err := http.Get(s.URL + "/healthz"); err == nil {
			resp.Body.Close()
			t.Fatalf("loom serve started (/healthz answered %d), want it to refuse\nstderr: %s", resp.StatusCode, s.Stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("loom serve neither exited nor served within %v\nstderr: %s", timeout, s.Stderr.String())
	return -1
}
