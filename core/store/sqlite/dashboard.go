package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"time"

	msqlite "modernc.org/sqlite"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/dash"
	"github.com/loom-runtime/loom/core/store/internal/validate"
)

// The dashboard (store.DashboardStore). SQLite has no row-level security:
// every query below carries the tenant predicate itself unless the scope is
// All, and a scope that sees nothing (the zero Scope, a malformed tenant id)
// returns empty results without querying — ScopedTrace ErrNotFound.
//
// Listings read the summary columns only, never the sealed bodies. The
// analytics read covering indexes only (migration 0003): the trace rows keep
// their metadata after the bodies, in overflow pages. They hand every
// latency and overhead value of a group to Go (the Go aggregate functions
// below), where package dash computes the percentiles exactly as the
// PostgreSQL store does.

var _ store.DashboardStore = (*Store)(nil)

func scanSummary(r scanner) (store.TraceSummary, error) {
	var t store.TraceSummary
	err := r.Scan(&t.ID, &t.TenantID, &t.RequestID, &t.Endpoint, intBool{&t.Stream}, &t.RequestedModel, &t.UpstreamModel,
		&t.Provider, &t.Status, &t.HTTPStatus, &t.ErrorMessage, intPtr{&t.PromptTokens}, intPtr{&t.CompletionTokens},
		intPtr{&t.TotalTokens}, intPtr{&t.CachedPromptTokens}, &t.UsageSource, intPtr{&t.CostMicros},
		&t.LatencyUS, &t.OverheadUS, intPtr{&t.TTFBUS}, intPtr{&t.UpstreamUS}, nanoTime{&t.CreatedAt})
	return t, err
}

// ListTraces returns up to limit summaries in the scope matching f, newest
// first by (created_at, id), strictly before `before` when it is given.
// None when the scope sees nothing, limit < 1 or f.From ≥ f.To; an error
// for a cursor with a zero time or an id that is not a UUID.
func (s *Store) ListTraces(ctx context.Context, sc store.Scope, f store.TraceFilter, before *store.TraceCursor, limit int) ([]store.TraceSummary, error) {
	scope, ok := dash.ResolveScope(sc)
	flt := dash.NormalizeFilter(f)
	if !ok || limit < 1 || flt.Empty {
		return []store.TraceSummary{}, nil
	}
	var (
		where []string
		args  []any
	)
	add := func(cond string, vals ...any) {
		where = append(where, cond)
		args = append(args, vals...)
	}
	if !scope.All {
		add(`tenant_id = ?`, scope.TenantID)
	}
	if flt.Model != "" {
		add(`requested_model = ?`, flt.Model)
	}
	if flt.Status != "" {
		add(`status = ?`, flt.Status)
	}
	if flt.Provider != "" {
		add(`provider_instance = ?`, flt.Provider)
	}
	if flt.Stream != nil {
		add(`stream = ?`, boolInt(*flt.Stream))
	}
	if !flt.From.IsZero() {
		add(`created_at >= ?`, encTime(flt.From))
	}
	if !flt.To.IsZero() {
		add(`created_at < ?`, encTime(flt.To))
	}
	if flt.MinLatencyUS > 0 {
		add(`latency_us >= ?`, flt.MinLatencyUS)
	}
	if before != nil {
		c, ok := dash.Cursor(*before)
		if !ok {
			return nil, fmt.Errorf("list traces: invalid cursor (time %s, id %q)", before.CreatedAt, before.ID)
		}
		add(`(created_at, id) < (?, ?)`, encTime(c.CreatedAt), c.ID)
	}
	q := `SELECT ` + dash.SummaryColumns + ` FROM traces`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	rows, err := s.reader.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, wrap("list traces", err)
	}
	return collect(rows, "list traces", scanSummary)
}

// TracesSince returns up to limit summaries in the scope created strictly
// after `after` in (created_at, id) order, oldest first. None when the
// scope sees nothing or limit < 1; an error for an unusable cursor.
func (s *Store) TracesSince(ctx context.Context, sc store.Scope, after store.TraceCursor, limit int) ([]store.TraceSummary, error) {
	scope, ok := dash.ResolveScope(sc)
	if !ok || limit < 1 {
		return []store.TraceSummary{}, nil
	}
	c, ok := dash.Cursor(after)
	if !ok {
		return nil, fmt.Errorf("traces since: invalid cursor (time %s, id %q)", after.CreatedAt, after.ID)
	}
	q := `SELECT ` + dash.SummaryColumns + ` FROM traces WHERE (created_at, id) > (?, ?)`
	args := []any{encTime(c.CreatedAt), c.ID}
	if !scope.All {
		q += ` AND tenant_id = ?`
		args = append(args, scope.TenantID)
	}
	q += ` ORDER BY created_at, id LIMIT ?`
	rows, err := s.reader.QueryContext(ctx, q, append(args, limit)...)
	if err != nil {
		return nil, wrap("traces since", err)
	}
	return collect(rows, "traces since", scanSummary)
}

// ScopedTrace returns the whole trace id if the scope sees it; ErrNotFound
// otherwise (another tenant's trace is indistinguishable from none).
func (s *Store) ScopedTrace(ctx context.Context, sc store.Scope, id string) (store.Trace, error) {
	scope, ok := dash.ResolveScope(sc)
	if !ok {
		return store.Trace{}, fmt.Errorf("trace %q: %w", id, store.ErrNotFound)
	}
	if !scope.All {
		return s.Trace(ctx, scope.TenantID, id)
	}
	rid, ok := validate.ID(id)
	if !ok {
		return store.Trace{}, fmt.Errorf("trace %q: %w", id, store.ErrNotFound)
	}
	t, err := scanTrace(s.reader.QueryRowContext(ctx, `SELECT `+traceColumns+` FROM traces WHERE id = ?`, rid))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Trace{}, fmt.Errorf("trace %s: %w", rid, store.ErrNotFound)
	}
	if err != nil {
		return store.Trace{}, wrap("trace", err)
	}
	return t, nil
}

// scopeTenants returns the ids of the tenants in scope: the one tenant, or
// every tenant (traces reference tenants, whose rows are never deleted).
func scopeTenants(ctx context.Context, tx *sql.Tx, scope dash.Scope) ([]string, error) {
	if !scope.All {
		return []string{scope.TenantID}, nil
	}
	rows, err := tx.QueryContext(ctx, `SELECT id FROM tenants ORDER BY id`)
	if err != nil {
		return nil, err
	}
	return collect(rows, "tenants", func(r scanner) (string, error) {
		var id string
		err := r.Scan(&id)
		return id, err
	})
}

// modelsQuery lists the distinct requested models a tenant ever used, by
// hopping through traces_tenant_model_idx (one seek per model, however many
// traces each has).
const modelsQuery = `WITH RECURSIVE m(model) AS (
	SELECT (SELECT min(requested_model) FROM traces INDEXED BY traces_tenant_model_idx WHERE tenant_id = ?1)
	UNION ALL
	SELECT (SELECT min(requested_model) FROM traces INDEXED BY traces_tenant_model_idx
		WHERE tenant_id = ?1 AND requested_model > m.model)
	FROM m WHERE m.model IS NOT NULL
) SELECT model FROM m WHERE model IS NOT NULL`

// groupQuery aggregates one tenant's traces of one model in a window, from
// the covering traces_tenant_model_idx alone.
const groupQuery = `SELECT count(*), coalesce(sum(status <> 'ok'), 0),
	coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), coalesce(sum(total_tokens), 0),
	coalesce(sum(cached_prompt_tokens), 0), coalesce(sum(cost_micros), 0),
	loom_pairs(latency_us, overhead_us)
	FROM traces INDEXED BY traces_tenant_model_idx
	WHERE tenant_id = ?1 AND requested_model = ?2 AND created_at >= ?3 AND created_at < ?4`

// Summary aggregates the traces in scope created in [from, to): one range
// scan per tenant and model of the covering model index, in one read
// transaction, the percentiles computed by package dash. A zero Aggregate
// and no models when the scope sees nothing or the window is empty.
func (s *Store) Summary(ctx context.Context, sc store.Scope, from, to time.Time) (store.Aggregate, []store.ModelAggregate, error) {
	scope, ok := dash.ResolveScope(sc)
	from, to, ok2 := dash.Window(from, to)
	if !ok || !ok2 {
		return store.Aggregate{}, []store.ModelAggregate{}, nil
	}
	var groups []dash.Group
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		tenants, err := scopeTenants(ctx, tx, scope)
		if err != nil {
			return err
		}
		models, err := tx.PrepareContext(ctx, modelsQuery)
		if err != nil {
			return err
		}
		defer models.Close()
		group, err := tx.PrepareContext(ctx, groupQuery)
		if err != nil {
			return err
		}
		defer group.Close()
		for _, tenant := range tenants {
			rows, err := models.QueryContext(ctx, tenant)
			if err != nil {
				return err
			}
			names, err := collect(rows, "models", func(r scanner) (string, error) {
				var m string
				err := r.Scan(&m)
				return m, err
			})
			if err != nil {
				return err
			}
			for _, m := range names {
				g := dash.Group{Model: m}
				var pairs []byte
				if err := group.QueryRowContext(ctx, tenant, m, encTime(from), encTime(to)).Scan(
					&g.Requests, &g.Errors, &g.PromptTokens, &g.CompletionTokens, &g.TotalTokens,
					&g.CachedPromptTokens, &g.CostMicros, &pairs); err != nil {
					return err
				}
				if g.Requests == 0 {
					continue
				}
				v, err := unpackInts(pairs)
				if err != nil || len(v) != 2*int(g.Requests) {
					return fmt.Errorf("summary: %d values for %d traces (%v)", len(v), g.Requests, err)
				}
				g.Latency, g.Overhead = v[:g.Requests:g.Requests], v[g.Requests:]
				groups = append(groups, g)
			}
		}
		return nil
	})
	if err != nil {
		return store.Aggregate{}, nil, wrap("summary", err)
	}
	overall, byModel := dash.Summarize(groups)
	return overall, byModel, nil
}

// seriesQuery buckets one tenant's traces in a window, from the covering
// traces_tenant_created_idx alone.
const seriesQuery = `SELECT loom_series(created_at, status <> 'ok', total_tokens, cost_micros, latency_us, ?1)
	FROM traces INDEXED BY traces_tenant_created_idx
	WHERE tenant_id = ?2 AND created_at >= ?3 AND created_at < ?4`

// Timeseries aggregates the traces in scope created in [from, to) in
// buckets of width aligned to the Unix epoch (UTC), oldest first. Only
// buckets holding traces are returned; the first and last may start
// before from or end after to, holding only what falls inside [from, to).
// None when the scope sees nothing or the window is empty; an error for a
// width that is not a positive whole number of microseconds.
func (s *Store) Timeseries(ctx context.Context, sc store.Scope, from, to time.Time, bucket time.Duration) ([]store.Bucket, error) {
	if err := dash.CheckWidth(bucket); err != nil {
		return nil, fmt.Errorf("timeseries: %w", err)
	}
	scope, ok := dash.ResolveScope(sc)
	from, to, ok2 := dash.Window(from, to)
	if !ok || !ok2 {
		return []store.Bucket{}, nil
	}
	var buckets []dash.SeriesBucket
	err := s.readTx(ctx, func(tx *sql.Tx) error {
		tenants, err := scopeTenants(ctx, tx, scope)
		if err != nil {
			return err
		}
		series, err := tx.PrepareContext(ctx, seriesQuery)
		if err != nil {
			return err
		}
		defer series.Close()
		for _, tenant := range tenants {
			var blob []byte
			if err := series.QueryRowContext(ctx, int64(bucket), tenant, encTime(from), encTime(to)).Scan(&blob); err != nil {
				return err
			}
			if buckets, err = unpackSeries(blob, buckets); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, wrap("timeseries", err)
	}
	return dash.Series(buckets, bucket), nil
}

// readTx runs fn in a read transaction on a reader connection, so that its
// queries see one snapshot.
func (s *Store) readTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.reader.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// The Go aggregate functions the analytics queries use. They are
// registered with the driver once, for every connection this process opens.
//
//   - loom_pairs(x, y): the integers x of the group's rows then the
//     integers y, in the same row order, as a blob of little-endian int64s
//     (see unpackInts); x and y must not be NULL.
//   - loom_series(created_at, is_error, total_tokens, cost_micros,
//     latency_us, width_ns): the group's traces in buckets of width_ns
//     nanoseconds aligned to the Unix epoch (see unpackSeries).
func init() {
	msqlite.MustRegisterFunction("loom_pairs", &msqlite.FunctionImpl{NArgs: 2,
		MakeAggregate: func(msqlite.FunctionContext) (msqlite.AggregateFunction, error) { return &pairsAgg{}, nil }})
	msqlite.MustRegisterFunction("loom_series", &msqlite.FunctionImpl{NArgs: 6,
		MakeAggregate: func(msqlite.FunctionContext) (msqlite.AggregateFunction, error) { return &seriesAgg{}, nil }})
}

// aggregateOnly makes a Go aggregate refuse to be used as a window function.
type aggregateOnly struct{}

func (aggregateOnly) WindowInverse(*msqlite.FunctionContext, []driver.Value) error {
	return errors.New("not a window function")
}

func (aggregateOnly) Final(*msqlite.FunctionContext) {}

type pairsAgg struct {
	aggregateOnly
	x, y []int64
}

func (a *pairsAgg) Step(_ *msqlite.FunctionContext, args []driver.Value) error {
	x, ok1 := args[0].(int64)
	y, ok2 := args[1].(int64)
	if !ok1 || !ok2 {
		return fmt.Errorf("loom_pairs: want two integers, got %T and %T", args[0], args[1])
	}
	a.x, a.y = append(a.x, x), append(a.y, y)
	return nil
}

func (a *pairsAgg) WindowValue(*msqlite.FunctionContext) (driver.Value, error) {
	return packInts(packInts(make([]byte, 0, 8*(len(a.x)+len(a.y))), a.x), a.y), nil
}

func packInts(b []byte, v []int64) []byte {
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, uint64(x))
	}
	return b
}

// unpackInts decodes a blob of little-endian int64s.
func unpackInts(b []byte) ([]int64, error) {
	if len(b)%8 != 0 {
		return nil, fmt.Errorf("value blob of %d bytes is not a whole number of int64s", len(b))
	}
	out := make([]int64, len(b)/8)
	for i := range out {
		out[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
	}
	return out, nil
}

type seriesAgg struct {
	aggregateOnly
	width   int64
	buckets []dash.SeriesBucket
	index   map[int64]int // bucket index -> position in buckets
	last    int           // position of the bucket of the previous row
}

// Step adds one trace. Rows arrive in created_at order from the index, so
// consecutive rows nearly always share the previous row's bucket; any order
// is correct.
func (a *seriesAgg) Step(_ *msqlite.FunctionContext, args []driver.Value) error {
	at, ok1 := args[0].(int64)
	isErr, ok2 := args[1].(int64)
	lat, ok3 := args[4].(int64)
	if a.index == nil {
		w, ok := args[5].(int64)
		if !ok || w <= 0 {
			return fmt.Errorf("loom_series: invalid width %v", args[5])
		}
		a.width, a.index, a.last = w, map[int64]int{}, -1
	}
	if !ok1 || !ok2 || !ok3 {
		return fmt.Errorf("loom_series: unexpected arguments %T %T %T", args[0], args[1], args[4])
	}
	k := dash.BucketIndex(at, time.Duration(a.width))
	if a.last < 0 || a.buckets[a.last].Index != k {
		pos, ok := a.index[k]
		if !ok {
			pos = len(a.buckets)
			a.buckets = append(a.buckets, dash.SeriesBucket{Index: k})
			a.index[k] = pos
		}
		a.last = pos
	}
	b := &a.buckets[a.last]
	b.Requests++
	b.Errors += isErr
	if v, ok := args[2].(int64); ok {
		b.TotalTokens += v
	}
	if v, ok := args[3].(int64); ok {
		b.CostMicros += v
	}
	b.Latency = append(b.Latency, lat)
	return nil
}

// WindowValue encodes the buckets as little-endian int64s: per bucket its
// index, requests, errors, total tokens, cost, the number of latencies,
// then the latencies.
func (a *seriesAgg) WindowValue(*msqlite.FunctionContext) (driver.Value, error) {
	n := 0
	for _, b := range a.buckets {
		n += 6 + len(b.Latency)
	}
	out := make([]byte, 0, 8*n)
	for _, b := range a.buckets {
		out = packInts(out, []int64{b.Index, b.Requests, b.Errors, b.TotalTokens, b.CostMicros, int64(len(b.Latency))})
		out = packInts(out, b.Latency)
	}
	return out, nil
}

// unpackSeries decodes what loom_series returned, appending to dst.
func unpackSeries(blob []byte, dst []dash.SeriesBucket) ([]dash.SeriesBucket, error) {
	v, err := unpackInts(blob)
	if err != nil {
		return nil, err
	}
	for len(v) > 0 {
		if len(v) < 6 || v[5] < 0 || int64(len(v)-6) < v[5] {
			return nil, errors.New("truncated series blob")
		}
		n := int(v[5])
		dst = append(dst, dash.SeriesBucket{Index: v[0], Requests: v[1], Errors: v[2], TotalTokens: v[3],
			CostMicros: v[4], Latency: v[6 : 6+n : 6+n]})
		v = v[6+n:]
	}
	return dst, nil
}
