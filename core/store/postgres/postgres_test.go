package postgres

import (
	"bytes"
	"context"
	"fmt"
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

// partitionClocks are the clocks the partition tests run at: the first,
// the ninth and the last day of months of 28, 29, 30 and 31 days, the turn
// of a year both ways, and an instant that is still December 31st in its
// own zone but already January in UTC (partition months are UTC months).
// first is the month of the oldest partition Migrate keeps (last month's,
// in UTC), as YYYY-MM.
var partitionClocks = []struct {
	name  string
	at    time.Time
	first string
}{
	{"1st of a 31-day month", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), "2026-11"},
	{"9th", time.Date(2026, 12, 9, 12, 0, 0, 0, time.UTC), "2026-11"},
	{"last instant of December", time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC), "2026-11"},
	{"1st of January", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "2026-12"},
	{"9th of January", time.Date(2027, 1, 9, 8, 0, 0, 0, time.UTC), "2026-12"},
	{"31st of January", time.Date(2027, 1, 31, 18, 0, 0, 0, time.UTC), "2026-12"},
	{"1st of February", time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC), "2025-01"},
	{"28th of February, not a leap year", time.Date(2025, 2, 28, 23, 0, 0, 0, time.UTC), "2025-01"},
	{"29th of February, leap year", time.Date(2024, 2, 29, 23, 0, 0, 0, time.UTC), "2024-01"},
	{"31st of March, after February", time.Date(2025, 3, 31, 12, 0, 0, 0, time.UTC), "2025-02"},
	{"9th of March, leap year", time.Date(2024, 3, 9, 0, 0, 0, 0, time.UTC), "2024-02"},
	{"30th of a 30-day month", time.Date(2026, 4, 30, 23, 0, 0, 0, time.UTC), "2026-03"},
	{"December 31st at 20:00 in UTC-5", time.Date(2026, 12, 31, 20, 0, 0, 0, time.FixedZone("UTC-5", -5*3600)), "2026-12"},
}

// months returns n consecutive month names from first (YYYY-MM) on, as
// partitions are named: traces_yYYYYmMM.
func months(t *testing.T, first string, n int) []string {
	t.Helper()
	var y, m int
	if _, err := fmt.Sscanf(first, "%4d-%2d", &y, &m); err != nil {
		t.Fatalf("month %q: %v", first, err)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("traces_y%04dm%02d", y, m)
		if m++; m == 13 {
			y, m = y+1, 1
		}
	}
	return out
}

// partitionBounds returns each partition's range as its two bounds, UTC.
func partitionBounds(t *testing.T, s *Store) map[string][2]time.Time {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
		FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'traces'::regclass`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	parse := func(v string) time.Time {
		for _, layout := range []string{"2006-01-02 15:04:05-07", "2006-01-02 15:04:05-07:00"} {
			if at, err := time.Parse(layout, v); err == nil {
				return at.UTC()
			}
		}
		t.Fatalf("partition bound %q", v)
		return time.Time{}
	}
	out := map[string][2]time.Time{}
	for rows.Next() {
		var name, expr string
		if err := rows.Scan(&name, &expr); err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(strings.NewReplacer("'", " ", "(", " ", ")", " ").Replace(expr))
		// FOR VALUES FROM <date> <time> TO <date> <time>
		if len(f) != 8 {
			t.Fatalf("%s: bound %q", name, expr)
		}
		out[name] = [2]time.Time{parse(f[3] + " " + f[4]), parse(f[6] + " " + f[7])}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// checkPartitions checks that traces has exactly the partitions want, each
// covering its UTC month with its TRUNCATE trigger and the cloned row
// trigger, storing ciphertext uncompressed out of line.
func checkPartitions(t *testing.T, s *Store, want []string) {
	t.Helper()
	if got := partitions(t, s); !slices.Equal(got, want) {
		t.Fatalf("partitions = %v, want %v", got, want)
	}
	bounds := partitionBounds(t, s)
	for _, p := range want {
		var y, m int
		fmt.Sscanf(p, "traces_y%4dm%2d", &y, &m)
		from, to := time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC), time.Date(y, time.Month(m)+1, 1, 0, 0, 0, 0, time.UTC)
		if b := bounds[p]; !b[0].Equal(from) || !b[1].Equal(to) {
			t.Errorf("%s covers [%s, %s), want [%s, %s)", p, b[0], b[1], from, to)
		}
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
}

// Migrate leaves the partitions of last month to three months ahead (UTC
// months of the store's clock), whatever the day of the month.
func TestMigrateCreatesPartitions(t *testing.T) {
	for _, c := range partitionClocks {
		t.Run(c.name, func(t *testing.T) {
			dsn := testpg.DSN(t)
			s, err := Open(t.Context(), dsn, 4, hclog.NewNullLogger(), WithClock(func() time.Time { return c.at }))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			want := months(t, c.first, MigratePartitionsAhead+2)
			checkPartitions(t, s, want)
			// Migrating again (a restart) adds nothing, and the SQL function
			// is idempotent, called with any day of the first month (here a
			// month before the clock's UTC day, by PostgreSQL's own
			// arithmetic: March 31st gives February 28th).
			if err := s.Migrate(t.Context()); err != nil {
				t.Fatal(err)
			}
			var created int
			if err := s.pool.QueryRow(t.Context(), `SELECT loom_ensure_trace_partitions(($1::date - interval '1 month')::date, $2)`,
				c.at.UTC().Format(time.DateOnly), len(want)).Scan(&created); err != nil {
				t.Fatal(err)
			}
			if created != 0 {
				t.Errorf("loom_ensure_trace_partitions created %d partitions that existed", created)
			}
			checkPartitions(t, s, want)
		})
	}
}

// loom_ensure_trace_partitions starts at the month of whatever day it is
// given, and each partition covers its whole UTC month.
func TestEnsurePartitionsSQL(t *testing.T) {
	s := open(t, testpg.DSN(t))
	ms, err := schema.Migrations(schema.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	// The migrations only: no partition yet.
	for _, m := range ms {
		if _, err := s.pool.Exec(t.Context(), m.SQL); err != nil {
			t.Fatalf("%04d_%s: %v", m.Version, m.Name, err)
		}
	}
	var want []string
	for _, c := range []struct {
		day    string
		months int
		adds   []string
	}{
		{"2024-02-29", 1, []string{"traces_y2024m02"}},
		{"2024-02-01", 2, []string{"traces_y2024m03"}},
		{"2025-02-28", 1, []string{"traces_y2025m02"}},
		{"2026-12-31", 2, []string{"traces_y2026m12", "traces_y2027m01"}},
		{"2027-01-09", 2, []string{"traces_y2027m02"}},
		{"2026-04-30", 1, []string{"traces_y2026m04"}},
		{"2026-01-31", 2, []string{"traces_y2026m01", "traces_y2026m02"}},
	} {
		var created int
		if err := s.pool.QueryRow(t.Context(), `SELECT loom_ensure_trace_partitions($1::date, $2)`, c.day, c.months).Scan(&created); err != nil {
			t.Fatalf("loom_ensure_trace_partitions(%s, %d): %v", c.day, c.months, err)
		}
		if created != len(c.adds) {
			t.Errorf("loom_ensure_trace_partitions(%s, %d) created %d, want %d (%v)", c.day, c.months, created, len(c.adds), c.adds)
		}
		want = append(want, c.adds...)
	}
	slices.Sort(want)
	checkPartitions(t, s, want)
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
// trigger) and succeeds; retention drops partitions, not rows, and keeps
// last month when its cutoff falls inside last month, whatever the day.
func TestMissingPartitionAndRetentionDrop(t *testing.T) {
	for _, c := range partitionClocks {
		t.Run(c.name, func(t *testing.T) {
			s, err := Open(t.Context(), testpg.DSN(t), 4, hclog.NewNullLogger(), WithClock(func() time.Time { return c.at }))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			ctx := t.Context()
			if err := s.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			tn, ch := acmeChain(t, s)
			kept := months(t, c.first, MigratePartitionsAhead+2)
			lastMonth, _ := validate.ParsePartitionName(kept[0])
			// The 9th, 13 months before last month.
			old := lastMonth.AddDate(0, -13, 8)
			name := validate.PartitionName(old)
			if slices.Contains(partitions(t, s), name) {
				t.Fatalf("%s exists before the insert", name)
			}
			if n, err := s.InsertTraces(ctx, []store.Trace{trace(t, tn.ID, ch.ID, 1, old)}); err != nil || n != 1 {
				t.Fatalf("InsertTraces(%s) = %d, %v", old, n, err)
			}
			if !slices.Contains(partitions(t, s), name) {
				t.Fatalf("%s not created", name)
			}
			if err := s.ExecRaw(ctx, `TRUNCATE `+name); err == nil || !strings.Contains(err.Error(), "traces are immutable") {
				t.Errorf("TRUNCATE of the new partition: %v", err)
			}

			// A cutoff inside last month (its last day, 23:00): last month
			// and later stay.
			before := lastMonth.AddDate(0, 1, 0).Add(-time.Hour)
			got, err := s.ApplyRetention(ctx, before)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 || got[0].Partition != name || got[0].Rows != 1 || !got[0].CreatedAt.Equal(validate.Time(c.at)) {
				t.Fatalf("tombstones = %+v, want one for %s created at the store's clock", got, name)
			}
			var exists bool
			if err := s.pool.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			if exists {
				t.Errorf("%s still exists after retention", name)
			}
			if got := partitions(t, s); !slices.Equal(got, kept) {
				t.Errorf("partitions after retention = %v, want %v", got, kept)
			}
		})
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
	var wg, started sync.WaitGroup
	var inserted atomic.Int64
	for w := range 3 {
		started.Add(1)
		wg.Go(func() {
			for i := 0; ; i++ {
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
				if i == 0 {
					started.Done()
				}
				if err != nil {
					t.Errorf("worker %d: InsertTraces during retention: %v", w, err)
					return
				}
				inserted.Add(int64(n))
			}
		})
	}
	// Every writer is under way before retention starts, and keeps
	// writing until it is over.
	started.Wait()
	tombs, err := s.ApplyRetention(ctx, time.Date(2024, 10, 1, 0, 0, 0, 0, time.UTC))
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
