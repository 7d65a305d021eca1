package sqlite

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/storetest"
	"github.com/loom-runtime/loom/schema"
)

func openMigrated(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openMigrated(t, filepath.Join(t.TempDir(), "loom.db"))
	})
}

func TestOpenCreatesPrivateDirAndWALFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "nested")
	path := filepath.Join(dir, "loom.db")
	s := openMigrated(t, path)
	if _, err := s.CreateTenant(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}

	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("parent directory: %v", err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("parent directory mode = %o, want 700", perm)
	}
	fi, err = os.Stat(path)
	if err != nil {
		t.Fatalf("database file: %v", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("database file mode = %o, want no group/other access", perm)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Errorf("WAL file: %v", err)
	}
	var mode string
	if err := s.reader.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("reader journal_mode = %q, want wal", mode)
	}
	if err := s.writer.QueryRowContext(t.Context(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Errorf("writer journal_mode = %q, want wal", mode)
	}
	var fk, sync, busy int
	if err := s.writer.QueryRowContext(t.Context(), "PRAGMA foreign_keys").Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if err := s.writer.QueryRowContext(t.Context(), "PRAGMA synchronous").Scan(&sync); err != nil {
		t.Fatal(err)
	}
	if err := s.writer.QueryRowContext(t.Context(), "PRAGMA busy_timeout").Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if fk != 1 || sync != 1 || busy <= 0 {
		t.Errorf("writer foreign_keys=%d synchronous=%d busy_timeout=%d, want 1, 1 (NORMAL), >0", fk, sync, busy)
	}
	// Readers cannot write.
	if _, err := s.reader.ExecContext(t.Context(), "DELETE FROM tenants"); err == nil {
		t.Error("reader pool accepted a write")
	}
}

func TestMigrateRecordsVersions(t *testing.T) {
	s := openMigrated(t, filepath.Join(t.TempDir(), "loom.db"))
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	ms, err := schema.Migrations(schema.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.reader.QueryContext(t.Context(), "SELECT version, name FROM schema_migrations ORDER BY version")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	i := 0
	for rows.Next() {
		var v int
		var name string
		if err := rows.Scan(&v, &name); err != nil {
			t.Fatal(err)
		}
		if i >= len(ms) || ms[i].Version != v || ms[i].Name != name {
			t.Errorf("schema_migrations row %d = %d %s", i, v, name)
		}
		i++
	}
	if i != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", i, len(ms))
	}
}

// Several stores on one file (as with `loom migrate` next to `loom serve`)
// migrate concurrently without errors.
func TestConcurrentMigrateSameFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loom.db")
	const n = 5
	stores := make([]*Store, n)
	for i := range stores {
		s, err := Open(t.Context(), path, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores[i] = s
	}
	var wg sync.WaitGroup
	for i, s := range stores {
		wg.Go(func() {
			if err := s.Migrate(t.Context()); err != nil {
				t.Errorf("store %d: Migrate: %v", i, err)
			}
		})
	}
	wg.Wait()
	var count int
	if err := stores[0].reader.QueryRowContext(t.Context(), "SELECT count(*) FROM schema_migrations").Scan(&count); err != nil {
		t.Fatal(err)
	}
	ms, _ := schema.Migrations(schema.SQLite)
	if count != len(ms) {
		t.Errorf("schema_migrations has %d rows, want %d", count, len(ms))
	}
	// Writes from two stores on the same file interleave fine.
	var wg2 sync.WaitGroup
	for i, s := range stores[:2] {
		wg2.Go(func() {
			for j := range 20 {
				if _, err := s.CreateTenant(t.Context(), string(rune('a'+i))+"-"+string(rune('a'+j))); err != nil {
					t.Errorf("store %d: CreateTenant: %v", i, err)
				}
			}
		})
	}
	wg2.Wait()
	list, err := stores[3].ListTenants(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 40 {
		t.Errorf("ListTenants = %d, want 40", len(list))
	}
}

func TestOpenOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dir with space?#%", "loom.db")
	s := openMigrated(t, path)
	if _, err := s.CreateTenant(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("database not at %q: %v", path, err)
	}
}

func TestOpenEmptyPath(t *testing.T) {
	if _, err := Open(t.Context(), "", nil); err == nil {
		t.Fatal("Open(\"\"): want error")
	}
}

func BenchmarkInsertTraces(b *testing.B) {
	s, err := Open(b.Context(), filepath.Join(b.TempDir(), "loom.db"), hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(b.Context()); err != nil {
		b.Fatal(err)
	}
	storetest.BenchmarkInsertTraces(b, s)
}

// Upgrading a database with tenants and keys rebuilds tenants (for the new
// status) without losing a row or a foreign key.
func TestMigrate0002KeepsTenantsAndKeys(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "loom.db"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ms, err := schema.Migrations(schema.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.ExecContext(ctx, ms[0].SQL); err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY,
		name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT;
		INSERT INTO schema_migrations VALUES (1, 'tenants_and_keys', 0)`); err != nil {
		t.Fatal(err)
	}
	var keys []store.APIKey
	for i, name := range []string{"acme", "globex", "initech"} {
		tn, err := s.CreateTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if i == 1 {
			if err := s.SetTenantStatus(ctx, tn.ID, store.TenantDisabled); err != nil {
				t.Fatal(err)
			}
		}
		for j := range 2 {
			k, err := s.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Label: fmt.Sprint(j), Prefix: "p", Hash: [32]byte{byte(i), byte(j), 1}})
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k)
		}
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from 0001: %v", err)
	}
	for _, k := range keys {
		m, err := s.KeyByHash(ctx, k.Hash)
		if err != nil || m.Key.ID != k.ID || m.Tenant.ID != k.TenantID {
			t.Errorf("KeyByHash after upgrade = %+v, %v", m, err)
		}
	}
	if g, _ := s.TenantByName(ctx, "globex"); g.Status != store.TenantDisabled {
		t.Errorf("globex status after upgrade = %q", g.Status)
	}
	rows, err := s.writer.QueryContext(ctx, `PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Error("foreign_key_check reports violations after the upgrade")
	}
	rows.Close()
	var ok string
	if err := s.writer.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&ok); err != nil || ok != "ok" {
		t.Errorf("integrity_check = %q, %v", ok, err)
	}
	// The rebuilt tables keep their constraints and index.
	if _, err := s.CreateAPIKey(ctx, store.APIKey{TenantID: uuid.NewString(), Prefix: "p", Hash: [32]byte{9}}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("key for an unknown tenant: %v, want ErrNotFound", err)
	}
	if _, err := s.writer.ExecContext(ctx, `DELETE FROM tenants`); err == nil {
		t.Error("deleting tenants with keys was allowed")
	}
	if _, err := s.writer.ExecContext(ctx, `UPDATE tenants SET status = 'purged'`); err == nil {
		t.Error("status 'purged' was accepted")
	}
	if _, err := s.writer.ExecContext(ctx, `UPDATE tenants SET status = 'deleted' WHERE name = 'initech'`); err != nil {
		t.Errorf("status 'deleted' refused: %v", err)
	}
	var idx int
	if err := s.writer.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema
		WHERE type = 'index' AND name = 'api_keys_tenant_created_idx' AND tbl_name = 'api_keys'`).Scan(&idx); err != nil || idx != 1 {
		t.Errorf("api_keys index: %d, %v", idx, err)
	}
	var leftovers int
	if err := s.writer.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE sql LIKE '%_new%'`).Scan(&leftovers); err != nil || leftovers != 0 {
		t.Errorf("%d schema objects still mention the *_new tables (%v)", leftovers, err)
	}
}

// Retention and TamperTrace never leave the immutability guard set.
func TestGuardNeverCommittedSet(t *testing.T) {
	s := openMigrated(t, filepath.Join(t.TempDir(), "loom.db"))
	ctx := t.Context()
	tn, err := s.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	ch := store.Chain{ID: uuid.NewString(), StartedAt: time.Now()}
	if err := s.StartChain(ctx, ch); err != nil {
		t.Fatal(err)
	}
	old := store.Trace{ID: uuid.NewString(), TenantID: tn.ID, Endpoint: "models", Status: "ok", UsageSource: "none",
		CreatedAt: time.Date(2024, 1, 5, 0, 0, 0, 0, time.UTC), ChainID: ch.ID, ChainSeq: 1,
		PrevHash: make([]byte, 32), Hash: make([]byte, 32), CanonicalVersion: 2}
	if _, err := s.InsertTraces(ctx, []store.Trace{old}); err != nil {
		t.Fatal(err)
	}
	guard := func(what string) {
		t.Helper()
		var active int
		if err := s.reader.QueryRowContext(ctx, `SELECT active FROM trace_retention_guard`).Scan(&active); err != nil || active != 0 {
			t.Errorf("after %s: guard active = %d, %v", what, active, err)
		}
	}
	if err := s.TamperTrace(ctx, old.ID, "status", "x"); err != nil {
		t.Fatal(err)
	}
	guard("TamperTrace")
	if err := s.TamperTrace(ctx, old.ID, "chain_seq", "not a number"); err == nil {
		t.Error("TamperTrace wrote text into an INTEGER column")
	}
	guard("a failed TamperTrace")
	if _, err := s.ApplyRetention(ctx, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Fatal(err)
	}
	guard("ApplyRetention")
	if _, err := s.writer.ExecContext(ctx, `DELETE FROM trace_tombstones`); err == nil {
		t.Error("tombstones deleted")
	}
}

// Shredding overwrites the wrapped keys: their bytes are in neither the
// database file nor the WAL afterwards.
func TestShredTenantLeavesNoKeyBytes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "loom.db")
	s := openMigrated(t, path)
	ctx := t.Context()
	tn, err := s.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	wrapped := make([]byte, 48)
	for i := range wrapped {
		wrapped[i] = byte(0xA0 + i%7)
	}
	copy(wrapped, "LOOM-WRAPPED-KEY-MARKER")
	if err := s.AddTenantKey(ctx, store.TenantKey{TenantID: tn.ID, Version: 1, Wrapped: wrapped, Nonce: []byte("nonce-123456"),
		MasterKeyID: "0123456789abcdef"}); err != nil {
		t.Fatal(err)
	}
	// Make sure the key reached the database file itself too.
	if _, err := s.writer.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); !bytes.Contains(b, wrapped) {
		t.Fatal("the key is not in the database file before shredding; the test proves nothing")
	}
	if _, err := s.ShredTenant(ctx, tn.ID, time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{path, path + "-wal"} {
		b, err := os.ReadFile(f)
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if bytes.Contains(b, wrapped) {
			t.Errorf("%s still holds the wrapped key after ShredTenant", filepath.Base(f))
		}
	}
}

// Upgrading to version 4 keeps shreds done before it pending.
func TestMigrate0004RecordsEarlierShreds(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "loom.db"), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ms, err := schema.Migrations(schema.SQLite)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.ExecContext(ctx, `CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY,
		name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT`); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:3] {
		if _, err := s.writer.ExecContext(ctx, m.SQL); err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
		if _, err := s.writer.ExecContext(ctx, `INSERT INTO schema_migrations VALUES (?, ?, 0)`, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	storetest.CheckShredUpgrade(t, s)
}
