package backend

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/postgres"
	"github.com/loom-runtime/loom/core/store/sqlite"
)

func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }

func use(t *testing.T, s store.Store) {
	t.Helper()
	t.Cleanup(func() { s.Close() })
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTenant(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.TenantByName(t.Context(), "acme"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenSQLite(t *testing.T) {
	s, err := Open(t.Context(), "sqlite", filepath.Join(t.TempDir(), "loom.db"), 0, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*sqlite.Store); !ok {
		t.Fatalf("Open(sqlite) = %T", s)
	}
	use(t, s)
}

func TestOpenPostgres(t *testing.T) {
	s, err := Open(t.Context(), "postgres", testpg.DSN(t), 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(*postgres.Store); !ok {
		t.Fatalf("Open(postgres) = %T", s)
	}
	use(t, s)
}

func TestOpenUnknownDriver(t *testing.T) {
	for _, d := range []string{"", "mysql", "SQLite", "postgresql"} {
		s, err := Open(t.Context(), d, "x", 0, nil)
		if err == nil {
			s.Close()
			t.Fatalf("Open(%q): want error", d)
		}
		if !strings.Contains(err.Error(), `"sqlite"`) || !strings.Contains(err.Error(), `"postgres"`) {
			t.Errorf("Open(%q) error %q does not list the drivers", d, err)
		}
	}
}
