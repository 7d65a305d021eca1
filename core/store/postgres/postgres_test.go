package postgres

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/validate"
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

func migrated(t *testing.T, dsn string) *Store {
	t.Helper()
	s := open(t, dsn)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

// partitions lists the partitions of traces by name.
func partitions(t *testing.T, s *Store) []string {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `SELECT c.relname::text FROM pg_inherits i
		JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'traces'::regclass ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// acmeChain creates tenant acme and starts a trace chain in s.
func acmeChain(t *testing.T, s *Store) (store.Tenant, store.Chain) {
	t.Helper()
	tn, err := s.CreateTenant(t.Context(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	ch := store.Chain{ID: uuid.NewString(), StartedAt: time.Now()}
	if err := s.StartChain(t.Context(), ch); err != nil {
		t.Fatal(err)
	}
	return tn, ch
}

// Migrate leaves the partitions of last month to three months ahead, each
// with its TRUNCATE trigger and the cloned row trigger, storing ciphertext
// uncompressed out of line.
func TestMigrateCreatesPartitions(t *testing.T) {
	s := migrated(t, testpg.DSN(t))
	first := validate.MonthStart(time.Now())
	var want []string
	for i := -1; i <= MigratePartitionsAhead; i++ {
		want = append(want, validate.PartitionName(first.AddDate(0, i, 0)))
	}
	if got := partitions(t, s); !slices.Equal(got, want) {
		t.Fatalf("partitions after Migrate = %v, want %v", got, want)
	}
	for _, p := range want {
		var triggers []string
		rows, err := s.pool.Query(t.Context(), `SELECT tgname::text FROM pg_trigger
			WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY 1`, p)
		if err != nil {
			t.Fatal(err)
		}
		if triggers, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(triggers, []string{"traces_immutable", "traces_no_truncate"}) {
			t.Errorf("%s triggers = %v", p, triggers)
		}
		var storage string
		if err := s.pool.QueryRow(t.Context(), `SELECT attstorage::text FROM pg_attribute
			WHERE attrelid = $1::regclass AND attname = 'response_ct'`, p).Scan(&storage); err != nil {
			t.Fatal(err)
		}
		if storage != "e" {
			t.Errorf("%s.response_ct storage = %q, want e (external)", p, storage)
		}
	}
	// Migrating again (a restart) adds nothing, and the SQL function is
	// idempotent.
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	var created int
	if err := s.pool.QueryRow(t.Context(), `SELECT loom_ensure_trace_partitions(current_date - 40, 3)`).Scan(&created); err != nil {
		t.Fatal(err)
	}
	if created != 0 {
		t.Errorf("loom_ensure_trace_partitions created %d partitions that existed", created)
	}
	if got := partitions(t, s); !slices.Equal(got, want) {
		t.Errorf("partitions after a second Migrate = %v, want %v", got, want)
	}
}

// Partition bounds are UTC months whatever the session's time zone.
func TestPartitionBoundsAreUTC(t *testing.T) {
	dsn := testpg.DSN(t)
	migrated(t, dsn)
	// A session 13:45 ahead of UTC creates the partitions.
	s := open(t, dsn+"&timezone=Pacific/Chatham")
	var tz string
	if err := s.pool.QueryRow(t.Context(), `SHOW timezone`).Scan(&tz); err != nil || tz != "Pacific/Chatham" {
		t.Fatalf("SHOW timezone = %q, %v; want Pacific/Chatham", tz, err)
	}
	tn, ch := acmeChain(t, s)
	mar := time.Date(2023, 3, 1, 0, 0, 0, 0, time.UTC)
	cases := map[time.Time]string{
		mar.Add(-time.Microsecond): "traces_y2023m02",
		mar:                        "traces_y2023m03",
		mar.Add(13 * time.Hour):    "traces_y2023m03",
	}
	var batch []store.Trace
	for at := range cases {
		batch = append(batch, trace(t, tn.ID, ch.ID, int64(len(batch)+1), at))
	}
	if n, err := s.InsertTraces(t.Context(), batch); err != nil || n != len(batch) {
		t.Fatalf("InsertTraces = %d, %v", n, err)
	}
	for _, tr := range batch {
		var part string
		if err := s.pool.QueryRow(t.Context(), `SELECT tableoid::regclass::text FROM traces WHERE id = $1`, tr.ID).Scan(&part); err != nil {
			t.Fatal(err)
		}
		if want := cases[tr.CreatedAt]; part != want {
			t.Errorf("trace created %s is in %s, want %s", tr.CreatedAt.Format(time.RFC3339Nano), part, want)
		}
	}
}

func trace(t *testing.T, tenantID, chainID string, seq int64, at time.Time) store.Trace {
	t.Helper()
	return store.Trace{
		ID: uuid.Must(uuid.NewV7()).String(), TenantID: tenantID, Endpoint: "chat.completions", Status: "ok",
		HTTPStatus: 200, UsageSource: "none", CreatedAt: at, ChainID: chainID, ChainSeq: seq,
		PrevHash: make([]byte, 32), Hash: bytes.Repeat([]byte{byte(seq)}, 32), CanonicalVersion: 2,
	}
}

// An insert into a month without a partition creates it (with its
// trigger) and succeeds; retention drops partitions, not rows.
func TestMissingPartitionAndRetentionDrop(t *testing.T) {
	s := migrated(t, testpg.DSN(t))
	ctx := t.Context()
	tn, ch := acmeChain(t, s)
	old := time.Now().UTC().AddDate(0, -14, 0)
	name := validate.PartitionName(old)
	if slices.Contains(partitions(t, s), name) {
		t.Fatalf("%s exists before the insert", name)
	}
	if n, err := s.InsertTraces(ctx, []store.Trace{trace(t, tn.ID, ch.ID, 1, old)}); err != nil || n != 1 {
		t.Fatalf("InsertTraces(14 months ago) = %d, %v", n, err)
	}
	if !slices.Contains(partitions(t, s), name) {
		t.Fatalf("%s not created", name)
	}
	if err := s.ExecRaw(ctx, `TRUNCATE `+name); err == nil || !strings.Contains(err.Error(), "traces are immutable") {
		t.Errorf("TRUNCATE of the new partition: %v", err)
	}

	got, err := s.ApplyRetention(ctx, time.Now().UTC().AddDate(0, -1, 0))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Partition != name || got[0].Rows != 1 {
		t.Fatalf("tombstones = %+v", got)
	}
	var exists bool
	if err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("%s still exists after retention", name)
	}
	// The cutoff is the first of last month: last month and later stay.
	first := validate.MonthStart(time.Now())
	for i := -1; i <= MigratePartitionsAhead; i++ {
		if p := validate.PartitionName(first.AddDate(0, i, 0)); !slices.Contains(partitions(t, s), p) {
			t.Errorf("partition %s dropped", p)
		}
	}
}

// Upgrading a database that has tenants and keys keeps them, and allows
// the 'deleted' status.
func TestMigrate0002KeepsData(t *testing.T) {
	dsn := testpg.DSN(t)
	s := open(t, dsn)
	ctx := t.Context()
	ms, err := schema.Migrations(schema.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, ms[0].SQL); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()); INSERT INTO schema_migrations (version, name) VALUES (1, 'tenants_and_keys')`); err != nil {
		t.Fatal(err)
	}
	tn, err := s.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Prefix: "p", Hash: [32]byte{7}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from 0001: %v", err)
	}
	m, err := s.KeyByHash(ctx, k.Hash)
	if err != nil || m.Tenant.ID != tn.ID || m.Key.ID != k.ID {
		t.Fatalf("KeyByHash after upgrade = %+v, %v", m, err)
	}
	if _, err := s.ShredTenant(ctx, tn.ID, time.Time{}); err != nil {
		t.Fatalf("ShredTenant after upgrade: %v", err)
	}
}

// Upgrading to version 4 keeps shreds done before it pending.
func TestMigrate0004RecordsEarlierShreds(t *testing.T) {
	s := open(t, testpg.DSN(t))
	ctx := t.Context()
	ms, err := schema.Migrations(schema.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.pool.Exec(ctx, `CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	for _, m := range ms[:3] {
		if _, err := s.pool.Exec(ctx, m.SQL); err != nil {
			t.Fatalf("migration %d: %v", m.Version, err)
		}
		if _, err := s.pool.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`, m.Version, m.Name); err != nil {
			t.Fatal(err)
		}
	}
	storetest.CheckShredUpgrade(t, s)
}

// TamperTrace needs a superuser: an ordinary role that owns nothing gets
// an error, not a silent bypass.
func TestTamperTraceNeedsSuperuser(t *testing.T) {
	dsn := testpg.DSN(t)
	s := migrated(t, dsn)
	ctx := t.Context()
	role := newRole(t, dsn, "loom_app")
	if err := s.ExecRaw(ctx, `GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO `+role); err != nil {
		t.Fatal(err)
	}
	tn, ch := acmeChain(t, s)
	tr := trace(t, tn.ID, ch.ID, 1, time.Now())
	if _, err := s.InsertTraces(ctx, []store.Trace{tr}); err != nil {
		t.Fatal(err)
	}
	roleDSN := asUser(t, dsn, role)
	app := open(t, roleDSN)
	if err := app.TamperTrace(ctx, tr.ID, "status", "x"); err == nil || !strings.Contains(err.Error(), "superuser") {
		t.Errorf("TamperTrace as an ordinary role: %v, want a permission error naming superuser", err)
	}
	// Nor can that role change a trace directly, even with every tenant's
	// rows in sight: row-level security has no UPDATE or DELETE policy, so
	// no row qualifies (and the triggers would refuse any that did).
	conn := adminConn(t, roleDSN) // the ordinary role, raw
	for _, q := range []string{`UPDATE traces SET status = 'x'`, `DELETE FROM traces`} {
		for _, scope := range []string{"", "all"} {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `SELECT set_config('loom.scope', $1, true)`, scope); err != nil {
				t.Fatal(err)
			}
			if tag, err := tx.Exec(ctx, q); err == nil && tag.RowsAffected() != 0 {
				t.Errorf("%s as an ordinary role (loom.scope %q) changed %d rows", q, scope, tag.RowsAffected())
			}
			tx.Rollback(ctx)
		}
	}
	got, err := s.Trace(ctx, tn.ID, tr.ID)
	if err != nil || got.Status != "ok" {
		t.Errorf("trace after refused tampering = %q, %v", got.Status, err)
	}
}

// Retention dropping old partitions while recorders keep inserting into the
// current month (and a replay into the month being dropped): both succeed.
func TestRetentionDuringInserts(t *testing.T) {
	s := migrated(t, testpg.DSN(t))
	ctx := t.Context()
	tn, ch := acmeChain(t, s)
	var seq atomic.Int64
	batch := func(at time.Time, n int) []store.Trace {
		out := make([]store.Trace, n)
		for i := range out {
			out[i] = trace(t, tn.ID, ch.ID, seq.Add(1), at.Add(time.Duration(i)*time.Millisecond))
		}
		return out
	}
	old := time.Date(2024, 4, 10, 0, 0, 0, 0, time.UTC)
	for m := range 6 {
		if _, err := s.InsertTraces(ctx, batch(old.AddDate(0, m, 0), 200)); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var inserted atomic.Int64
	for w := range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				at := time.Now()
				if w == 2 {
					at = old // a replay into a month being dropped
				}
				n, err := s.InsertTraces(ctx, batch(at, 100))
				if err != nil {
					t.Errorf("worker %d: InsertTraces during retention: %v", w, err)
					return
				}
				inserted.Add(int64(n))
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	tombs, err := s.ApplyRetention(ctx, time.Date(2024, 10, 1, 0, 0, 0, 0, time.UTC))
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatalf("ApplyRetention during inserts: %v", err)
	}
	if len(tombs) < 6 {
		t.Errorf("%d tombstones, want one per dropped month (6 or more)", len(tombs))
	}
	if inserted.Load() == 0 {
		t.Error("no insert went through")
	}
}
