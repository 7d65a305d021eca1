// Package sqlite implements store.Store on an embedded SQLite database file (the zero-setup default).
//
// The database runs in WAL mode. Writes go through one dedicated connection
// (so writers queue in Go instead of failing with SQLITE_BUSY) and every
// writer transaction is BEGIN IMMEDIATE; reads use a separate pool of
// read-only connections that WAL lets run alongside the writer.
//
// Times are stored as INTEGER Unix nanoseconds (UTC), truncated to the
// microsecond like PostgreSQL's timestamptz; identifiers as canonical UUID text.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	msqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/validate"
	"github.com/loom-runtime/loom/schema"
)

// busyTimeoutMS is how long a connection waits for a lock held by another
// process (e.g. `loom migrate` next to a running server) before failing.
const busyTimeoutMS = 10000

// Store is the SQLite implementation of store.Store.
type Store struct {
	path   string
	writer *sql.DB // exactly one connection; transactions are BEGIN IMMEDIATE
	reader *sql.DB // query_only connections
	log    hclog.Logger

	inserts sync.Map // rows (int) -> *sql.Stmt on writer, see insertStmt
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database file at path and its parent
// directory (mode 0700). Call Migrate before use.
func Open(ctx context.Context, path string, log hclog.Logger) (*Store, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if path == "" {
		return nil, errors.New("open sqlite: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("open sqlite: create directory: %w", err)
	}
	// Create the file ourselves so it is private to the user; SQLite gives
	// the -wal and -shm files the database file's permissions.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}

	writer, err := sql.Open("sqlite", dsn(abs,
		"_pragma=busy_timeout("+fmt.Sprint(busyTimeoutMS)+")",
		"_pragma=foreign_keys(1)",
		"_pragma=journal_mode(WAL)",
		"_pragma=synchronous(NORMAL)",
		"_txlock=immediate",
	))
	if err != nil {
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)

	var mode string
	if err := writer.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		writer.Close()
		return nil, fmt.Errorf("open sqlite: journal_mode is %q, want wal (is %s on a filesystem that supports shared memory?)", mode, abs)
	}

	reader, err := sql.Open("sqlite", dsn(abs,
		"_pragma=busy_timeout("+fmt.Sprint(busyTimeoutMS)+")",
		"_pragma=foreign_keys(1)",
		"_pragma=query_only(1)",
	))
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	n := max(4, runtime.NumCPU())
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	if err := reader.PingContext(ctx); err != nil {
		writer.Close()
		reader.Close()
		return nil, fmt.Errorf("open sqlite: %w", err)
	}
	log.Debug("opened sqlite store", "path", abs, "readers", n)
	return &Store{path: abs, writer: writer, reader: reader, log: log}, nil
}

// dsn builds a file: URI for path (escaped, so any file name works) with
// the driver parameters params.
func dsn(path string, params ...string) string {
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(path)}
	return u.String() + "?" + strings.Join(params, "&")
}

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close closes both connection pools.
func (s *Store) Close() error {
	var errs []error
	s.inserts.Range(func(_, st any) bool {
		errs = append(errs, st.(*sql.Stmt).Close())
		return true
	})
	return errors.Join(append(errs, s.reader.Close(), s.writer.Close())...)
}

// Ping checks that both pools can reach the database.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.writer.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	if err := s.reader.PingContext(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Migrate applies the embedded SQLite migrations not yet recorded in
// schema_migrations, all in one BEGIN IMMEDIATE transaction: a second process
// migrating the same file waits for the first and then finds nothing to do.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := schema.Migrations(schema.SQLite)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	tx, err := s.writer.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback()

	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER NOT NULL PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`); err != nil {
		return fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	applied := make(map[int]bool)
	rows, err := tx.QueryContext(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return fmt.Errorf("migrate: read schema_migrations: %w", err)
		}
		applied[v] = true
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	known := make(map[int]bool, len(ms))
	var done []schema.Migration
	for _, m := range ms {
		known[m.Version] = true
		if applied[m.Version] {
			continue
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			return fmt.Errorf("migrate: apply %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
			m.Version, m.Name, encTime(time.Now())); err != nil {
			return fmt.Errorf("migrate: record %04d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, m)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	for _, m := range done {
		s.log.Info("applied migration", "version", m.Version, "name", m.Name)
	}
	var unknown []int
	for v := range applied {
		if !known[v] {
			unknown = append(unknown, v)
		}
	}
	if len(unknown) > 0 {
		sort.Ints(unknown)
		s.log.Warn("database has migrations this binary does not know; is it older than the schema?", "versions", unknown)
	}
	return nil
}

// CreateTenant creates an active tenant.
func (s *Store) CreateTenant(ctx context.Context, name string) (store.Tenant, error) {
	if err := validate.TenantName(name); err != nil {
		return store.Tenant{}, fmt.Errorf("create tenant: %w", err)
	}
	t := store.Tenant{
		ID:        validate.NewID(),
		Name:      name,
		Status:    store.TenantActive,
		CreatedAt: validate.Time(time.Now()),
	}
	_, err := s.writer.ExecContext(ctx,
		`INSERT INTO tenants (id, name, status, created_at) VALUES (?, ?, ?, ?)`,
		t.ID, t.Name, string(t.Status), encTime(t.CreatedAt))
	if err != nil {
		return store.Tenant{}, wrap("create tenant", err)
	}
	return t, nil
}

// TenantByName returns the tenant called name.
func (s *Store) TenantByName(ctx context.Context, name string) (store.Tenant, error) {
	row := s.reader.QueryRowContext(ctx,
		`SELECT id, name, status, created_at FROM tenants WHERE name = ?`, name)
	t, err := scanTenant(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.Tenant{}, fmt.Errorf("tenant by name %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Tenant{}, wrap("tenant by name", err)
	}
	return t, nil
}

// ListTenants returns every tenant ordered by name (byte order).
func (s *Store) ListTenants(ctx context.Context) ([]store.Tenant, error) {
	rows, err := s.reader.QueryContext(ctx,
		`SELECT id, name, status, created_at FROM tenants ORDER BY name`)
	if err != nil {
		return nil, wrap("list tenants", err)
	}
	defer rows.Close()
	out := []store.Tenant{}
	for rows.Next() {
		t, err := scanTenant(rows)
		if err != nil {
			return nil, wrap("list tenants", err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list tenants", err)
	}
	return out, nil
}

// SetTenantStatus changes a tenant's status.
func (s *Store) SetTenantStatus(ctx context.Context, tenantID string, status store.TenantStatus) error {
	if err := validate.Status(status); err != nil {
		return fmt.Errorf("set tenant status: %w", err)
	}
	id, ok := validate.ID(tenantID)
	if !ok {
		return fmt.Errorf("set tenant status: tenant %q: %w", tenantID, store.ErrNotFound)
	}
	res, err := s.writer.ExecContext(ctx, `UPDATE tenants SET status = ? WHERE id = ?`, string(status), id)
	if err != nil {
		return wrap("set tenant status", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return wrap("set tenant status", err)
	}
	if n == 0 {
		return fmt.Errorf("set tenant status: tenant %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// CreateAPIKey stores a new key, filling in ID and CreatedAt when empty.
func (s *Store) CreateAPIKey(ctx context.Context, k store.APIKey) (store.APIKey, error) {
	tenantID, ok := validate.ID(k.TenantID)
	if !ok {
		return store.APIKey{}, fmt.Errorf("create api key: tenant %q: %w", k.TenantID, store.ErrNotFound)
	}
	k.TenantID = tenantID
	if k.ID == "" {
		k.ID = validate.NewID()
	} else if id, ok := validate.ID(k.ID); ok {
		k.ID = id
	} else {
		return store.APIKey{}, fmt.Errorf("create api key: invalid key id %q", k.ID)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	k.CreatedAt = validate.Time(k.CreatedAt)
	k.LastUsedAt = validate.TimePtr(k.LastUsedAt)
	k.RevokedAt = validate.TimePtr(k.RevokedAt)
	_, err := s.writer.ExecContext(ctx, `INSERT INTO api_keys
		(id, tenant_id, label, prefix, hash, created_at, last_used_at, revoked_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.TenantID, k.Label, k.Prefix, k.Hash[:], encTime(k.CreatedAt),
		encTimePtr(k.LastUsedAt), encTimePtr(k.RevokedAt))
	if err != nil {
		return store.APIKey{}, wrap("create api key", err)
	}
	return k, nil
}

// keyColumns are the api_keys columns scanKey reads, qualified by the alias
// k; returningKey is the same list unqualified (RETURNING takes no aliases).
const (
	keyColumns   = `k.id, k.tenant_id, k.label, k.prefix, k.hash, k.created_at, k.last_used_at, k.revoked_at`
	returningKey = `id, tenant_id, label, prefix, hash, created_at, last_used_at, revoked_at`
)

// ListAPIKeys returns the tenant's keys, newest first; none for an unknown tenant.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string) ([]store.APIKey, error) {
	out := []store.APIKey{}
	id, ok := validate.ID(tenantID)
	if !ok {
		return out, nil
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.tenant_id = ? ORDER BY k.created_at DESC, k.id DESC`, id)
	if err != nil {
		return nil, wrap("list api keys", err)
	}
	defer rows.Close()
	for rows.Next() {
		k, err := scanKey(rows)
		if err != nil {
			return nil, wrap("list api keys", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("list api keys", err)
	}
	return out, nil
}

// RevokeAPIKey sets revoked_at unless it is already set, and returns the key.
// A zero at means now.
func (s *Store) RevokeAPIKey(ctx context.Context, keyID string, at time.Time) (store.APIKey, error) {
	id, ok := validate.ID(keyID)
	if !ok {
		return store.APIKey{}, fmt.Errorf("revoke api key: key %q: %w", keyID, store.ErrNotFound)
	}
	if at.IsZero() {
		at = time.Now()
	}
	row := s.writer.QueryRowContext(ctx, `UPDATE api_keys
		SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ?
		RETURNING `+returningKey, encTime(validate.Time(at)), id)
	k, err := scanKey(row)
	if errors.Is(err, sql.ErrNoRows) {
		return store.APIKey{}, fmt.Errorf("revoke api key: key %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.APIKey{}, wrap("revoke api key", err)
	}
	return k, nil
}

// KeyByHash returns the key with that hash and its tenant.
func (s *Store) KeyByHash(ctx context.Context, hash [32]byte) (store.KeyMatch, error) {
	row := s.reader.QueryRowContext(ctx, `SELECT `+keyColumns+`, t.id, t.name, t.status, t.created_at
		FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
		WHERE k.hash = ?`, hash[:])
	var m store.KeyMatch
	err := scanKeyAndTenant(row, &m)
	if errors.Is(err, sql.ErrNoRows) {
		return store.KeyMatch{}, fmt.Errorf("key by hash: %w", store.ErrNotFound)
	}
	if err != nil {
		return store.KeyMatch{}, wrap("key by hash", err)
	}
	return m, nil
}

// TouchAPIKeys moves last_used_at forward (never back) for each key, in one
// transaction. Unknown key ids are ignored.
func (s *Store) TouchAPIKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	type touch struct {
		id string
		at int64
	}
	batch := make([]touch, 0, len(lastUsed))
	for raw, at := range lastUsed {
		if id, ok := validate.ID(raw); ok && !at.IsZero() {
			batch = append(batch, touch{id, encTime(at)})
		}
	}
	if len(batch) == 0 {
		return nil
	}
	sort.Slice(batch, func(i, j int) bool { return batch[i].id < batch[j].id })

	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return wrap("touch api keys", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `UPDATE api_keys SET last_used_at = ?1
		WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)`)
	if err != nil {
		return wrap("touch api keys", err)
	}
	defer stmt.Close()
	for _, b := range batch {
		if _, err := stmt.ExecContext(ctx, b.at, b.id); err != nil {
			return wrap("touch api keys", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return wrap("touch api keys", err)
	}
	return nil
}

// wrap prefixes err with op and maps constraint violations to the store errors.
func wrap(op string, err error) error {
	var se *msqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return fmt.Errorf("%s: %w: %w", op, store.ErrConflict, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%s: %w: %w", op, store.ErrNotFound, err)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

type scanner interface{ Scan(dest ...any) error }

func scanTenant(r scanner) (store.Tenant, error) {
	var (
		t      store.Tenant
		status string
		ns     int64
	)
	if err := r.Scan(&t.ID, &t.Name, &status, &ns); err != nil {
		return store.Tenant{}, err
	}
	t.Status = store.TenantStatus(status)
	t.CreatedAt = decTime(ns)
	return t, nil
}

func keyDest(k *store.APIKey, hash *[]byte, created *int64, lastUsed, revoked *sql.NullInt64) []any {
	return []any{&k.ID, &k.TenantID, &k.Label, &k.Prefix, hash, created, lastUsed, revoked}
}

func finishKey(k *store.APIKey, hash []byte, created int64, lastUsed, revoked sql.NullInt64) error {
	if len(hash) != len(k.Hash) {
		return fmt.Errorf("key %s: stored hash is %d bytes, want %d", k.ID, len(hash), len(k.Hash))
	}
	copy(k.Hash[:], hash)
	k.CreatedAt = decTime(created)
	k.LastUsedAt = decTimeNull(lastUsed)
	k.RevokedAt = decTimeNull(revoked)
	return nil
}

func scanKey(r scanner) (store.APIKey, error) {
	var (
		k                 store.APIKey
		hash              []byte
		created           int64
		lastUsed, revoked sql.NullInt64
	)
	if err := r.Scan(keyDest(&k, &hash, &created, &lastUsed, &revoked)...); err != nil {
		return store.APIKey{}, err
	}
	if err := finishKey(&k, hash, created, lastUsed, revoked); err != nil {
		return store.APIKey{}, err
	}
	return k, nil
}

func scanKeyAndTenant(r scanner, m *store.KeyMatch) error {
	var (
		hash              []byte
		created, tCreated int64
		lastUsed, revoked sql.NullInt64
		status            string
	)
	dest := append(keyDest(&m.Key, &hash, &created, &lastUsed, &revoked),
		&m.Tenant.ID, &m.Tenant.Name, &status, &tCreated)
	if err := r.Scan(dest...); err != nil {
		return err
	}
	m.Tenant.Status = store.TenantStatus(status)
	m.Tenant.CreatedAt = decTime(tCreated)
	return finishKey(&m.Key, hash, created, lastUsed, revoked)
}

// encTime is the stored form of t: Unix nanoseconds of t truncated to the microsecond.
func encTime(t time.Time) int64 { return validate.Time(t).UnixNano() }

func encTimePtr(t *time.Time) any {
	if t == nil {
		return nil
	}
	return encTime(*t)
}

func decTime(ns int64) time.Time { return time.Unix(0, ns).UTC() }

func decTimeNull(v sql.NullInt64) *time.Time {
	if !v.Valid {
		return nil
	}
	t := decTime(v.Int64)
	return &t
}
