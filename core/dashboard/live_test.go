package dashboard

import (
	"bufio"
	"context"
	"io"
	"maps"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

// liveStream is an open /traces/live connection.
type liveStream struct {
	resp   *http.Response
	cancel context.CancelFunc
	events chan string // data payloads and comment lines, in order
	done   chan struct{}
}

func (e *env) openLive(t *testing.T, query, token string) *liveStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/traces/live"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		t.Fatalf("live: status %d: %s", resp.StatusCode, b)
	}
	ls := &liveStream{resp: resp, cancel: cancel, events: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		defer close(ls.done)
		defer close(ls.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if line := sc.Text(); line != "" {
				ls.events <- line
			}
		}
	}()
	t.Cleanup(ls.close)
	return ls
}

func (ls *liveStream) close() {
	ls.cancel()
	ls.resp.Body.Close()
	<-ls.done
}

// next returns the next data event's summary, skipping comments.
func (ls *liveStream) next(t *testing.T, within time.Duration) (summaryT, bool) {
	t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-ls.events:
			if !ok {
				return summaryT{}, false
			}
			if strings.HasPrefix(line, ":") {
				continue
			}
			payload, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				t.Fatalf("unexpected SSE line %q", line)
			}
			wantKeys(t, []byte(payload), summaryKeys...)
			return decodeStrict[summaryT](t, []byte(payload)), true
		case <-timer.C:
			return summaryT{}, false
		}
	}
}

// collect reads data events until the ids in want have all arrived, and
// fails on any other event.
func (ls *liveStream) collect(t *testing.T, want ...*seed) []summaryT {
	t.Helper()
	pending := map[string]*seed{}
	for _, s := range want {
		pending[s.id] = s
	}
	var got []summaryT
	for len(pending) > 0 {
		s, ok := ls.next(t, liveWait)
		if !ok {
			t.Fatalf("live: %d traces did not arrive within %v (got %d)", len(pending), liveWait, len(got))
		}
		w, ok := pending[s.ID]
		if !ok {
			t.Fatalf("live: unexpected trace %s of %s", s.ID, s.Tenant)
		}
		if s.Tenant != w.tenant.name {
			t.Fatalf("live: trace %s of tenant %q, want %q", s.ID, s.Tenant, w.tenant.name)
		}
		delete(pending, s.ID)
		got = append(got, s)
	}
	return got
}

// liveWait bounds how long a test waits for something a live stream must
// do: a guard against hanging, far above what a busy machine takes.
const liveWait = 30 * time.Second

// quiet checks that no data event arrives for d.
func (ls *liveStream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	if s, ok := ls.next(t, d); ok {
		t.Fatalf("live: unexpected trace %s of %s", s.ID, s.Tenant)
	}
}

func liveEnv(t *testing.T, st store.Store, opts func(*Options)) *env {
	return newEnv(t, st, func(c *envConfig) {
		c.realClock = true
		c.opts = func(o *Options) {
			o.LivePoll = 20 * time.Millisecond
			if opts != nil {
				opts(o)
			}
		}
	})
}

func TestLive(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := liveEnv(t, st, nil)
		// Stored before anyone connects: never sent.
		old := newSeed(randFor(1), e.a, time.Now().Add(-10*time.Second))
		e.submit(t, old)

		a := e.openLive(t, "", e.a.key)
		if ct := a.resp.Header.Get("Content-Type"); ct != "text/event-stream" ||
			a.resp.Header.Get("X-Accel-Buffering") != "no" || a.resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("headers %v", a.resp.Header)
		}
		admin := e.openLive(t, "", adminToken)
		adminB := e.openLive(t, "?tenant=bravo", adminToken)

		// B's trace first, then A's: A's stream gets only A's.
		b1 := newSeed(randFor(2), e.b, time.Now())
		e.submit(t, b1)
		a1 := newSeed(randFor(3), e.a, time.Now())
		e.submit(t, a1)
		checkSummary(t, e, a.collect(t, a1)[0], a1)
		// A request that started before the client connected (and before
		// `old`) but ended after: it is new to the client, and sent.
		a2 := newSeed(randFor(4), e.a, time.Now().Add(-20*time.Second))
		e.submit(t, a2)
		a.collect(t, a2)
		// Several at once arrive oldest first.
		now := time.Now()
		a3, a4, a5 := newSeed(randFor(5), e.a, now.Add(-3*time.Millisecond)), newSeed(randFor(6), e.a, now.Add(-2*time.Millisecond)),
			newSeed(randFor(7), e.a, now.Add(-time.Millisecond))
		e.submit(t, a5, a3, a4)
		got := a.collect(t, a3, a4, a5)
		if got[0].ID != a3.id || got[1].ID != a4.id || got[2].ID != a5.id {
			t.Fatalf("not oldest first: %s %s %s", got[0].ID, got[1].ID, got[2].ID)
		}
		a.quiet(t, 200*time.Millisecond)

		// The admin sees both tenants; narrowed, only B.
		admin.collect(t, b1, a1, a2, a3, a4, a5)
		adminB.collect(t, b1)
		adminB.quiet(t, 200*time.Millisecond)
		// A tenant created after the admin connected shows with its name.
		c := e.tenant(t, "carol")
		c1 := newSeed(randFor(8), c, time.Now())
		e.submit(t, c1)
		admin.collect(t, c1)
	})
}

func TestLiveKeepAlive(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := liveEnv(t, st, func(o *Options) { o.KeepAlive = 30 * time.Millisecond })
		ls := e.openLive(t, "", e.a.key)
		var lines []string
		deadline := time.After(liveWait)
		for len(lines) < 4 {
			select {
			case l := <-ls.events:
				lines = append(lines, l)
			case <-deadline:
				t.Fatalf("got %q", lines)
			}
		}
		if lines[0] != ": connected" || lines[1] != ": keep-alive" || lines[3] != ": keep-alive" {
			t.Fatalf("lines %q", lines)
		}
	})
}

// Under more traffic than a poll reads, the tail falls back to the traces
// started after the client connected, and still sends each exactly once.
func TestLiveBoundedReads(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := liveEnv(t, st, nil)
		e.api.livePage, e.api.livePages = 3, 2
		var before []*seed
		for i := range 20 {
			before = append(before, newSeed(randFor(i), e.a, time.Now().Add(-time.Minute)))
		}
		e.submit(t, before...)
		ls := e.openLive(t, "", e.a.key)
		var after []*seed
		for i := range 17 {
			after = append(after, newSeed(randFor(100+i), e.a, time.Now()))
		}
		e.submit(t, after...)
		ls.collect(t, after...)
		ls.quiet(t, 200*time.Millisecond)
	})
}

// A key revoked while its live stream is open ends the stream.
func TestLiveEndsWhenKeyRevoked(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := liveEnv(t, st, nil)
		k := e.tenant(t, "carol")
		ls := e.openLive(t, "", k.key)
		keys, err := st.ListAPIKeys(context.Background(), k.id)
		if err != nil || len(keys) != 1 {
			t.Fatal(keys, err)
		}
		if _, err := st.RevokeAPIKey(context.Background(), keys[0].ID, time.Now()); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ls.done:
		case <-time.After(liveWait):
			t.Fatal("the stream of a revoked key stays open")
		}
	})
}

// Clients that leave take their goroutines with them (nothing waits for
// the next poll or keep-alive to notice), and Close ends every stream at once.
func TestLiveNoLeak(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		// No poll or keep-alive write within the test: only the request's
		// context (or Close) can end a handler.
		e := liveEnv(t, st, func(o *Options) { o.LivePoll, o.KeepAlive = time.Hour, time.Hour })
		// Warm up: connection pools, the store's.
		e.openLive(t, "", e.a.key).close()
		e.srv.Client().CloseIdleConnections()
		time.Sleep(100 * time.Millisecond)
		base := runtime.NumGoroutine()

		// Clients that disconnect: the handlers notice and end.
		var streams []*liveStream
		for range 10 {
			streams = append(streams, e.openLive(t, "", e.a.key))
		}
		if runtime.NumGoroutine() < base+10 {
			t.Fatalf("%d goroutines with 10 open streams, %d before: the test proves nothing", runtime.NumGoroutine(), base)
		}
		for _, s := range streams {
			s.close()
		}
		e.srv.Client().CloseIdleConnections()
		waitGoroutines(t, base)

		// Server shutdown: Close ends every stream.
		streams = streams[:0]
		for range 10 {
			streams = append(streams, e.openLive(t, "", e.a.key))
		}
		e.api.Close()
		for _, s := range streams {
			select {
			case <-s.done:
			case <-time.After(liveWait):
				t.Fatal("a live stream outlived Close")
			}
			s.close()
		}
		e.srv.Client().CloseIdleConnections()
		waitGoroutines(t, base)
		// After Close, a new live stream ends at once (other endpoints still work).
		ls := e.openLive(t, "", e.a.key)
		select {
		case <-ls.done:
		case <-time.After(liveWait):
			t.Fatal("a live stream opened after Close stays open")
		}
		getJSON[listT](t, e, "/api/v1/traces", e.a.key)
	})
}

func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(liveWait)
	n := runtime.NumGoroutine()
	for n > base+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	if n > base+2 {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// Many clients at once all get every trace.
func TestLiveConcurrentClients(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := liveEnv(t, st, nil)
		var streams []*liveStream
		for range 8 {
			streams = append(streams, e.openLive(t, "", e.a.key))
		}
		var seeds []*seed
		for i := range 10 {
			seeds = append(seeds, newSeed(randFor(i), e.a, time.Now()))
		}
		e.submit(t, seeds...)
		for _, s := range streams {
			s.collect(t, seeds...)
		}
	})
}

// gatedStore counts the live tail's reads in flight per scope, and can
// hold them: while closed, a TracesSince waits for the gate to open.
type gatedStore struct {
	store.Store
	mu       sync.Mutex
	gate     chan struct{} // closed: open
	inflight map[store.Scope]int
	max      map[store.Scope]int
	calls    int
}

func newGatedStore(st store.Store) *gatedStore {
	g := &gatedStore{Store: st, gate: make(chan struct{}), inflight: map[store.Scope]int{}, max: map[store.Scope]int{}}
	close(g.gate)
	return g
}

func (g *gatedStore) TracesSince(ctx context.Context, sc store.Scope, after store.TraceCursor, limit int) ([]store.TraceSummary, error) {
	g.mu.Lock()
	g.calls++
	g.inflight[sc]++
	g.max[sc] = max(g.max[sc], g.inflight[sc])
	gate := g.gate
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight[sc]--
		g.mu.Unlock()
	}()
	select {
	case <-gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.TracesSince(ctx, sc, after, limit)
}

// hold closes the gate and forgets the maxima seen so far.
func (g *gatedStore) hold() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
	clear(g.max)
}

func (g *gatedStore) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	close(g.gate)
}

func (g *gatedStore) stats() (calls int, inflight, maxima map[store.Scope]int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls, maps.Clone(g.inflight), maps.Clone(g.max)
}

// TestLiveSharedPoller: the streams of one scope share one poller, so the
// store sees at most one live-tail read in flight per scope however many
// dashboards are open (before, each stream re-read the whole look-back —
// up to 5,000 rows a second — on its own).
func TestLiveSharedPoller(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		g := newGatedStore(st)
		e := newEnv(t, g, func(c *envConfig) {
			c.realClock = true
			c.opts = func(o *Options) { o.LivePoll = time.Millisecond }
		})
		var seeds []*seed
		for i := range 30 { // in the look-back: every poll re-reads them
			seeds = append(seeds, newSeed(randFor(i), e.a, time.Now().Add(-time.Minute)))
		}
		e.submit(t, seeds...)
		var streams []*liveStream
		for range 8 {
			streams = append(streams, e.openLive(t, "", e.a.key))
		}
		streams = append(streams, e.openLive(t, "?tenant=acme", adminToken), e.openLive(t, "", adminToken))
		acme, all := store.TenantScope(e.a.id), store.Scope{All: true}

		// Hold every read: each poller blocks in its next one. Pollers
		// poll every millisecond; one per stream would pile up here.
		g.hold()
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, inflight, _ := g.stats()
			if inflight[acme] >= 1 && inflight[all] >= 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no poller reached the store: %v", inflight)
			}
			time.Sleep(time.Millisecond)
		}
		// A window for other pollers to show up (a pass cannot come from
		// a fast machine: only from there being one poller per scope).
		time.Sleep(300 * time.Millisecond)
		_, _, maxima := g.stats()
		g.release()
		if maxima[acme] != 1 || maxima[all] != 1 {
			t.Errorf("live-tail reads in flight at once: %d for acme (9 streams), %d for all tenants (1 stream); want 1 each", maxima[acme], maxima[all])
		}
		// And every stream still gets every new trace.
		fresh := newSeed(randFor(99), e.a, time.Now())
		e.submit(t, fresh)
		for _, s := range streams {
			s.collect(t, fresh)
		}
	})
}

// liveStatus opens a live stream and closes it at once: its status, and
// the body of an error.
func (e *env) liveStatus(t *testing.T, query, token string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", e.srv.URL+"/api/v1/traces/live"+query, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	return resp, nil
}

// TestLiveBounds: live tails are bounded per tenant (the admin counting as
// one) and in total; a stream over a bound is a 429 in the error envelope,
// and a closed stream frees its place.
func TestLiveBounds(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := liveEnv(t, st, func(o *Options) { o.LiveMaxPerTenant, o.LiveMaxTotal = 2, 5 })
		refused := func(query, token, want string) {
			t.Helper()
			resp, body := e.liveStatus(t, query, token)
			wantError(t, resp, body, http.StatusTooManyRequests, "rate_limit_error", "too_many_live_tails", "")
			if !strings.Contains(string(body), want) {
				t.Fatalf("429 says %s, want %q", body, want)
			}
		}
		a1 := e.openLive(t, "", e.a.key)
		e.openLive(t, "", e.a.key)
		refused("", e.a.key, "for this tenant: at most 2 at once")
		// Other tenants and the admin have places of their own.
		e.openLive(t, "", e.b.key)
		e.openLive(t, "?tenant=acme", adminToken)
		e.openLive(t, "", adminToken)
		refused("", adminToken, "for the admin token: at most 2 at once")
		c := e.tenant(t, "carol")
		refused("", c.key, "at most 5 live tails at once")
		// A stream that ends frees its place (once its handler has noticed).
		a1.close()
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, body := e.liveStatus(t, "", c.key)
			if resp.StatusCode == 200 {
				break
			}
			if resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
				t.Fatalf("after a stream closed: %d %s", resp.StatusCode, body)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// A subscriber that does not keep up is dropped (its stream ends; the
// client reconnects) instead of holding events in memory or stalling the
// other subscribers of its feed.
func TestLiveDropsSlowSubscriber(t *testing.T) {
	h := newLiveHub(New(Options{}), 10, 100)
	f := &feed{h: h, scope: store.TenantScope("t"), subs: map[*subscriber]struct{}{}, cancel: func() {}}
	h.feeds[f.scope] = f
	slow := &subscriber{f: f, events: make(chan []byte, liveBacklog)}
	fast := &subscriber{f: f, events: make(chan []byte, liveBacklog)}
	f.subs[slow], f.subs[fast] = struct{}{}, struct{}{}
	for i := range liveBacklog {
		f.deliver([]byte{byte(i)})
		<-fast.events
	}
	f.deliver([]byte("one too many"))
	if _, ok := f.subs[slow]; ok {
		t.Fatal("the slow subscriber is still subscribed")
	}
	n := 0
	for range slow.events {
		n++
	}
	if n != liveBacklog {
		t.Fatalf("the slow subscriber got %d events before its end, want %d", n, liveBacklog)
	}
	if b := <-fast.events; string(b) != "one too many" {
		t.Fatalf("the fast subscriber got %q", b)
	}
	h.leave(fast)
	if len(h.feeds) != 0 {
		t.Fatal("the feed outlived its last subscriber")
	}
}
