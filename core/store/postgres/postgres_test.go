package postgres

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/storetest"
	"github.com/loom-runtime/loom/schema"
)

func TestMain(m *testing.M) { os.Exit(testpg.Main(m)) }

func open(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn, 8, hclog.NewNullLogger())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s := open(t, testpg.DSN(t))
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		return s
	})
}

// Servers and `loom migrate` starting together on a fresh database: every
// Migrate succeeds and each migration is applied exactly once.
func TestConcurrentMigrate(t *testing.T) {
	dsn := testpg.DSN(t)
	const n = 5
	stores := make([]*Store, n)
	for i := range stores {
		stores[i] = open(t, dsn)
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, s := range stores {
		wg.Go(func() {
			<-start
			if err := s.Migrate(t.Context()); err != nil {
				t.Errorf("store %d: Migrate: %v", i, err)
			}
		})
	}
	close(start)
	wg.Wait()

	ms, err := schema.Migrations(schema.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := stores[0].pool.Query(t.Context(), `SELECT version, name FROM schema_migrations ORDER BY version`)
	if err != nil {
		t.Fatal(err)
	}
	type rec struct {
		Version int32
		Name    string
	}
	got, err := pgx.CollectRows(rows, pgx.RowToStructByPos[rec])
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ms) {
		t.Fatalf("schema_migrations has %d rows, want %d: %v", len(got), len(ms), got)
	}
	for i, m := range ms {
		if int(got[i].Version) != m.Version || got[i].Name != m.Name {
			t.Errorf("schema_migrations[%d] = %v, want %d %s", i, got[i], m.Version, m.Name)
		}
	}
	// The schema is usable from every store.
	for i, s := range stores {
		if _, err := s.CreateTenant(t.Context(), "t"+string(rune('0'+i))); err != nil {
			t.Errorf("store %d: CreateTenant: %v", i, err)
		}
	}
}

func TestOpenErrorsHideThePassword(t *testing.T) {
	for _, dsn := range []string{
		"postgres://loom:s3cretpw@127.0.0.1:1/loom?sslmode=disable&connect_timeout=2",
		"host=127.0.0.1 port=1 user=loom password=s3cretpw dbname=loom sslmode=disable connect_timeout=2",
		"postgres://loom:s3cretpw@127.0.0.1:notaport/loom",
		"host=127.0.0.1 port=x password=s3cretpw",
	} {
		_, err := Open(context.Background(), dsn, 2, hclog.NewNullLogger())
		if err == nil {
			t.Fatalf("Open(%q): want error", dsn)
		}
		if strings.Contains(err.Error(), "s3cretpw") {
			t.Errorf("Open error reveals the password: %v", err)
		}
		if !strings.HasPrefix(err.Error(), "open postgres: ") {
			t.Errorf("Open error %q does not name the operation", err)
		}
	}
}

// Hash uniqueness and the 32-byte length are enforced by the schema, not
// only by the Go types.
func TestSchemaConstraints(t *testing.T) {
	s := open(t, testpg.DSN(t))
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	tn, err := s.CreateTenant(t.Context(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.pool.Exec(t.Context(), `INSERT INTO api_keys (id, tenant_id, prefix, hash, created_at)
		VALUES (gen_random_uuid(), $1, 'p', '\x00'::bytea, now())`, tn.ID)
	if err == nil {
		t.Error("a 1-byte hash was accepted")
	}
	_, err = s.pool.Exec(t.Context(), `UPDATE tenants SET status = 'purged'`)
	if err == nil {
		t.Error("status 'purged' was accepted")
	}
	k, err := s.CreateAPIKey(t.Context(), store.APIKey{TenantID: tn.ID, Prefix: "p", Hash: [32]byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	// Keys are history: deleting their tenant is refused.
	_, err = s.pool.Exec(t.Context(), `DELETE FROM tenants WHERE id = $1`, tn.ID)
	if err == nil {
		t.Error("deleting a tenant with keys was allowed")
	}
	if _, err := s.KeyByHash(t.Context(), k.Hash); err != nil {
		t.Errorf("key gone: %v", err)
	}
}

func BenchmarkInsertTraces(b *testing.B) {
	s, err := Open(b.Context(), testpg.DSN(b), 8, hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.Migrate(b.Context()); err != nil {
		b.Fatal(err)
	}
	storetest.BenchmarkInsertTraces(b, s)
}
