// Package postgres implements store.Store on PostgreSQL through a pgx connection pool.
//
// The traces table is behind row-level security (migration 0003): every
// method that touches it sets its scope for its own transaction (scope.go).
// The policies bind only a role that is neither a superuser nor BYPASSRLS;
// 0003_dashboard.sql says which role to connect as and what to grant it.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/validate"
	"github.com/loom-runtime/loom/schema"
)

// MigrationLockID is the pg_advisory_xact_lock key Migrate holds while it
// checks and applies migrations, so that servers and `loom migrate` starting
// together apply each migration exactly once. ("loommigr" in ASCII.)
const MigrationLockID int64 = 0x6c6f6f6d6d696772

// Store is the PostgreSQL implementation of store.Store.
type Store struct {
	pool *pgxpool.Pool
	log  hclog.Logger
	now  func() time.Time
}

// Option configures a Store.
type Option func(*Store)

// WithClock replaces time.Now as the store's clock: the month around which
// Migrate creates partitions, and the time stamped on rows that do not
// bring their own (tests).
func WithClock(now func() time.Time) Option {
	return func(s *Store) { s.now = now }
}

var _ store.Store = (*Store)(nil)

// Open connects to the database dsn names (a postgres:// URL or a keyword=value
// string) with a pool of at most maxConns connections (pgxpool's default when
// maxConns <= 0) and checks that it answers. Call Migrate before use.
//
// The DSN never appears in errors or logs: it may hold a password.
func Open(ctx context.Context, dsn string, maxConns int, log hclog.Logger, opts ...Option) (*Store, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts passwords only on a best-effort basis; say nothing of the string.
		return nil, errors.New("open postgres: the DSN is not a valid PostgreSQL connection string (URL or keyword=value)")
	}
	if maxConns > math.MaxInt32 {
		return nil, fmt.Errorf("open postgres: max_conns %d is too large", maxConns)
	}
	if maxConns > 0 {
		cfg.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	log.Debug("opened postgres store", "host", cfg.ConnConfig.Host, "port", cfg.ConnConfig.Port,
		"database", cfg.ConnConfig.Database, "user", cfg.ConnConfig.User, "max_conns", cfg.MaxConns)
	s := &Store{pool: pool, log: log, now: time.Now}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// Close closes the pool, waiting for connections in use to be released.
func (s *Store) Close() error {
	s.pool.Close()
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// Migrate applies the embedded PostgreSQL migrations not yet recorded in
// schema_migrations. It takes the MigrationLockID advisory lock inside the
// transaction that reads schema_migrations and applies the missing files, so
// concurrent callers queue and the later ones find nothing to do. Then it
// runs EnsurePartitions(now, MigratePartitionsAhead), now from the store's
// clock.
func (s *Store) Migrate(ctx context.Context) error {
	ms, err := schema.Migrations(schema.Postgres)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))

	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, MigrationLockID); err != nil {
		return fmt.Errorf("migrate: lock: %w", err)
	}
	// Created only when missing: CREATE TABLE IF NOT EXISTS needs the CREATE
	// privilege even when the table exists, which a serving role without
	// ownership (see 0003_dashboard.sql) does not have.
	var exists bool
	if err := tx.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("migrate: look for schema_migrations: %w", err)
	}
	if !exists {
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    integer     PRIMARY KEY,
			name       text        NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("migrate: create schema_migrations: %w", err)
		}
	}
	rows, err := tx.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("migrate: read schema_migrations: %w", err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}
	known := make(map[int]bool, len(ms))
	var done []schema.Migration
	for _, m := range ms {
		known[m.Version] = true
		if applied[m.Version] {
			continue
		}
		// No arguments: pgx uses the simple protocol, which runs every
		// statement in the file.
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migrate: apply %04d_%s: %w", m.Version, m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name) VALUES ($1, $2)`,
			m.Version, m.Name); err != nil {
			return fmt.Errorf("migrate: record %04d_%s: %w", m.Version, m.Name, err)
		}
		done = append(done, m)
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("migrate: commit: %w", err)
	}
	for _, m := range done {
		s.log.Info("applied migration", "version", m.Version, "name", m.Name)
	}
	// Partitions for the coming months, so that a fresh database takes
	// traces at once and a restarted one has the next months ready.
	if err := s.EnsurePartitions(ctx, s.now(), MigratePartitionsAhead); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var unknown []int
	for v := range applied {
		if !known[v] {
			unknown = append(unknown, v)
		}
	}
	if len(unknown) > 0 {
		slices.Sort(unknown)
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
		CreatedAt: validate.Time(s.now()),
	}
	_, err := s.pool.Exec(ctx,
		`INSERT INTO tenants (id, name, status, created_at) VALUES ($1, $2, $3, $4)`,
		t.ID, t.Name, string(t.Status), t.CreatedAt)
	if err != nil {
		return store.Tenant{}, wrap("create tenant", err)
	}
	return t, nil
}

const tenantColumns = `t.id, t.name, t.status, t.created_at`

// TenantByName returns the tenant called name.
func (s *Store) TenantByName(ctx context.Context, name string) (store.Tenant, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+tenantColumns+` FROM tenants t WHERE t.name = $1`, name)
	t, err := scanTenant(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Tenant{}, fmt.Errorf("tenant by name %q: %w", name, store.ErrNotFound)
	}
	if err != nil {
		return store.Tenant{}, wrap("tenant by name", err)
	}
	return t, nil
}

// ListTenants returns every tenant ordered by name in byte order (COLLATE
// "C"), whatever the database's collation, to match the SQLite store.
func (s *Store) ListTenants(ctx context.Context) ([]store.Tenant, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tenantColumns+` FROM tenants t ORDER BY t.name COLLATE "C"`)
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
	tag, err := s.pool.Exec(ctx, `UPDATE tenants SET status = $1 WHERE id = $2`, string(status), id)
	if err != nil {
		return wrap("set tenant status", err)
	}
	if tag.RowsAffected() == 0 {
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
		k.CreatedAt = s.now()
	}
	k.CreatedAt = validate.Time(k.CreatedAt)
	k.LastUsedAt = validate.TimePtr(k.LastUsedAt)
	k.RevokedAt = validate.TimePtr(k.RevokedAt)
	_, err := s.pool.Exec(ctx, `INSERT INTO api_keys
		(id, tenant_id, label, prefix, hash, created_at, last_used_at, revoked_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
		k.ID, k.TenantID, k.Label, k.Prefix, k.Hash[:], k.CreatedAt, k.LastUsedAt, k.RevokedAt)
	if err != nil {
		return store.APIKey{}, wrap("create api key", err)
	}
	return k, nil
}

const keyColumns = `k.id, k.tenant_id, k.label, k.prefix, k.hash, k.created_at, k.last_used_at, k.revoked_at`

// ListAPIKeys returns the tenant's keys, newest first; none for an unknown tenant.
func (s *Store) ListAPIKeys(ctx context.Context, tenantID string) ([]store.APIKey, error) {
	out := []store.APIKey{}
	id, ok := validate.ID(tenantID)
	if !ok {
		return out, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+keyColumns+` FROM api_keys k
		WHERE k.tenant_id = $1 ORDER BY k.created_at DESC, k.id DESC`, id)
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
		at = s.now()
	}
	row := s.pool.QueryRow(ctx, `UPDATE api_keys AS k
		SET revoked_at = COALESCE(k.revoked_at, $1) WHERE k.id = $2
		RETURNING `+keyColumns, validate.Time(at), id)
	k, err := scanKey(row)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.APIKey{}, fmt.Errorf("revoke api key: key %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.APIKey{}, wrap("revoke api key", err)
	}
	return k, nil
}

// KeyByHash returns the key with that hash and its tenant.
func (s *Store) KeyByHash(ctx context.Context, hash [32]byte) (store.KeyMatch, error) {
	row := s.pool.QueryRow(ctx, `SELECT `+keyColumns+`, `+tenantColumns+`
		FROM api_keys k JOIN tenants t ON t.id = k.tenant_id
		WHERE k.hash = $1`, hash[:])
	var (
		m      store.KeyMatch
		kd     keyDest
		status string
	)
	err := row.Scan(append(kd.targets(&m.Key), &m.Tenant.ID, &m.Tenant.Name, &status, &m.Tenant.CreatedAt)...)
	if errors.Is(err, pgx.ErrNoRows) {
		return store.KeyMatch{}, fmt.Errorf("key by hash: %w", store.ErrNotFound)
	}
	if err == nil {
		err = kd.finish(&m.Key)
	}
	if err != nil {
		return store.KeyMatch{}, wrap("key by hash", err)
	}
	m.Tenant.Status = store.TenantStatus(status)
	m.Tenant.CreatedAt = m.Tenant.CreatedAt.UTC()
	return m, nil
}

// TouchAPIKeys moves last_used_at forward (never back) for each key, in one
// transaction and one round trip. Rows are updated in id order so concurrent
// batches cannot deadlock. Unknown key ids are ignored.
func (s *Store) TouchAPIKeys(ctx context.Context, lastUsed map[string]time.Time) error {
	type touch struct {
		id string
		at time.Time
	}
	touches := make([]touch, 0, len(lastUsed))
	for raw, at := range lastUsed {
		if id, ok := validate.ID(raw); ok && !at.IsZero() {
			touches = append(touches, touch{id, validate.Time(at)})
		}
	}
	if len(touches) == 0 {
		return nil
	}
	slices.SortFunc(touches, func(a, b touch) int { return strings.Compare(a.id, b.id) })

	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrap("touch api keys", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var b pgx.Batch
	for _, t := range touches {
		b.Queue(`UPDATE api_keys SET last_used_at = $1
			WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)`, t.at, t.id)
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return wrap("touch api keys", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap("touch api keys", err)
	}
	return nil
}

// wrap prefixes err with op and maps constraint violations to the store
// errors. Integrity violations are reduced to their message and constraint:
// their detail quotes the offending values, key hashes included.
func wrap(op string, err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == "23505": // unique_violation
			return fmt.Errorf("%s: %w (constraint %s)", op, store.ErrConflict, pe.ConstraintName)
		case pe.Code == "23503": // foreign_key_violation
			return fmt.Errorf("%s: %w (constraint %s)", op, store.ErrNotFound, pe.ConstraintName)
		case strings.HasPrefix(pe.Code, "23"):
			return fmt.Errorf("%s: %s (constraint %s, SQLSTATE %s)", op, pe.Message, pe.ConstraintName, pe.Code)
		}
	}
	return fmt.Errorf("%s: %w", op, err)
}

func scanTenant(r pgx.Row) (store.Tenant, error) {
	var (
		t      store.Tenant
		status string
	)
	if err := r.Scan(&t.ID, &t.Name, &status, &t.CreatedAt); err != nil {
		return store.Tenant{}, err
	}
	t.Status = store.TenantStatus(status)
	t.CreatedAt = t.CreatedAt.UTC()
	return t, nil
}

// keyDest holds the api_keys columns that need converting after a scan.
type keyDest struct {
	hash []byte
}

func (d *keyDest) targets(k *store.APIKey) []any {
	return []any{&k.ID, &k.TenantID, &k.Label, &k.Prefix, &d.hash, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt}
}

func (d *keyDest) finish(k *store.APIKey) error {
	if len(d.hash) != len(k.Hash) {
		return fmt.Errorf("key %s: stored hash is %d bytes, want %d", k.ID, len(d.hash), len(k.Hash))
	}
	copy(k.Hash[:], d.hash)
	k.CreatedAt = k.CreatedAt.UTC()
	if k.LastUsedAt != nil {
		*k.LastUsedAt = k.LastUsedAt.UTC()
	}
	if k.RevokedAt != nil {
		*k.RevokedAt = k.RevokedAt.UTC()
	}
	return nil
}

func scanKey(r pgx.Row) (store.APIKey, error) {
	var (
		k  store.APIKey
		kd keyDest
	)
	if err := r.Scan(kd.targets(&k)...); err != nil {
		return store.APIKey{}, err
	}
	if err := kd.finish(&k); err != nil {
		return store.APIKey{}, err
	}
	return k, nil
}
