package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/validate"
	"github.com/loom-runtime/loom/schema"
)

// traceColumns lists the traces columns in the order traceArgs writes them
// and scanTrace reads them. Keep the three together.
const traceColumns = validate.TraceColumns

// traceColumnCount is the number of columns in traceColumns.
var traceColumnCount = len(validate.TraceColumnNames)

// traceArgs appends t's values in traceColumns order, in their stored form.
func traceArgs(args []any, t *store.Trace) []any {
	return append(args,
		t.ID, t.TenantID, t.RequestID, t.Endpoint, boolInt(t.Stream), t.RequestedModel, t.UpstreamModel,
		t.ProviderInstance, t.PluginName, t.PluginVersion, t.Status, t.HTTPStatus, t.ErrorMessage, t.KeyVersion,
		blob(t.Request.Nonce), blob(t.Request.Ciphertext), blob(t.Response.Nonce), blob(t.Response.Ciphertext),
		blob(t.Message.Nonce), blob(t.Message.Ciphertext),
		t.PromptTokens, t.CompletionTokens, t.TotalTokens, t.CachedPromptTokens, t.ReasoningTokens,
		t.UsageSource, t.CostMicros, t.PriceVersion, t.ReportedModel, t.PricedModel,
		boolInt(t.RequestTruncated), boolInt(t.ResponseTruncated), t.LatencyUS, t.TTFBUS, t.UpstreamUS, t.UpstreamTTFBUS,
		t.OverheadUS, t.ConfigHash, encTime(t.CreatedAt), t.ChainID, t.ChainSeq, t.PrevHash, t.Hash, t.CanonicalVersion)
}

// scanTrace reads one row of traceColumns.
func scanTrace(r scanner) (store.Trace, error) {
	var t store.Trace
	err := r.Scan(
		&t.ID, &t.TenantID, &t.RequestID, &t.Endpoint, intBool{&t.Stream}, &t.RequestedModel, &t.UpstreamModel,
		&t.ProviderInstance, &t.PluginName, &t.PluginVersion, &t.Status, &t.HTTPStatus, &t.ErrorMessage, &t.KeyVersion,
		bytesDest{&t.Request.Nonce}, bytesDest{&t.Request.Ciphertext}, bytesDest{&t.Response.Nonce}, bytesDest{&t.Response.Ciphertext},
		bytesDest{&t.Message.Nonce}, bytesDest{&t.Message.Ciphertext},
		intPtr{&t.PromptTokens}, intPtr{&t.CompletionTokens}, intPtr{&t.TotalTokens}, intPtr{&t.CachedPromptTokens}, intPtr{&t.ReasoningTokens},
		&t.UsageSource, intPtr{&t.CostMicros}, &t.PriceVersion, &t.ReportedModel, &t.PricedModel,
		intBool{&t.RequestTruncated}, intBool{&t.ResponseTruncated}, &t.LatencyUS, intPtr{&t.TTFBUS}, intPtr{&t.UpstreamUS}, intPtr{&t.UpstreamTTFBUS},
		&t.OverheadUS, &t.ConfigHash, nanoTime{&t.CreatedAt}, &t.ChainID, &t.ChainSeq, bytesDest{&t.PrevHash}, bytesDest{&t.Hash},
		&t.CanonicalVersion)
	return t, err
}

// maxVariables is SQLite's default SQLITE_MAX_VARIABLE_NUMBER (3.32 and
// later), the most bound parameters one statement may have.
const maxVariables = 32766

// insertChunk is how many rows one INSERT statement carries: a few dozen
// amortise the per-statement cost (measured: 64 beats both 32 and 256 with
// 2 KB bodies); the variable limit caps it in any case.
var insertChunk = min(64, maxVariables/traceColumnCount)

// insertStatement returns the INSERT for n rows, skipping ids that exist.
// The store prepares it once per n (see insertStmt).
func insertStatement(n int) string {
	row := "(" + strings.TrimSuffix(strings.Repeat("?,", traceColumnCount), ",") + ")"
	var b strings.Builder
	b.WriteString("INSERT INTO traces (" + traceColumns + ") VALUES ")
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	b.WriteString(" ON CONFLICT (id) DO NOTHING")
	return b.String()
}

// insertStmt returns the INSERT for n rows prepared on the writer
// connection, preparing it on first use (outside any transaction: the
// writer has one connection). Preparing a multi-row INSERT
// costs about as much as running it: with the writer's small, frequent
// batches a statement prepared per batch doubled the writer's CPU.
// Statements live as long as the store; at most insertChunk of them.
func (s *Store) insertStmt(ctx context.Context, n int) (*sql.Stmt, error) {
	if st, ok := s.inserts.Load(n); ok {
		return st.(*sql.Stmt), nil
	}
	st, err := s.writer.PrepareContext(ctx, insertStatement(n))
	if err != nil {
		return nil, err
	}
	if prev, loaded := s.inserts.LoadOrStore(n, st); loaded {
		st.Close()
		return prev.(*sql.Stmt), nil
	}
	return st, nil
}

// InsertTraces writes the batch in one transaction with multi-row INSERTs,
// skipping ids already stored, and returns how many rows were new. A trace
// whose tenant or chain does not exist fails the batch with ErrNotFound.
func (s *Store) InsertTraces(ctx context.Context, traces []store.Trace) (int, error) {
	if len(traces) == 0 {
		return 0, nil
	}
	rows, err := validate.Traces(traces)
	if err != nil {
		return 0, fmt.Errorf("insert traces: %w", err)
	}
	// The statements first: preparing needs the writer's only connection,
	// which the transaction then holds.
	var full, rest *sql.Stmt
	if len(rows) >= insertChunk {
		if full, err = s.insertStmt(ctx, insertChunk); err != nil {
			return 0, wrap("insert traces", err)
		}
	}
	if n := len(rows) % insertChunk; n > 0 {
		if rest, err = s.insertStmt(ctx, n); err != nil {
			return 0, wrap("insert traces", err)
		}
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return 0, wrap("insert traces", err)
	}
	defer tx.Rollback()
	if full != nil {
		full = tx.StmtContext(ctx, full)
	}
	if rest != nil {
		rest = tx.StmtContext(ctx, rest)
	}
	args := make([]any, 0, min(len(rows), insertChunk)*traceColumnCount)
	var added int64
	for chunk := range slices.Chunk(rows, insertChunk) {
		args = args[:0]
		for i := range chunk {
			args = traceArgs(args, &chunk[i])
		}
		st := full
		if len(chunk) < insertChunk {
			st = rest
		}
		res, err := st.ExecContext(ctx, args...)
		if err != nil {
			return 0, wrap("insert traces", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return 0, wrap("insert traces", err)
		}
		added += n
	}
	if err := tx.Commit(); err != nil {
		return 0, wrap("insert traces", err)
	}
	return int(added), nil
}

// StartChain records a chain. It is idempotent: starting a chain whose id
// exists is a no-op (the first record wins), so a recorder replaying a spool
// can call it again before inserting.
func (s *Store) StartChain(ctx context.Context, c store.Chain) error {
	c, err := validate.Chain(c)
	if err != nil {
		return fmt.Errorf("start chain: %w", err)
	}
	_, err = s.writer.ExecContext(ctx, `INSERT INTO trace_chains (id, started_at, host)
		VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING`, c.ID, encTime(c.StartedAt), c.Host)
	if err != nil {
		return wrap("start chain", err)
	}
	return nil
}

// Chains lists every chain, oldest first.
func (s *Store) Chains(ctx context.Context) ([]store.Chain, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT id, started_at, host FROM trace_chains ORDER BY started_at, id`)
	if err != nil {
		return nil, wrap("chains", err)
	}
	return collect(rows, "chains", func(r scanner) (store.Chain, error) {
		var c store.Chain
		err := r.Scan(&c.ID, nanoTime{&c.StartedAt}, &c.Host)
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
	rows, err := s.reader.QueryContext(ctx, `SELECT `+traceColumns+` FROM traces
		WHERE chain_id = ? AND chain_seq > ? ORDER BY chain_seq, created_at, id LIMIT ?`, id, afterSeq, limit)
	if err != nil {
		return nil, wrap("chain traces", err)
	}
	return collect(rows, "chain traces", scanTrace)
}

// Trace returns one trace of the tenant.
func (s *Store) Trace(ctx context.Context, tenantID, id string) (store.Trace, error) {
	tid, ok1 := validate.ID(tenantID)
	rid, ok2 := validate.ID(id)
	if !ok1 || !ok2 {
		return store.Trace{}, fmt.Errorf("trace %q: %w", id, store.ErrNotFound)
	}
	t, err := scanTrace(s.reader.QueryRowContext(ctx, `SELECT `+traceColumns+` FROM traces
		WHERE tenant_id = ? AND id = ?`, tid, rid))
	if errors.Is(err, sql.ErrNoRows) {
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
	if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM traces WHERE tenant_id = ?`, id).Scan(&n); err != nil {
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
	rows, err := s.reader.QueryContext(ctx, `SELECT id FROM traces WHERE tenant_id = ?
		ORDER BY created_at, id`, id)
	if err != nil {
		return nil, wrap("trace ids", err)
	}
	return collect(rows, "trace ids", func(r scanner) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	})
}

// AddTenantKey stores a new key version (CreatedAt defaults to now).
// ErrConflict if the version exists; ErrNotFound if the tenant does not
// exist or is deleted (a shredded tenant gets no new keys);
// ErrWrongMasterKey unless k.MasterKeyID is the current master key (it
// becomes current when the store has none yet).
func (s *Store) AddTenantKey(ctx context.Context, k store.TenantKey) error {
	k, err := validate.TenantKey(k)
	if err != nil {
		return fmt.Errorf("add tenant key: %w", err)
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return wrap("add tenant key", err)
	}
	defer tx.Rollback()
	// Register the master key if the store has none (a new store, or one
	// from before master keys were recorded); a retired key or another
	// current one makes this a no-op and the check below fails.
	if _, err := tx.ExecContext(ctx, `INSERT OR IGNORE INTO master_keys (id, registered_at) VALUES (?, ?)`,
		k.MasterKeyID, encTime(time.Now())); err != nil {
		return wrap("add tenant key", err)
	}
	var current string
	err = tx.QueryRowContext(ctx, `SELECT id FROM master_keys WHERE retired_at IS NULL`).Scan(&current)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return wrap("add tenant key", err)
	}
	if current != k.MasterKeyID {
		return fmt.Errorf("add tenant key: tenant %s key version %d is wrapped under master key %s, the store's current master key is %s: %w",
			k.TenantID, k.Version, k.MasterKeyID, current, store.ErrWrongMasterKey)
	}
	res, err := tx.ExecContext(ctx, `INSERT INTO tenant_keys (tenant_id, version, wrapped, nonce, created_at, master_key_id)
		SELECT id, ?, ?, ?, ?, ? FROM tenants WHERE id = ? AND status <> 'deleted'`,
		k.Version, k.Wrapped, k.Nonce, encTime(k.CreatedAt), k.MasterKeyID, k.TenantID)
	if err != nil {
		return wrap("add tenant key", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap("add tenant key", err)
	} else if n == 0 {
		return fmt.Errorf("add tenant key: tenant %s does not exist or is deleted: %w", k.TenantID, store.ErrNotFound)
	}
	if err := tx.Commit(); err != nil {
		return wrap("add tenant key", err)
	}
	return nil
}

const tenantKeyColumns = `tenant_id, version, wrapped, nonce, created_at, coalesce(master_key_id, '')`

func scanTenantKey(r scanner) (store.TenantKey, error) {
	var k store.TenantKey
	err := r.Scan(&k.TenantID, &k.Version, bytesDest{&k.Wrapped}, bytesDest{&k.Nonce}, nanoTime{&k.CreatedAt}, &k.MasterKeyID)
	return k, err
}

// TenantKeys returns the tenant's key versions, oldest first.
func (s *Store) TenantKeys(ctx context.Context, tenantID string) ([]store.TenantKey, error) {
	id, ok := validate.ID(tenantID)
	if !ok {
		return []store.TenantKey{}, nil
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT `+tenantKeyColumns+` FROM tenant_keys
		WHERE tenant_id = ? ORDER BY version`, id)
	if err != nil {
		return nil, wrap("tenant keys", err)
	}
	return collect(rows, "tenant keys", scanTenantKey)
}

// AllTenantKeys returns every tenant's key versions, by tenant id then version.
func (s *Store) AllTenantKeys(ctx context.Context) ([]store.TenantKey, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT `+tenantKeyColumns+` FROM tenant_keys
		ORDER BY tenant_id, version`)
	if err != nil {
		return nil, wrap("all tenant keys", err)
	}
	return collect(rows, "all tenant keys", scanTenantKey)
}

// RotateMasterKey rewraps every data key under r.To, adds r.Added, retires
// r.From and completes the pending shreds, in one (immediate, so
// exclusive) transaction.
func (s *Store) RotateMasterKey(ctx context.Context, r store.MasterKeyRotation) ([]store.TenantShred, error) {
	r, err := validate.Rotation(r)
	if err != nil {
		return nil, fmt.Errorf("rotate master key: %w", err)
	}
	done, err := func() ([]store.TenantShred, error) {
		tx, err := s.writer.BeginTx(ctx, nil)
		if err != nil {
			return nil, err
		}
		defer tx.Rollback()
		var current string
		if err := tx.QueryRowContext(ctx, `SELECT id FROM master_keys WHERE retired_at IS NULL`).Scan(&current); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return nil, err
		}
		if current != "" && current != r.From {
			return nil, fmt.Errorf("the old master key is %s, but the store's current master key is %s: %w",
				r.From, current, store.ErrWrongMasterKey)
		}
		var used bool
		if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM master_keys WHERE id = ?)`, r.To).Scan(&used); err != nil {
			return nil, err
		}
		if used {
			return nil, fmt.Errorf("the new master key %s was used before (a retired key never comes back): %w", r.To, store.ErrConflict)
		}
		rows, err := tx.QueryContext(ctx, `SELECT tenant_id, version FROM tenant_keys`)
		if err != nil {
			return nil, err
		}
		stored, err := collectRows(rows, func(row scanner) (store.TenantKey, error) {
			var k store.TenantKey
			err := row.Scan(&k.TenantID, &k.Version)
			return k, err
		})
		if err != nil {
			return nil, err
		}
		if err := validate.SameVersions(stored, r.Rewrapped); err != nil {
			return nil, err
		}
		at := encTime(r.At)
		if _, err := tx.ExecContext(ctx, `INSERT INTO master_keys (id, registered_at, retired_at) VALUES (?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET retired_at = excluded.retired_at`, r.From, at, at); err != nil {
			return nil, err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO master_keys (id, registered_at) VALUES (?, ?)`, r.To, at); err != nil {
			return nil, err
		}
		upd, err := tx.PrepareContext(ctx, `UPDATE tenant_keys SET wrapped = ?, nonce = ?, master_key_id = ?
			WHERE tenant_id = ? AND version = ?`)
		if err != nil {
			return nil, err
		}
		defer upd.Close()
		for _, k := range r.Rewrapped {
			if _, err := upd.ExecContext(ctx, k.Wrapped, k.Nonce, k.MasterKeyID, k.TenantID, k.Version); err != nil {
				return nil, err
			}
		}
		for _, k := range r.Added {
			res, err := tx.ExecContext(ctx, `INSERT INTO tenant_keys (tenant_id, version, wrapped, nonce, created_at, master_key_id)
				SELECT id, ?, ?, ?, ?, ? FROM tenants WHERE id = ? AND status <> 'deleted'`,
				k.Version, k.Wrapped, k.Nonce, encTime(k.CreatedAt), k.MasterKeyID, k.TenantID)
			if err != nil {
				return nil, err
			}
			if n, err := res.RowsAffected(); err != nil {
				return nil, err
			} else if n == 0 {
				return nil, fmt.Errorf("new key for tenant %s: does not exist or is deleted: %w", k.TenantID, store.ErrNotFound)
			}
		}
		rows, err = tx.QueryContext(ctx, `UPDATE tenant_shreds SET completed_at = ? WHERE completed_at IS NULL
			RETURNING `+shredColumns, at)
		if err != nil {
			return nil, err
		}
		done, err := collectRows(rows, scanShred)
		if err != nil {
			return nil, err
		}
		return done, tx.Commit()
	}()
	if err != nil {
		return nil, wrap("rotate master key", err)
	}
	validate.SortShreds(done)
	return done, nil
}

// MasterKeys lists the master keys the store has seen: the retired ones in
// the order they were retired, then the current one.
func (s *Store) MasterKeys(ctx context.Context) ([]store.MasterKey, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT id, registered_at, retired_at FROM master_keys
		ORDER BY retired_at IS NULL, retired_at, registered_at, id`)
	if err != nil {
		return nil, wrap("master keys", err)
	}
	return collect(rows, "master keys", func(r scanner) (store.MasterKey, error) {
		var (
			m       store.MasterKey
			retired sql.NullInt64
		)
		err := r.Scan(&m.ID, nanoTime{&m.RegisteredAt}, &retired)
		m.RetiredAt = decTimeNull(retired)
		return m, err
	})
}

// ShredTenant deletes the tenant's key versions, marks it deleted and
// records the shred, in one transaction; shredding a deleted tenant again
// changes nothing. The deletion runs with secure_delete on, so the wrapped
// keys are overwritten in the database file, and is followed by a
// best-effort WAL checkpoint that truncates the WAL (which holds older
// copies of the pages) unless readers still use it. Copies of the file
// (backups) keep the keys, wrapped under the current master key: the shred
// stays pending until a master key rotation retires that key.
func (s *Store) ShredTenant(ctx context.Context, tenantID string, at time.Time) (store.TenantShred, error) {
	id, ok := validate.ID(tenantID)
	if !ok {
		return store.TenantShred{}, fmt.Errorf("shred tenant: tenant %q: %w", tenantID, store.ErrNotFound)
	}
	if at.IsZero() {
		at = time.Now()
	}
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `PRAGMA secure_delete = ON`); err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `PRAGMA secure_delete = OFF`)
	sh, err := func() (store.TenantShred, error) {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return store.TenantShred{}, err
		}
		defer tx.Rollback()
		res, err := tx.ExecContext(ctx, `UPDATE tenants SET status = 'deleted' WHERE id = ?`, id)
		if err != nil {
			return store.TenantShred{}, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return store.TenantShred{}, err
		} else if n == 0 {
			return store.TenantShred{}, fmt.Errorf("tenant %s: %w", id, store.ErrNotFound)
		}
		var (
			n  int
			mk sql.NullString
		)
		if err := tx.QueryRowContext(ctx, `SELECT count(*), max(master_key_id) FROM tenant_keys WHERE tenant_id = ?`, id).Scan(&n, &mk); err != nil {
			return store.TenantShred{}, err
		}
		if n > 0 && !mk.Valid {
			// Keys written before master keys were recorded: they are
			// wrapped under the current one, if the store knows it yet.
			err := tx.QueryRowContext(ctx, `SELECT id FROM master_keys WHERE retired_at IS NULL`).Scan(&mk)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return store.TenantShred{}, err
			}
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM tenant_keys WHERE tenant_id = ?`, id); err != nil {
			return store.TenantShred{}, err
		}
		var completed any
		if n == 0 {
			completed = encTime(at) // nothing was deleted, so nothing can be recovered
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO tenant_shreds (tenant_id, shredded_at, key_versions, master_key_id, completed_at)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT (tenant_id) DO NOTHING`, id, encTime(at), n, mk, completed); err != nil {
			return store.TenantShred{}, err
		}
		sh, err := scanShred(tx.QueryRowContext(ctx, `SELECT `+shredColumns+` FROM tenant_shreds WHERE tenant_id = ?`, id))
		if err != nil {
			return store.TenantShred{}, err
		}
		return sh, tx.Commit()
	}()
	if err != nil {
		return store.TenantShred{}, wrap("shred tenant", err)
	}
	var busy, logFrames, checkpointed int
	if err := conn.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &checkpointed); err != nil || busy != 0 {
		s.log.Warn("shred tenant: WAL not truncated; old copies of the keys stay in it until the next checkpoint",
			"tenant", id, "error", err)
	}
	return sh, nil
}

// TenantShreds lists every shred, those of unknown time first, then by
// time, ties by tenant id.
func (s *Store) TenantShreds(ctx context.Context) ([]store.TenantShred, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT `+shredColumns+` FROM tenant_shreds
		ORDER BY shredded_at IS NOT NULL, shredded_at, tenant_id`)
	if err != nil {
		return nil, wrap("tenant shreds", err)
	}
	return collect(rows, "tenant shreds", scanShred)
}

const shredColumns = `tenant_id, shredded_at, key_versions, coalesce(master_key_id, ''), completed_at`

func scanShred(r scanner) (store.TenantShred, error) {
	var (
		sh                 store.TenantShred
		shredded, complete sql.NullInt64
	)
	if err := r.Scan(&sh.TenantID, &shredded, &sh.KeyVersions, &sh.MasterKeyID, &complete); err != nil {
		return sh, err
	}
	sh.ShreddedAt, sh.CompletedAt = decTimeNull(shredded), decTimeNull(complete)
	return sh, nil
}

// EnsurePartitions does nothing: the SQLite traces table is not partitioned.
func (s *Store) EnsurePartitions(context.Context, time.Time, int) error { return nil }

// ApplyRetention deletes the traces of every whole calendar month (UTC) that
// ends at or before `before`: the traces created before the first instant of
// before's month. A month that `before` falls inside is kept whole. For each
// month and chain it writes a tombstone (Partition "YYYY-MM") first, all in
// one transaction, and returns the tombstones in Tombstones order.
func (s *Store) ApplyRetention(ctx context.Context, before time.Time) ([]store.Tombstone, error) {
	cutoff := encTime(validate.RetentionCutoff(before))
	now := validate.Time(time.Now())
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return nil, wrap("apply retention", err)
	}
	defer tx.Rollback()

	out := []store.Tombstone{}
	from := int64(-1 << 63)
	for {
		var oldest sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT min(created_at) FROM traces
			WHERE created_at >= ? AND created_at < ?`, from, cutoff).Scan(&oldest); err != nil {
			return nil, wrap("apply retention", err)
		}
		if !oldest.Valid {
			break
		}
		month := validate.MonthStart(decTime(oldest.Int64))
		next := encTime(month.AddDate(0, 1, 0))
		rows, err := tx.QueryContext(ctx, `SELECT g.chain_id, g.n, g.first_seq, g.last_seq,
			(SELECT t.hash FROM traces t WHERE t.chain_id = g.chain_id AND t.chain_seq = g.last_seq
				AND t.created_at >= ?1 AND t.created_at < ?2 LIMIT 1)
			FROM (SELECT chain_id, count(*) AS n, min(chain_seq) AS first_seq, max(chain_seq) AS last_seq
				FROM traces WHERE created_at >= ?1 AND created_at < ?2 GROUP BY chain_id) g
			ORDER BY g.chain_id`, encTime(month), next)
		if err != nil {
			return nil, wrap("apply retention", err)
		}
		ts, err := collect(rows, "apply retention", func(r scanner) (store.Tombstone, error) {
			tb := store.Tombstone{ID: validate.NewTimeID(), Partition: validate.MonthLabel(month), CreatedAt: now}
			err := r.Scan(&tb.ChainID, &tb.Rows, &tb.FirstSeq, &tb.LastSeq, bytesDest{&tb.LastHash})
			return tb, err
		})
		if err != nil {
			return nil, err
		}
		out = append(out, ts...)
		from = next
	}
	if len(out) == 0 {
		return out, nil
	}
	slices.SortStableFunc(out, compareTombstones)
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO trace_tombstones
		(id, partition, chain_id, rows, first_seq, last_seq, last_hash, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return nil, wrap("apply retention", err)
	}
	defer stmt.Close()
	for _, tb := range out {
		if _, err := stmt.ExecContext(ctx, tb.ID, tb.Partition, tb.ChainID, tb.Rows, tb.FirstSeq, tb.LastSeq,
			tb.LastHash, encTime(tb.CreatedAt)); err != nil {
			return nil, wrap("apply retention", err)
		}
	}
	if err := withGuard(ctx, tx, func() error {
		_, err := tx.ExecContext(ctx, `DELETE FROM traces WHERE created_at < ?`, cutoff)
		return err
	}); err != nil {
		return nil, wrap("apply retention", err)
	}
	if err := tx.Commit(); err != nil {
		return nil, wrap("apply retention", err)
	}
	s.log.Info("applied trace retention", "before", decTime(cutoff), "tombstones", len(out))
	return out, nil
}

// withGuard runs fn with trace_retention_guard set, so the immutability
// triggers let UPDATE and DELETE through, and clears it again before
// returning: the flag is never committed set.
func withGuard(ctx context.Context, tx *sql.Tx, fn func() error) error {
	if _, err := tx.ExecContext(ctx, `UPDATE trace_retention_guard SET active = 1 WHERE id = 1`); err != nil {
		return err
	}
	if err := fn(); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE trace_retention_guard SET active = 0 WHERE id = 1`)
	return err
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
	rows, err := s.reader.QueryContext(ctx, `SELECT id, partition, chain_id, rows, first_seq, last_seq, last_hash, created_at
		FROM trace_tombstones ORDER BY created_at, chain_id, first_seq, id`)
	if err != nil {
		return nil, wrap("tombstones", err)
	}
	return collect(rows, "tombstones", func(r scanner) (store.Tombstone, error) {
		var tb store.Tombstone
		err := r.Scan(&tb.ID, &tb.Partition, &tb.ChainID, &tb.Rows, &tb.FirstSeq, &tb.LastSeq,
			bytesDest{&tb.LastHash}, nanoTime{&tb.CreatedAt})
		return tb, err
	})
}

// Dialect returns "sqlite".
func (s *Store) Dialect() string { return schema.SQLite }

// ExecRaw runs sql on the writer connection. It is for tests and operations
// only (e.g. proving the database refuses to change traces); nothing in Loom
// calls it.
func (s *Store) ExecRaw(ctx context.Context, sql string, args ...any) error {
	if _, err := s.writer.ExecContext(ctx, sql, args...); err != nil {
		return fmt.Errorf("exec raw: %w", err)
	}
	return nil
}

// TamperTrace overwrites one column of the stored trace id, bypassing the
// immutability triggers, for tests proving that verification detects
// tampering. column is a traces column name (as in the schema); value is
// given as the Go type of the matching store.Trace field (string, bool, int,
// int64, *int64, []byte, time.Time, or nil for NULL) and converted to the
// stored form. ErrNotFound if no trace has that id. Never used by Loom itself.
func (s *Store) TamperTrace(ctx context.Context, id, column string, value any) error {
	if !validate.IsTraceColumn(column) {
		return fmt.Errorf("tamper trace: unknown column %q", column)
	}
	rid, ok := validate.ID(id)
	if !ok {
		return fmt.Errorf("tamper trace: trace %q: %w", id, store.ErrNotFound)
	}
	switch v := value.(type) {
	case time.Time:
		value = encTime(v)
	case *time.Time:
		value = encTimePtr(v)
	case bool:
		value = boolInt(v)
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return wrap("tamper trace", err)
	}
	defer tx.Rollback()
	var n int64
	err = withGuard(ctx, tx, func() error {
		res, err := tx.ExecContext(ctx, `UPDATE traces SET `+column+` = ? WHERE id = ?`, value, rid)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return wrap("tamper trace", err)
	}
	if n == 0 {
		return fmt.Errorf("tamper trace: trace %s: %w", rid, store.ErrNotFound)
	}
	if err := tx.Commit(); err != nil {
		return wrap("tamper trace", err)
	}
	return nil
}

// collect scans every row with scan, closing rows; never nil on success.
func collect[T any](rows *sql.Rows, op string, scan func(scanner) (T, error)) ([]T, error) {
	out, err := collectRows(rows, scan)
	if err != nil {
		return nil, wrap(op, err)
	}
	return out, nil
}

// collectRows is collect without wrapping the error.
func collectRows[T any](rows *sql.Rows, scan func(scanner) (T, error)) ([]T, error) {
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

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// blob is the bound form of an optional byte field: NULL for nil, else the
// bytes (an empty non-nil slice stays an empty blob).
func blob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}

// bytesDest scans a BLOB: NULL becomes nil, anything else a copy (non-nil,
// even when empty).
type bytesDest struct{ p *[]byte }

func (d bytesDest) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.p = nil
	case []byte:
		*d.p = append([]byte{}, v...)
	case string:
		*d.p = []byte(v)
	default:
		return fmt.Errorf("scan blob: unexpected %T", src)
	}
	return nil
}

// intPtr scans a nullable INTEGER into a *int64 field: nil for NULL.
type intPtr struct{ p **int64 }

func (d intPtr) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*d.p = nil
	case int64:
		*d.p = &v
	default:
		return fmt.Errorf("scan integer: unexpected %T", src)
	}
	return nil
}

// intBool scans a 0/1 INTEGER.
type intBool struct{ p *bool }

func (d intBool) Scan(src any) error {
	v, ok := src.(int64)
	if !ok {
		return fmt.Errorf("scan boolean: unexpected %T", src)
	}
	*d.p = v != 0
	return nil
}

// nanoTime scans an INTEGER time (Unix nanoseconds).
type nanoTime struct{ p *time.Time }

func (d nanoTime) Scan(src any) error {
	v, ok := src.(int64)
	if !ok {
		return fmt.Errorf("scan time: unexpected %T", src)
	}
	*d.p = decTime(v)
	return nil
}
