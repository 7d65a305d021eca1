package postgres

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/validate"
	"github.com/loom-runtime/loom/core/store/storetest"
	"github.com/loom-runtime/loom/schema"
)

// Superusers bypass row-level security, so everything here connects as
// ordinary roles: an owner of the database (FORCE ROW LEVEL SECURITY makes
// the policies apply to it) and a serving role with only the grants
// 0003_dashboard.sql documents.

// asUser returns the URL dsn with its user replaced.
func asUser(t testing.TB, dsn, user string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("testpg DSN is not a URL: %v", err)
	}
	u.User = url.User(user)
	return u.String()
}

// adminConn connects to dsn (as the superuser testpg gives) for setup.
func adminConn(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// newRole creates a LOGIN role (NOSUPERUSER NOBYPASSRLS, the defaults)
// with a unique name starting with prefix, dropped with whatever it owns
// or was granted in this database when the test ends. Roles are shared by
// the cluster's databases, hence the unique name.
func newRole(t testing.TB, superDSN, prefix string) string {
	t.Helper()
	role := prefix + "_" + strings.ReplaceAll(uuid.NewString()[:8], "-", "")
	admin := adminConn(t, superDSN)
	if _, err := admin.Exec(t.Context(), `CREATE ROLE `+role+` LOGIN`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, superDSN)
		if err != nil {
			t.Logf("drop role %s: %v", role, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `REASSIGN OWNED BY `+role+` TO CURRENT_USER; DROP OWNED BY `+role+`; DROP ROLE `+role); err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	var super, bypass bool
	if err := admin.QueryRow(t.Context(), `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = $1`, role).Scan(&super, &bypass); err != nil || super || bypass {
		t.Fatalf("role %s: superuser %v, bypassrls %v, %v", role, super, bypass, err)
	}
	return role
}

// documentedGrants returns the GRANT statements of the comments in the
// migrations (the list atop 0003_dashboard.sql, and what later migrations
// add), for role instead of loom_app: the tests grant exactly what the
// documentation tells operators to.
func documentedGrants(t testing.TB, role string) []string {
	t.Helper()
	ms, err := schema.Migrations(schema.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	grant := regexp.MustCompile(`(?m)^--\s+(GRANT [^;]+ TO loom_app;)\s*$`)
	var out []string
	for _, m := range ms {
		for _, g := range grant.FindAllStringSubmatch(m.SQL, -1) {
			out = append(out, strings.ReplaceAll(g[1], "loom_app", role))
		}
	}
	if len(out) < 7 {
		t.Fatalf("found %d GRANT statements in the migrations' comments, want the whole list", len(out))
	}
	return out
}

// appStore returns a store on a fresh database, migrated by the superuser,
// that connects as a new role with only the documented grants (and has run
// Migrate itself, as `loom serve` does), with the superuser's DSN and the
// role's.
func appStore(t *testing.T) (app *Store, superDSN, appDSN string) {
	t.Helper()
	superDSN = testpg.DSN(t)
	migrated(t, superDSN)
	role := newRole(t, superDSN, "loom_app")
	admin := adminConn(t, superDSN)
	for _, g := range documentedGrants(t, role) {
		if _, err := admin.Exec(t.Context(), g); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}
	appDSN = asUser(t, superDSN, role)
	return migrated(t, appDSN), superDSN, appDSN
}

// ownerStore returns a store on a fresh database owned by a new ordinary
// role, which migrated it, with the superuser's DSN and the owner's.
func ownerStore(t *testing.T) (owner *Store, superDSN, ownerDSN string) {
	t.Helper()
	superDSN = testpg.DSN(t)
	role := newRole(t, superDSN, "loom_owner")
	admin := adminConn(t, superDSN)
	var db string
	if err := admin.QueryRow(t.Context(), `SELECT current_database()`).Scan(&db); err != nil {
		t.Fatal(err)
	}
	// The database owner may create in public (PostgreSQL 15 gives the
	// schema to pg_database_owner; older versions let everyone).
	if _, err := admin.Exec(t.Context(), `ALTER DATABASE `+pgx.Identifier{db}.Sanitize()+` OWNER TO `+role); err != nil {
		t.Fatal(err)
	}
	ownerDSN = asUser(t, superDSN, role)
	return migrated(t, ownerDSN), superDSN, ownerDSN
}

// The whole suite as the owner of the schema: FORCE ROW LEVEL SECURITY
// applies the policies to it, and every method still works (retention and
// verification included), except TamperTrace, which needs a superuser.
func TestConformanceAsOwner(t *testing.T) {
	storetest.RunWith(t, func(t *testing.T) store.Store {
		s, _, _ := ownerStore(t)
		return s
	}, storetest.Options{NotSuperuser: true})
}

// The whole suite as a serving role with only the documented grants:
// everything but retention (the owner's job) and TamperTrace.
func TestConformanceAsAppRole(t *testing.T) {
	storetest.RunWith(t, func(t *testing.T) store.Store {
		s, _, _ := appStore(t)
		return s
	}, storetest.Options{NotSuperuser: true, NotOwner: true})
}

// rlsData inserts, through the store connected as the serving role, 3
// traces of tenant A and 2 of tenant B.
func rlsData(t *testing.T, app *Store) (a, b store.Tenant, trs []store.Trace) {
	t.Helper()
	ctx := t.Context()
	a, ch := acmeChain(t, app)
	var err error
	if b, err = app.CreateTenant(ctx, "globex"); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	for i, tn := range []string{a.ID, b.ID, a.ID, b.ID, a.ID} {
		trs = append(trs, trace(t, tn, ch.ID, int64(i+1), now.Add(-time.Duration(i)*time.Minute)))
	}
	// (a) The recorder's insert, many tenants in one batch, works.
	if n, err := app.InsertTraces(ctx, trs); err != nil || n != len(trs) {
		t.Fatalf("InsertTraces as the serving role = %d, %v", n, err)
	}
	return a, b, trs
}

func TestRowLevelSecurity(t *testing.T) {
	ctx := t.Context()
	app, superDSN, appDSN := appStore(t)
	a, b, trs := rlsData(t, app)
	from, to := time.Now().Add(-time.Hour), time.Now().Add(time.Hour)

	t.Run("methods work within their scope", func(t *testing.T) {
		for _, c := range []struct {
			sc   store.Scope
			want int64
		}{{store.TenantScope(a.ID), 3}, {store.TenantScope(b.ID), 2}, {store.Scope{All: true}, 5}, {store.Scope{}, 0}} {
			list, err := app.ListTraces(ctx, c.sc, store.TraceFilter{}, nil, 100)
			if err != nil || int64(len(list)) != c.want {
				t.Errorf("ListTraces(%+v) = %d, %v; want %d", c.sc, len(list), err, c.want)
			}
			since, err := app.TracesSince(ctx, c.sc, store.TraceCursor{CreatedAt: from, ID: uuid.Nil.String()}, 100)
			if err != nil || int64(len(since)) != c.want {
				t.Errorf("TracesSince(%+v) = %d, %v; want %d", c.sc, len(since), err, c.want)
			}
			sum, _, err := app.Summary(ctx, c.sc, from, to)
			if err != nil || sum.Requests != c.want {
				t.Errorf("Summary(%+v) = %d requests, %v; want %d", c.sc, sum.Requests, err, c.want)
			}
			series, err := app.Timeseries(ctx, c.sc, from, to, 24*time.Hour)
			var n int64
			for _, bk := range series {
				n += bk.Requests
			}
			if err != nil || n != c.want {
				t.Errorf("Timeseries(%+v) = %d requests, %v; want %d", c.sc, n, err, c.want)
			}
		}
		if _, err := app.ScopedTrace(ctx, store.TenantScope(a.ID), trs[0].ID); err != nil {
			t.Errorf("ScopedTrace(A, A's): %v", err)
		}
		if _, err := app.ScopedTrace(ctx, store.TenantScope(a.ID), trs[1].ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("ScopedTrace(A, B's) = %v, want ErrNotFound", err)
		}
		if _, err := app.ScopedTrace(ctx, store.Scope{All: true}, trs[1].ID); err != nil {
			t.Errorf("ScopedTrace(all, B's): %v", err)
		}
		if _, err := app.Trace(ctx, b.ID, trs[1].ID); err != nil {
			t.Errorf("Trace(B, B's): %v", err)
		}
		if n, err := app.CountTraces(ctx, a.ID); err != nil || n != 3 {
			t.Errorf("CountTraces(A) = %d, %v; want 3", n, err)
		}
		if got, err := app.TraceIDs(ctx, b.ID); err != nil || len(got) != 2 {
			t.Errorf("TraceIDs(B) = %v, %v; want 2", got, err)
		}
		// Verification walks a chain across tenants.
		if got, err := app.ChainTraces(ctx, trs[0].ChainID, 0, 100); err != nil || len(got) != 5 {
			t.Errorf("ChainTraces = %d, %v; want all 5", len(got), err)
		}
		// Next year's partitions: created by the serving role through the
		// SECURITY DEFINER function, and protected like the others.
		next := time.Now().UTC().AddDate(1, 0, 0)
		if err := app.EnsurePartitions(ctx, next, 1); err != nil {
			t.Fatalf("EnsurePartitions as the serving role: %v", err)
		}
		admin := adminConn(t, superDSN)
		var rls, force bool
		part := validate.PartitionName(next)
		if err := admin.QueryRow(ctx, `SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = $1::regclass`, part).
			Scan(&rls, &force); err != nil || !rls || !force {
			t.Errorf("%s: row security %v, forced %v, %v; want both", part, rls, force, err)
		}
	})

	conn := adminConn(t, appDSN) // the serving role, raw: no store in between
	// count runs `SELECT count(*) FROM traces` + where in a transaction
	// that first applies set (none when empty).
	count := func(t *testing.T, where string, set ...string) int64 {
		t.Helper()
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		for i := 0; i < len(set); i += 2 {
			if _, err := tx.Exec(ctx, `SELECT set_config($1, $2, true)`, set[i], set[i+1]); err != nil {
				t.Fatal(err)
			}
		}
		var n int64
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM traces `+where).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("a query without a tenant filter sees only its tenant", func(t *testing.T) {
		if n := count(t, "", "loom.tenant_id", a.ID); n != 3 {
			t.Errorf("count(*) with loom.tenant_id = A: %d, want A's 3", n)
		}
		if n := count(t, "", "loom.tenant_id", b.ID); n != 2 {
			t.Errorf("count(*) with loom.tenant_id = B: %d, want B's 2", n)
		}
		if n := count(t, "WHERE tenant_id = '"+b.ID+"'", "loom.tenant_id", a.ID); n != 0 {
			t.Errorf("count(*) of B's rows with loom.tenant_id = A: %d, want 0", n)
		}
		// The other settings do not widen it: only 'all' does.
		if n := count(t, "", "loom.tenant_id", a.ID, "loom.scope", "writer"); n != 3 {
			t.Errorf("count(*) as tenant A with loom.scope = writer: %d, want 3", n)
		}
		if n := count(t, "", "loom.scope", "all"); n != 5 {
			t.Errorf("count(*) with loom.scope = all: %d, want 5", n)
		}
	})

	t.Run("no setting, no rows", func(t *testing.T) {
		if n := count(t, ""); n != 0 {
			t.Errorf("count(*) without a setting: %d, want 0", n)
		}
		for _, scope := range []string{"", "writer", "tenant", "ALL", "all "} {
			if n := count(t, "", "loom.scope", scope); n != 0 {
				t.Errorf("count(*) with loom.scope = %q and no tenant: %d, want 0", scope, n)
			}
		}
		// A setting made for one transaction is gone after it, on the same
		// connection (what a pool hands the next caller).
		_ = count(t, "", "loom.scope", "all")
		var n int64
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM traces`).Scan(&n); err != nil || n != 0 {
			t.Errorf("count(*) after a scoped transaction, on the same connection: %d, %v; want 0", n, err)
		}
		// The store's own pooled connections likewise: use them all with a
		// scope at once (each transaction holds its connection until all
		// have begun), then look from each without one.
		maxConns := int(app.pool.Stat().MaxConns())
		scoped := make(chan int32, maxConns) // backend pids
		var began sync.WaitGroup
		began.Add(maxConns)
		release := make(chan struct{})
		errs := make(chan error, maxConns)
		for range maxConns {
			go func() {
				entered := false
				err := app.inScope(ctx, tenantScope(a.ID), true, func(tx pgx.Tx) error {
					entered = true
					var n int64
					var pid int32
					err := tx.QueryRow(ctx, `SELECT count(*), pg_backend_pid() FROM traces`).Scan(&n, &pid)
					began.Done()
					if err != nil {
						return err
					}
					if n != 3 {
						return fmt.Errorf("count(*) in A's scope = %d, want 3", n)
					}
					scoped <- pid
					<-release
					return nil
				})
				if !entered {
					began.Done()
				}
				errs <- err
			}()
		}
		began.Wait()
		close(release)
		for range maxConns {
			if err := <-errs; err != nil {
				t.Fatalf("a scoped transaction: %v", err)
			}
		}
		close(scoped)
		pids := map[int32]bool{}
		for pid := range scoped {
			pids[pid] = true
		}
		if len(pids) != maxConns {
			t.Fatalf("%d scoped transactions ran on %d connections, want one each", maxConns, len(pids))
		}
		var conns []*pgxpool.Conn
		for range maxConns {
			c, err := app.pool.Acquire(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
			var n int64
			var scope, tenant string
			var pid int32
			if err := c.QueryRow(ctx, `SELECT count(*), coalesce(current_setting('loom.scope', true), ''),
				coalesce(current_setting('loom.tenant_id', true), ''), pg_backend_pid() FROM traces`).Scan(&n, &scope, &tenant, &pid); err != nil {
				t.Fatal(err)
			}
			if !pids[pid] {
				t.Errorf("pooled connection (pid %d) never carried a scope", pid)
			}
			if n != 0 || scope != "" || tenant != "" {
				t.Errorf("a pooled connection outside any transaction sees %d traces, loom.scope %q, loom.tenant_id %q", n, scope, tenant)
			}
		}
		for _, c := range conns {
			c.Release()
		}
	})

	t.Run("insert needs the writer scope", func(t *testing.T) {
		insert := func(set ...string) error {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			for i := 0; i < len(set); i += 2 {
				if _, err := tx.Exec(ctx, `SELECT set_config($1, $2, true)`, set[i], set[i+1]); err != nil {
					t.Fatal(err)
				}
			}
			tr := trace(t, a.ID, trs[0].ChainID, 100, time.Now())
			placeholders := make([]string, len(validate.TraceColumnNames))
			for i := range placeholders {
				placeholders[i] = fmt.Sprintf("$%d", i+1)
			}
			_, err = tx.Exec(ctx, `INSERT INTO traces (`+traceColumns+`) VALUES (`+strings.Join(placeholders, ", ")+`)`,
				traceArgs(nil, &tr)...)
			return err
		}
		for _, set := range [][]string{nil, {"loom.tenant_id", a.ID}, {"loom.scope", "tenant", "loom.tenant_id", a.ID}, {"loom.scope", "reader"}} {
			err := insert(set...)
			var pe *pgconn.PgError
			if !errors.As(err, &pe) || pe.Code != "42501" {
				t.Errorf("INSERT with settings %v: %v, want a row-level security violation (42501)", set, err)
			}
		}
		if err := insert("loom.scope", "writer"); err != nil {
			t.Errorf("INSERT with loom.scope = writer: %v", err)
		}
	})

	t.Run("partitions are not a way around", func(t *testing.T) {
		part := validate.PartitionName(trs[0].CreatedAt)
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		var n int64
		err = tx.QueryRow(ctx, `SELECT count(*) FROM `+part).Scan(&n)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			t.Errorf("SELECT from partition %s as the serving role: %d rows, %v; want permission denied", part, n, err)
		}
	})
}

// The owner of the schema (not a superuser) is subject to the policies too,
// on the partitioned table and on each partition read directly.
func TestRowLevelSecurityBindsTheOwner(t *testing.T) {
	ctx := t.Context()
	owner, _, ownerDSN := ownerStore(t)
	a, _, trs := rlsData(t, owner)
	conn := adminConn(t, ownerDSN)
	part := validate.PartitionName(trs[0].CreatedAt)
	for _, c := range []struct {
		set  []string
		want int64
	}{{nil, 0}, {[]string{"loom.tenant_id", a.ID}, 3}, {[]string{"loom.scope", "all"}, 5}} {
		for _, table := range []string{"traces", part} {
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(c.set); i += 2 {
				if _, err := tx.Exec(ctx, `SELECT set_config($1, $2, true)`, c.set[i], c.set[i+1]); err != nil {
					t.Fatal(err)
				}
			}
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM `+table).Scan(&n); err != nil {
				t.Fatal(err)
			}
			tx.Rollback(ctx)
			if n != c.want {
				t.Errorf("owner: count(*) FROM %s with %v = %d, want %d", table, c.set, n, c.want)
			}
		}
	}
	// Retention as the owner still counts every tenant's rows into its
	// tombstones before dropping a month.
	old := time.Date(2024, 2, 10, 0, 0, 0, 0, time.UTC)
	oldTrs := []store.Trace{trace(t, a.ID, trs[0].ChainID, 50, old), trace(t, trs[1].TenantID, trs[0].ChainID, 51, old.Add(time.Hour))}
	if _, err := owner.InsertTraces(ctx, oldTrs); err != nil {
		t.Fatal(err)
	}
	tombs, err := owner.ApplyRetention(ctx, time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	if len(tombs) != 1 || tombs[0].Rows != 2 || tombs[0].FirstSeq != 50 || tombs[0].LastSeq != 51 {
		t.Errorf("tombstones = %+v, want one of 2 rows, seq 50..51", tombs)
	}
}

// The helper's scopes, seen by statements that name no tenant: what each
// may read and whether it may insert.
func TestScopedTransactions(t *testing.T) {
	ctx := t.Context()
	app, _, _ := appStore(t)
	a, b, trs := rlsData(t, app)
	for _, c := range []struct {
		name      string
		sc        rlsScope
		reads     int64
		mayInsert bool
	}{
		{"tenant A", tenantScope(a.ID), 3, false},
		{"tenant B", tenantScope(b.ID), 2, false},
		{"all", allScope, 5, true},
		{"writer", writerScope, 0, true},
	} {
		err := app.inScope(ctx, c.sc, false, func(tx pgx.Tx) error {
			var n int64
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM traces`).Scan(&n); err != nil {
				return err
			}
			if n != c.reads {
				t.Errorf("%s: count(*) FROM traces = %d, want %d", c.name, n, c.reads)
			}
			if _, err := tx.Exec(ctx, `SAVEPOINT probe`); err != nil {
				return err
			}
			tr := trace(t, a.ID, trs[0].ChainID, 200, time.Now())
			args := traceArgs(nil, &tr)
			ph := make([]string, len(args))
			for i := range ph {
				ph[i] = fmt.Sprintf("$%d", i+1)
			}
			_, err := tx.Exec(ctx, `INSERT INTO traces (`+traceColumns+`) VALUES (`+strings.Join(ph, ",")+`)`, args...)
			if (err == nil) != c.mayInsert {
				t.Errorf("%s: INSERT error %v, want allowed = %v", c.name, err, c.mayInsert)
			}
			_, err = tx.Exec(ctx, `ROLLBACK TO SAVEPOINT probe`)
			return err
		})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
	}
	if err := app.inScope(ctx, rlsScope{scope: "tenant"}, true, func(pgx.Tx) error { return nil }); !errors.Is(err, errNoTenant) {
		t.Errorf("tenant scope without a tenant: %v, want errNoTenant", err)
	}
	// Reads run read-only.
	err := app.inScope(ctx, allScope, true, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO trace_chains (id, started_at) VALUES ($1, now())`, uuid.NewString())
		return err
	})
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || pe.Code != "25006" {
		t.Errorf("a write in a read-only scoped transaction: %v, want read_only_sql_transaction", err)
	}
}
