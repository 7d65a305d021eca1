package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/backend"
)

// A crypto-shred survives backups once the documented procedure is done,
// on PostgreSQL and SQLite, through bin/loom: an attacker holding a backup
// taken before the shred (PostgreSQL also keeps the deleted key rows in its
// files and WAL) can decrypt the shredded tenant's traces with the master
// key Loom runs with, and Loom reports the shred as pending while that is
// so; after `keys rotate-master` and the old key's destruction, the same
// attempt with every master key Loom has fails, and Loom reports the shred
// complete. The other tenant's traces stay readable, and with
// --rotate-data-keys its new traces use a new data key.
func TestShredSurvivesBackups(t *testing.T) {
	for _, backendName := range []string{"sqlite", "postgres"} {
		t.Run(backendName, func(t *testing.T) { testShredSurvivesBackups(t, backendName) })
	}
}

const rotatedMasterKey = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="

func testShredSurvivesBackups(t *testing.T, backendName string) {
	ctx := context.Background()
	var (
		cluster *testpg.Cluster
		extra   []string
	)
	if backendName == "postgres" {
		cluster = testpg.NewCluster(t) // private: the test reads its files
		extra = []string{"LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN=" + cluster.DSN()}
	}
	p := startProxy(t, extra...)
	for range 5 {
		p.post(t, "/v1/chat/completions", p.key, chatBody("gpt-ok", false))
	}
	for range 3 {
		p.post(t, "/v1/chat/completions", p.narrow, chatBody("gpt-ok", false))
	}
	live := openStoreNoCleanup(t, p.dir, p.env)
	waitTraces(t, live, "acme", 5)
	waitTraces(t, live, "narrow", 3)
	acme := tenantID(t, live, "acme")
	p.gw.stop(t, syscall.SIGTERM)
	live.Close()

	// The attacker's backup, taken before the shred.
	bk := takeBackup(t, p, cluster)
	stolen, err := bk.TenantKeys(ctx, acme)
	if err != nil || len(stolen) == 0 {
		t.Fatalf("the backup holds %d keys of acme (%v)", len(stolen), err)
	}
	ids, err := bk.TraceIDs(ctx, acme)
	if err != nil || len(ids) != 5 {
		t.Fatalf("the backup holds %d traces of acme (%v)", len(ids), err)
	}
	victim, err := bk.Trace(ctx, acme, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	oldKey, _ := base64.StdEncoding.DecodeString(testMasterKey)
	newKey, _ := base64.StdEncoding.DecodeString(rotatedMasterKey)
	oldID, _ := seal.MasterKeyID(oldKey)
	newID, _ := seal.MasterKeyID(newKey)
	// attempt unwraps the backup's copy of acme's key with master and
	// decrypts the stolen trace's request body with it.
	attempt := func(master []byte) error {
		t.Helper()
		kr, err := seal.NewKeyring(master, bk)
		if err != nil {
			t.Fatal(err)
		}
		body, err := kr.Open(ctx, acme, victim.KeyVersion, victim.ID, seal.FieldRequest, victim.Request)
		if err == nil && !strings.Contains(string(body), "hello there") {
			t.Fatalf("recovered a body that is not the request: %q", body)
		}
		return err
	}
	if err := attempt(oldKey); err != nil {
		t.Fatalf("the backup does not decrypt with the master key even before the shred: %v", err)
	}

	// Shred. Loom says it is pending, and why.
	out := mustRun(t, p.dir, p.env, "tenant", "delete", "acme", "--shred")
	for _, want := range []string{"SHRED PENDING", "master key " + oldID, "keys rotate-master", "destroy every copy of the old one"} {
		if !strings.Contains(out, want) {
			t.Errorf("tenant delete --shred does not say %q:\n%s", want, out)
		}
	}
	const pending = "shred pending: rotate the master key and destroy the old one"
	if out := mustRun(t, p.dir, p.env, "keys", "status"); !hasLine(out, "acme", pending+" ("+oldID+")") {
		t.Errorf("keys status after the shred does not report acme's shred pending:\n%s", out)
	}
	if out := mustRun(t, p.dir, p.env, "tenant", "list"); !hasLine(out, "acme", "deleted ("+pending+")") {
		t.Errorf("tenant list after the shred does not report acme's shred pending:\n%s", out)
	}
	live = openStoreAt(t, p.dir, p.env)
	kr, _ := seal.NewKeyring(oldKey, live)
	if _, err := kr.Open(ctx, acme, victim.KeyVersion, victim.ID, seal.FieldRequest, victim.Request); !errors.Is(err, seal.ErrNoKey) {
		t.Fatalf("acme's trace through the live store after the shred: %v, want ErrNoKey", err)
	}
	// What pending means: the deleted keys are still on disk, and the
	// backup still decrypts with the master key Loom runs with.
	checkKeyBytesOnDisk(t, p, cluster, stolen[0].Wrapped)
	if err := attempt(oldKey); err != nil {
		t.Fatalf("the backup no longer decrypts right after the shred, so pending would be wrong: %v", err)
	}

	// The documented procedure: rotate the master key (with new data keys),
	rot := append(append([]string(nil), p.env...), "LOOM_OLD_MASTER_KEY="+testMasterKey, "LOOM_MASTER_KEY="+rotatedMasterKey)
	out = mustRun(t, p.dir, rot, "keys", "rotate-master", "--rotate-data-keys")
	for _, want := range []string{
		"rewrapped 1 tenant data keys under master key " + newID + " (was " + oldID + ")",
		"gave 1 tenants a new data key version",
		"completed 1 pending shreds (acme)",
		"destroy every copy of the old master key " + oldID,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("keys rotate-master does not say %q:\n%s", want, out)
		}
	}
	if out := mustRun(t, p.dir, rot, "keys", "status"); !strings.Contains(out, "LOOM_OLD_MASTER_KEY: master key "+oldID+", RETIRED: unset it and destroy every copy") {
		t.Errorf("keys status with the retired key still in the environment does not say to destroy it:\n%s", out)
	}
	// then destroy the old master key: from now on Loom has the new one only.
	env := append(append([]string(nil), p.env...), "LOOM_MASTER_KEY="+rotatedMasterKey)
	status := mustRun(t, p.dir, env, "keys", "status")
	if strings.Contains(status, "pending") || !hasLine(status, "acme", "shredded, once master key "+oldID) ||
		!strings.Contains(status, "master key "+oldID+": retired") || !strings.Contains(status, "master key "+newID+": current") {
		t.Errorf("keys status after the procedure:\n%s", status)
	}
	if out := mustRun(t, p.dir, env, "tenant", "list"); strings.Contains(out, "pending") {
		t.Errorf("tenant list after the procedure still reports a pending shred:\n%s", out)
	}

	// The same recovery attempt, with every master key Loom now has, fails.
	if err := attempt(newKey); !errors.Is(err, seal.ErrUnwrap) {
		t.Fatalf("the backup's copy of a shredded key after the procedure: %v, want ErrUnwrap", err)
	}
	// (Only the destroyed key would still open it: destroying it is the
	// step Loom cannot check.)
	if err := attempt(oldKey); err != nil {
		t.Errorf("the old master key no longer opens the backup: %v", err)
	}
	// A Loom still on the retired key cannot start.
	if r := runLoom(t, p.dir, p.env, "serve"); r.code == 0 || !strings.Contains(r.stderr, "LOOM_MASTER_KEY is master key "+oldID+", retired by keys rotate-master") {
		t.Errorf("serve with the retired master key: exit %d\n%s", r.code, r.stderr)
	}
	other := append(append([]string(nil), p.env...), "LOOM_MASTER_KEY="+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	if r := runLoom(t, p.dir, other, "serve"); r.code == 0 || !strings.Contains(r.stderr, "the store's data keys are wrapped under master key "+newID) {
		t.Errorf("serve with another master key: exit %d\n%s", r.code, r.stderr)
	}

	// The other tenant: its old traces open under the new master key, its
	// new ones use the data key the rotation gave it.
	p.gw = startServe(t, p.dir, env)
	p.post(t, "/v1/chat/completions", p.narrow, chatBody("gpt-ok", false))
	waitTraces(t, live, "narrow", 4)
	p.gw.stop(t, syscall.SIGTERM)
	kr, _ = seal.NewKeyring(newKey, live)
	versions := map[int]int{}
	for _, tr := range traces(t, live, "narrow") {
		if _, err := kr.Open(ctx, tr.TenantID, tr.KeyVersion, tr.ID, seal.FieldRequest, tr.Request); err != nil {
			t.Errorf("narrow's trace %s (key v%d) after the rotation: %v", tr.ID, tr.KeyVersion, err)
		}
		versions[tr.KeyVersion]++
	}
	if versions[1] != 3 || versions[2] != 1 {
		t.Errorf("narrow's traces by data key version: %v, want v1: 3 (before), v2: 1 (after)", versions)
	}
	if out := mustRun(t, p.dir, env, "verify"); !strings.Contains(out, "OK: ") {
		t.Errorf("verify after the procedure:\n%s", out)
	}
}

// hasLine reports whether some line of out holds every part.
func hasLine(out string, parts ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			return true
		}
	}
	return false
}

// openStoreNoCleanup is openStoreAt for a store the test closes itself.
func openStoreNoCleanup(t *testing.T, dir string, env []string) store.Store {
	t.Helper()
	driver, dsn := "sqlite", filepath.Join(dir, "loom.db")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "LOOM_STORE_DRIVER="); ok {
			driver = v
		}
		if v, ok := strings.CutPrefix(kv, "LOOM_STORE_DSN="); ok {
			dsn = v
		}
	}
	st, err := backend.Open(context.Background(), driver, dsn, 4, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// takeBackup copies the store, with no Loom running, the way an operator's
// backup would: the SQLite files, or on PostgreSQL a file-level copy of
// the database (CREATE DATABASE … TEMPLATE, STRATEGY FILE_COPY, which
// writes no row to the WAL). It returns the copy, opened.
func takeBackup(t *testing.T, p *proxyEnv, cluster *testpg.Cluster) store.Store {
	t.Helper()
	ctx := context.Background()
	if cluster == nil {
		dir := t.TempDir()
		for _, f := range []string{"loom.db", "loom.db-wal"} {
			b, err := os.ReadFile(filepath.Join(p.dir, f))
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return openStoreAt(t, dir, []string{"LOOM_STORE_DRIVER=sqlite", "LOOM_STORE_DSN=" + filepath.Join(dir, "loom.db")})
	}
	conn, err := pgx.Connect(ctx, withDB(t, cluster.DSN(), "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE DATABASE loom_backup TEMPLATE loom STRATEGY FILE_COPY`); err != nil {
		t.Fatalf("backup: %v", err)
	}
	return openStoreAt(t, t.TempDir(), []string{"LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN=" + withDB(t, cluster.DSN(), "loom_backup")})
}

// withDB is dsn with its database replaced.
func withDB(t *testing.T, dsn, db string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db
	return u.String()
}

// checkKeyBytesOnDisk looks for a deleted wrapped key in the live store's
// files. PostgreSQL keeps it (a dead row in the table's file until VACUUM
// reuses the space, and the insert's record in the WAL): the premise of the
// pending shred. SQLite overwrites it (secure_delete) and truncates its
// WAL, so only copies of the file (the backup) keep it.
func checkKeyBytesOnDisk(t *testing.T, p *proxyEnv, cluster *testpg.Cluster, wrapped []byte) {
	t.Helper()
	ctx := context.Background()
	if cluster == nil {
		for _, f := range []string{"loom.db", "loom.db-wal"} {
			b, err := os.ReadFile(filepath.Join(p.dir, f))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			if bytes.Contains(b, wrapped) {
				t.Errorf("SQLite's %s still holds the shredded key after the shred", f)
			}
		}
		return
	}
	conn, err := pgx.Connect(ctx, cluster.DSN())
	if err != nil {
		t.Fatal(err)
	}
	var oid uint32
	err = conn.QueryRow(ctx, `SELECT oid FROM pg_database WHERE datname = current_database()`).Scan(&oid)
	if err == nil {
		_, err = conn.Exec(ctx, `CHECKPOINT`) // the table's pages reach its file
	}
	conn.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, dir := range []string{filepath.Join("base", strconv.FormatUint(uint64(oid), 10)), "pg_wal"} {
		err := filepath.WalkDir(filepath.Join(cluster.DataDir(), dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.Contains(b, wrapped) {
				rel, _ := filepath.Rel(cluster.DataDir(), path)
				found = append(found, rel)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(found) == 0 {
		t.Fatal("the deleted wrapped key is nowhere in the cluster's files: the test cannot show what a backup or the WAL keeps")
	}
	t.Logf("after DELETE, the wrapped key is still in %s", strings.Join(found, ", "))
}
