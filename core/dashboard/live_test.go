package dashboard

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"runtime"
	"strings"
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
		s, ok := ls.next(t, 5*time.Second)
		if !ok {
			t.Fatalf("live: %d traces did not arrive within 5s (got %d)", len(pending), len(got))
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
		deadline := time.After(5 * time.Second)
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
		case <-time.After(3 * time.Second):
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
			case <-time.After(2 * time.Second):
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
		case <-time.After(2 * time.Second):
			t.Fatal("a live stream opened after Close stays open")
		}
		getJSON[listT](t, e, "/api/v1/traces", e.a.key)
	})
}

func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
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
