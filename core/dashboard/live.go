package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/store"
)

// live: GET /traces/live, Server-Sent Events.
//
// A trace's created_at is when its request started, but it is stored when
// the request ends (later still when batched, spooled or written by another
// replica), so polling "created_at after the newest seen" would skip every
// trace that finishes after a later-started one. The tail therefore keeps
// re-reading the last LiveLookback of created_at and emits the traces it
// has not seen yet: each trace once, as it is stored, including traces of
// requests that started before the client connected but ended after.
// Only traces stored more than LiveLookback after their request started are
// missed. Reads are bounded per poll; under load the look-back shrinks so
// the tail keeps up with the newest traces.
//
// That re-reading is done once per scope, not once per client: every
// stream of the same scope (a tenant; or the admin's all-tenant view)
// shares one feed — one poller and its tail — which encodes each new trace
// once and hands it to every subscriber. A feed starts with its first
// subscriber and stops with its last. Open streams are bounded per caller
// (each tenant, and the admin) and in total (Options.LiveMaxPerTenant,
// LiveMaxTotal); a stream over a bound is refused with 429
// too_many_live_tails before it starts.
func (a *API) live(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := a.viewOf(r, c)
	if err != nil {
		return err
	}
	ctx := r.Context()
	release, err := a.hub.admit(c)
	if err != nil {
		return err
	}
	defer release()
	sub, err := a.hub.join(ctx, v)
	switch {
	case errors.Is(err, errLiveClosed):
		sub = nil // shutting down: the stream opens and ends at once
	case err != nil && ctx.Err() != nil:
		return nil // the client left while the feed was starting
	case err != nil:
		return err
	default:
		defer a.hub.leave(sub)
	}

	rc := http.NewResponseController(w)
	h := w.Header() // Cache-Control: no-store is set by handle
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// A first comment, so the client (and any proxy) sees the stream open.
	if !send(w, rc, []byte(": connected\n\n")) || sub == nil {
		return nil
	}

	check := time.NewTicker(a.o.LivePoll)
	defer check.Stop()
	keep := time.NewTicker(a.o.KeepAlive)
	defer keep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.closed:
			return nil
		case <-keep.C:
			if !send(w, rc, []byte(": keep-alive\n\n")) {
				return nil
			}
		case <-check.C:
			// A key revoked (or a tenant disabled) while the stream is open
			// ends it, within the authenticator's cache TTL.
			if _, err := a.authenticate(r); err != nil {
				a.log.Info("live tail: credentials no longer valid; stream ended", "error", err)
				return nil
			}
		case b, ok := <-sub.events:
			if !ok {
				// The feed dropped this stream: it fell too far behind.
				a.log.Warn("live tail: the client reads too slowly; stream ended")
				return nil
			}
			if !send(w, rc, b) {
				return nil
			}
		}
	}
}

// Default bounds of the live tail (see Options).
const (
	defaultLiveMaxPerTenant = 10
	defaultLiveMaxTotal     = 100
	// liveBacklog is how many polls' worth of events a subscriber may
	// have waiting; a client further behind has its stream ended. (The
	// events of a poll are one buffer shared by every subscriber.)
	liveBacklog = 16
)

// liveHub admits live tails against the bounds and runs one feed per scope.
type liveHub struct {
	a           *API
	perCaller   int
	total       int
	ctx         context.Context // canceled by API.Close: every feed stops
	stopAll     context.CancelFunc
	mu          sync.Mutex
	open        map[string]int // caller → open streams
	openTotal   int
	feeds       map[store.Scope]*feed
	feedsActive sync.WaitGroup
}

func newLiveHub(a *API, perCaller, total int) *liveHub {
	ctx, cancel := context.WithCancel(context.Background())
	return &liveHub{a: a, perCaller: perCaller, total: total, ctx: ctx, stopAll: cancel,
		open: map[string]int{}, feeds: map[store.Scope]*feed{}}
}

// admit counts a new stream of c against the bounds; release uncounts it.
func (h *liveHub) admit(c caller) (release func(), err error) {
	who := "admin"
	if !c.admin {
		who = "tenant:" + c.tenantID
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.open[who] >= h.perCaller:
		subject := "this tenant"
		if c.admin {
			subject = "the admin token"
		}
		return nil, tooManyLiveTails(fmt.Sprintf("Too many live tails are open for %s: at most %d at once. Close one (another dashboard tab or client) and retry.", subject, h.perCaller))
	case h.openTotal >= h.total:
		return nil, tooManyLiveTails(fmt.Sprintf("Loom serves at most %d live tails at once, and all are in use. Retry later.", h.total))
	}
	h.open[who]++
	h.openTotal++
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if h.open[who]--; h.open[who] == 0 {
				delete(h.open, who)
			}
			h.openTotal--
		})
	}, nil
}

func tooManyLiveTails(msg string) error {
	return apierror.New(http.StatusTooManyRequests, apierror.TypeRateLimit, "too_many_live_tails", msg)
}

// feed is the poller of one scope and the streams it serves.
type feed struct {
	h      *liveHub
	scope  store.Scope
	v      view
	tail   *tail
	primed chan struct{} // closed once the tail is primed (or failed to)
	err    error         // the prime's error, set before primed is closed
	ctx    context.Context
	cancel context.CancelFunc
	subs   map[*subscriber]struct{} // guarded by h.mu
}

// subscriber is one stream of a feed.
type subscriber struct {
	f      *feed
	events chan []byte // SSE events; closed when the feed drops the stream
}

// errLiveClosed: the API is closed (shutting down); no feed starts.
var errLiveClosed = errors.New("live tail: closed")

// join subscribes to the feed of v's scope, starting it (and priming its
// tail) if it is the first stream of that scope.
func (h *liveHub) join(ctx context.Context, v view) (*subscriber, error) {
	h.mu.Lock()
	if h.ctx.Err() != nil {
		h.mu.Unlock()
		return nil, errLiveClosed
	}
	f, ok := h.feeds[v.scope]
	if !ok {
		fctx, cancel := context.WithCancel(h.ctx)
		f = &feed{h: h, scope: v.scope, v: v, primed: make(chan struct{}), ctx: fctx, cancel: cancel,
			tail: &tail{a: h.a, v: v, seen: map[string]store.TraceCursor{}}, subs: map[*subscriber]struct{}{}}
		h.feeds[v.scope] = f
	}
	sub := &subscriber{f: f, events: make(chan []byte, liveBacklog)}
	f.subs[sub] = struct{}{}
	h.mu.Unlock()

	if !ok {
		// Primed on the feed's context, not the first client's: the
		// streams that join meanwhile wait for the same prime.
		f.err = f.tail.prime(f.ctx)
		close(f.primed)
		if f.err == nil {
			h.mu.Lock()
			// Started under the lock, and only while the hub runs: close
			// never waits for a feed started after it.
			if h.ctx.Err() == nil {
				h.feedsActive.Add(1)
				go f.run()
			}
			h.mu.Unlock()
		}
	}
	select {
	case <-f.primed:
	case <-ctx.Done():
		h.leave(sub)
		return nil, ctx.Err()
	}
	if f.err != nil {
		h.leave(sub)
		h.mu.Lock()
		if h.feeds[f.scope] == f {
			delete(h.feeds, f.scope) // the next stream tries again
		}
		h.mu.Unlock()
		if h.ctx.Err() != nil {
			return nil, errLiveClosed
		}
		return nil, apierror.Internal(fmt.Errorf("live: %w", f.err))
	}
	return sub, nil
}

// leave unsubscribes sub (if the feed has not dropped it already).
func (h *liveHub) leave(sub *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := sub.f.subs[sub]; ok {
		sub.f.removeLocked(sub)
	}
}

// removeLocked unsubscribes sub; the last stream of a feed stops it.
// h.mu must be held.
func (f *feed) removeLocked(sub *subscriber) {
	h := f.h
	delete(f.subs, sub)
	if len(f.subs) == 0 {
		if h.feeds[f.scope] == f {
			delete(h.feeds, f.scope)
		}
		f.cancel()
	}
}

// close stops every feed and waits for their goroutines.
func (h *liveHub) close() {
	h.mu.Lock()
	h.stopAll()
	h.mu.Unlock()
	h.feedsActive.Wait()
}

// run polls the store for the feed's scope until the feed stops, and hands
// each new trace, encoded once, to every subscriber.
func (f *feed) run() {
	defer f.h.feedsActive.Done()
	a := f.h.a
	poll := time.NewTicker(a.o.LivePoll)
	defer poll.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-poll.C:
		}
		rows, err := f.tail.poll(f.ctx)
		if err != nil {
			if f.ctx.Err() != nil {
				return
			}
			a.log.Warn("live tail: store read failed; retrying", "error", err)
		}
		if len(rows) == 0 {
			continue
		}
		var buf []byte
		for _, s := range a.summaries(f.ctx, f.v, rows) {
			b, err := json.Marshal(s)
			if err != nil {
				a.log.Error("live tail: encode trace", "trace", s.ID, "error", err)
				continue
			}
			buf = append(buf, "data: "...)
			buf = append(buf, b...)
			buf = append(buf, "\n\n"...)
		}
		if len(buf) > 0 {
			f.deliver(buf)
		}
	}
}

// deliver hands b to every subscriber; one whose backlog is full is
// dropped (its stream ends and the client reconnects) rather than held
// in memory or allowed to stall the others.
func (f *feed) deliver(b []byte) {
	h := f.h
	h.mu.Lock()
	defer h.mu.Unlock()
	for sub := range f.subs {
		select {
		case sub.events <- b:
		default:
			f.removeLocked(sub)
			close(sub.events)
		}
	}
}

// send writes b and flushes; false when the client is gone.
func send(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	if _, err := w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// tail finds the traces of a view stored since it started.
type tail struct {
	a *API
	v view
	// low: traces at or before it (in (created_at, id) order) are never read again.
	low store.TraceCursor
	// seen: the traces after low already emitted (or present at the start).
	seen map[string]store.TraceCursor
}

// after reports whether x comes after y in (created_at, id) order.
func after(x, y store.TraceCursor) bool {
	return x.CreatedAt.After(y.CreatedAt) || (x.CreatedAt.Equal(y.CreatedAt) && x.ID > y.ID)
}

// minID is the smallest trace id: the cursor (t, minID) comes before
// every trace created at t. (The store wants a UUID in every cursor.)
const minID = "00000000-0000-0000-0000-000000000000"

// floorAt is the cursor just before every trace created at t or later.
func floorAt(t time.Time) store.TraceCursor { return store.TraceCursor{CreatedAt: t, ID: minID} }

func cursorOf(s store.TraceSummary) store.TraceCursor {
	return store.TraceCursor{CreatedAt: s.CreatedAt, ID: s.ID}
}

// prime marks every trace already stored in the look-back as seen. If
// there are too many to read, the tail starts at the connection time
// instead (then only traces that started after it are shown).
func (t *tail) prime(ctx context.Context) error {
	now := t.a.now().UTC()
	t.low = floorAt(now.Add(-t.a.o.LiveLookback))
	rows, complete, err := t.read(ctx)
	if err != nil {
		return err
	}
	if !complete {
		t.low = floorAt(now)
	}
	for _, s := range rows {
		if c := cursorOf(s); after(c, t.low) {
			t.seen[s.ID] = c
		}
	}
	return nil
}

// poll returns the traces stored since the last poll, oldest first.
func (t *tail) poll(ctx context.Context) ([]store.TraceSummary, error) {
	if floor := floorAt(t.a.now().UTC().Add(-t.a.o.LiveLookback)); after(floor, t.low) {
		t.low = floor
	}
	for id, c := range t.seen {
		if !after(c, t.low) {
			delete(t.seen, id)
		}
	}
	rows, complete, err := t.read(ctx)
	var fresh []store.TraceSummary
	for _, s := range rows {
		if _, ok := t.seen[s.ID]; ok {
			continue
		}
		t.seen[s.ID] = cursorOf(s)
		fresh = append(fresh, s)
	}
	if !complete && len(rows) > 0 {
		// Too much to re-read each poll: continue from the last row read.
		t.low = cursorOf(rows[len(rows)-1])
	}
	return fresh, err
}

// read returns the traces after low, oldest first, a bounded number of
// pages; complete is false when it stopped at the bound.
func (t *tail) read(ctx context.Context) (rows []store.TraceSummary, complete bool, err error) {
	from := t.low
	for range t.a.livePages {
		page, err := t.a.o.Store.TracesSince(ctx, t.v.scope, from, t.a.livePage)
		if err != nil {
			return rows, false, err
		}
		rows = append(rows, page...)
		if len(page) < t.a.livePage {
			return rows, true, nil
		}
		from = cursorOf(page[len(page)-1])
	}
	return rows, false, nil
}
