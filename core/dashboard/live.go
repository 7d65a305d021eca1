package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
func (a *API) live(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := a.viewOf(r, c)
	if err != nil {
		return err
	}
	ctx := r.Context()
	t := &tail{a: a, v: v, seen: map[string]store.TraceCursor{}}
	if err := t.prime(ctx); err != nil {
		return apierror.Internal(fmt.Errorf("live: %w", err))
	}

	rc := http.NewResponseController(w)
	h := w.Header() // Cache-Control: no-store is set by handle
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// A first comment, so the client (and any proxy) sees the stream open.
	if !send(w, rc, []byte(": connected\n\n")) {
		return nil
	}

	poll := time.NewTicker(a.o.LivePoll)
	defer poll.Stop()
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
		case <-poll.C:
			// A key revoked (or a tenant disabled) while the stream is open
			// ends it, within the authenticator's cache TTL.
			if _, err := a.authenticate(r); err != nil {
				a.log.Info("live tail: credentials no longer valid; stream ended", "error", err)
				return nil
			}
			rows, err := t.poll(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				a.log.Warn("live tail: store read failed; retrying", "error", err)
			}
			if len(rows) == 0 {
				continue
			}
			var buf []byte
			for _, s := range a.summaries(ctx, v, rows) {
				b, err := json.Marshal(s)
				if err != nil {
					a.log.Error("live tail: encode trace", "trace", s.ID, "error", err)
					continue
				}
				buf = append(buf, "data: "...)
				buf = append(buf, b...)
				buf = append(buf, "\n\n"...)
			}
			if !send(w, rc, buf) {
				return nil
			}
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
