package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/validate"
	"github.com/loom-runtime/loom/schema"
)

// PartitionLockID is the pg_advisory_xact_lock key that partition creation
// (loom_ensure_trace_partitions) and retention hold, so they never race on
// the catalog. ("loompart" in ASCII; the SQL function has it too.)
const PartitionLockID int64 = 0x6c6f6f6d70617274

// MigratePartitionsAhead is how many months of trace partitions after the
// current one Migrate makes sure exist.
const MigratePartitionsAhead = 3

// retentionLockTimeout bounds how long retention waits for a table lock: its
// DROP TABLE needs the traces table exclusively, and inserts queue behind a
// waiting DROP, so it gives up (and retries) rather than stall them.
const retentionLockTimeout = "5s"

// traceColumns lists the traces columns in the order traceArgs writes them
// and scanTrace reads them. Keep the three together.
const traceColumns = validate.TraceColumns

// traceArgs appends t's values in traceColumns order.
func traceArgs(args []any, t *store.Trace) []any {
	return append(args,
		t.ID, t.TenantID, t.RequestID, t.Endpoint, t.Stream, t.RequestedModel, t.UpstreamModel,
		t.ProviderInstance, t.PluginName, t.PluginVersion, t.Status, t.HTTPStatus, t.ErrorMessage, t.KeyVersion,
		t.Request.Nonce, t.Request.Ciphertext, t.Response.Nonce, t.Response.Ciphertext,
		t.Message.Nonce, t.Message.Ciphertext,
		t.PromptTokens, t.CompletionTokens, t.TotalTokens, t.CachedPromptTokens, t.ReasoningTokens,
		t.UsageSource, t.CostMicros, t.PriceVersion, t.ReportedModel, t.PricedModel,
		t.RequestTruncated, t.ResponseTruncated, t.LatencyUS, t.TTFBUS, t.UpstreamUS, t.UpstreamTTFBUS,
		t.OverheadUS, t.ConfigHash, t.CreatedAt, t.ChainID, t.ChainSeq, t.PrevHash, t.Hash, t.CanonicalVersion)
}

// scanTrace reads one row of traceColumns. pgx keeps NULL and empty apart:
// a NULL bytea scans to nil, an empty one to a non-nil empty slice, a NULL
// bigint to a nil pointer.
func scanTrace(r pgx.Row) (store.Trace, error) {
	var t store.Trace
	err := r.Scan(
		&t.ID, &t.TenantID, &t.RequestID, &t.Endpoint, &t.Stream, &t.RequestedModel, &t.UpstreamModel,
		&t.ProviderInstance, &t.PluginName, &t.PluginVersion, &t.Status, &t.HTTPStatus, &t.ErrorMessage, &t.KeyVersion,
		&t.Request.Nonce, &t.Request.Ciphertext, &t.Response.Nonce, &t.Response.Ciphertext,
		&t.Message.Nonce, &t.Message.Ciphertext,
		&t.PromptTokens, &t.CompletionTokens, &t.TotalTokens, &t.CachedPromptTokens, &t.ReasoningTokens,
		&t.UsageSource, &t.CostMicros, &t.PriceVersion, &t.ReportedModel, &t.PricedModel,
		&t.RequestTruncated, &t.ResponseTruncated, &t.LatencyUS, &t.TTFBUS, &t.UpstreamUS, &t.UpstreamTTFBUS,
		&t.OverheadUS, &t.ConfigHash, &t.CreatedAt, &t.ChainID, &t.ChainSeq, &t.PrevHash, &t.Hash, &t.CanonicalVersion)
	t.CreatedAt = t.CreatedAt.UTC()
	return t, err
}

// InsertTraces writes the batch in one transaction: COPY into a temporary
// staging table, then one INSERT … SELECT … ON CONFLICT DO NOTHING into
// traces, in (created_at, id) order so that concurrent overlapping batches
// take their locks in the same order and cannot deadlock. It returns how
// many rows were new.
//
// Idempotence is on the primary key (created_at, id): replaying a trace with
// the same id and CreatedAt is a no-op. If a row's month has no partition
// (say, a replay of an old spool) the batch is retried after creating the
// partitions of every month it touches, and after a deadlock (possible only
// against retention); three attempts at most. A trace whose tenant or chain
// does not exist fails the batch with ErrNotFound.
func (s *Store) InsertTraces(ctx context.Context, traces []store.Trace) (int, error) {
	if len(traces) == 0 {
		return 0, nil
	}
	rows, err := validate.Traces(traces)
	if err != nil {
		return 0, fmt.Errorf("insert traces: %w", err)
	}
	// A replay racing retention can meet a deadlock and then the month it
	// writes to dropped: hence up to three attempts.
	var n int
	for attempt := 1; ; attempt++ {
		n, err = s.insertTraces(ctx, rows)
		if err == nil || attempt == 3 || ctx.Err() != nil {
			break
		}
		if isNoPartition(err) {
			if err := s.ensureMonths(ctx, rows); err != nil {
				return 0, fmt.Errorf("insert traces: %w", err)
			}
		} else if !isDeadlock(err) {
			// Only retention can cause a deadlock (it locks old partitions
			// an old replay may be writing to); it has let go by now.
			break
		}
	}
	if err != nil {
		return 0, wrap("insert traces", err)
	}
	return n, nil
}

// ensureMonths creates the partitions of the months rows fall in.
func (s *Store) ensureMonths(ctx context.Context, rows []store.Trace) error {
	months := map[time.Time]bool{}
	for i := range rows {
		months[validate.MonthStart(rows[i].CreatedAt)] = true
	}
	for m := range months {
		if err := s.ensurePartitions(ctx, m, 1); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) insertTraces(ctx context.Context, rows []store.Trace) (int, error) {
	// The writer scope may insert any tenant's rows (and read none).
	tx, err := s.beginScoped(ctx, writerScope, false)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE traces_stage (LIKE traces INCLUDING STORAGE) ON COMMIT DROP`); err != nil {
		return 0, err
	}
	args := make([]any, 0, len(validate.TraceColumnNames))
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"traces_stage"}, validate.TraceColumnNames,
		pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) {
			args = traceArgs(args[:0], &rows[i])
			return args, nil
		})); err != nil {
		return 0, err
	}
	tag, err := tx.Exec(ctx, `INSERT INTO traces (`+traceColumns+`)
		SELECT `+traceColumns+` FROM traces_stage ORDER BY created_at, id
		ON CONFLICT DO NOTHING`)
	if err != nil {
		return 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, err
	}
	return int(tag.RowsAffected()), nil
}

// isDeadlock reports whether err is PostgreSQL aborting the transaction to
// break a deadlock.
func isDeadlock(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "40P01"
}

// isNoPartition reports whether err is PostgreSQL refusing a row that no
// partition accepts.
func isNoPartition(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23514" && strings.HasPrefix(pe.Message, "no partition of relation")
}

// StartChain records a chain. It is idempotent: starting a chain whose id
// exists is a no-op (the first record wins), so a recorder replaying a spool
// can call it again before inserting.
func (s *Store) StartChain(ctx context.Context, c store.Chain) error {
	if c.StartedAt.IsZero() {
		c.StartedAt = s.now()
	}
	c, err := validate.Chain(c)
	if err != nil {
		return fmt.Errorf("start chain: %w", err)
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO trace_chains (id, started_at, host)
		VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING`, c.ID, c.StartedAt, c.Host); err != nil {
		return wrap("start chain", err)
	}
	return nil
}

// Chains lists every chain, oldest first.
func (s *Store) Chains(ctx context.Context) ([]store.Chain, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, started_at, host FROM trace_chains ORDER BY started_at, id`)
	if err != nil {
		return nil, wrap("chains", err)
	}
	return collect(rows, "chains", func(r pgx.Row) (store.Chain, error) {
		var c store.Chain
		err := r.Scan(&c.ID, &c.StartedAt, &c.Host)
		c.StartedAt = c.StartedAt.UTC()
		return c, err
	})
}

// ChainTraces returns up to limit traces of the chain with ChainSeq >
// afterSeq, in sequence order; none when limit < 1 or the chain is unknown.
func (s *Store) ChainTraces(ctx context.Context, chainID string, afterSeq int64, limit int) ([]store.Trace, error) {
	id, ok := validate.ID(chainID)
	if !ok || limit < 1 {
		return []store.Trace{}, nil
	}
	// A chain spans the tenants its recorder served: verification reads
	// them all.
	return scopedRows(ctx, s, allScope, "chain traces", scanTrace, `SELECT `+traceColumns+` FROM traces
		WHERE chain_id = $1 AND chain_seq > $2 ORDER BY chain_seq, created_at, id LIMIT $3`, id, afterSeq, limit)
}

// Trace returns one trace of the tenant.
func (s *Store) Trace(ctx context.Context, tenantID, id string) (store.Trace, error) {
	tid, ok1 := validate.ID(tenantID)
	rid, ok2 := validate.ID(id)
	if !ok1 || !ok2 {
		return store.Trace{}, fmt.Errorf("trace %q: %w", id, store.ErrNotFound)
	}
	var t store.Trace
	err := s.inScope(ctx, tenantScope(tid), true, func(tx pgx.Tx) error {
		var err error
		t, err = scanTrace(tx.QueryRow(ctx, `SELECT `+traceColumns+` FROM traces
			WHERE tenant_id = $1 AND id = $2 LIMIT 1`, tid, rid))
		return err
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.Trace{}, fmt.Errorf("trace %s: %w", rid, store.ErrNotFound)
	}
	if err != nil {
		return store.Trace{}, wrap("trace", err)
	}
	return t, nil
}

// CountTraces counts the tenant's traces (0 for an unknown tenant).
func (s *Store) CountTraces(ctx context.Context, tenantID string) (int64, error) {
	id, ok := validate.ID(tenantID)
	if !ok {
		return 0, nil
	}
	var n int64
	if err := s.inScope(ctx, tenantScope(id), true, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `SELECT count(*) FROM traces WHERE tenant_id = $1`, id).Scan(&n)
	}); err != nil {
		return 0, wrap("count traces", err)
	}
	return n, nil
}

// TraceIDs lists the tenant's trace ids, oldest first (ties by id).
func (s *Store) TraceIDs(ctx context.Context, tenantID string) ([]string, error) {
	id, ok := validate.ID(tenantID)
	if !ok {
		return []string{}, nil
	}
	return scopedRows(ctx, s, tenantScope(id), "trace ids", func(r pgx.Row) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	}, `SELECT id FROM traces WHERE tenant_id = $1 ORDER BY created_at, id`, id)
}

// AddTenantKey stores a new key version (CreatedAt defaults to now).
// ErrConflict if the version exists; ErrNotFound if the tenant does not
// exist or is deleted (a shredded tenant gets no new keys);
// ErrWrongMasterKey unless k.MasterKeyID is the current master key (it
// becomes current when the store has none yet).
func (s *Store) AddTenantKey(ctx context.Context, k store.TenantKey) error {
	if k.CreatedAt.IsZero() {
		k.CreatedAt = s.now()
	}
	k, err := validate.TenantKey(k)
	if err != nil {
		return fmt.Errorf("add tenant key: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return wrap("add tenant key", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// Register the master key if the store has none (a new store, or one
	// from before master keys were recorded); a retired key or another
	// current one makes this a no-op and the check below fails. The insert
	// takes master_keys in ROW EXCLUSIVE mode until commit, so a rotation
	// (SHARE ROW EXCLUSIVE) cannot retire the key between check and insert.
	if _, err := tx.Exec(ctx, `INSERT INTO master_keys (id, registered_at) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
		k.MasterKeyID, validate.Time(time.Now())); err != nil {
		return wrap("add tenant key", err)
	}
	var current string
	err = tx.QueryRow(ctx, `SELECT id FROM master_keys WHERE retired_at IS NULL`).Scan(&current)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return wrap("add tenant key", err)
	}
	if current != k.MasterKeyID {
		return fmt.Errorf("add tenant key: tenant %s key version %d is wrapped under master key %s, the store's current master key is %s: %w",
			k.TenantID, k.Version, k.MasterKeyID, current, store.ErrWrongMasterKey)
	}
	// The tenant row is locked FOR SHARE: a concurrent ShredTenant (which
	// updates it) either waits for this insert and then deletes the new key
	// too, or commits first and this sees the tenant deleted.
	tag, err := tx.Exec(ctx, `INSERT INTO tenant_keys (tenant_id, version, wrapped, nonce, created_at, master_key_id)
		SELECT t.id, $2, $3, $4, $5, $6
		FROM (SELECT id, status FROM tenants WHERE id = $1 FOR SHARE) t
		WHERE t.status <> 'deleted'`,
		k.TenantID, k.Version, k.Wrapped, k.Nonce, k.CreatedAt, k.MasterKeyID)
	if err != nil {
		return wrap("add tenant key", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("add tenant key: tenant %s does not exist or is deleted: %w", k.TenantID, store.ErrNotFound)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap("add tenant key", err)
	}
	return nil
}

const tenantKeyColumns = `tenant_id, version, wrapped, nonce, created_at, master_key_id`

func scanTenantKey(r pgx.Row) (store.TenantKey, error) {
	var (
		k  store.TenantKey
		mk *string
	)
	err := r.Scan(&k.TenantID, &k.Version, &k.Wrapped, &k.Nonce, &k.CreatedAt, &mk)
	k.CreatedAt = k.CreatedAt.UTC()
	if mk != nil {
		k.MasterKeyID = *mk
	}
	return k, err
}

// TenantKeys returns the tenant's key versions, oldest first.
func (s *Store) TenantKeys(ctx context.Context, tenantID string) ([]store.TenantKey, error) {
	id, ok := validate.ID(tenantID)
	if !ok {
		return []store.TenantKey{}, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT `+tenantKeyColumns+` FROM tenant_keys
		WHERE tenant_id = $1 ORDER BY version`, id)
	if err != nil {
		return nil, wrap("tenant keys", err)
	}
	return collect(rows, "tenant keys", scanTenantKey)
}

// AllTenantKeys returns every tenant's key versions, by tenant id then version.
func (s *Store) AllTenantKeys(ctx context.Context) ([]store.TenantKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+tenantKeyColumns+` FROM tenant_keys ORDER BY tenant_id, version`)
	if err != nil {
		return nil, wrap("all tenant keys", err)
	}
	return collect(rows, "all tenant keys", scanTenantKey)
}

// RotateMasterKey rewraps every data key under r.To, adds r.Added, retires
// r.From and completes the pending shreds, in one transaction.
//
// It locks master_keys, tenant_keys and tenant_shreds against writers for
// its duration, in the order AddTenantKey and ShredTenant take them, so a
// key cannot be added, or a tenant shredded, between the check that
// r.Rewrapped is every stored key and the commit.
func (s *Store) RotateMasterKey(ctx context.Context, r store.MasterKeyRotation) ([]store.TenantShred, error) {
	r, err := validate.Rotation(r)
	if err != nil {
		return nil, fmt.Errorf("rotate master key: %w", err)
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return nil, wrap("rotate master key", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `LOCK TABLE master_keys, tenant_keys, tenant_shreds IN SHARE ROW EXCLUSIVE MODE`); err != nil {
		return nil, wrap("rotate master key", err)
	}
	var current string
	if err := tx.QueryRow(ctx, `SELECT id FROM master_keys WHERE retired_at IS NULL`).Scan(&current); err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, wrap("rotate master key", err)
	}
	if current != "" && current != r.From {
		return nil, fmt.Errorf("rotate master key: the old master key is %s, but the store's current master key is %s: %w",
			r.From, current, store.ErrWrongMasterKey)
	}
	var used bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM master_keys WHERE id = $1)`, r.To).Scan(&used); err != nil {
		return nil, wrap("rotate master key", err)
	}
	if used {
		return nil, fmt.Errorf("rotate master key: the new master key %s was used before (a retired key never comes back): %w", r.To, store.ErrConflict)
	}
	rows, err := tx.Query(ctx, `SELECT tenant_id, version FROM tenant_keys`)
	if err != nil {
		return nil, wrap("rotate master key", err)
	}
	stored, err := collectRows(rows, func(row pgx.Row) (store.TenantKey, error) {
		var k store.TenantKey
		err := row.Scan(&k.TenantID, &k.Version)
		return k, err
	})
	if err != nil {
		return nil, wrap("rotate master key", err)
	}
	if err := validate.SameVersions(stored, r.Rewrapped); err != nil {
		return nil, fmt.Errorf("rotate master key: %w", err)
	}

	var b pgx.Batch
	b.Queue(`INSERT INTO master_keys (id, registered_at, retired_at) VALUES ($1, $2, $2)
		ON CONFLICT (id) DO UPDATE SET retired_at = EXCLUDED.retired_at`, r.From, r.At)
	b.Queue(`INSERT INTO master_keys (id, registered_at) VALUES ($1, $2)`, r.To, r.At)
	for _, k := range r.Rewrapped {
		b.Queue(`UPDATE tenant_keys SET wrapped = $1, nonce = $2, master_key_id = $3 WHERE tenant_id = $4 AND version = $5`,
			k.Wrapped, k.Nonce, k.MasterKeyID, k.TenantID, k.Version)
	}
	for _, k := range r.Added {
		b.Queue(`INSERT INTO tenant_keys (tenant_id, version, wrapped, nonce, created_at, master_key_id)
			SELECT id, $2, $3, $4, $5, $6 FROM tenants WHERE id = $1 AND status <> 'deleted'`,
			k.TenantID, k.Version, k.Wrapped, k.Nonce, k.CreatedAt, k.MasterKeyID).Exec(func(tag pgconn.CommandTag) error {
			if tag.RowsAffected() == 0 {
				return fmt.Errorf("new key for tenant %s: does not exist or is deleted: %w", k.TenantID, store.ErrNotFound)
			}
			return nil
		})
	}
	if err := tx.SendBatch(ctx, &b).Close(); err != nil {
		return nil, wrap("rotate master key", err)
	}
	rows, err = tx.Query(ctx, `UPDATE tenant_shreds SET completed_at = $1 WHERE completed_at IS NULL
		RETURNING `+shredColumns, r.At)
	if err != nil {
		return nil, wrap("rotate master key", err)
	}
	done, err := collectRows(rows, scanShred)
	if err != nil {
		return nil, wrap("rotate master key", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, wrap("rotate master key", err)
	}
	validate.SortShreds(done)
	return done, nil
}

// MasterKeys lists the master keys the store has seen: the retired ones in
// the order they were retired, then the current one.
func (s *Store) MasterKeys(ctx context.Context) ([]store.MasterKey, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, registered_at, retired_at FROM master_keys
		ORDER BY retired_at IS NULL, retired_at, registered_at, id`)
	if err != nil {
		return nil, wrap("master keys", err)
	}
	return collect(rows, "master keys", func(r pgx.Row) (store.MasterKey, error) {
		var m store.MasterKey
		err := r.Scan(&m.ID, &m.RegisteredAt, &m.RetiredAt)
		m.RegisteredAt = m.RegisteredAt.UTC()
		m.RetiredAt = utcPtr(m.RetiredAt)
		return m, err
	})
}

// ShredTenant deletes the tenant's key versions, marks it deleted and
// records the shred, in one transaction; shredding a deleted tenant again
// changes nothing. The deleted rows linger in the table's pages until
// VACUUM reuses them, and in WAL archives and backups, wrapped under the
// current master key: the shred stays pending until a master key rotation
// retires that key (RotateMasterKey).
func (s *Store) ShredTenant(ctx context.Context, tenantID string, at time.Time) (store.TenantShred, error) {
	id, ok := validate.ID(tenantID)
	if !ok {
		return store.TenantShred{}, fmt.Errorf("shred tenant: tenant %q: %w", tenantID, store.ErrNotFound)
	}
	if at.IsZero() {
		at = time.Now()
	}
	at = validate.Time(at)
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	// tenant_keys first, as AddTenantKey and RotateMasterKey take it before
	// any tenant row: a shred and a rotation queue instead of deadlocking.
	if _, err := tx.Exec(ctx, `LOCK TABLE tenant_keys IN ROW EXCLUSIVE MODE`); err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	tag, err := tx.Exec(ctx, `UPDATE tenants SET status = 'deleted' WHERE id = $1`, id)
	if err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	if tag.RowsAffected() == 0 {
		return store.TenantShred{}, fmt.Errorf("shred tenant: tenant %s: %w", id, store.ErrNotFound)
	}
	var (
		n  int
		mk *string
	)
	if err := tx.QueryRow(ctx, `WITH gone AS (DELETE FROM tenant_keys WHERE tenant_id = $1 RETURNING master_key_id)
		SELECT count(*), max(master_key_id) FROM gone`, id).Scan(&n, &mk); err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	if n > 0 && mk == nil {
		// Keys written before master keys were recorded: they are wrapped
		// under the current one, if the store knows it yet.
		err := tx.QueryRow(ctx, `SELECT id FROM master_keys WHERE retired_at IS NULL`).Scan(&mk)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return store.TenantShred{}, wrap("shred tenant", err)
		}
	}
	var completed *time.Time
	if n == 0 {
		completed = &at // nothing was deleted, so nothing can be recovered
	}
	if _, err := tx.Exec(ctx, `INSERT INTO tenant_shreds (tenant_id, shredded_at, key_versions, master_key_id, completed_at)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO NOTHING`, id, at, n, mk, completed); err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	sh, err := scanShred(tx.QueryRow(ctx, `SELECT `+shredColumns+` FROM tenant_shreds WHERE tenant_id = $1`, id))
	if err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	return sh, nil
}

// TenantShreds lists every shred, those of unknown time first, then by
// time, ties by tenant id.
func (s *Store) TenantShreds(ctx context.Context) ([]store.TenantShred, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+shredColumns+` FROM tenant_shreds
		ORDER BY shredded_at NULLS FIRST, tenant_id`)
	if err != nil {
		return nil, wrap("tenant shreds", err)
	}
	return collect(rows, "tenant shreds", scanShred)
}

const shredColumns = `tenant_id, shredded_at, key_versions, master_key_id, completed_at`

func scanShred(r pgx.Row) (store.TenantShred, error) {
	var (
		sh store.TenantShred
		mk *string
	)
	if err := r.Scan(&sh.TenantID, &sh.ShreddedAt, &sh.KeyVersions, &mk, &sh.CompletedAt); err != nil {
		return sh, err
	}
	if mk != nil {
		sh.MasterKeyID = *mk
	}
	sh.ShreddedAt, sh.CompletedAt = utcPtr(sh.ShreddedAt), utcPtr(sh.CompletedAt)
	return sh, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// EnsurePartitions creates, if missing, the monthly trace partitions from
// the month before now's to `ahead` months after it (each with its TRUNCATE
// trigger). Call it periodically (daily is plenty); Migrate calls it with
// MigratePartitionsAhead, and InsertTraces creates a missing month itself.
func (s *Store) EnsurePartitions(ctx context.Context, now time.Time, ahead int) error {
	ahead = max(ahead, 0)
	if err := s.ensurePartitions(ctx, validate.MonthStart(now).AddDate(0, -1, 0), ahead+2); err != nil {
		return fmt.Errorf("ensure partitions: %w", err)
	}
	return nil
}

// ensurePartitions runs loom_ensure_trace_partitions for months months from
// the month starting at from.
func (s *Store) ensurePartitions(ctx context.Context, from time.Time, months int) error {
	var created int
	if err := s.pool.QueryRow(ctx, `SELECT loom_ensure_trace_partitions($1::date, $2)`,
		from.UTC().Format(time.DateOnly), months).Scan(&created); err != nil {
		return wrap("create trace partitions", err)
	}
	if created > 0 {
		s.log.Info("created trace partitions", "from", validate.PartitionName(from), "months", months, "created", created)
	}
	return nil
}

// ApplyRetention drops every trace partition whose whole month ends at or
// before `before` (the months before the first instant of before's month; a
// month that `before` falls inside is kept whole), writing first, per
// partition and chain, a tombstone with the row count, the sequence range and
// the hash of the last row. Everything happens in one transaction, under
// PartitionLockID. Each partition is locked against inserts while its
// tombstones are computed; the drops then need the traces table exclusively
// for a moment. A lock not granted within 5s fails the attempt, which is
// retried twice. It returns the tombstones in Tombstones order.
func (s *Store) ApplyRetention(ctx context.Context, before time.Time) ([]store.Tombstone, error) {
	cutoff := validate.RetentionCutoff(before)
	var err error
	for attempt := 1; ; attempt++ {
		var out []store.Tombstone
		out, err = s.applyRetention(ctx, cutoff)
		if err == nil {
			return out, nil
		}
		var pe *pgconn.PgError
		if attempt == 3 || !errors.As(err, &pe) || (pe.Code != "55P03" && !isDeadlock(err)) || ctx.Err() != nil {
			break
		}
		s.log.Warn("trace retention: lock not granted, retrying", "attempt", attempt, "error", err)
	}
	return nil, wrap("apply retention", err)
}

func (s *Store) applyRetention(ctx context.Context, cutoff time.Time) ([]store.Tombstone, error) {
	// The tombstones count every tenant's rows of the dropped partitions.
	tx, err := s.beginScoped(ctx, allScope, false)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, PartitionLockID); err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '`+retentionLockTimeout+`'`); err != nil {
		return nil, err
	}
	rows, err := tx.Query(ctx, `SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'traces'::regclass ORDER BY c.relname`)
	if err != nil {
		return nil, err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	var drop []string
	for _, name := range names {
		month, ok := validate.ParsePartitionName(name)
		if !ok {
			s.log.Warn("trace retention: ignoring a partition of traces not named traces_yYYYYmMM", "partition", name)
			continue
		}
		if month.Before(cutoff) {
			drop = append(drop, name)
		}
	}
	out := []store.Tombstone{}
	if len(drop) == 0 {
		return out, nil
	}
	idents := make([]string, len(drop))
	for i, name := range drop {
		idents[i] = pgx.Identifier{name}.Sanitize()
	}
	list := strings.Join(idents, ", ")
	// No insert can reach these partitions from here on.
	if _, err := tx.Exec(ctx, `LOCK TABLE `+list+` IN SHARE MODE`); err != nil {
		return nil, err
	}
	now := validate.Time(s.now())
	for i, name := range drop {
		rows, err := tx.Query(ctx, `SELECT g.chain_id, g.n, g.first_seq, g.last_seq,
			(SELECT t.hash FROM `+idents[i]+` t WHERE t.chain_id = g.chain_id AND t.chain_seq = g.last_seq LIMIT 1)
			FROM (SELECT chain_id, count(*) AS n, min(chain_seq) AS first_seq, max(chain_seq) AS last_seq
				FROM `+idents[i]+` GROUP BY chain_id) g
			ORDER BY g.chain_id`)
		if err != nil {
			return nil, err
		}
		ts, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.Tombstone, error) {
			tb := store.Tombstone{ID: validate.NewTimeID(), Partition: name, CreatedAt: now}
			err := r.Scan(&tb.ChainID, &tb.Rows, &tb.FirstSeq, &tb.LastSeq, &tb.LastHash)
			return tb, err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
	}
	slices.SortStableFunc(out, compareTombstones)
	if len(out) > 0 {
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"trace_tombstones"},
			[]string{"id", "partition", "chain_id", "rows", "first_seq", "last_seq", "last_hash", "created_at"},
			pgx.CopyFromSlice(len(out), func(i int) ([]any, error) {
				tb := &out[i]
				return []any{tb.ID, tb.Partition, tb.ChainID, tb.Rows, tb.FirstSeq, tb.LastSeq, tb.LastHash, tb.CreatedAt}, nil
			})); err != nil {
			return nil, err
		}
	}
	if _, err := tx.Exec(ctx, `DROP TABLE `+list); err != nil {
		return nil, err
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, err
	}
	s.log.Info("applied trace retention", "before", cutoff, "dropped", drop, "tombstones", len(out))
	return out, nil
}

// compareTombstones is the Tombstones order: created_at, chain, first seq.
func compareTombstones(a, b store.Tombstone) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	if c := strings.Compare(a.ChainID, b.ChainID); c != 0 {
		return c
	}
	return int(min(max(a.FirstSeq-b.FirstSeq, -1), 1))
}

// Tombstones lists the tombstones by created_at, then chain, then first seq.
func (s *Store) Tombstones(ctx context.Context) ([]store.Tombstone, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, partition, chain_id, rows, first_seq, last_seq, last_hash, created_at
		FROM trace_tombstones ORDER BY created_at, chain_id, first_seq, id`)
	if err != nil {
		return nil, wrap("tombstones", err)
	}
	return collect(rows, "tombstones", func(r pgx.Row) (store.Tombstone, error) {
		var tb store.Tombstone
		err := r.Scan(&tb.ID, &tb.Partition, &tb.ChainID, &tb.Rows, &tb.FirstSeq, &tb.LastSeq, &tb.LastHash, &tb.CreatedAt)
		tb.CreatedAt = tb.CreatedAt.UTC()
		return tb, err
	})
}

// Dialect returns "postgres".
func (s *Store) Dialect() string { return schema.Postgres }

// ExecRaw runs sql on a pooled connection (with no args, several
// statements may be given). It is for tests and operations only (e.g.
// proving the database refuses to change traces); nothing in Loom calls it.
func (s *Store) ExecRaw(ctx context.Context, sql string, args ...any) error {
	if _, err := s.pool.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("exec raw: %w", err)
	}
	return nil
}

// TamperTrace overwrites one column of the stored trace id, bypassing the
// immutability triggers (SET LOCAL session_replication_role = replica, which
// needs a superuser), for tests proving that verification detects
// tampering. column is a traces column name (as in the schema); value is
// given as the Go type of the matching store.Trace field (string, bool, int,
// int64, *int64, []byte, time.Time, or nil for NULL). ErrNotFound if no
// trace has that id. Never used by Loom itself.
func (s *Store) TamperTrace(ctx context.Context, id, column string, value any) error {
	if !validate.IsTraceColumn(column) {
		return fmt.Errorf("tamper trace: unknown column %q", column)
	}
	rid, ok := validate.ID(id)
	if !ok {
		return fmt.Errorf("tamper trace: trace %q: %w", id, store.ErrNotFound)
	}
	tx, err := s.beginScoped(ctx, allScope, false)
	if err != nil {
		return wrap("tamper trace", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		return wrap("tamper trace (needs a superuser)", err)
	}
	tag, err := tx.Exec(ctx, `UPDATE traces SET `+pgx.Identifier{column}.Sanitize()+` = $1 WHERE id = $2`, value, rid)
	if err != nil {
		return wrap("tamper trace", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("tamper trace: trace %s: %w", rid, store.ErrNotFound)
	}
	if err := tx.Commit(ctx); err != nil {
		return wrap("tamper trace", err)
	}
	return nil
}

// collect scans every row with scan, closing rows; never nil on success.
func collect[T any](rows pgx.Rows, op string, scan func(pgx.Row) (T, error)) ([]T, error) {
	out, err := collectRows(rows, scan)
	if err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// collectRows is collect without wrapping the error.
func collectRows[T any](rows pgx.Rows, scan func(pgx.Row) (T, error)) ([]T, error) {
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
