package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
)

// Execer runs raw SQL against the store's database. Both stores implement
// it for tests and operations only; the suite uses it to prove that the
// database itself refuses to change or remove traces.
type Execer interface {
	ExecRaw(ctx context.Context, sql string, args ...any) error
}

// Tamperer overwrites a stored trace column behind the immutability
// triggers, so tests can prove that verification notices. Both stores
// implement it; on PostgreSQL it needs a superuser.
type Tamperer interface {
	TamperTrace(ctx context.Context, id, column string, value any) error
}

// Dialecter names the store's SQL dialect ("sqlite" or "postgres").
type Dialecter interface {
	Dialect() string
}

var traceTests = []suiteTest{
	{name: "TraceRoundTrip", fn: testTraceRoundTrip},
	{name: "InsertTracesIdempotent", fn: testInsertIdempotent},
	{name: "InsertTracesRejects", fn: testInsertRejects},
	{name: "TraceTenantScoping", fn: testTraceTenantScoping},
	{name: "Chains", fn: testChains},
	{name: "ChainTracesPaging", fn: testChainTracesPaging},
	{name: "TracesImmutable", fn: testTracesImmutable, needs: needsSuperuser},
	{name: "TamperTrace", fn: testTamperTrace, needs: needsSuperuser},
	{name: "TenantKeyLifecycle", fn: testTenantKeyLifecycle},
	{name: "ShredTenant", fn: testShredTenant},
	{name: "MasterKeyRotation", fn: testMasterKeyRotation},
	{name: "MasterKeyRotationRefuses", fn: testMasterKeyRotationRefuses},
	{name: "ShredCompletesWithRotation", fn: testShredCompletesWithRotation},
	{name: "Retention", fn: testRetention, needs: needsOwner},
	{name: "RetentionKeepsPartialMonth", fn: testRetentionPartialMonth, needs: needsOwner},
	{name: "PartitionsAhead", fn: testPartitionsAhead},
	{name: "InsertOldMonth", fn: testInsertOldMonth},
	{name: "ConcurrentInsertTraces", fn: testConcurrentInsertTraces},
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func ptr(v int64) *int64 { return &v }

func newTraceID(t testing.TB) string {
	t.Helper()
	u, err := uuid.NewV7()
	if err != nil {
		t.Fatal(err)
	}
	return u.String()
}

func mustChain(t testing.TB, s store.Store) store.Chain {
	t.Helper()
	c := store.Chain{ID: uuid.NewString(), StartedAt: time.Date(2024, 12, 1, 8, 0, 0, 0, time.UTC), Host: "host-a"}
	if err := s.StartChain(t.Context(), c); err != nil {
		t.Fatalf("StartChain: %v", err)
	}
	return c
}

// newTrace returns a realistic trace with every field set, bodies of
// bodyLen bytes (a stream, so Message too).
func newTrace(t testing.TB, tenantID, chainID string, seq int64, at time.Time, bodyLen int) store.Trace {
	t.Helper()
	return store.Trace{
		ID:                 newTraceID(t),
		TenantID:           tenantID,
		RequestID:          "req_" + uuid.NewString()[:8],
		Endpoint:           "chat.completions",
		Stream:             true,
		RequestedModel:     "gpt-4o",
		UpstreamModel:      "gpt-4o-2024-08-06",
		ProviderInstance:   "openai-eu",
		PluginName:         "openai",
		PluginVersion:      "1.4.2",
		Status:             "ok",
		HTTPStatus:         200,
		ErrorMessage:       "",
		KeyVersion:         1,
		Request:            store.Sealed{Nonce: randBytes(t, 12), Ciphertext: randBytes(t, bodyLen)},
		Response:           store.Sealed{Nonce: randBytes(t, 12), Ciphertext: randBytes(t, bodyLen)},
		Message:            store.Sealed{Nonce: randBytes(t, 12), Ciphertext: randBytes(t, 64)},
		PromptTokens:       ptr(812),
		CompletionTokens:   ptr(96),
		TotalTokens:        ptr(908),
		CachedPromptTokens: ptr(512),
		ReasoningTokens:    ptr(0),
		UsageSource:        "provider",
		CostMicros:         ptr(1817),
		PriceVersion:       "2025-06",
		ReportedModel:      "gpt-4o-2024-08-06-preview",
		PricedModel:        "gpt-4o-2024-08-06",
		ResponseTruncated:  true,
		LatencyUS:          1_234_567,
		TTFBUS:             ptr(210_000),
		UpstreamUS:         ptr(1_200_000),
		UpstreamTTFBUS:     ptr(190_000),
		OverheadUS:         34_567,
		ConfigHash:         "cfg_9f86d081884c7d65",
		CreatedAt:          at,
		ChainID:            chainID,
		ChainSeq:           seq,
		PrevHash:           randBytes(t, 32),
		Hash:               randBytes(t, 32),
		CanonicalVersion:   2,
	}
}

// chainOf returns n traces of one chain, seq 1..n, with created times at
// the given instants (cycled), linked by hash.
func chainOf(t testing.TB, tenantID, chainID string, n int, at ...time.Time) []store.Trace {
	t.Helper()
	out := make([]store.Trace, n)
	prev := make([]byte, 32)
	for i := range out {
		tr := newTrace(t, tenantID, chainID, int64(i+1), at[i%len(at)].Add(time.Duration(i)*time.Second), 100)
		tr.PrevHash = prev
		prev = tr.Hash
		out[i] = tr
	}
	return out
}

// stored is what a store gives back for a trace it was given: canonical
// ids, CreatedAt in UTC at microsecond precision, all else unchanged.
func stored(in store.Trace) store.Trace {
	in.ID = strings.ToLower(in.ID)
	in.TenantID = strings.ToLower(in.TenantID)
	in.ChainID = strings.ToLower(in.ChainID)
	in.CreatedAt = in.CreatedAt.UTC().Truncate(time.Microsecond)
	return in
}

// traceDiff lists the fields where got differs from want (times compared as
// instants, everything else exactly: nil and empty slices differ, as do a
// nil pointer and a pointer to zero).
func traceDiff(got, want store.Trace) string {
	var diffs []string
	gv, wv := reflect.ValueOf(got), reflect.ValueOf(want)
	for i := range gv.NumField() {
		name := gv.Type().Field(i).Name
		g, w := gv.Field(i).Interface(), wv.Field(i).Interface()
		if gt, ok := g.(time.Time); ok {
			if wt := w.(time.Time); !gt.Equal(wt) || gt.Location() != time.UTC {
				diffs = append(diffs, fmt.Sprintf("%s: got %s, want %s (UTC)", name, gt.Format(time.RFC3339Nano), wt.Format(time.RFC3339Nano)))
			}
			continue
		}
		if !reflect.DeepEqual(g, w) {
			diffs = append(diffs, fmt.Sprintf("%s: got %s, want %s", name, show(g), show(w)))
		}
	}
	return strings.Join(diffs, "; ")
}

func show(v any) string {
	switch x := v.(type) {
	case *int64:
		if x == nil {
			return "nil"
		}
		return fmt.Sprintf("&%d", *x)
	case []byte:
		if x == nil {
			return "nil"
		}
		return fmt.Sprintf("[%d bytes %x…]", len(x), x[:min(len(x), 4)])
	case store.Sealed:
		return fmt.Sprintf("{nonce %s ct %s}", show(x.Nonce), show(x.Ciphertext))
	}
	return fmt.Sprintf("%#v", v)
}

func checkTrace(t testing.TB, what string, got, want store.Trace) {
	t.Helper()
	if d := traceDiff(got, stored(want)); d != "" {
		t.Errorf("%s (trace %s): %s", what, want.ID, d)
	}
}

func mustInsert(t testing.TB, s store.Store, traces []store.Trace, want int) {
	t.Helper()
	n, err := s.InsertTraces(t.Context(), traces)
	if err != nil {
		t.Fatalf("InsertTraces(%d traces): %v", len(traces), err)
	}
	if n != want {
		t.Fatalf("InsertTraces(%d traces) = %d new, want %d", len(traces), n, want)
	}
}

func mustTrace(t testing.TB, s store.Store, tenantID, id string) store.Trace {
	t.Helper()
	got, err := s.Trace(t.Context(), tenantID, id)
	if err != nil {
		t.Fatalf("Trace(%s): %v", id, err)
	}
	return got
}

func mustCount(t testing.TB, s store.Store, tenantID string, want int64) {
	t.Helper()
	n, err := s.CountTraces(t.Context(), tenantID)
	if err != nil {
		t.Fatalf("CountTraces: %v", err)
	}
	if n != want {
		t.Errorf("CountTraces(%s) = %d, want %d", tenantID, n, want)
	}
}

func hooks(t testing.TB, s store.Store) (Execer, Tamperer, string) {
	t.Helper()
	e, ok1 := s.(Execer)
	tp, ok2 := s.(Tamperer)
	d, ok3 := s.(Dialecter)
	if !ok1 || !ok2 || !ok3 {
		t.Fatalf("%T must implement storetest.Execer, Tamperer and Dialecter", s)
	}
	return e, tp, d.Dialect()
}

func testTraceRoundTrip(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	loc := time.FixedZone("UTC+5:30", 5*3600+1800)
	at := time.Date(2025, 6, 1, 12, 0, 0, 123456789, loc)

	full := newTrace(t, tn.ID, ch.ID, 1, at, 2048)
	full.ErrorMessage = "upstream said: ünïcödé 'quoted' \"text\" \\x00 \u2028 🙂"

	// A non-stream error with nothing known: nil pointers, absent bodies.
	sparse := store.Trace{
		ID: newTraceID(t), TenantID: tn.ID, Endpoint: "/v1/unknown", Status: "upstream_unreachable",
		HTTPStatus: 502, ErrorMessage: "dial tcp: connection refused", UsageSource: "none",
		Request:   store.Sealed{Nonce: randBytes(t, 12), Ciphertext: randBytes(t, 16)},
		CreatedAt: time.Date(2025, 6, 2, 0, 0, 0, 999, time.UTC),
		ChainID:   ch.ID, ChainSeq: 2, PrevHash: full.Hash, Hash: randBytes(t, 32), CanonicalVersion: 1,
	}
	// Zero values that must not turn into NULLs (and empty, non-nil bytes).
	zeros := newTrace(t, tn.ID, ch.ID, 3, time.Date(2025, 6, 30, 23, 59, 59, 999999999, time.UTC), 0)
	zeros.Stream = false
	zeros.PromptTokens, zeros.CompletionTokens, zeros.TotalTokens = ptr(0), ptr(0), ptr(0)
	zeros.CostMicros, zeros.TTFBUS, zeros.UpstreamUS, zeros.UpstreamTTFBUS = ptr(0), ptr(0), ptr(0), ptr(-1)
	zeros.LatencyUS, zeros.OverheadUS, zeros.HTTPStatus, zeros.KeyVersion = 0, 0, 0, 0
	zeros.Message = store.Sealed{Nonce: []byte{}, Ciphertext: []byte{}}
	zeros.PrevHash = sparse.Hash
	// Ids in upper case are stored canonical.
	zeros.ID = strings.ToUpper(zeros.ID)
	zeros.TenantID = strings.ToUpper(zeros.TenantID)

	in := []store.Trace{full, sparse, zeros}
	keep := slices.Clone(in)
	mustInsert(t, s, in, 3)
	if !reflect.DeepEqual(in, keep) {
		t.Fatal("InsertTraces modified its argument")
	}
	for _, want := range in {
		checkTrace(t, "Trace", mustTrace(t, s, tn.ID, want.ID), want)
	}
	got, err := s.ChainTraces(t.Context(), ch.ID, 0, 10)
	if err != nil {
		t.Fatalf("ChainTraces: %v", err)
	}
	if len(got) != 3 {
		t.Fatalf("ChainTraces = %d traces, want 3", len(got))
	}
	for i, want := range in {
		checkTrace(t, fmt.Sprintf("ChainTraces[%d]", i), got[i], want)
	}
	mustCount(t, s, tn.ID, 3)
}

func testInsertIdempotent(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	batch := chainOf(t, tn.ID, ch.ID, 10, time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC))
	if n, err := s.InsertTraces(ctx, nil); err != nil || n != 0 {
		t.Fatalf("InsertTraces(nil) = %d, %v; want 0, nil", n, err)
	}
	mustInsert(t, s, batch, 10)
	mustInsert(t, s, batch, 0)
	mustCount(t, s, tn.ID, 10)

	// A replay mixing old and new rows adds only the new ones; a row twice
	// in one batch counts once.
	more := chainOf(t, tn.ID, ch.ID, 15, time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC))[10:]
	mixed := append(slices.Clone(batch[5:]), more...)
	mixed = append(mixed, more[0])
	mustInsert(t, s, mixed, 5)
	mustCount(t, s, tn.ID, 15)
	// The first copy of a row wins.
	changed := batch[0]
	changed.Status = "rewritten"
	mustInsert(t, s, []store.Trace{changed}, 0)
	if got := mustTrace(t, s, tn.ID, batch[0].ID); got.Status != batch[0].Status {
		t.Errorf("replay overwrote status: %q", got.Status)
	}
}

func testInsertRejects(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	at := time.Date(2025, 5, 1, 0, 0, 0, 0, time.UTC)
	good := newTrace(t, tn.ID, ch.ID, 1, at, 10)

	orphan := newTrace(t, uuid.NewString(), ch.ID, 2, at, 10)
	_, err := s.InsertTraces(ctx, []store.Trace{good, orphan})
	wantErr(t, "InsertTraces(unknown tenant)", err, store.ErrNotFound)
	unchained := newTrace(t, tn.ID, uuid.NewString(), 1, at, 10)
	_, err = s.InsertTraces(ctx, []store.Trace{good, unchained})
	wantErr(t, "InsertTraces(unknown chain)", err, store.ErrNotFound)

	bad := map[string]func(*store.Trace){
		"short hash":           func(tr *store.Trace) { tr.Hash = tr.Hash[:31] },
		"nil prev hash":        func(tr *store.Trace) { tr.PrevHash = nil },
		"malformed id":         func(tr *store.Trace) { tr.ID = "trace-1" },
		"malformed tid":        func(tr *store.Trace) { tr.TenantID = "acme" },
		"seq 0":                func(tr *store.Trace) { tr.ChainSeq = 0 },
		"zero CreatedAt":       func(tr *store.Trace) { tr.CreatedAt = time.Time{} },
		"no canonical version": func(tr *store.Trace) { tr.CanonicalVersion = 0 },
		// Text every store can keep: PostgreSQL's text refuses these.
		"NUL in text":                 func(tr *store.Trace) { tr.ErrorMessage = "bad\x00byte" },
		"invalid UTF-8":               func(tr *store.Trace) { tr.UpstreamModel = "gpt\xff" },
		"NUL in the priced model":     func(tr *store.Trace) { tr.PricedModel = "gpt\x00" },
		"invalid UTF-8 in the report": func(tr *store.Trace) { tr.ReportedModel = "gpt\xff" },
	}
	for name, mutate := range bad {
		tr := newTrace(t, tn.ID, ch.ID, 3, at, 10)
		mutate(&tr)
		if _, err := s.InsertTraces(ctx, []store.Trace{good, tr}); err == nil {
			t.Errorf("InsertTraces(%s): want error", name)
		}
	}
	// Batches are atomic: nothing of the failed ones was written.
	mustCount(t, s, tn.ID, 0)
	mustInsert(t, s, []store.Trace{good}, 1)
}

func testTraceTenantScoping(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	ch := mustChain(t, s)
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	var as, bs []store.Trace
	var all []store.Trace
	for i := range 12 {
		tenant := a.ID
		// Out-of-order times, and two traces at the same instant.
		at := base.Add(time.Duration((i*7)%12) * time.Minute)
		if i%3 == 0 {
			tenant = b.ID
		}
		tr := newTrace(t, tenant, ch.ID, int64(i+1), at, 10)
		if tenant == a.ID {
			as = append(as, tr)
		} else {
			bs = append(bs, tr)
		}
		all = append(all, tr)
	}
	same := newTrace(t, a.ID, ch.ID, 13, base.Add(3*time.Minute), 10)
	as = append(as, same)
	all = append(all, same)
	mustInsert(t, s, all, len(all))

	mustCount(t, s, a.ID, int64(len(as)))
	mustCount(t, s, b.ID, int64(len(bs)))
	mustCount(t, s, uuid.NewString(), 0)
	mustCount(t, s, "not-a-uuid", 0)

	for _, tr := range bs {
		_, err := s.Trace(ctx, a.ID, tr.ID)
		wantErr(t, "Trace(tenant a, b's trace)", err, store.ErrNotFound)
		checkTrace(t, "Trace(tenant b)", mustTrace(t, s, b.ID, tr.ID), tr)
	}
	for _, c := range []struct{ tenant, id string }{
		{a.ID, uuid.NewString()}, {a.ID, "not-a-uuid"}, {"not-a-uuid", as[0].ID}, {uuid.NewString(), as[0].ID},
	} {
		_, err := s.Trace(ctx, c.tenant, c.id)
		wantErr(t, fmt.Sprintf("Trace(%s, %s)", c.tenant, c.id), err, store.ErrNotFound)
	}
	// Any spelling of the ids works.
	checkTrace(t, "Trace(upper-case ids)", mustTrace(t, s, strings.ToUpper(a.ID), strings.ToUpper(as[0].ID)), as[0])

	for _, c := range []struct {
		tenant string
		want   []store.Trace
	}{{a.ID, as}, {b.ID, bs}} {
		slices.SortFunc(c.want, func(x, y store.Trace) int {
			if d := x.CreatedAt.Compare(y.CreatedAt); d != 0 {
				return d
			}
			return strings.Compare(x.ID, y.ID)
		})
		var want []string
		for _, tr := range c.want {
			want = append(want, tr.ID)
		}
		got, err := s.TraceIDs(ctx, c.tenant)
		if err != nil {
			t.Fatalf("TraceIDs: %v", err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("TraceIDs(%s) =\n %v\nwant (oldest first, ties by id)\n %v", c.tenant, got, want)
		}
	}
	if got, err := s.TraceIDs(ctx, uuid.NewString()); err != nil || got == nil || len(got) != 0 {
		t.Errorf("TraceIDs(unknown tenant) = %#v, %v; want empty", got, err)
	}
}

func testChains(t *testing.T, s store.Store) {
	ctx := t.Context()
	if got, err := s.Chains(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("Chains on an empty store = %#v, %v", got, err)
	}
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var want []store.Chain
	for i, off := range []time.Duration{time.Hour, 0, 5 * time.Microsecond, 3 * time.Hour} {
		c := store.Chain{ID: uuid.NewString(), StartedAt: base.Add(off).Add(789 * time.Nanosecond), Host: fmt.Sprint("host-", i)}
		if err := s.StartChain(ctx, c); err != nil {
			t.Fatalf("StartChain: %v", err)
		}
		want = append(want, c)
	}
	// Starting a chain again is a no-op: the first record stays.
	again := want[0]
	again.Host = "other"
	if err := s.StartChain(ctx, again); err != nil {
		t.Fatalf("StartChain again: %v", err)
	}
	if err := s.StartChain(ctx, store.Chain{ID: "chain-1"}); err == nil {
		t.Error("StartChain(malformed id): want error")
	}
	slices.SortFunc(want, func(x, y store.Chain) int { return x.StartedAt.Compare(y.StartedAt) })
	got, err := s.Chains(ctx)
	if err != nil {
		t.Fatalf("Chains: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("Chains = %d, want %d", len(got), len(want))
	}
	for i := range want {
		w := want[i]
		if g := got[i]; g.ID != w.ID || g.Host != w.Host || !g.StartedAt.Equal(w.StartedAt.Truncate(time.Microsecond)) {
			t.Errorf("Chains[%d] = %+v, want %+v (µs)", i, g, w)
		}
	}
}

func testChainTracesPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	other := mustTenant(t, s, "globex")
	ch := mustChain(t, s)
	ch2 := mustChain(t, s)
	// The chain spans two months; it is inserted out of order, in two
	// batches, interleaved with another chain of another tenant.
	trs := chainOf(t, tn.ID, ch.ID, 25,
		time.Date(2025, 1, 31, 23, 59, 50, 0, time.UTC), time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC))
	noise := chainOf(t, other.ID, ch2.ID, 25, time.Date(2025, 1, 31, 0, 0, 0, 0, time.UTC))
	shuffled := slices.Clone(trs)
	for i := len(shuffled) - 1; i > 0; i-- {
		j, _ := rand.Int(rand.Reader, big.NewInt(int64(i+1)))
		shuffled[i], shuffled[j.Int64()] = shuffled[j.Int64()], shuffled[i]
	}
	mustInsert(t, s, append(shuffled[:12:12], noise[:10]...), 22)
	mustInsert(t, s, append(shuffled[12:], noise[10:]...), 28)

	var walked []store.Trace
	after := int64(0)
	for page := 0; ; page++ {
		got, err := s.ChainTraces(ctx, ch.ID, after, 10)
		if err != nil {
			t.Fatalf("ChainTraces: %v", err)
		}
		if len(got) == 0 {
			break
		}
		if want := min(10, 25-page*10); len(got) != want {
			t.Fatalf("page %d: %d traces, want %d", page, len(got), want)
		}
		walked = append(walked, got...)
		after = got[len(got)-1].ChainSeq
		if page > 5 {
			t.Fatal("ChainTraces does not end")
		}
	}
	if len(walked) != len(trs) {
		t.Fatalf("walked %d traces, want %d", len(walked), len(trs))
	}
	for i := range trs {
		checkTrace(t, fmt.Sprintf("walked[%d]", i), walked[i], trs[i])
	}
	for _, c := range []struct {
		chain string
		after int64
		limit int
		want  int
	}{
		{ch.ID, 24, 10, 1}, {ch.ID, 25, 10, 0}, {ch.ID, -5, 3, 3}, {ch.ID, 0, 0, 0}, {ch.ID, 0, -1, 0},
		{strings.ToUpper(ch.ID), 20, 100, 5}, {uuid.NewString(), 0, 10, 0}, {"not-a-uuid", 0, 10, 0},
	} {
		got, err := s.ChainTraces(ctx, c.chain, c.after, c.limit)
		if err != nil || got == nil || len(got) != c.want {
			t.Errorf("ChainTraces(%s, after %d, limit %d) = %d traces, %v; want %d", c.chain, c.after, c.limit, len(got), err, c.want)
		}
	}
}

func testTracesImmutable(t *testing.T, s store.Store) {
	ctx := t.Context()
	exec, _, dialect := hooks(t, s)
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	tr := newTrace(t, tn.ID, ch.ID, 1, time.Now(), 100)
	mustInsert(t, s, []store.Trace{tr}, 1)

	stmts := []string{
		fmt.Sprintf(`UPDATE traces SET status = 'ok-ish' WHERE id = '%s'`, tr.ID),
		fmt.Sprintf(`UPDATE traces SET hash = prev_hash WHERE id = '%s'`, tr.ID),
		`UPDATE traces SET key_version = key_version + 1`,
		fmt.Sprintf(`DELETE FROM traces WHERE id = '%s'`, tr.ID),
		`DELETE FROM traces`,
	}
	if dialect == "postgres" {
		part := fmt.Sprintf("traces_y%04dm%02d", tr.CreatedAt.UTC().Year(), int(tr.CreatedAt.UTC().Month()))
		stmts = append(stmts,
			`TRUNCATE traces`,
			`TRUNCATE `+part,
			fmt.Sprintf(`UPDATE %s SET status = 'x'`, part),
			fmt.Sprintf(`DELETE FROM %s`, part))
	}
	for _, q := range stmts {
		err := exec.ExecRaw(ctx, q)
		if err == nil {
			t.Errorf("%s: accepted", q)
		} else if !strings.Contains(err.Error(), "traces are immutable") {
			t.Errorf("%s: error %q does not say traces are immutable", q, err)
		}
	}
	checkTrace(t, "trace after refused changes", mustTrace(t, s, tn.ID, tr.ID), tr)
	mustCount(t, s, tn.ID, 1)
}

func testTamperTrace(t *testing.T, s store.Store) {
	ctx := t.Context()
	_, tamper, _ := hooks(t, s)
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	trs := chainOf(t, tn.ID, ch.ID, 3, time.Date(2025, 8, 1, 0, 0, 0, 0, time.UTC))
	mustInsert(t, s, trs, 3)

	newCT := randBytes(t, 50)
	changes := []struct {
		column string
		value  any
		apply  func(*store.Trace)
	}{
		{"status", "tampered", func(tr *store.Trace) { tr.Status = "tampered" }},
		{"response_ct", newCT, func(tr *store.Trace) { tr.Response.Ciphertext = newCT }},
		{"total_tokens", int64(1), func(tr *store.Trace) { tr.TotalTokens = ptr(1) }},
		{"cost_micros", nil, func(tr *store.Trace) { tr.CostMicros = nil }},
		{"stream", false, func(tr *store.Trace) { tr.Stream = false }},
		{"http_status", 201, func(tr *store.Trace) { tr.HTTPStatus = 201 }},
		{"priced_model", "gpt-4o-mini", func(tr *store.Trace) { tr.PricedModel = "gpt-4o-mini" }},
		{"reported_model", "", func(tr *store.Trace) { tr.ReportedModel = "" }},
		{"response_truncated", false, func(tr *store.Trace) { tr.ResponseTruncated = false }},
		{"canonical_version", 1, func(tr *store.Trace) { tr.CanonicalVersion = 1 }},
	}
	want := trs[1]
	for _, c := range changes {
		if err := tamper.TamperTrace(ctx, want.ID, c.column, c.value); err != nil {
			t.Fatalf("TamperTrace(%s): %v", c.column, err)
		}
		c.apply(&want)
	}
	checkTrace(t, "tampered trace", mustTrace(t, s, tn.ID, want.ID), want)
	// Its neighbours are untouched.
	checkTrace(t, "neighbour", mustTrace(t, s, tn.ID, trs[0].ID), trs[0])
	checkTrace(t, "neighbour", mustTrace(t, s, tn.ID, trs[2].ID), trs[2])

	err := tamper.TamperTrace(ctx, uuid.NewString(), "status", "x")
	wantErr(t, "TamperTrace(unknown id)", err, store.ErrNotFound)
	if err := tamper.TamperTrace(ctx, want.ID, "status = 'x'; --", "x"); err == nil {
		t.Error("TamperTrace accepted a column that is not a traces column")
	}
	// The triggers are back in force afterwards.
	exec, _, _ := hooks(t, s)
	if err := exec.ExecRaw(ctx, fmt.Sprintf(`DELETE FROM traces WHERE id = '%s'`, want.ID)); err == nil {
		t.Error("DELETE accepted after TamperTrace")
	}
}

func checkKeys(t testing.TB, what string, got, want []store.TenantKey) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d keys, want %d", what, len(got), len(want))
		return
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.TenantID != w.TenantID || g.Version != w.Version || !reflect.DeepEqual(g.Wrapped, w.Wrapped) ||
			!reflect.DeepEqual(g.Nonce, w.Nonce) || !sameTime(g.CreatedAt, w.CreatedAt) || g.CreatedAt.Location() != time.UTC ||
			g.MasterKeyID != w.MasterKeyID {
			t.Errorf("%s[%d] = {%s v%d wrapped %x nonce %x %s master %s}, want {%s v%d wrapped %x nonce %x %s master %s}", what, i,
				g.TenantID, g.Version, g.Wrapped, g.Nonce, g.CreatedAt, g.MasterKeyID,
				w.TenantID, w.Version, w.Wrapped, w.Nonce, w.CreatedAt, w.MasterKeyID)
		}
	}
}

// Master key ids of the tests (any 16 lower-case hex digits will do).
const (
	masterA = "a0a0a0a0a0a0a0a0"
	masterB = "b1b1b1b1b1b1b1b1"
	masterC = "c2c2c2c2c2c2c2c2"
)

func newTenantKey(t testing.TB, tenantID string, version int, at time.Time) store.TenantKey {
	return store.TenantKey{TenantID: tenantID, Version: version, Wrapped: randBytes(t, 48), Nonce: randBytes(t, 12),
		CreatedAt: at, MasterKeyID: masterA}
}

// rewrapped is k as a rotation to master key id writes it.
func rewrapped(t testing.TB, k store.TenantKey, id string) store.TenantKey {
	k.Wrapped, k.Nonce, k.MasterKeyID = randBytes(t, 48), randBytes(t, 12), id
	return k
}

func testTenantKeyLifecycle(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	if got, err := s.TenantKeys(ctx, a.ID); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("TenantKeys before any = %#v, %v", got, err)
	}
	if got, err := s.MasterKeys(ctx); err != nil || len(got) != 0 {
		t.Fatalf("MasterKeys before any key = %+v, %v", got, err)
	}
	base := time.Date(2025, 1, 1, 0, 0, 0, 123456789, time.UTC)
	a2 := newTenantKey(t, a.ID, 2, base.Add(time.Hour))
	a1 := newTenantKey(t, a.ID, 1, base)
	b1 := newTenantKey(t, b.ID, 1, base)
	// The first key registers its master key as the current one.
	before := time.Now().Add(-time.Second)
	for _, k := range []store.TenantKey{a2, a1, b1} {
		if err := s.AddTenantKey(ctx, k); err != nil {
			t.Fatalf("AddTenantKey(%s v%d): %v", k.TenantID, k.Version, err)
		}
	}
	mks, err := s.MasterKeys(ctx)
	if err != nil || len(mks) != 1 || mks[0].ID != masterA || mks[0].RetiredAt != nil ||
		mks[0].RegisteredAt.Before(before) || mks[0].RegisteredAt.After(time.Now().Add(time.Second)) {
		t.Fatalf("MasterKeys after the first key = %+v, %v; want %s current, registered about now", mks, err, masterA)
	}
	// CreatedAt defaults to now.
	a3 := newTenantKey(t, a.ID, 3, time.Time{})
	if err := s.AddTenantKey(ctx, a3); err != nil {
		t.Fatal(err)
	}

	dup := newTenantKey(t, a.ID, 1, base)
	wantErr(t, "AddTenantKey(duplicate version)", s.AddTenantKey(ctx, dup), store.ErrConflict)
	wantErr(t, "AddTenantKey(unknown tenant)", s.AddTenantKey(ctx, newTenantKey(t, uuid.NewString(), 1, base)), store.ErrNotFound)
	wantErr(t, "AddTenantKey(malformed tenant)", s.AddTenantKey(ctx, newTenantKey(t, "acme", 1, base)), store.ErrNotFound)
	if err := s.AddTenantKey(ctx, newTenantKey(t, a.ID, 0, base)); err == nil {
		t.Error("AddTenantKey(version 0): want error")
	}
	// A key wrapped under another master key is refused, and does not
	// register that key.
	other := newTenantKey(t, a.ID, 4, base)
	other.MasterKeyID = masterB
	wantErr(t, "AddTenantKey(another master key)", s.AddTenantKey(ctx, other), store.ErrWrongMasterKey)
	for _, id := range []string{"", "A0A0A0A0A0A0A0A0", "a0a0", "g0a0a0a0a0a0a0a0"} {
		bad := newTenantKey(t, a.ID, 4, base)
		bad.MasterKeyID = id
		if err := s.AddTenantKey(ctx, bad); err == nil {
			t.Errorf("AddTenantKey(master key id %q): want error", id)
		}
	}
	if mks, _ := s.MasterKeys(ctx); len(mks) != 1 {
		t.Errorf("MasterKeys after refused keys = %+v, want only %s", mks, masterA)
	}

	got, err := s.TenantKeys(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 3 {
		if got[2].CreatedAt.Before(before) || got[2].CreatedAt.After(time.Now().Add(time.Second)) {
			t.Errorf("default CreatedAt = %s, want about now", got[2].CreatedAt)
		}
		a3.CreatedAt = got[2].CreatedAt
	}
	checkKeys(t, "TenantKeys(a)", got, []store.TenantKey{a1, a2, a3})
	all, err := s.AllTenantKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wantAll := []store.TenantKey{a1, a2, a3, b1}
	slices.SortStableFunc(wantAll, func(x, y store.TenantKey) int { return strings.Compare(x.TenantID, y.TenantID) })
	checkKeys(t, "AllTenantKeys", all, wantAll)
}

// A rotation rewraps every key, adds new versions, retires the old master
// key for good and makes the new one current, in one transaction.
func testMasterKeyRotation(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a1, a2, b1 := newTenantKey(t, a.ID, 1, base), newTenantKey(t, a.ID, 2, base.Add(time.Hour)), newTenantKey(t, b.ID, 1, base)
	for _, k := range []store.TenantKey{a1, a2, b1} {
		if err := s.AddTenantKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	at := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	r1, r2, rb := rewrapped(t, a1, masterB), rewrapped(t, a2, masterB), rewrapped(t, b1, masterB)
	r1.CreatedAt = time.Time{} // ignored: a version keeps its own
	a3, b2 := newTenantKey(t, a.ID, 3, at), newTenantKey(t, b.ID, 2, at)
	a3.MasterKeyID, b2.MasterKeyID = masterB, masterB
	done, err := s.RotateMasterKey(ctx, store.MasterKeyRotation{From: masterA, To: masterB,
		Rewrapped: []store.TenantKey{rb, r1, r2}, Added: []store.TenantKey{a3, b2}, At: at})
	if err != nil || len(done) != 0 {
		t.Fatalf("RotateMasterKey = %+v, %v; want no shred completed", done, err)
	}
	r1.CreatedAt = a1.CreatedAt
	got, _ := s.TenantKeys(ctx, a.ID)
	checkKeys(t, "TenantKeys(a) after rotation", got, []store.TenantKey{r1, r2, a3})
	got, _ = s.TenantKeys(ctx, b.ID)
	checkKeys(t, "TenantKeys(b) after rotation", got, []store.TenantKey{rb, b2})
	mks, err := s.MasterKeys(ctx)
	if err != nil || len(mks) != 2 || mks[0].ID != masterA || mks[0].RetiredAt == nil || !mks[0].RetiredAt.Equal(at) ||
		mks[1].ID != masterB || mks[1].RetiredAt != nil || !mks[1].RegisteredAt.Equal(at) {
		t.Fatalf("MasterKeys after rotation = %+v, %v; want %s retired at %s, then %s current", mks, err, masterA, at, masterB)
	}
	// The retired key takes no new key, and never comes back.
	late := newTenantKey(t, a.ID, 4, at)
	wantErr(t, "AddTenantKey(retired master key)", s.AddTenantKey(ctx, late), store.ErrWrongMasterKey)
	late.MasterKeyID = masterB
	if err := s.AddTenantKey(ctx, late); err != nil {
		t.Fatalf("AddTenantKey(current master key): %v", err)
	}
	all, _ := s.AllTenantKeys(ctx)
	back := make([]store.TenantKey, len(all))
	for i, k := range all {
		back[i] = rewrapped(t, k, masterA)
	}
	_, err = s.RotateMasterKey(ctx, store.MasterKeyRotation{From: masterB, To: masterA, Rewrapped: back})
	wantErr(t, "RotateMasterKey(back to a retired key)", err, store.ErrConflict)
	got, _ = s.AllTenantKeys(ctx)
	checkKeys(t, "keys after a refused rotation", got, all)
	// Rotating a store without keys still moves the current master key.
	fwd := make([]store.TenantKey, len(all))
	for i, k := range all {
		fwd[i] = rewrapped(t, k, masterC)
	}
	if _, err := s.RotateMasterKey(ctx, store.MasterKeyRotation{From: masterB, To: masterC, Rewrapped: fwd}); err != nil {
		t.Fatalf("second rotation: %v", err)
	}
	if mks, _ := s.MasterKeys(ctx); len(mks) != 3 || mks[2].ID != masterC || mks[2].RetiredAt != nil || mks[1].RetiredAt == nil {
		t.Errorf("MasterKeys after two rotations = %+v", mks)
	}
}

// A rotation that would leave a key behind, or starts from the wrong key,
// changes nothing.
func testMasterKeyRotationRefuses(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustTenant(t, s, "acme")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	a1, a2 := newTenantKey(t, a.ID, 1, base), newTenantKey(t, a.ID, 2, base)
	for _, k := range []store.TenantKey{a1, a2} {
		if err := s.AddTenantKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	r1, r2 := rewrapped(t, a1, masterB), rewrapped(t, a2, masterB)
	missing := rewrapped(t, newTenantKey(t, a.ID, 9, base), masterB)
	added := newTenantKey(t, a.ID, 2, base) // exists
	added.MasterKeyID = masterB
	under := rewrapped(t, a2, masterC)
	for _, c := range []struct {
		what string
		r    store.MasterKeyRotation
		want error
	}{
		{"a key left behind", store.MasterKeyRotation{From: masterA, To: masterB, Rewrapped: []store.TenantKey{r1}}, store.ErrConflict},
		{"a key that is not stored", store.MasterKeyRotation{From: masterA, To: masterB, Rewrapped: []store.TenantKey{r1, r2, missing}}, store.ErrConflict},
		{"from another master key", store.MasterKeyRotation{From: masterC, To: masterB, Rewrapped: []store.TenantKey{r1, r2}}, store.ErrWrongMasterKey},
		{"to the same key", store.MasterKeyRotation{From: masterA, To: masterA, Rewrapped: []store.TenantKey{r1, r2}}, store.ErrConflict},
		{"an added version that exists", store.MasterKeyRotation{From: masterA, To: masterB, Rewrapped: []store.TenantKey{r1, r2}, Added: []store.TenantKey{added}}, store.ErrConflict},
		{"a key under a third master key", store.MasterKeyRotation{From: masterA, To: masterB, Rewrapped: []store.TenantKey{r1, under}}, nil},
	} {
		_, err := s.RotateMasterKey(ctx, c.r)
		if err == nil || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("RotateMasterKey(%s): %v, want %v", c.what, err, c.want)
		}
		got, _ := s.AllTenantKeys(ctx)
		checkKeys(t, "keys after RotateMasterKey("+c.what+")", got, []store.TenantKey{a1, a2})
		if mks, _ := s.MasterKeys(ctx); len(mks) != 1 || mks[0].ID != masterA || mks[0].RetiredAt != nil {
			t.Errorf("MasterKeys after RotateMasterKey(%s) = %+v, want %s current alone", c.what, mks, masterA)
		}
	}
}

func testShredTenant(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	key := mustKey(t, s, newKey(t, a.ID, "ci"))
	ch := mustChain(t, s)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for v := 1; v <= 3; v++ {
		if err := s.AddTenantKey(ctx, newTenantKey(t, a.ID, v, base)); err != nil {
			t.Fatal(err)
		}
	}
	bk := newTenantKey(t, b.ID, 1, base)
	if err := s.AddTenantKey(ctx, bk); err != nil {
		t.Fatal(err)
	}
	trs := chainOf(t, a.ID, ch.ID, 4, base)
	mustInsert(t, s, trs, 4)

	at := time.Date(2025, 2, 1, 0, 0, 0, 0, time.UTC)
	sh, err := s.ShredTenant(ctx, a.ID, at)
	if err != nil {
		t.Fatalf("ShredTenant: %v", err)
	}
	want := store.TenantShred{TenantID: a.ID, ShreddedAt: &at, KeyVersions: 3, MasterKeyID: masterA}
	checkShreds(t, "ShredTenant", []store.TenantShred{sh}, []store.TenantShred{want})
	if !sh.Pending() {
		t.Error("a shred that deleted keys is not pending")
	}
	if got, err := s.TenantKeys(ctx, a.ID); err != nil || len(got) != 0 {
		t.Errorf("TenantKeys after shred = %d keys, %v; want none", len(got), err)
	}
	if tn, err := s.TenantByName(ctx, "acme"); err != nil || tn.Status != store.TenantDeleted {
		t.Errorf("tenant after shred = %+v, %v; want status deleted", tn, err)
	}
	if m, err := s.KeyByHash(ctx, key.Hash); err != nil || m.Tenant.Status != store.TenantDeleted {
		t.Errorf("KeyByHash after shred = tenant %+v, %v; want the deleted tenant", m.Tenant, err)
	}
	// Its traces stay, sealed under keys that no longer exist.
	mustCount(t, s, a.ID, 4)
	checkTrace(t, "trace of shredded tenant", mustTrace(t, s, a.ID, trs[0].ID), trs[0])
	// The other tenant is untouched.
	got, _ := s.TenantKeys(ctx, b.ID)
	checkKeys(t, "other tenant's keys", got, []store.TenantKey{bk})
	all, _ := s.AllTenantKeys(ctx)
	checkKeys(t, "AllTenantKeys after shred", all, []store.TenantKey{bk})
	if tn, _ := s.TenantByName(ctx, "globex"); tn.Status != store.TenantActive {
		t.Errorf("other tenant status = %q", tn.Status)
	}

	// Shredding is final: again is a no-op returning the first record, and
	// no new key version is taken.
	if again, err := s.ShredTenant(ctx, a.ID, at.Add(time.Hour)); err != nil {
		t.Errorf("ShredTenant again: %v", err)
	} else {
		checkShreds(t, "ShredTenant again", []store.TenantShred{again}, []store.TenantShred{want})
	}
	wantErr(t, "AddTenantKey(deleted tenant)", s.AddTenantKey(ctx, newTenantKey(t, a.ID, 4, base)), store.ErrNotFound)
	_, err = s.ShredTenant(ctx, uuid.NewString(), at)
	wantErr(t, "ShredTenant(unknown)", err, store.ErrNotFound)
	_, err = s.ShredTenant(ctx, "acme", at)
	wantErr(t, "ShredTenant(malformed)", err, store.ErrNotFound)

	// A tenant that never had a data key has nothing to recover: its
	// shred is complete at once.
	c := mustTenant(t, s, "initech")
	csh, err := s.ShredTenant(ctx, c.ID, at)
	if err != nil {
		t.Fatal(err)
	}
	wantC := store.TenantShred{TenantID: c.ID, ShreddedAt: &at, CompletedAt: &at}
	checkShreds(t, "ShredTenant(no keys)", []store.TenantShred{csh}, []store.TenantShred{wantC})
	list, err := s.TenantShreds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, second := want, wantC
	if c.ID < a.ID {
		first, second = wantC, want
	}
	checkShreds(t, "TenantShreds", list, []store.TenantShred{first, second})
}

// Every pending shred completes with the next master key rotation; a
// shred after it waits for the one after.
func testShredCompletesWithRotation(t *testing.T, s store.Store) {
	ctx := t.Context()
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	c := mustTenant(t, s, "initech")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tn := range []store.Tenant{a, b, c} {
		if err := s.AddTenantKey(ctx, newTenantKey(t, tn.ID, 1, base)); err != nil {
			t.Fatal(err)
		}
	}
	t1, t2 := base.Add(time.Hour), base.Add(2*time.Hour)
	if _, err := s.ShredTenant(ctx, b.ID, t2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ShredTenant(ctx, a.ID, t1); err != nil {
		t.Fatal(err)
	}
	ck := mustKeys(t, s, c.ID)
	at := base.Add(3 * time.Hour)
	done, err := s.RotateMasterKey(ctx, store.MasterKeyRotation{From: masterA, To: masterB,
		Rewrapped: []store.TenantKey{rewrapped(t, ck[0], masterB)}, At: at})
	if err != nil {
		t.Fatal(err)
	}
	wantA := store.TenantShred{TenantID: a.ID, ShreddedAt: &t1, KeyVersions: 1, MasterKeyID: masterA, CompletedAt: &at}
	wantB := store.TenantShred{TenantID: b.ID, ShreddedAt: &t2, KeyVersions: 1, MasterKeyID: masterA, CompletedAt: &at}
	checkShreds(t, "shreds completed by the rotation", done, []store.TenantShred{wantA, wantB})
	t4 := base.Add(4 * time.Hour)
	csh, err := s.ShredTenant(ctx, c.ID, t4)
	if err != nil {
		t.Fatal(err)
	}
	wantC := store.TenantShred{TenantID: c.ID, ShreddedAt: &t4, KeyVersions: 1, MasterKeyID: masterB}
	checkShreds(t, "shred after the rotation", []store.TenantShred{csh}, []store.TenantShred{wantC})
	list, err := s.TenantShreds(ctx)
	if err != nil {
		t.Fatal(err)
	}
	checkShreds(t, "TenantShreds", list, []store.TenantShred{wantA, wantB, wantC})
	// With no key left, a rotation still completes it.
	at2 := base.Add(5 * time.Hour)
	done, err = s.RotateMasterKey(ctx, store.MasterKeyRotation{From: masterB, To: masterC, At: at2})
	if err != nil {
		t.Fatal(err)
	}
	wantC.CompletedAt = &at2
	checkShreds(t, "second rotation", done, []store.TenantShred{wantC})
}

func mustKeys(t testing.TB, s store.Store, tenantID string) []store.TenantKey {
	t.Helper()
	ks, err := s.TenantKeys(t.Context(), tenantID)
	if err != nil || len(ks) == 0 {
		t.Fatalf("TenantKeys(%s) = %d keys, %v", tenantID, len(ks), err)
	}
	return ks
}

func checkShreds(t testing.TB, what string, got, want []store.TenantShred) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d shreds, want %d:\n got %+v\nwant %+v", what, len(got), len(want), got, want)
		return
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.TenantID != w.TenantID || !sameTimePtr(g.ShreddedAt, w.ShreddedAt) || g.KeyVersions != w.KeyVersions ||
			g.MasterKeyID != w.MasterKeyID || !sameTimePtr(g.CompletedAt, w.CompletedAt) {
			t.Errorf("%s[%d] = {%s at %v, %d keys under %q, completed %v}, want {%s at %v, %d keys under %q, completed %v}",
				what, i, g.TenantID, fmtTime(g.ShreddedAt), g.KeyVersions, g.MasterKeyID, fmtTime(g.CompletedAt),
				w.TenantID, fmtTime(w.ShreddedAt), w.KeyVersions, w.MasterKeyID, fmtTime(w.CompletedAt))
		}
		if (g.ShreddedAt != nil && g.ShreddedAt.Location() != time.UTC) || (g.CompletedAt != nil && g.CompletedAt.Location() != time.UTC) {
			t.Errorf("%s[%d]: times not in UTC", what, i)
		}
	}
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "nil"
	}
	return t.Format(time.RFC3339Nano)
}

func checkTombstones(t testing.TB, what string, got, want []store.Tombstone) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d tombstones, want %d:\n got %+v\nwant %+v", what, len(got), len(want), got, want)
		return
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Partition != w.Partition || g.ChainID != w.ChainID || g.Rows != w.Rows || g.FirstSeq != w.FirstSeq ||
			g.LastSeq != w.LastSeq || !reflect.DeepEqual(g.LastHash, w.LastHash) {
			t.Errorf("%s[%d] = {%s chain %s rows %d seq %d..%d hash %x}, want {%s chain %s rows %d seq %d..%d hash %x}",
				what, i, g.Partition, g.ChainID, g.Rows, g.FirstSeq, g.LastSeq, g.LastHash,
				w.Partition, w.ChainID, w.Rows, w.FirstSeq, w.LastSeq, w.LastHash)
		}
		if w.ID != "" && (g.ID != w.ID || !g.CreatedAt.Equal(w.CreatedAt)) {
			t.Errorf("%s[%d]: id %s created %s, want %s %s", what, i, g.ID, g.CreatedAt, w.ID, w.CreatedAt)
		}
	}
}

// partitionName is what a tombstone of the month starting at m names.
func partitionName(dialect string, m time.Time) string {
	if dialect == "postgres" {
		return fmt.Sprintf("traces_y%04dm%02d", m.Year(), int(m.Month()))
	}
	return fmt.Sprintf("%04d-%02d", m.Year(), int(m.Month()))
}

func testRetention(t *testing.T, s store.Store) {
	ctx := t.Context()
	exec, _, dialect := hooks(t, s)
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	chA, chB := mustChain(t, s), mustChain(t, s)
	jan := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	feb := jan.AddDate(0, 1, 0)
	mar := feb.AddDate(0, 1, 0)
	// Chain A: seq 1-4 in January, 5-7 in February, 8-9 in March (the
	// last January one at the month's final microsecond). Chain B (another
	// tenant): 1-2 in February, 3 in March.
	at := func(m time.Time, i int) time.Time { return m.Add(time.Duration(i) * time.Hour) }
	var ta []store.Trace
	prev := make([]byte, 32)
	for i, when := range []time.Time{at(jan, 1), at(jan, 2), at(jan, 3), feb.Add(-time.Microsecond),
		at(feb, 1), at(feb, 2), at(feb, 3), mar, at(mar, 1)} {
		tr := newTrace(t, a.ID, chA.ID, int64(i+1), when, 100)
		tr.PrevHash, prev = prev, tr.Hash
		ta = append(ta, tr)
	}
	tb := chainOf(t, b.ID, chB.ID, 3, at(feb, 5), at(feb, 6), at(mar, 5))
	mustInsert(t, s, append(slices.Clone(ta), tb...), 12)

	if got, err := s.ApplyRetention(ctx, jan); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ApplyRetention(before the oldest month) = %v, %v; want none", got, err)
	}
	before := time.Now()
	got, err := s.ApplyRetention(ctx, mar)
	if err != nil {
		t.Fatalf("ApplyRetention: %v", err)
	}
	after := time.Now()
	want := []store.Tombstone{
		{Partition: partitionName(dialect, jan), ChainID: chA.ID, Rows: 4, FirstSeq: 1, LastSeq: 4, LastHash: ta[3].Hash},
		{Partition: partitionName(dialect, feb), ChainID: chA.ID, Rows: 3, FirstSeq: 5, LastSeq: 7, LastHash: ta[6].Hash},
		{Partition: partitionName(dialect, feb), ChainID: chB.ID, Rows: 2, FirstSeq: 1, LastSeq: 2, LastHash: tb[1].Hash},
	}
	slices.SortStableFunc(want, func(x, y store.Tombstone) int { return strings.Compare(x.ChainID, y.ChainID) })
	checkTombstones(t, "ApplyRetention", got, want)
	for _, tomb := range got {
		if _, err := uuid.Parse(tomb.ID); err != nil {
			t.Errorf("tombstone id %q: %v", tomb.ID, err)
		}
		if tomb.CreatedAt.Before(before.Add(-time.Second)) || tomb.CreatedAt.After(after.Add(time.Second)) {
			t.Errorf("tombstone created %s, want about now", tomb.CreatedAt)
		}
	}
	listed, err := s.Tombstones(ctx)
	if err != nil {
		t.Fatalf("Tombstones: %v", err)
	}
	checkTombstones(t, "Tombstones", listed, got)

	// The March traces are all there; the older ones are gone.
	mustCount(t, s, a.ID, 2)
	mustCount(t, s, b.ID, 1)
	for _, tr := range append(slices.Clone(ta[:7]), tb[:2]...) {
		_, err := s.Trace(ctx, tr.TenantID, tr.ID)
		wantErr(t, "Trace(removed by retention)", err, store.ErrNotFound)
	}
	checkTrace(t, "March trace", mustTrace(t, s, b.ID, tb[2].ID), tb[2])
	rest, err := s.ChainTraces(ctx, chA.ID, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 2 || rest[0].ChainSeq != 8 || rest[1].ChainSeq != 9 {
		t.Fatalf("chain A after retention: %d traces", len(rest))
	}
	checkTrace(t, "chain A seq 8", rest[0], ta[7])
	// The chain still links: seq 8 continues from the last tombstone's hash.
	for _, tomb := range got {
		if tomb.ChainID == chA.ID && tomb.LastSeq == 7 && !reflect.DeepEqual(rest[0].PrevHash, tomb.LastHash) {
			t.Errorf("seq 8 prev hash %x, want the tombstone's last hash %x", rest[0].PrevHash, tomb.LastHash)
		}
	}

	// Again: nothing left to remove; the tombstones stay as they are.
	if again, err := s.ApplyRetention(ctx, mar.Add(time.Hour)); err != nil || len(again) != 0 {
		t.Errorf("ApplyRetention again = %v, %v; want none", again, err)
	}
	listed, _ = s.Tombstones(ctx)
	checkTombstones(t, "Tombstones after a second run", listed, got)
	// Tombstones cannot be changed either.
	for _, q := range []string{`UPDATE trace_tombstones SET rows = rows + 1`, `DELETE FROM trace_tombstones`} {
		if err := exec.ExecRaw(ctx, q); err == nil || !strings.Contains(err.Error(), "immutable") {
			t.Errorf("%s: error %v, want refused as immutable", q, err)
		}
	}
	// Inserting into a removed month again works (an old spool replayed).
	mustInsert(t, s, ta[:1], 1)
	mustCount(t, s, a.ID, 3)
}

func testRetentionPartialMonth(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	jun := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	trs := chainOf(t, tn.ID, ch.ID, 4, jun, jun.AddDate(0, 0, 20))
	mustInsert(t, s, trs, 4)
	// June is not over on the 25th: nothing of it goes.
	got, err := s.ApplyRetention(ctx, jun.AddDate(0, 0, 25))
	if err != nil || len(got) != 0 {
		t.Fatalf("ApplyRetention(mid-month) = %v, %v; want none", got, err)
	}
	mustCount(t, s, tn.ID, 4)
	// On July 1st plus a nanosecond it does.
	got, err = s.ApplyRetention(ctx, jun.AddDate(0, 1, 0).Add(time.Nanosecond))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Rows != 4 || got[0].FirstSeq != 1 || got[0].LastSeq != 4 || !reflect.DeepEqual(got[0].LastHash, trs[3].Hash) {
		t.Errorf("ApplyRetention(July) = %+v", got)
	}
	mustCount(t, s, tn.ID, 0)
}

func testPartitionsAhead(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	now := time.Now().UTC()
	var trs []store.Trace
	for i, when := range []time.Time{now.AddDate(0, -1, 0), now, now.AddDate(0, 1, 0), now.AddDate(0, 2, 0)} {
		trs = append(trs, newTrace(t, tn.ID, ch.ID, int64(i+1), when, 100))
	}
	mustInsert(t, s, trs, len(trs))
	for _, tr := range trs {
		checkTrace(t, "trace near now", mustTrace(t, s, tn.ID, tr.ID), tr)
	}
	// EnsurePartitions is idempotent, and far-future months then take rows.
	far := now.AddDate(5, 0, 0)
	for range 2 {
		if err := s.EnsurePartitions(ctx, far, 2); err != nil {
			t.Fatalf("EnsurePartitions: %v", err)
		}
	}
	if err := s.EnsurePartitions(ctx, now, 0); err != nil {
		t.Fatalf("EnsurePartitions(ahead 0): %v", err)
	}
	mustInsert(t, s, []store.Trace{newTrace(t, tn.ID, ch.ID, 9, far.AddDate(0, 1, 0), 10)}, 1)
	mustCount(t, s, tn.ID, int64(len(trs)+1))
}

func testInsertOldMonth(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	old := time.Now().UTC().AddDate(0, -14, 0)
	// Two old months in one batch, with a current row.
	trs := []store.Trace{
		newTrace(t, tn.ID, ch.ID, 1, old, 100),
		newTrace(t, tn.ID, ch.ID, 2, old.AddDate(0, 1, 0), 100),
		newTrace(t, tn.ID, ch.ID, 3, time.Now(), 100),
	}
	mustInsert(t, s, trs, 3)
	mustInsert(t, s, trs, 0)
	for _, tr := range trs {
		checkTrace(t, "old trace", mustTrace(t, s, tn.ID, tr.ID), tr)
	}
}

func testConcurrentInsertTraces(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	ch := mustChain(t, s)
	// Half the rows in the current month, half in a month with no partition
	// yet (PostgreSQL creates it while the writers race).
	const total = 400
	now := time.Now().UTC()
	old := now.AddDate(-2, -3, 0)
	var all []store.Trace
	for i := range total {
		when := now.Add(-time.Duration(i) * time.Millisecond)
		if i%2 == 1 {
			when = old.Add(time.Duration(i) * time.Millisecond)
		}
		all = append(all, newTrace(t, tn.ID, ch.ID, int64(i+1), when, 256))
	}
	const workers = 4
	var wg sync.WaitGroup
	added := make([]int, workers)
	for w := range workers {
		wg.Go(func() {
			// Overlapping windows of 100 rows, each worker in its own order.
			for k := range 8 {
				start := ((k + w*3) % 8) * 50
				batch := slices.Clone(all[start:min(start+100, total)])
				if w%2 == 1 {
					slices.Reverse(batch)
				}
				n, err := s.InsertTraces(ctx, batch)
				if err != nil {
					t.Errorf("worker %d: InsertTraces: %v", w, err)
					return
				}
				added[w] += n
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	sum := 0
	for _, n := range added {
		sum += n
	}
	if sum != total {
		t.Errorf("InsertTraces reported %d new rows in all, want %d", sum, total)
	}
	mustCount(t, s, tn.ID, total)
	ids, err := s.TraceIDs(ctx, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		seen[id] = true
	}
	for _, tr := range all {
		if !seen[tr.ID] {
			t.Fatalf("trace %s missing", tr.ID)
		}
	}
}

// BenchmarkInsertTraces measures InsertTraces with batches of 500 realistic
// traces (2 KB request and response ciphertexts) and reports traces/s. s
// must be a fresh, migrated store.
func BenchmarkInsertTraces(b *testing.B, s store.Store) {
	ctx := b.Context()
	tn, err := s.CreateTenant(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	ch := mustChain(b, s)
	const batchSize = 500
	// Prepare the batches outside the timer; fresh ids for every batch.
	template := newTrace(b, tn.ID, ch.ID, 1, time.Now(), 2048)
	batch := make([]store.Trace, batchSize)
	seq := int64(0)
	for b.Loop() {
		b.StopTimer()
		now := time.Now()
		for i := range batch {
			seq++
			tr := template
			tr.ID = newTraceID(b)
			tr.ChainSeq = seq
			tr.CreatedAt = now
			tr.Request.Ciphertext = randBytes(b, 2048)
			tr.Response.Ciphertext = randBytes(b, 2048)
			tr.Hash = randBytes(b, 32)
			batch[i] = tr
		}
		b.StartTimer()
		n, err := s.InsertTraces(ctx, batch)
		if err != nil {
			b.Fatal(err)
		}
		if n != batchSize {
			b.Fatalf("InsertTraces = %d new, want %d", n, batchSize)
		}
	}
	b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "traces/s")
}
