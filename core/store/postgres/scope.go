package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// Row-level security (migration 0003) shows a transaction only the traces
// its settings allow: loom.tenant_id's rows for SELECT (every row when
// loom.scope is 'all'), and INSERT only when loom.scope is 'writer' or
// 'all'. Every method that touches traces runs in a transaction begun by
// beginScoped (directly, or through inScope and scopedRows), which sets
// both for that transaction alone; nothing sets them for a session, so a
// pooled connection never hands one caller's scope to the next.
//
// Superusers and BYPASSRLS roles ignore all this: see 0003 for the role
// Loom should connect as.

// rlsScope is the value of the two settings for one transaction.
type rlsScope struct {
	scope    string // loom.scope: "tenant", "all" or "writer"
	tenantID string // loom.tenant_id: a canonical tenant id for "tenant", else empty
}

// tenantScope reads the traces of one tenant (a canonical id, as
// validate.ID returns).
func tenantScope(id string) rlsScope { return rlsScope{scope: "tenant", tenantID: id} }

var (
	// allScope reads every tenant's traces (verification, retention, the
	// admin dashboard) and may insert.
	allScope = rlsScope{scope: "all"}
	// writerScope inserts any tenant's traces and reads none.
	writerScope = rlsScope{scope: "writer"}
)

// errNoTenant is a programming error: a tenant scope without its tenant.
var errNoTenant = errors.New("row-level security: tenant scope without a tenant id")

// beginScoped begins a transaction whose first statement sets loom.scope
// and loom.tenant_id (and jit) with set_config(…, true): local to the
// transaction, gone at its commit or rollback. readOnly makes it READ
// ONLY. This is the only place the settings are made.
func (s *Store) beginScoped(ctx context.Context, sc rlsScope, readOnly bool) (pgx.Tx, error) {
	if sc.scope == "tenant" && sc.tenantID == "" {
		return nil, errNoTenant
	}
	opts := pgx.TxOptions{}
	if readOnly {
		opts.AccessMode = pgx.ReadOnly
	}
	tx, err := s.pool.BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	// JIT compilation, which PostgreSQL starts for costly plans, only adds
	// its compile time to these index scans and aggregations: off as well.
	if _, err := tx.Exec(ctx, `SELECT set_config('loom.scope', $1, true), set_config('loom.tenant_id', $2, true),
		set_config('jit', 'off', true)`, sc.scope, sc.tenantID); err != nil {
		tx.Rollback(context.WithoutCancel(ctx))
		return nil, err
	}
	return tx, nil
}

// inScope runs fn in a beginScoped transaction and commits it. fn's error,
// or the commit's, is returned unwrapped.
func (s *Store) inScope(ctx context.Context, sc rlsScope, readOnly bool, fn func(pgx.Tx) error) error {
	tx, err := s.beginScoped(ctx, sc, readOnly)
	if err != nil {
		return err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// scopedRows runs one query in a read-only transaction of scope sc and
// scans every row with scan; never nil on success.
func scopedRows[T any](ctx context.Context, s *Store, sc rlsScope, op string, scan func(pgx.Row) (T, error), sql string, args ...any) ([]T, error) {
	var out []T
	err := s.inScope(ctx, sc, true, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, sql, args...)
		if err != nil {
			return err
		}
		out, err = collectRows(rows, scan)
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}
