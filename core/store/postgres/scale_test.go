package postgres

import (
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/loom-runtime/loom/core/store/internal/validate"
	"github.com/loom-runtime/loom/core/store/storetest"
)

// TestDashboardAtScale loads 1,000,000 traces (LOOM_SCALE_TEST=1) with one
// COPY into the partitioned table (as the superuser, which row-level
// security does not stop), vacuums and analyzes as autovacuum would after
// such a load, and times the dashboard queries through a store that
// connects as the serving role: row-level security on, as in production.
// Run it with -v to see them.
func TestDashboardAtScale(t *testing.T) {
	storetest.SkipUnlessScale(t)
	ctx := t.Context()
	app, superDSN, _ := appStore(t)
	super := open(t, superDSN)
	storetest.DashboardAtScale(t, app, func(d *storetest.ScaleData) error {
		if err := super.EnsurePartitions(ctx, d.End.AddDate(0, 0, -d.Days-1), 1); err != nil {
			return err
		}
		args := make([]any, 0, len(validate.TraceColumnNames))
		i := 0
		if _, err := super.pool.CopyFrom(ctx, pgx.Identifier{"traces"}, validate.TraceColumnNames,
			pgx.CopyFromFunc(func() ([]any, error) {
				if i == d.Rows {
					return nil, nil
				}
				tr := d.Row(i)
				i++
				args = traceArgs(args[:0], &tr)
				return args, nil
			})); err != nil {
			return err
		}
		// The test cluster commits asynchronously, and VACUUM marks a page
		// all-visible only once the commit of its rows is known flushed (as
		// for hint bits, per group of 32 transaction ids): flush with a
		// checkpoint, then VACUUM (which takes no transaction id) before
		// ANALYZE (which does, and would make the group's commit unflushed
		// again). Production commits synchronously and autovacuums later.
		for _, q := range []string{`CHECKPOINT`, `VACUUM traces`, `ANALYZE traces`} {
			if _, err := super.pool.Exec(ctx, q); err != nil {
				return fmt.Errorf("%s: %w", q, err)
			}
		}
		var pages, visible int64
		if err := super.pool.QueryRow(ctx, `SELECT sum(c.relpages)::bigint, sum(c.relallvisible)::bigint
			FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'traces'::regclass`).Scan(&pages, &visible); err != nil {
			return err
		}
		t.Logf("after VACUUM: %d of %d heap pages all-visible", visible, pages)
		return nil
	})
	var size string
	if err := super.pool.QueryRow(ctx, `SELECT pg_size_pretty(pg_database_size(current_database()))`).Scan(&size); err == nil {
		t.Logf("database size: %s", size)
	}
	var sb, wm string
	super.pool.QueryRow(ctx, `SELECT current_setting('shared_buffers'), current_setting('work_mem')`).Scan(&sb, &wm)
	t.Logf("server: shared_buffers %s, work_mem %s (testpg defaults)", sb, wm)
}
