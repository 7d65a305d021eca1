// Package testdb gives tests a real, migrated SQLite store in a temporary
// directory, closed when the test ends.
package testdb

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/store/sqlite"
)

// SQLite opens a fresh store under tb.TempDir() and applies the migrations.
func SQLite(tb testing.TB) *sqlite.Store {
	tb.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(tb.TempDir(), "loom.db"), hclog.NewNullLogger())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	return st
}
