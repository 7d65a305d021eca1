package sqlite

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/loom-runtime/loom/core/store/storetest"
)

// TestDashboardAtScale loads 1,000,000 traces (LOOM_SCALE_TEST=1) with
// multi-row INSERTs in transactions of 100,000 rows, straight into the
// table, and times the dashboard queries. Run it with -v to see them.
func TestDashboardAtScale(t *testing.T) {
	storetest.SkipUnlessScale(t)
	path := filepath.Join(t.TempDir(), "loom.db")
	s := openMigrated(t, path)
	storetest.DashboardAtScale(t, s, func(d *storetest.ScaleData) error {
		ctx := t.Context()
		const perStatement, perTx = 400, 100_000
		var tx interface {
			Commit() error
			Rollback() error
		}
		args := make([]any, 0, perStatement*traceColumnCount)
		for i := 0; i < d.Rows; {
			t, err := s.writer.BeginTx(ctx, nil)
			if err != nil {
				return err
			}
			tx = t
			stmt, err := t.PrepareContext(ctx, insertStatement(perStatement))
			if err != nil {
				tx.Rollback()
				return err
			}
			for end := min(i+perTx, d.Rows); i < end; {
				n := min(perStatement, end-i)
				args = args[:0]
				for k := range n {
					tr := d.Row(i + k)
					args = traceArgs(args, &tr)
				}
				if n == perStatement {
					_, err = stmt.ExecContext(ctx, args...)
				} else {
					_, err = t.ExecContext(ctx, insertStatement(n), args...)
				}
				if err != nil {
					stmt.Close()
					tx.Rollback()
					return err
				}
				i += n
			}
			stmt.Close()
			if err := tx.Commit(); err != nil {
				return err
			}
		}
		return nil
	})
	if fi, err := os.Stat(path); err == nil {
		t.Logf("database file: %d MB", fi.Size()>>20)
	}
}
