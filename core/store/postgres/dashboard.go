package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/internal/dash"
	"github.com/loom-runtime/loom/core/store/internal/validate"
)

// The dashboard (store.DashboardStore). Every query names its scope itself
// (tenant_id = $n unless the scope is All) and runs in a read-only
// transaction whose row-level security settings say the same (inScope), so
// a query that forgot its tenant predicate would still see only that
// tenant. A scope that sees nothing (the zero Scope, a malformed tenant id)
// returns empty results without querying — ScopedTrace ErrNotFound.
//
// Listings read the summary columns only, never the sealed bodies. The
// analytics group in the database (hash aggregation over the covering
// traces_tenant_created_idx) and hand each group's latency and overhead
// values to Go (array_agg), where package dash computes the percentiles
// exactly as the SQLite store does.

var _ store.DashboardStore = (*Store)(nil)

func scanSummary(r pgx.Row) (store.TraceSummary, error) {
	var t store.TraceSummary
	err := r.Scan(&t.ID, &t.TenantID, &t.RequestID, &t.Endpoint, &t.Stream, &t.RequestedModel, &t.UpstreamModel,
		&t.Provider, &t.Status, &t.HTTPStatus, &t.ErrorMessage, &t.PromptTokens, &t.CompletionTokens,
		&t.TotalTokens, &t.CachedPromptTokens, &t.UsageSource, &t.CostMicros,
		&t.LatencyUS, &t.OverheadUS, &t.TTFBUS, &t.UpstreamUS, &t.CreatedAt)
	t.CreatedAt = t.CreatedAt.UTC()
	return t, err
}

// rls is the row-level security scope of a dashboard scope.
func rls(scope dash.Scope) rlsScope {
	if scope.All {
		return allScope
	}
	return tenantScope(scope.TenantID)
}

// conds collects the conditions and arguments of a WHERE clause.
type conds struct {
	where []string
	args  []any
}

// add appends cond, in which each "?" stands for the next of vals.
func (c *conds) add(cond string, vals ...any) {
	for _, v := range vals {
		c.args = append(c.args, v)
		cond = strings.Replace(cond, "?", "$"+strconv.Itoa(len(c.args)), 1)
	}
	c.where = append(c.where, cond)
}

func (c *conds) sql() string {
	if len(c.where) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(c.where, " AND ")
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
	var c conds
	if !scope.All {
		c.add(`tenant_id = ?`, scope.TenantID)
	}
	if flt.Model != "" {
		c.add(`requested_model = ?`, flt.Model)
	}
	if flt.Status != "" {
		c.add(`status = ?`, flt.Status)
	}
	if flt.Provider != "" {
		c.add(`provider_instance = ?`, flt.Provider)
	}
	if flt.Stream != nil {
		c.add(`stream = ?`, *flt.Stream)
	}
	if !flt.From.IsZero() {
		c.add(`created_at >= ?`, flt.From)
	}
	if !flt.To.IsZero() {
		c.add(`created_at < ?`, flt.To)
	}
	if flt.MinLatencyUS > 0 {
		c.add(`latency_us >= ?`, flt.MinLatencyUS)
	}
	if before != nil {
		cur, ok := dash.Cursor(*before)
		if !ok {
			return nil, fmt.Errorf("list traces: invalid cursor (time %s, id %q)", before.CreatedAt, before.ID)
		}
		// The first condition bounds the index scan; the row comparison
		// decides ties.
		c.add(`created_at <= ?`, cur.CreatedAt)
		c.add(`(created_at, id) < (?, ?::uuid)`, cur.CreatedAt, cur.ID)
	}
	c.args = append(c.args, limit)
	q := `SELECT ` + dash.SummaryColumns + ` FROM traces` + c.sql() +
		` ORDER BY created_at DESC, id DESC LIMIT $` + strconv.Itoa(len(c.args))
	return scopedRows(ctx, s, rls(scope), "list traces", scanSummary, q, c.args...)
}

// TracesSince returns up to limit summaries in the scope created strictly
// after `after` in (created_at, id) order, oldest first. None when the
// scope sees nothing or limit < 1; an error for an unusable cursor.
func (s *Store) TracesSince(ctx context.Context, sc store.Scope, after store.TraceCursor, limit int) ([]store.TraceSummary, error) {
	scope, ok := dash.ResolveScope(sc)
	if !ok || limit < 1 {
		return []store.TraceSummary{}, nil
	}
	cur, ok := dash.Cursor(after)
	if !ok {
		return nil, fmt.Errorf("traces since: invalid cursor (time %s, id %q)", after.CreatedAt, after.ID)
	}
	var c conds
	if !scope.All {
		c.add(`tenant_id = ?`, scope.TenantID)
	}
	c.add(`created_at >= ?`, cur.CreatedAt)
	c.add(`(created_at, id) > (?, ?::uuid)`, cur.CreatedAt, cur.ID)
	c.args = append(c.args, limit)
	q := `SELECT ` + dash.SummaryColumns + ` FROM traces` + c.sql() +
		` ORDER BY created_at, id LIMIT $` + strconv.Itoa(len(c.args))
	return scopedRows(ctx, s, rls(scope), "traces since", scanSummary, q, c.args...)
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
	var t store.Trace
	err := s.inScope(ctx, allScope, true, func(tx pgx.Tx) error {
		var err error
		t, err = scanTrace(tx.QueryRow(ctx, `SELECT `+traceColumns+` FROM traces WHERE id = $1 LIMIT 1`, rid))
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

// Summary aggregates the traces in scope created in [from, to): one query
// grouping by requested model, the percentiles computed by package dash. A
// zero Aggregate and no models when the scope sees nothing or the window is
// empty.
func (s *Store) Summary(ctx context.Context, sc store.Scope, from, to time.Time) (store.Aggregate, []store.ModelAggregate, error) {
	scope, ok := dash.ResolveScope(sc)
	from, to, ok2 := dash.Window(from, to)
	if !ok || !ok2 {
		return store.Aggregate{}, []store.ModelAggregate{}, nil
	}
	var c conds
	if !scope.All {
		c.add(`tenant_id = ?`, scope.TenantID)
	}
	c.add(`created_at >= ?`, from)
	c.add(`created_at < ?`, to)
	groups, err := scopedRows(ctx, s, rls(scope), "summary", func(r pgx.Row) (dash.Group, error) {
		var g dash.Group
		err := r.Scan(&g.Model, &g.Requests, &g.Errors, &g.PromptTokens, &g.CompletionTokens, &g.TotalTokens,
			&g.CachedPromptTokens, &g.CostMicros, &g.Latency, &g.Overhead)
		return g, err
	}, `SELECT requested_model, count(*), count(*) FILTER (WHERE status <> 'ok'),
		coalesce(sum(prompt_tokens), 0)::bigint, coalesce(sum(completion_tokens), 0)::bigint,
		coalesce(sum(total_tokens), 0)::bigint, coalesce(sum(cached_prompt_tokens), 0)::bigint,
		coalesce(sum(cost_micros), 0)::bigint, array_agg(latency_us), array_agg(overhead_us)
		FROM traces`+c.sql()+` GROUP BY requested_model`, c.args...)
	if err != nil {
		return store.Aggregate{}, nil, err
	}
	overall, byModel := dash.Summarize(groups)
	return overall, byModel, nil
}

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
	// Buckets are numbered from base, the start of the first one. The
	// offset of a trace from it is computed in float8 seconds (date_part:
	// several times cheaper per row than extract's numeric) and rounded to
	// whole microseconds, which is exact for offsets under 2^52 µs (142
	// years).
	first := dash.BucketIndex(from.UnixNano(), bucket)
	base := dash.BucketStart(first, bucket)
	c := conds{args: []any{base, bucket.Microseconds()}} // $1 and $2 of the select list
	if !scope.All {
		c.add(`tenant_id = ?`, scope.TenantID)
	}
	c.add(`created_at >= ?`, from)
	c.add(`created_at < ?`, to)
	rows, err := scopedRows(ctx, s, rls(scope), "timeseries", func(r pgx.Row) (dash.SeriesBucket, error) {
		var b dash.SeriesBucket
		err := r.Scan(&b.Index, &b.Requests, &b.Errors, &b.TotalTokens, &b.CostMicros, &b.Latency)
		b.Index += first
		return b, err
	}, `SELECT round(date_part('epoch', created_at - $1::timestamptz) * 1000000)::bigint / $2 AS bucket,
		count(*), count(*) FILTER (WHERE status <> 'ok'),
		coalesce(sum(total_tokens), 0)::bigint, coalesce(sum(cost_micros), 0)::bigint, array_agg(latency_us)
		FROM traces`+c.sql()+` GROUP BY bucket`, c.args...)
	if err != nil {
		return nil, err
	}
	return dash.Series(rows, bucket), nil
}
