package sqlite

import (
	"os"
	"path/filepath"
	"sync"
	"testing"

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
