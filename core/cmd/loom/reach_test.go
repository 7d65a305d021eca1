package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/internal/testbin"
)

// hostileReport is what loom-provider-hostile (testdata/hostile-provider)
// answers: what it could read of Loom and of the other processes.
type hostileReport struct {
	Pid        int               `json:"pid"`
	Ppid       int               `json:"ppid"`
	Uid        int               `json:"uid"`
	OwnSecrets map[string]string `json:"own_secrets"`
	Probes     []struct {
		Pid     int      `json:"pid"`
		Process string   `json:"process"`
		File    string   `json:"file"`
		Err     string   `json:"err"`
		Bytes   int64    `json:"bytes"`
		Found   []string `json:"found"`
	} `json:"probes"`
}

// The secrets `loom serve` gets in its environment in TestPluginsCannotReadLoomsSecrets.
const (
	reachAdminToken = "admin-token-reach-7f3c9a"
	reachOwnSecret  = "hostile-own-secret-51d2"
	// reachMasterKeyText is testMasterKey decoded: the bytes Loom holds.
	reachMasterKeyText = "0123456789abcdef0123456789abcdef"
)

// hostilePluginsDir builds loom-provider-hostile into a directory every
// user can read, next to (a link to) the built openai plugin.
func hostilePluginsDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "loom-hostile-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "loom-provider-hostile"), "./core/cmd/loom/testdata/hostile-provider")
	cmd.Dir = testbin.RepoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the hostile plugin: %v\n%s", err, out)
	}
	if err := os.Symlink(filepath.Join(testbin.Dir(t), "plugins", "loom-provider-openai"), filepath.Join(dir, "loom-provider-openai")); err != nil {
		t.Fatal(err)
	}
	return dir
}

// reachConfig is the config of TestPluginsCannotReadLoomsSecrets: top is
// added at the top, openaiExtra to the openai provider's block.
func reachConfig(top, openaiExtra, closed string) string {
	return fmt.Sprintf(`
%s
provider "hostile" {
  env { api_key = "HOSTILE_API_KEY" }
}
provider "openai" {
  settings { base_url = "http://%s/v1" }
  env { api_key = "OPENAI_API_KEY" }
  %s
}
tenant "default" {
  route {
    match    = "hostile/*"
    provider = "hostile"
    model    = "*"
  }
  route {
    match    = "*"
    provider = "openai"
  }
}
`, top, closed, openaiExtra)
}

// account is a user of this machine the test runs processes as.
type account struct {
	name     string
	uid, gid int
}

func lookupAccount(t *testing.T, name string) account {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v (Debian has it)", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return account{name, uid, gid}
}

// reachSetup is one `loom serve` for TestPluginsCannotReadLoomsSecrets.
type reachSetup struct {
	dir string
	env []string
	// as runs loom as this user when set (the test is root).
	as *account
}

// newReachSetup writes the config into a new working directory (owned by
// as, when set) and returns the environment with every secret in it and
// plugins as the plugins directory.
func newReachSetup(t *testing.T, plugins, config string, as *account) *reachSetup {
	t.Helper()
	dir, err := os.MkdirTemp("", "loom-reach-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if as != nil {
		if err := os.Chown(dir, as.uid, as.gid); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(dir, "loom.hcl"), config)
	return &reachSetup{dir: dir, as: as, env: []string{
		"LOOM_MASTER_KEY=" + testMasterKey,
		"LOOM_ADMIN_TOKEN=" + reachAdminToken,
		"LOOM_STORE_DSN=" + filepath.Join(dir, "store-dsn-secret.db"),
		"OPENAI_API_KEY=" + upstreamKey,
		"HOSTILE_API_KEY=" + reachOwnSecret,
		"LOOM_LOG_LEVEL=debug",
		"LOOM_PLUGINS_DIR=" + plugins,
	}}
}

func (s *reachSetup) prepare(cmd *exec.Cmd) {
	if s.as != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(s.as.uid), Gid: uint32(s.as.gid)}}
	}
}

// run runs a loom command to completion.
func (s *reachSetup) run(t *testing.T, args ...string) result {
	t.Helper()
	cmd := loomCmd(t, s.dir, s.env, args...)
	s.prepare(cmd)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run loom %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// serve creates a tenant and a key, starts `loom serve` and returns it
// with the key.
func (s *reachSetup) serve(t *testing.T) (*gateway, string) {
	t.Helper()
	var key string
	for _, args := range [][]string{{"tenant", "create", "acme"}, {"key", "create", "--tenant", "acme"}} {
		r := s.run(t, args...)
		if r.code != 0 {
			t.Fatalf("loom %v: exit %d\n%s%s", args, r.code, r.stdout, r.stderr)
		}
		key = lastLine(r.stdout)
	}
	srv := testbin.ServeWith(t, s.dir, s.env, s.prepare)
	gw := &gateway{srv: srv, cmd: srv.Cmd, url: srv.URL, stdout: srv.Stdout, stderr: srv.Stderr}
	srv.WaitHealthy(t, 30*time.Second)
	return gw, key
}

// probe asks the hostile plugin what it could read, and checks that it
// read none of Loom's secrets, nor another plugin's, while its own secret
// did reach it (so the report would have carried any secret it found).
func probe(t *testing.T, gw *gateway, key string) hostileReport {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", gw.url+"/v1/chat/completions",
		strings.NewReader(`{"model":"hostile/probe","messages":[{"role":"user","content":"what can you read?"}]}`))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("probe: status %d: %s", resp.StatusCode, body)
	}
	var r hostileReport
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("probe: %v: %.500s", err, body)
	}

	// The report carries secrets: its own one is there.
	if r.OwnSecrets["api_key"] != reachOwnSecret {
		t.Errorf("the hostile plugin was not given its own secret: %q", r.OwnSecrets)
	}
	// Loom's secrets, and the openai plugin's, are nowhere in it.
	needles := map[string]string{
		"LOOM_MASTER_KEY":         testMasterKey,
		"LOOM_MASTER_KEY decoded": reachMasterKeyText,
		"LOOM_ADMIN_TOKEN":        reachAdminToken,
		"LOOM_STORE_DSN":          "store-dsn-secret",
		"OPENAI_API_KEY":          upstreamKey,
	}
	for _, p := range r.Probes {
		for _, f := range p.Found {
			for name, secret := range needles {
				if strings.Contains(f, secret) {
					t.Errorf("the plugin read %s from /proc/%d/%s (%s): %q", name, p.Pid, p.File, p.Process, f)
				}
			}
		}
	}
	for name, secret := range needles {
		if strings.Contains(string(body), secret) && !t.Failed() {
			t.Errorf("%s is in the hostile plugin's report:\n%s", name, body)
		}
	}

	// It did try: Loom is its parent, and each read was refused.
	loomPid := gw.cmd.Process.Pid
	if r.Ppid != loomPid {
		t.Errorf("the plugin's parent is %d, want loom's pid %d", r.Ppid, loomPid)
	}
	tried := map[string]bool{}
	for _, p := range r.Probes {
		if p.Pid != loomPid {
			continue
		}
		tried[p.File] = true
		if p.Err == "" {
			t.Errorf("the plugin read %d bytes of loom's /proc/%d/%s", p.Bytes, p.Pid, p.File)
		} else {
			t.Logf("loom's %s: %s", p.File, p.Err)
		}
	}
	for _, f := range []string{"environ", "maps", "mem"} {
		if !tried[f] {
			t.Errorf("the plugin did not try loom's /proc/%d/%s", loomPid, f)
		}
	}
	// And the other plugin: its memory holds OPENAI_API_KEY.
	siblings := childPids(t, loomPid, "loom-provider-openai")
	if len(siblings) != 1 {
		t.Fatalf("openai plugin processes: %v, want one", siblings)
	}
	triedSibling := false
	for _, p := range r.Probes {
		if p.Pid == siblings[0] && p.File == "mem" {
			triedSibling = true
			if p.Err == "" {
				t.Errorf("the plugin read %d bytes of the openai plugin's memory", p.Bytes)
			}
		}
	}
	if !triedSibling {
		t.Errorf("the plugin did not try the openai plugin's memory (pid %d)", siblings[0])
	}
	t.Logf("the hostile plugin (pid %d, uid %d) tried %d reads of %d processes' /proc files", r.Pid, r.Uid, len(r.Probes), countPids(r))
	return r
}

func countPids(r hostileReport) int {
	pids := map[int]bool{}
	for _, p := range r.Probes {
		pids[p.Pid] = true
	}
	return len(pids)
}

// procStatus returns the fields of /proc/<pid>/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// checkPluginProcess checks that the plugin process pid runs as uid with
// no_new_privs set.
func checkPluginProcess(t *testing.T, name string, pid, uid int) {
	t.Helper()
	st := procStatus(t, pid)
	if st["NoNewPrivs"] != "1" {
		t.Errorf("%s plugin (pid %d): NoNewPrivs %q, want 1", name, pid, st["NoNewPrivs"])
	}
	// Real, effective, saved and file-system uid.
	if want := strings.Repeat(strconv.Itoa(uid)+"\t", 3) + strconv.Itoa(uid); st["Uid"] != want {
		t.Errorf("%s plugin (pid %d): Uid %q, want %q", name, pid, st["Uid"], want)
	}
}

// TestPluginsCannotReadLoomsSecrets runs a hostile plugin under the real
// `loom serve`, given the master key, the admin token, the store DSN and
// the openai provider's key in its environment. Asked for a completion,
// the plugin tries to read /proc/<loom>/environ, maps and mem, the other
// plugin's memory and every process's environment, and answers with what
// it found: none of those secrets, while its own secret did reach it.
//
//   - plugin_user: Loom runs as root (as in CI) and starts its plugins as
//     other users (nobody; daemon for openai, a provider's own user).
//     Root itself can read any process's memory, whatever Loom does, so
//     this is how a root Loom keeps its secrets from its plugins.
//   - same user: Loom and its plugins run as one unprivileged user
//     (nobody when the test is root); Loom is not dumpable and neither
//     are the SDK's plugins, so the user's processes cannot read them.
//   - plugin_user without root: Loom refuses to start, naming the setting.
//
// Every plugin process runs with no_new_privs.
func TestPluginsCannotReadLoomsSecrets(t *testing.T) {
	root := os.Geteuid() == 0
	plugins := hostilePluginsDir(t)

	t.Run("plugin_user", func(t *testing.T) {
		if !root {
			if v, _ := strconv.ParseBool(os.Getenv("CI")); v {
				t.Fatal("CI must run this test as root: only root can start plugins as another user")
			}
			t.Skip("only root can start plugins as another user; run the test as root to cover plugin_user")
		}
		nobody, daemon := lookupAccount(t, "nobody"), lookupAccount(t, "daemon")
		s := newReachSetup(t, plugins, reachConfig(`plugin_user = "nobody"`, `user = "daemon"`, freeAddr(t)), nil)
		gw, key := s.serve(t)
		r := probe(t, gw, key)
		if r.Uid != nobody.uid {
			t.Errorf("the hostile plugin runs as uid %d, want nobody's %d", r.Uid, nobody.uid)
		}
		checkPluginProcess(t, "hostile", r.Pid, nobody.uid)
		openai := childPids(t, gw.cmd.Process.Pid, "loom-provider-openai")
		checkPluginProcess(t, "openai", openai[0], daemon.uid)

		// Its TMPDIR, where go-plugin put its socket, is its own.
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", r.Pid))
		if err != nil {
			t.Fatal(err)
		}
		tmp := regexp.MustCompile("(?:^|\x00)TMPDIR=([^\x00]*)").FindSubmatch(env)
		if tmp == nil {
			t.Fatalf("the hostile plugin has no TMPDIR: %q", env)
		}
		fi, err := os.Stat(string(tmp[1]))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); fi.Mode().Perm() != 0o700 || int(st.Uid) != nobody.uid {
			t.Errorf("the hostile plugin's TMPDIR %s: mode %v, uid %d; want 0700, nobody's %d", tmp[1], fi.Mode().Perm(), st.Uid, nobody.uid)
		}
		if code := gw.stop(t, syscall.SIGTERM); code != 0 {
			t.Errorf("loom serve exited %d\n%s", code, gw.stderr.String())
		}
		if _, err := os.Stat(string(tmp[1])); !os.IsNotExist(err) {
			t.Errorf("the plugin's TMPDIR %s outlived loom: %v", tmp[1], err)
		}
	})

	t.Run("plugin_user cannot reach the binary", func(t *testing.T) {
		if !root {
			if v, _ := strconv.ParseBool(os.Getenv("CI")); v {
				t.Fatal("CI must run this test as root: only root can start plugins as another user")
			}
			t.Skip("only root can start plugins as another user")
		}
		closed, err := os.MkdirTemp("", "loom-hostile-closed-") // mode 0700, root's
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(closed) })
		for _, name := range []string{"loom-provider-hostile", "loom-provider-openai"} {
			if err := os.Symlink(filepath.Join(plugins, name), filepath.Join(closed, name)); err != nil {
				t.Fatal(err)
			}
		}
		s := newReachSetup(t, closed, reachConfig(`plugin_user = "nobody"`, "", freeAddr(t)), nil)
		srv := testbin.ServeWith(t, s.dir, s.env, s.prepare)
		code := srv.WaitExit(t, 30*time.Second)
		want := fmt.Sprintf(`provider "hostile": plugin binary: user "nobody" (uid %d) cannot search %s (mode drwx------`, lookupAccount(t, "nobody").uid, closed)
		if stderr := srv.Stderr.String(); code != exitError || !strings.Contains(stderr, want) {
			t.Errorf("loom serve: exit %d, want %d with %q\nstderr:\n%s", code, exitError, want, stderr)
		}
	})

	t.Run("same user", func(t *testing.T) {
		var as *account
		uid := os.Geteuid()
		if root {
			nobody := lookupAccount(t, "nobody")
			as, uid = &nobody, nobody.uid
		}
		s := newReachSetup(t, plugins, reachConfig("", "", freeAddr(t)), as)
		gw, key := s.serve(t)
		r := probe(t, gw, key)
		checkPluginProcess(t, "hostile", r.Pid, uid)
		checkPluginProcess(t, "openai", childPids(t, gw.cmd.Process.Pid, "loom-provider-openai")[0], uid)
		if st := procStatus(t, gw.cmd.Process.Pid); st["Uid"] != strings.Repeat(strconv.Itoa(uid)+"\t", 3)+strconv.Itoa(uid) {
			t.Errorf("loom runs as %q, want uid %d", st["Uid"], uid)
		}
		for _, line := range []string{"loom is not dumpable", "plugins start with no_new_privs"} {
			if !strings.Contains(gw.stderr.String(), line) {
				t.Errorf("loom's debug log does not say %q:\n%s", line, gw.stderr.String())
			}
		}
	})

	t.Run("plugin_user without root", func(t *testing.T) {
		var as *account
		if root {
			nobody := lookupAccount(t, "nobody")
			as = &nobody
		}
		s := newReachSetup(t, plugins, reachConfig(`plugin_user = "daemon"`, "", freeAddr(t)), as)
		srv := testbin.ServeWith(t, s.dir, s.env, s.prepare)
		code := srv.WaitExit(t, 30*time.Second)
		want := fmt.Sprintf(`loom.hcl: plugin_user: only root can start plugins as user "daemon", and Loom runs as uid %d`, os.Geteuid())
		if as != nil {
			want = fmt.Sprintf(`loom.hcl: plugin_user: only root can start plugins as user "daemon", and Loom runs as uid %d`, as.uid)
		}
		stderr := srv.Stderr.String()
		if code != exitUsage || !strings.Contains(stderr, "loom: invalid configuration:\n  "+want) {
			t.Errorf("loom serve: exit %d, want %d with %q\nstderr:\n%s", code, exitUsage, want, stderr)
		}
		if strings.Contains(stderr, "plugin started") {
			t.Errorf("a plugin started:\n%s", stderr)
		}
	})
}
