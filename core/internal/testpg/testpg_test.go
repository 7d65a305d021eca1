package testpg

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func TestDSNGivesFreshSuperuserDatabases(t *testing.T) {
	a, b := connect(t, DSN(t)), connect(t, DSN(t))
	var nameA, nameB string
	var super bool
	if err := a.QueryRow(t.Context(), "SELECT current_database(), rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&nameA, &super); err != nil {
		t.Fatal(err)
	}
	if err := b.QueryRow(t.Context(), "SELECT current_database()").Scan(&nameB); err != nil {
		t.Fatal(err)
	}
	if nameA == nameB {
		t.Fatalf("two DSN calls gave the same database %s", nameA)
	}
	if !strings.HasPrefix(nameA, "loom_test_") {
		t.Errorf("database name %q lacks the loom_test_ prefix", nameA)
	}
	if !super {
		t.Error("DSN does not connect as a superuser")
	}
	if _, err := a.Exec(t.Context(), "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(t.Context(), "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("fresh database has %d tables", n)
	}
}

func TestWithDatabase(t *testing.T) {
	cases := map[string]string{
		"postgres://u:p@h:5432/postgres?sslmode=disable": "postgres://u:p@h:5432/loom_x?sslmode=disable",
		"postgresql://h/":               "postgresql://h/loom_x",
		"host=h user=u dbname=postgres": "host=h user=u dbname=postgres dbname=loom_x",
		"host=h ":                       "host=h dbname=loom_x",
	}
	for in, want := range cases {
		got, err := withDatabase(in, "loom_x")
		if err != nil || got != want {
			t.Errorf("withDatabase(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestVersionOrder(t *testing.T) {
	dirs := []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/10/bin"}
	slices.SortFunc(dirs, func(a, b string) int { return compareVersions(versionOf(b), versionOf(a)) })
	want := []string{"/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/10/bin", "/usr/lib/postgresql/9.6/bin"}
	if !slices.Equal(dirs, want) {
		t.Errorf("order = %v, want %v", dirs, want)
	}
}

// TestHelperProcess is run by the tests below in a child test binary.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv("LOOM_TESTPG_HELPER")
	switch mode {
	case "":
		t.Skip("helper for TestClusterIsRemoved, TestNotFound and TestExternalServer")
	case "notfound":
		searchGlob = filepath.Join(t.TempDir(), "*", "bin")
		DSN(t)
		t.Fatal("DSN returned without PostgreSQL")
	case "external":
		for range 2 {
			conn := connect(t, DSN(t))
			var name string
			if err := conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("DATABASE %s\n", name)
		}
		if running != nil {
			t.Fatal("started a cluster despite " + EnvDSN)
		}
		return
	}
	DSN(t)
	fmt.Printf("CLUSTER dir=%s port=%d\n", running.dir, running.port)
	if mode == "crash" {
		// As after a panic or a -timeout: no Main cleanup.
		os.Exit(7)
	}
}

// helper runs TestHelperProcess in a child test binary.
func helper(t *testing.T, mode string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.v")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, EnvDSN+"=") && !strings.HasPrefix(kv, "CI=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "LOOM_TESTPG_HELPER="+mode)
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestNotFound(t *testing.T) {
	// PATH without initdb/pg_ctl, and the version glob pointed at nothing.
	out, err := helper(t, "notfound", "PATH=/nonexistent")
	if err != nil || !strings.Contains(out, "--- SKIP") || !strings.Contains(out, "PostgreSQL not found") {
		t.Errorf("without CI: want a skip (err %v):\n%s", err, out)
	}
	out, err = helper(t, "notfound", "PATH=/nonexistent", "CI=true")
	if err == nil || !strings.Contains(out, "--- FAIL") || !strings.Contains(out, "CI requires it") {
		t.Errorf("with CI=true: want a failure (err %v):\n%s", err, out)
	}
}

func TestExternalServer(t *testing.T) {
	DSN(t) // make sure a server is up
	out, err := helper(t, "external", EnvDSN+"="+admin)
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	names := regexp.MustCompile(`DATABASE (\S+)`).FindAllStringSubmatch(out, -1)
	if len(names) != 2 || names[0][1] == names[1][1] {
		t.Fatalf("want two different databases:\n%s", out)
	}
	// The databases made on the external server were dropped.
	conn := connect(t, admin)
	for _, n := range names {
		var exists bool
		if err := conn.QueryRow(t.Context(), "SELECT exists(SELECT 1 FROM pg_database WHERE datname = $1)", n[1]).Scan(&exists); err != nil {
			t.Fatal(err)
		}
		if exists {
			t.Errorf("database %s left behind on the external server", n[1])
		}
	}
}

var clusterLine = regexp.MustCompile(`CLUSTER dir=(\S+) port=(\d+)`)

// The private cluster goes away with the test binary, whether Main stops it
// or the process dies and the watchdog does.
func TestClusterIsRemoved(t *testing.T) {
	for _, mode := range []string{"clean", "crash"} {
		t.Run(mode, func(t *testing.T) {
			out, err := helper(t, mode)
			m := clusterLine.FindStringSubmatch(out)
			if m == nil {
				if strings.Contains(out, "--- SKIP") {
					t.Skipf("helper skipped:\n%s", out)
				}
				t.Fatalf("helper printed no cluster (err %v):\n%s", err, out)
			}
			dir, port := m[1], m[2]
			deadline := time.Now().Add(30 * time.Second)
			for {
				_, statErr := os.Stat(dir)
				c, dialErr := net.DialTimeout("tcp", "127.0.0.1:"+port, time.Second)
				if dialErr == nil {
					c.Close()
				}
				if os.IsNotExist(statErr) && dialErr != nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("after the helper exited (%v): dir %s stat: %v; port %s dial: %v", err, dir, statErr, port, dialErr)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// Start, the entry point outside tests, gives a working cluster that its
// stop function takes away.
func TestStart(t *testing.T) {
	dsn, stop, err := Start(t.Context())
	if errors.Is(err, ErrNotFound) {
		t.Skipf("PostgreSQL not installed: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		stop()
		t.Fatalf("connect: %v", err)
	}
	var name string
	err = conn.QueryRow(t.Context(), "SELECT current_database()").Scan(&name)
	conn.Close(context.Background())
	if err != nil || name != "postgres" {
		t.Errorf("current_database() = %q, %v; want postgres", name, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, dsn); err == nil {
		conn.Close(context.Background())
		t.Fatal("the cluster still answers after stop")
	}
}

func TestStartNotFound(t *testing.T) {
	t.Setenv("PATH", "/nonexistent")
	old := searchGlob
	searchGlob = filepath.Join(t.TempDir(), "*", "bin")
	t.Cleanup(func() { searchGlob = old })
	if _, _, err := Start(t.Context()); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), searchGlob) {
		t.Fatalf("Start without PostgreSQL: %v, want ErrNotFound naming %s", err, searchGlob)
	}
}
