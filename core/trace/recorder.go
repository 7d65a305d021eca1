package trace

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/pricing"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/tokens"
)

// Durability modes.
const (
	Async = "async" // a response does not wait for its trace
	Sync  = "sync"  // a response completes only once its trace is durable
)

// Options configure a Recorder.
type Options struct {
	Store    store.Store
	Keyring  *seal.Keyring
	Pricing  *pricing.Catalog
	Logger   hclog.Logger
	SpoolDir string
	// SpoolMaxBytes bounds the spool; beyond it Admit refuses new requests.
	SpoolMaxBytes int64
	// QueueSize bounds the traces admitted but not yet durable.
	QueueSize int
	// TenantShare is the percentage of QueueSize one tenant may hold
	// (default 25): no tenant can take every slot, with slow uploads or a
	// flood, and refuse the others.
	TenantShare int
	BatchSize   int
	// BatchInterval is the longest a trace waits for its batch to fill.
	// Default 5ms.
	BatchInterval time.Duration
	Durability    string
	// StoreTimeout bounds one batch write before it goes to the spool. Default 5s.
	StoreTimeout time.Duration
	// ReplayInterval is how often the spool is retried. Default 500ms.
	ReplayInterval time.Duration
	Now            func() time.Time
}

// Stats are the recorder's counters.
type Stats struct {
	Written    int64 // traces written to the store (directly or by replay)
	Spooled    int64 // traces written to the spool
	Failed     int64 // batch writes that failed (store and spool)
	QueueDepth int64 // traces admitted and not yet durable
	Untraced   int64 // requests refused past their tenant's share without a trace (the refusal pool was full)
	SpoolBytes int64
}

// Recorder seals, prices and chains traces and writes them in batches. The
// request path never blocks on it: Admit reserves room for a trace before
// the request is served (so a trace always has a place to go), and Submit
// hands the finished record over.
type Recorder struct {
	o     Options
	log   hclog.Logger
	spool *spool
	queue chan *Record
	slots atomic.Int64
	// held counts each tenant's slots; perTenant bounds it.
	heldMu    sync.Mutex
	held      map[string]int
	perTenant int
	// refusals counts the slots of refusal traces, a pool of their own
	// (refusalSlots) beside QueueSize: a flood of refused requests cannot
	// take the slots other tenants' requests need.
	refusals     atomic.Int64
	refusalSlots int64

	chainID string
	seq     int64
	prev    []byte

	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup

	written, spooled, failed atomic.Int64
	untraced                 atomic.Int64   // refusals not traced (ErrRefusalsFull)
	refused                  map[string]int // replay attempts a spool file failed while the store was up
}

// Start opens the spool, starts a new hash chain and the writer and
// replayer goroutines. Spool files left by an earlier run are replayed.
func Start(ctx context.Context, o Options) (*Recorder, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.TenantShare <= 0 || o.TenantShare > 100 {
		o.TenantShare = 25
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 500
	}
	if o.BatchInterval <= 0 {
		o.BatchInterval = 5 * time.Millisecond
	}
	if o.StoreTimeout <= 0 {
		o.StoreTimeout = 5 * time.Second
	}
	if o.ReplayInterval <= 0 {
		o.ReplayInterval = 500 * time.Millisecond
	}
	if o.Durability == "" {
		o.Durability = Async
	}
	sp, err := openSpool(o.SpoolDir, o.SpoolMaxBytes)
	if err != nil {
		return nil, err
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	if err := o.Store.StartChain(ctx, store.Chain{ID: id.String(), StartedAt: o.Now().UTC().Truncate(time.Microsecond), Host: host}); err != nil {
		return nil, fmt.Errorf("start trace chain: %w", err)
	}
	r := &Recorder{
		o: o, log: o.Logger, spool: sp,
		queue:   make(chan *Record, o.QueueSize+refusalSlots(o.QueueSize)),
		chainID: id.String(), prev: ZeroHash,
		held: map[string]int{}, perTenant: max(1, o.QueueSize*o.TenantShare/100), refusalSlots: int64(refusalSlots(o.QueueSize)),
		stop: make(chan struct{}), refused: map[string]int{},
	}
	r.wg.Add(2)
	go func() { defer r.wg.Done(); r.write() }()
	go func() { defer r.wg.Done(); r.replay() }()
	r.log.Info("trace recorder started", "chain", r.chainID, "durability", o.Durability, "spooled_bytes", sp.bytes.Load())
	return r, nil
}

// ChainID identifies this recorder's hash chain.
func (r *Recorder) ChainID() string { return r.chainID }

// Why Admit refuses a request.
var (
	// ErrSpoolFull: the store is unreachable and the spool is full.
	ErrSpoolFull = errors.New("the store is unreachable and the trace spool is full")
	// ErrQueueFull: trace.queue_size requests are in flight or waiting
	// for the writer.
	ErrQueueFull = errors.New("as many requests in flight as Loom can trace")
	// ErrTenantShare: the tenant holds its share of the queue. A slot of
	// the refusal pool is reserved, for the trace of the refusal.
	ErrTenantShare = errors.New("the tenant holds its share of Loom's trace capacity")
	// ErrRefusalsFull: ErrTenantShare, when even the refusal pool is full;
	// nothing is reserved, and the refusal goes untraced (counted in
	// Stats.Untraced).
	ErrRefusalsFull = errors.New("the tenant holds its share of Loom's trace capacity, and refusals are not traced right now")
)

// refusalSlots is the size of the refusal pool for a queue of size n.
func refusalSlots(n int) int { return max(64, n/4) }

// Admission is what Admit reserved; the record of the request carries it
// back (Record.Admission), so the slot returns to the pool it came from.
type Admission struct{ refusal bool }

// Admit reserves room for one trace of tenantID; the request's record
// carries the Admission back. On ErrSpoolFull, ErrQueueFull or
// ErrRefusalsFull nothing is reserved: the caller refuses the request
// rather than serve traffic it cannot trace. On ErrTenantShare a slot of
// the refusal pool is reserved, so the caller traces its refusal (429).
// A tenant's slots come back as its traces are written.
func (r *Recorder) Admit(tenantID string) (Admission, error) {
	if r.spool.full() {
		return Admission{}, ErrSpoolFull
	}
	r.heldMu.Lock()
	n := r.held[tenantID]
	ok := n < r.perTenant
	if ok {
		r.held[tenantID] = n + 1
	}
	r.heldMu.Unlock()
	if !ok {
		if r.refusals.Add(1) > r.refusalSlots {
			r.refusals.Add(-1)
			r.untraced.Add(1)
			return Admission{}, ErrRefusalsFull
		}
		return Admission{refusal: true}, ErrTenantShare
	}
	if r.slots.Add(1) > int64(r.o.QueueSize) {
		r.slots.Add(-1)
		r.unhold(tenantID)
		return Admission{}, ErrQueueFull
	}
	return Admission{}, nil
}

// unhold gives back one of the tenant's slots.
func (r *Recorder) unhold(tenantID string) {
	r.heldMu.Lock()
	if n := r.held[tenantID] - 1; n > 0 {
		r.held[tenantID] = n
	} else {
		delete(r.held, tenantID)
	}
	r.heldMu.Unlock()
}

// TenantSlots is the most slots one tenant may hold.
func (r *Recorder) TenantSlots() int { return r.perTenant }

// release gives back the slots of written traces.
func (r *Recorder) release(batch []item) {
	var refusals int64
	r.heldMu.Lock()
	for _, it := range batch {
		if it.refusal {
			refusals++
			continue
		}
		if n := r.held[it.row.TenantID] - 1; n > 0 {
			r.held[it.row.TenantID] = n
		} else {
			delete(r.held, it.row.TenantID)
		}
	}
	r.heldMu.Unlock()
	r.refusals.Add(-refusals)
	r.slots.Add(-int64(len(batch)) + refusals)
}

// Submit hands over the finished record of an admitted request. It never
// blocks. In sync durability the caller then waits with rec.Durable().
func (r *Recorder) Submit(rec *Record) {
	if r.o.Durability == Sync {
		rec.done = make(chan struct{})
	}
	r.queue <- rec // cannot block: Admit reserved a slot in the buffered queue
}

// Stats returns the counters.
func (r *Recorder) Stats() Stats {
	return Stats{Written: r.written.Load(), Spooled: r.spooled.Load(), Failed: r.failed.Load(),
		QueueDepth: r.slots.Load() + r.refusals.Load(), SpoolBytes: r.spool.bytes.Load(), Untraced: r.untraced.Load()}
}

// Close stops taking traces, writes every queued one to the store or the
// spool, and stops the goroutines. ctx bounds the flush.
func (r *Recorder) Close(ctx context.Context) error {
	r.stopOnce.Do(func() { close(r.stop) })
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("trace recorder: flush did not finish: %d traces not durable", r.slots.Load()+r.refusals.Load())
	}
	if n := r.slots.Load() + r.refusals.Load(); n > 0 {
		return fmt.Errorf("trace recorder: %d traces could not be written to the store or the spool", n)
	}
	return nil
}

// item is a record on its way to durability.
// It keeps the sealed row and the record's durability signal, not the
// record: the record's plaintext bodies can be collected while the batch
// waits for the store (1,000 streams ending together otherwise held both).
type item struct {
	done    chan struct{} // closed once durable (sync durability), or nil
	refusal bool          // its slot is from the refusal pool
	row     store.Trace
}

// write is the single writer: it batches, finalises and writes. A batch
// is written when it is full, or BatchInterval after its first trace
// arrived; an idle writer sleeps. Short intervals keep each write small:
// a write is CPU the request path competes with (about 30 µs per trace
// on SQLite), and 50 traces at once showed in the latency of the requests
// that arrived meanwhile.
func (r *Recorder) write() {
	// Timers follow Go 1.23 semantics (go.mod): Stop and Reset leave no
	// stale tick behind.
	t := time.NewTimer(time.Hour)
	t.Stop()
	armed := false
	retrying := false     // the last flush held traces back; the next try waits for the retry timer
	var waiting []*Record // received, not yet finalised (e.g. key not available)
	var unwritten []item  // finalised rows not yet durable
	// flush finalises and writes what it can; it reports whether
	// everything is durable.
	flush := func() bool {
		var still []*Record
		for _, rec := range waiting {
			row, err := r.finalize(rec)
			if err != nil {
				r.log.Warn("cannot seal trace yet; will retry", "trace_id", rec.ID, "error", err)
				still = append(still, rec)
				continue
			}
			unwritten = append(unwritten, item{done: rec.done, refusal: rec.Admission.refusal, row: row})
		}
		waiting = still
		for len(unwritten) > 0 {
			n := min(len(unwritten), r.o.BatchSize)
			if err := r.persist(unwritten[:n]); err != nil {
				r.failed.Add(1)
				r.log.Error("traces could not be written to the store or the spool; holding them in memory", "traces", len(unwritten), "error", err)
				return false
			}
			unwritten = unwritten[n:]
		}
		unwritten = nil // drop the written rows' backing array, sealed bodies and all
		return len(waiting) == 0
	}
	for {
		select {
		case rec := <-r.queue:
			waiting = append(waiting, rec)
			if len(waiting) < r.o.BatchSize || retrying {
				if !armed {
					t.Reset(r.o.BatchInterval)
					armed = true
				}
				continue
			}
			t.Stop()
		case <-t.C:
		case <-r.stop:
		drain:
			for {
				select {
				case rec := <-r.queue:
					waiting = append(waiting, rec)
				default:
					break drain
				}
			}
			flush()
			return
		}
		armed = false
		if retrying = !flush(); retrying {
			// Held back (no key yet, or neither the store nor the spool
			// took the batch): try again, without hammering, even when
			// new traces fill a batch meanwhile.
			t.Reset(max(r.o.BatchInterval, retryInterval))
			armed = true
		}
	}
}

// retryInterval paces the writer's retries of traces it could not make
// durable.
const retryInterval = time.Second

// persist writes one batch to the store, or to the spool when the store
// fails or older spooled batches are still waiting, then releases it.
func (r *Recorder) persist(batch []item) error {
	rows := make([]store.Trace, len(batch))
	for i := range batch {
		rows[i] = batch[i].row
	}
	var err error
	toStore := !r.spoolPending()
	if toStore {
		ctx, cancel := context.WithTimeout(context.Background(), r.o.StoreTimeout)
		_, err = r.o.Store.InsertTraces(ctx, rows)
		cancel()
		if err == nil {
			r.written.Add(int64(len(rows)))
		} else {
			r.log.Warn("store rejected a trace batch; spooling it", "traces", len(rows), "error", err)
		}
	}
	if !toStore || err != nil {
		if err = r.spool.append(rows); err != nil {
			return err
		}
		r.spooled.Add(int64(len(rows)))
	}
	for _, it := range batch {
		if it.done != nil {
			close(it.done)
		}
	}
	r.release(batch)
	return nil
}

func (r *Recorder) spoolPending() bool { return r.spool.bytes.Load() > 0 }

// replay writes spooled batches to the store, oldest first, until the spool
// is empty; it keeps trying while the store is down.
func (r *Recorder) replay() {
	t := time.NewTicker(r.o.ReplayInterval)
	defer t.Stop()
	var partitioned time.Time
	for {
		if time.Since(partitioned) > 6*time.Hour {
			// Keep monthly partitions (PostgreSQL) three months ahead.
			ctx, cancel := context.WithTimeout(context.Background(), r.o.StoreTimeout)
			if err := r.o.Store.EnsurePartitions(ctx, r.o.Now(), 3); err != nil {
				r.log.Warn("cannot create trace partitions ahead; will retry", "error", err)
			} else {
				partitioned = time.Now()
			}
			cancel()
		}
		r.replayOnce()
		select {
		case <-r.stop:
			r.replayOnce() // a last attempt, so a clean shutdown leaves the spool empty when it can
			return
		case <-t.C:
		}
	}
}

func (r *Recorder) replayOnce() {
	if !r.spoolPending() {
		return
	}
	files, err := r.spool.files()
	if err != nil {
		r.log.Error("cannot list the spool", "error", err)
		return
	}
	for _, f := range files {
		rows, damage := r.spool.read(f)
		if damage != nil && len(rows) == 0 {
			r.log.Error("spool file is unreadable; moved to spool/corrupt for an operator", "file", f, "error", damage)
			r.spool.quarantine(f)
			continue
		}
		// A damaged file's intact records are replayed before it is set aside.
		ctx, cancel := context.WithTimeout(context.Background(), r.o.StoreTimeout)
		_, err = r.o.Store.InsertTraces(ctx, rows)
		if err != nil && r.o.Store.Ping(ctx) == nil {
			// The store is up but refuses this batch: after a few tries it
			// is set aside (kept on disk, loudly) so it cannot block the rest.
			r.refused[f]++
			if r.refused[f] >= 5 {
				r.log.Error("the store keeps refusing a spooled batch although it is up; moved to spool/corrupt for an operator",
					"file", f, "traces", len(rows), "error", err)
				r.spool.quarantine(f)
				delete(r.refused, f)
				cancel()
				continue
			}
		}
		cancel()
		if err != nil {
			return // still down; the next tick tries again
		}
		delete(r.refused, f)
		r.written.Add(int64(len(rows)))
		if damage != nil {
			r.log.Error("spool file is damaged: its intact traces were replayed, the file moved to spool/corrupt for an operator",
				"file", f, "replayed", len(rows), "error", damage)
			r.spool.quarantine(f)
			continue
		}
		if err := r.spool.remove(f); err != nil {
			r.log.Error("cannot remove a replayed spool file (replaying it again is harmless)", "file", f, "error", err)
			return
		}
		r.log.Info("replayed spooled traces", "file", f, "traces", len(rows))
	}
}

// finalize turns a record into its sealed, priced, chained row.
func (r *Recorder) finalize(rec *Record) (store.Trace, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.o.StoreTimeout)
	defer cancel()
	key, err := r.o.Keyring.Current(ctx, rec.TenantID)
	shredded := errors.Is(err, seal.ErrShredded)
	if err != nil && !shredded {
		return store.Trace{}, err
	}
	if shredded {
		// The tenant was deleted while this request ran: keep the trace
		// (exactly one per request), but no body can be sealed any more.
		rec.Request, rec.Response, rec.Message = nil, nil, nil
		rec.Error = strings.TrimSpace(rec.Error + " (tenant deleted: bodies discarded)")
	}
	// Text fields can carry client or upstream input (a model name with a
	// \u0000 escape, a path with %ff): make them valid UTF-8 without NULs,
	// which every store can keep, before they are hashed.
	t := store.Trace{
		ID: rec.ID, TenantID: rec.TenantID, RequestID: rec.RequestID, Endpoint: clean(rec.Endpoint), Stream: rec.Stream,
		RequestedModel: clean(rec.RequestedModel), UpstreamModel: clean(rec.UpstreamModel), ProviderInstance: rec.ProviderInstance,
		PluginName: clean(rec.PluginName), PluginVersion: clean(rec.PluginVersion), Status: rec.Status, HTTPStatus: rec.HTTPStatus,
		ErrorMessage: clean(rec.Error), ConfigHash: rec.ConfigHash,
		CreatedAt: rec.Start.UTC().Truncate(time.Microsecond), ReportedModel: clean(rec.ReportedModel),
		RequestTruncated: rec.RequestTruncated, ResponseTruncated: rec.ResponseTruncated,
		CanonicalVersion: CanonicalCurrent,
	}
	// Usage: the provider's, else an estimate with the model's BPE tokenizer
	// when the request can have been billed (see estimable).
	completion := rec.Completion
	if rec.Stream && len(rec.Response) > 0 && rec.Message == nil {
		rec.Message, completion = Assemble(rec.Response, rec.ResponseTruncated)
	}
	model := t.ReportedModel // picks the tokenizer
	if model == "" {
		model = t.UpstreamModel
	}
	t.UsageSource = UsageNone
	switch {
	case rec.Usage != nil:
		u := rec.Usage
		t.UsageSource = UsageProvider
		t.PromptTokens, t.CompletionTokens, t.TotalTokens = ptr(u.PromptTokens), ptr(u.CompletionTokens), ptr(u.TotalTokens)
		t.CachedPromptTokens, t.ReasoningTokens = ptr(u.CachedPromptTokens), ptr(u.ReasoningTokens)
	case rec.Endpoint == "chat.completions" && estimable(rec):
		if !rec.Stream && completion == "" {
			completion = completionText(rec.Response)
		}
		if p, err := tokens.EstimatePrompt(model, rec.Request); err == nil {
			c := tokens.EstimateCompletion(model, completion)
			t.UsageSource = UsageEstimated
			t.PromptTokens, t.CompletionTokens, t.TotalTokens = ptr(p), ptr(c), ptr(p+c)
		}
	}
	if t.PromptTokens != nil && r.o.Pricing != nil {
		u := pricing.Usage{PromptTokens: *t.PromptTokens, CompletionTokens: *t.CompletionTokens}
		if t.CachedPromptTokens != nil {
			u.CachedPromptTokens = *t.CachedPromptTokens
		}
		t.CostMicros, t.PricedModel = price(r.o.Pricing, t.CreatedAt, u, t.ReportedModel, t.UpstreamModel)
		t.PriceVersion = r.o.Pricing.Version()
	}
	// Latencies, in microseconds.
	t.LatencyUS = rec.End.Sub(rec.Start).Microseconds()
	if rec.TTFB > 0 {
		t.TTFBUS = ptr(rec.TTFB.Microseconds())
	}
	t.OverheadUS = rec.Overhead(rec.End).Microseconds()
	if rec.Upstream > 0 {
		t.UpstreamUS = ptr(rec.Upstream.Microseconds())
	}
	if rec.UpstreamTTFB > 0 {
		t.UpstreamTTFBUS = ptr(rec.UpstreamTTFB.Microseconds())
	}
	// Bodies, sealed under the tenant's current key.
	if !shredded {
		t.KeyVersion = key.Version()
		sealField := func(field string, b []byte) (store.Sealed, error) {
			if b == nil {
				return store.Sealed{}, nil
			}
			return key.Seal(t.ID, field, b)
		}
		if t.Request, err = sealField(seal.FieldRequest, rec.Request); err != nil {
			return store.Trace{}, err
		}
		if t.Response, err = sealField(seal.FieldResponse, rec.Response); err != nil {
			return store.Trace{}, err
		}
		if t.Message, err = sealField(seal.FieldMessage, rec.Message); err != nil {
			return store.Trace{}, err
		}
	}
	// Chain last: the row is final now.
	r.seq++
	t.ChainID, t.ChainSeq, t.PrevHash = r.chainID, r.seq, r.prev
	if t.Hash, err = ChainHash(&t); err != nil {
		r.seq--
		return store.Trace{}, fmt.Errorf("hash trace: %w", err)
	}
	r.prev = t.Hash
	return t, nil
}

// estimable reports whether a chat completion the provider reported no
// usage for is charged an estimate: only when an upstream call happened
// and can have produced billable output.
//
//   - ok, stream_failure: the upstream answered 2xx; its output was
//     generated, in full or until the stream broke off.
//   - client_disconnect, shutdown, upstream_timeout: the call was cut
//     short (by the client, by Loom's shutdown, by the timeout) after it
//     was started — the provider timed an upstream call, or part of its
//     stream reached the client. The upstream may have generated, and
//     billed, until the cancellation reached it.
//   - plugin_failure, internal_error: only mid-stream, once the
//     upstream's 2xx stream had started reaching the client.
//
// Never for rejected (Loom refused the request), upstream_error (the
// upstream refused it with 4xx/5xx: providers do not bill those),
// provider_unavailable (the provider answered itself, e.g. it has no
// credentials), upstream_unreachable (no connection), nor plugin_failure
// or internal_error before the answer started: nothing was generated.
func estimable(rec *Record) bool {
	switch rec.Status {
	case StatusOK, StatusStreamFailure:
		return true
	case StatusClientDisconnect, StatusShutdown, StatusUpstreamTimeout:
		return rec.Upstream > 0 || streamStarted(rec)
	case StatusPluginFailure, StatusInternalError:
		return streamStarted(rec)
	}
	return false
}

// streamStarted reports whether a 2xx stream from the upstream had started
// reaching the client.
func streamStarted(rec *Record) bool {
	return rec.Stream && rec.HTTPStatus >= 200 && rec.HTTPStatus < 300 && len(rec.Response) > 0
}

// price returns the cost of u at time at and the name it was priced
// under: the first of names the catalog has a price for at that time —
// the model the upstream reported, then the model Loom routed the request
// to. The requested model is never tried: it is the client's name, which a
// route may have sent to another model, and a wrong price is worse than
// none. nil and "" when no name has a price, or the one found cannot price
// u (completion tokens on a model without an output price).
func price(c *pricing.Catalog, at time.Time, u pricing.Usage, names ...string) (*int64, string) {
	for _, name := range names {
		if name == "" {
			continue
		}
		p, ok := c.Lookup(name, at)
		if !ok {
			continue
		}
		cost, ok := p.Cost(u)
		if !ok {
			return nil, ""
		}
		return &cost, name
	}
	return nil, ""
}

// completionText extracts the assistant text of a non-stream chat completion.
func completionText(body []byte) string {
	var c struct {
		Choices []struct {
			Message struct {
				Content   string `json:"content"`
				ToolCalls []struct {
					Function struct{ Name, Arguments string } `json:"function"`
				} `json:"tool_calls"`
			} `json:"message"`
		} `json:"choices"`
	}
	if json.Unmarshal(body, &c) != nil {
		return ""
	}
	var b bytes.Buffer
	for _, ch := range c.Choices {
		b.WriteString(ch.Message.Content)
		for _, tc := range ch.Message.ToolCalls {
			b.WriteString(tc.Function.Name)
			b.WriteString(tc.Function.Arguments)
		}
	}
	return b.String()
}

func ptr(v int64) *int64 { return &v }

// clean returns s as valid UTF-8 without NUL characters.
func clean(s string) string {
	if utf8.ValidString(s) && !strings.ContainsRune(s, 0) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
