// Package backend opens the store.Store implementation a configuration names.
package backend

import (
	"context"
	"fmt"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/postgres"
	"github.com/loom-runtime/loom/core/store/sqlite"
)

// Drivers are the accepted driver names.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// Open opens the store for driver: "sqlite" (dsn is a file path; maxConns is
// ignored) or "postgres" (dsn is a connection string; maxConns bounds the
// pool, pgx's default when <= 0). The caller runs Migrate.
func Open(ctx context.Context, driver, dsn string, maxConns int, log hclog.Logger) (store.Store, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	switch driver {
	case SQLite:
		return sqlite.Open(ctx, dsn, log.Named("sqlite"))
	case Postgres:
		return postgres.Open(ctx, dsn, maxConns, log.Named("postgres"))
	case "":
		return nil, fmt.Errorf("open store: no driver given (want %q or %q)", SQLite, Postgres)
	default:
		return nil, fmt.Errorf("open store: unknown driver %q (want %q or %q)", driver, SQLite, Postgres)
	}
}
