// Package testpg gives tests fresh PostgreSQL databases on a throwaway cluster shared by the test binary.
//
// A package whose tests need PostgreSQL calls Main from its TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }
//
// and DSN from each test that wants a database. The first DSN call starts a
// private cluster (initdb into a temporary directory, then pg_ctl start on a
// free 127.0.0.1 port, with durability off for speed); Main stops it and
// removes the directory after the tests. Every DSN call creates a new empty
// database on it, and the returned DSN connects as the superuser "postgres".
//
// With LOOM_TEST_POSTGRES_DSN set, that server is used instead (its user needs
// CREATEDB, and superuser for tests that need it); databases created there are
// dropped when their test ends.
//
// PostgreSQL is looked for as initdb and pg_ctl on PATH, else in the highest
// version under /usr/lib/postgresql/*/bin. Without it DSN skips the test, or
// fails it when CI=true. initdb and postgres refuse to run as root: under root
// the cluster runs as the "postgres" user, else "nobody".
//
// Start gives programs other than tests (the benchmark suite) such a cluster.
package testpg

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvDSN names the environment variable holding an existing server's DSN.
const EnvDSN = "LOOM_TEST_POSTGRES_DSN"

// searchGlob is where Debian and Ubuntu install PostgreSQL server binaries
// (a variable so tests can hide them).
var searchGlob = "/usr/lib/postgresql/*/bin"

// ErrNotFound is returned (wrapped) when PostgreSQL is not installed.
var ErrNotFound = errors.New("PostgreSQL binaries (initdb, pg_ctl) not found")

var (
	startOnce sync.Once
	admin     string   // DSN of the maintenance database, as superuser
	external  bool     // admin came from EnvDSN
	startErr  error    // why the server is unavailable
	running   *cluster // the private cluster, nil when external or not started
	counter   atomic.Int64
	stopMu    sync.Mutex
)

// Main runs the tests and then stops the private cluster, if one was
// started, and removes its files. Call it from TestMain and pass its result
// to os.Exit.
func Main(m *testing.M) int {
	code := m.Run()
	stopMu.Lock()
	defer stopMu.Unlock()
	if running != nil {
		if err := running.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testpg: %v\n", err)
		}
		running = nil
	}
	return code
}

// DSN returns the DSN of a new, empty database, as a superuser. It skips t
// (or fails it when CI=true) if PostgreSQL is not installed.
func DSN(t testing.TB) string {
	t.Helper()
	startOnce.Do(startShared)
	require(t, startErr, ", or set "+EnvDSN+"=…")

	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatalf("testpg: %v", err)
	}
	name := fmt.Sprintf("loom_test_%d_%s", counter.Add(1), hex.EncodeToString(suffix[:]))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := adminExec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE template0"); err != nil {
		t.Fatalf("testpg: create database %s: %v", name, err)
	}
	if external {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := adminExec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
				t.Logf("testpg: drop database %s: %v", name, err)
			}
		})
	}
	dsn, err := withDatabase(admin, name)
	if err != nil {
		t.Fatalf("testpg: %v", err)
	}
	return dsn
}

// require fails t on err, except that a missing PostgreSQL skips it (hint
// adds to the install advice) unless CI=true.
func require(t testing.TB, err error, hint string) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrNotFound) {
		if ci() {
			t.Fatalf("testpg: PostgreSQL 15 not found on PATH or under %s; CI requires it", searchGlob)
		}
		t.Skipf("testpg: PostgreSQL not found (install postgresql-15%s) — skipping", hint)
	}
	t.Fatalf("testpg: %v", err)
}

func ci() bool {
	v, _ := strconv.ParseBool(os.Getenv("CI"))
	return v
}

func adminExec(ctx context.Context, sql string) error {
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns dsn with its database replaced by name.
func withDatabase(dsn, name string) (string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", fmt.Errorf("%s is not a valid URL", EnvDSN)
		}
		u.Path = "/" + name
		u.RawPath = ""
		return u.String(), nil
	}
	// keyword=value form: a later keyword overrides an earlier one.
	return strings.TrimSpace(dsn) + " dbname=" + name, nil
}

// startShared starts the server DSN hands out databases on.
func startShared() {
	if dsn := os.Getenv(EnvDSN); dsn != "" {
		admin, external = dsn, true
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := adminExec(ctx, "SELECT 1"); err != nil {
			// The error from pgx does not quote the password.
			startErr = fmt.Errorf("connect to %s: %w", EnvDSN, err)
		}
		return
	}
	bins, err := findBinaries()
	if err != nil {
		startErr = err
		return
	}
	c, err := startCluster(context.Background(), bins)
	if err != nil {
		startErr = err
		return
	}
	stopMu.Lock()
	running = c
	stopMu.Unlock()
	admin = c.dsn("postgres")
}

// Start starts a private cluster outside tests and returns the superuser DSN
// of its "postgres" database and a function that stops the cluster and
// removes its files (a watchdog does that too if this process dies first).
// The error wraps ErrNotFound when PostgreSQL is not installed. ctx bounds
// the start only.
func Start(ctx context.Context) (dsn string, stop func() error, err error) {
	bins, err := findBinaries()
	if err != nil {
		return "", nil, err
	}
	c, err := startCluster(ctx, bins)
	if err != nil {
		return "", nil, err
	}
	return c.dsn("postgres"), c.stop, nil
}

type binaries struct{ initdb, pgctl string }

// findBinaries looks for initdb and pg_ctl on PATH, then under searchGlob
// (highest version first).
func findBinaries() (binaries, error) {
	initdb, err1 := exec.LookPath("initdb")
	pgctl, err2 := exec.LookPath("pg_ctl")
	if err1 == nil && err2 == nil {
		return binaries{initdb, pgctl}, nil
	}
	dirs, _ := filepath.Glob(searchGlob)
	slices.SortFunc(dirs, func(a, b string) int { return compareVersions(versionOf(b), versionOf(a)) })
	for _, d := range dirs {
		b := binaries{filepath.Join(d, "initdb"), filepath.Join(d, "pg_ctl")}
		if isExecutable(b.initdb) && isExecutable(b.pgctl) {
			return b, nil
		}
	}
	return binaries{}, fmt.Errorf("%w on PATH or under %s", ErrNotFound, searchGlob)
}

// versionOf returns the numeric parts of the version directory in
// /usr/lib/postgresql/<version>/bin.
func versionOf(binDir string) []int {
	var v []int
	for _, p := range strings.Split(filepath.Base(filepath.Dir(binDir)), ".") {
		n, err := strconv.Atoi(p)
		if err != nil {
			n = -1
		}
		v = append(v, n)
	}
	return v
}

func compareVersions(a, b []int) int { return slices.Compare(a, b) }

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// cluster is a running private PostgreSQL cluster.
type cluster struct {
	bins binaries
	dir  string // temporary directory holding everything below
	data string
	sock string
	log  string
	port int
	cred *syscall.Credential // set when running as root: whom to run as
	opts string              // server options, kept for a restart

	watchdog   *exec.Cmd
	watchdogIn io.WriteCloser
}

// startCluster creates and starts a cluster; ctx bounds initdb and pg_ctl
// start. On failure it cleans up after itself and the error says why, with
// the server log's tail if it got that far.
func startCluster(ctx context.Context, bins binaries) (c *cluster, err error) {
	dir, err := os.MkdirTemp("", "loom-testpg-")
	if err != nil {
		return nil, err
	}
	c = &cluster{
		bins: bins,
		dir:  dir,
		data: filepath.Join(dir, "data"),
		sock: filepath.Join(dir, "sock"),
		log:  filepath.Join(dir, "postgres.log"),
	}
	defer func() {
		if err != nil {
			c.stop()
		}
	}()
	// 0755: the unprivileged user must be able to traverse it (when we are root).
	if err := os.Chmod(dir, 0o755); err != nil {
		return c, err
	}
	if err := os.Mkdir(c.sock, 0o700); err != nil {
		return c, err
	}
	if os.Geteuid() == 0 {
		if err := c.dropPrivileges(); err != nil {
			return c, err
		}
	}
	// Started before anything else so that whatever happens to this process
	// from now on (a panic, a -timeout, a kill) the cluster is stopped and the
	// directory removed.
	if err := c.startWatchdog(); err != nil {
		return c, fmt.Errorf("start watchdog: %w", err)
	}

	out, err := c.commandContext(ctx, bins.initdb, "-D", c.data, "-U", "postgres", "--auth=trust",
		"-E", "UTF8", "--no-locale", "--no-sync").CombinedOutput()
	if err != nil {
		return c, fmt.Errorf("initdb failed: %v\n%s", err, strings.TrimSpace(string(out)))
	}

	// A port picked free can be taken before the server binds it: try again.
	for attempt := 1; ; attempt++ {
		c.port, err = freePort()
		if err != nil {
			return c, err
		}
		c.opts = fmt.Sprintf("-p %d -k '%s' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
			c.port, c.sock)
		if out, err = c.pgStart(ctx); err == nil {
			return c, nil
		}
		tail := c.logTail(30)
		if attempt < 3 && strings.Contains(tail, "could not bind") {
			continue
		}
		return c, fmt.Errorf("pg_ctl start failed: %v\n%s\n--- server log (%s) ---\n%s",
			err, strings.TrimSpace(string(out)), c.log, tail)
	}
}

// dropPrivileges makes the cluster run as "postgres", else "nobody", and
// hands it the directory tree.
func (c *cluster) dropPrivileges() error {
	var u *user.User
	var err error
	for _, name := range []string{"postgres", "nobody"} {
		if u, err = user.Lookup(name); err == nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("running as root, and initdb refuses to: no postgres or nobody user to run it as: %w", err)
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err1 != nil || err2 != nil {
		return fmt.Errorf("user %s has a non-numeric uid/gid %s/%s", u.Username, u.Uid, u.Gid)
	}
	c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	// Every directory above ours must let that user through.
	for d := filepath.Dir(c.dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("running as root: user %s cannot reach %s (%s is mode %o); set TMPDIR to a world-traversable directory such as /tmp",
				u.Username, c.dir, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			break
		}
	}
	return filepath.WalkDir(c.dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(uid), int(gid))
	})
}

// pgStart starts the server with c.opts and returns pg_ctl's output.
func (c *cluster) pgStart(ctx context.Context) ([]byte, error) {
	return c.commandContext(ctx, c.bins.pgctl, "-D", c.data, "-o", c.opts, "-l", c.log, "-w", "-t", "120", "start").CombinedOutput()
}

// dsn is the superuser DSN of database db.
func (c *cluster) dsn(db string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, db)
}

// command prepares a PostgreSQL tool run, as the unprivileged user when we are root.
func (c *cluster) command(name string, args ...string) *exec.Cmd {
	return c.commandContext(context.Background(), name, args...)
}

// commandContext is command, killed when ctx is done.
func (c *cluster) commandContext(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.dir // the unprivileged user may not be able to read ours
	cmd.Env = environ()
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd
}

// environ is this process's environment without libpq/server settings (PGDATA,
// PGPORT, PGOPTIONS, …) that could redirect the tools, in the C locale.
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C")
}

// startWatchdog starts a shell, in its own session, that waits for its stdin
// to close, then stops the cluster and removes its directory. Main closes
// stdin after stopping the cluster itself; if this process dies first, the
// kernel closes it.
func (c *cluster) startWatchdog() error {
	sh, err := exec.LookPath("sh")
	if err != nil {
		return err
	}
	cmd := c.command(sh, "-c", `read -r _ ; "$0" -D "$1" -m immediate stop >/dev/null 2>&1 ; rm -rf "$2"`,
		c.bins.pgctl, c.data, c.dir)
	cmd.Dir = "/"
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true // out of reach of the terminal's ^C
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	c.watchdog, c.watchdogIn = cmd, in
	return nil
}

// stop stops the server (immediate mode: nothing to keep) and removes the directory.
func (c *cluster) stop() error {
	var errs []error
	if _, err := os.Stat(filepath.Join(c.data, "postmaster.pid")); err == nil {
		if out, err := c.command(c.bins.pgctl, "-D", c.data, "-m", "immediate", "-w", "stop").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("pg_ctl stop: %v: %s", err, strings.TrimSpace(string(out))))
		}
	}
	if c.watchdog != nil {
		c.watchdogIn.Close()
		c.watchdog.Wait()
		c.watchdog = nil
	}
	if err := os.RemoveAll(c.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// logTail returns the last n lines of the server log.
func (c *cluster) logTail(n int) string {
	b, err := os.ReadFile(c.log)
	if err != nil {
		return fmt.Sprintf("(no server log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Cluster is a private cluster for one test, which the test can stop and
// start again (to take the database away under load). Its data survives a
// stop; everything is removed when the test ends.
type Cluster struct {
	c   *cluster
	dsn string
}

// NewCluster starts a private cluster with a database "loom" and returns it.
// Like DSN, it skips (or fails under CI=true) when PostgreSQL is missing.
func NewCluster(t testing.TB) *Cluster {
	t.Helper()
	bins, err := findBinaries()
	require(t, err, "") // EnvDSN cannot stand in: the test stops and starts the server
	c, err := startCluster(context.Background(), bins)
	require(t, err, "")
	t.Cleanup(func() {
		if err := c.stop(); err != nil {
			t.Logf("testpg: stop private cluster: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn("postgres"))
	if err != nil {
		t.Fatalf("testpg: connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE loom"); err != nil {
		t.Fatalf("testpg: create database: %v", err)
	}
	return &Cluster{c: c, dsn: c.dsn("loom")}
}

// DSN is the superuser DSN of the cluster's "loom" database.
func (c *Cluster) DSN() string { return c.dsn }

// DataDir is the cluster's data directory (PGDATA), for tests that look at
// what the server keeps on disk.
func (c *Cluster) DataDir() string { return c.c.data }

// Stop stops the server (fast shutdown: connections are cut), keeping its data.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if out, err := c.c.command(c.c.bins.pgctl, "-D", c.c.data, "-m", "fast", "-w", "stop").CombinedOutput(); err != nil {
		t.Fatalf("testpg: pg_ctl stop: %v: %s", err, out)
	}
}

// Start starts a stopped server again, on the same port.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if out, err := c.c.pgStart(context.Background()); err != nil {
		t.Fatalf("testpg: pg_ctl start: %v: %s\n%s", err, out, c.c.logTail(20))
	}
}
