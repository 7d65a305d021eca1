package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// gate holds chat answers until n chat requests have arrived (a barrier),
// so that a test has n requests in flight at once by construction rather
// than by timing. A manual gate also waits, once full, for release. A gate
// not opened within timeout of the first arrival breaks: every held and
// later request is answered 503.
type gate struct {
	n       int
	manual  bool
	timeout time.Duration

	mu       sync.Mutex
	arrived  int
	arrival  chan struct{} // closed (and replaced) at each arrival
	full     chan struct{} // closed at the n-th arrival
	released chan struct{} // closed by release
	open     chan struct{} // closed when answers may go
	broken   chan struct{} // closed when the timeout passed first
	timer    *time.Timer
}

func newGate(n int, manual bool, timeout time.Duration) *gate {
	return &gate{n: n, manual: manual, timeout: timeout, arrival: make(chan struct{}), full: make(chan struct{}),
		released: make(chan struct{}), open: make(chan struct{}), broken: make(chan struct{})}
}

// gateState is what GET /mock/hold reports.
type gateState struct {
	Hold     int  `json:"hold"`
	Arrived  int  `json:"arrived"`
	Full     bool `json:"full"`
	Released bool `json:"released"`
	Open     bool `json:"open"`
	Broken   bool `json:"broken"`
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

func (g *gate) state() gateState {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gateState{Hold: g.n, Arrived: g.arrived, Full: closed(g.full), Released: closed(g.released),
		Open: closed(g.open), Broken: closed(g.broken)}
}

// openLocked opens the gate unless it is broken.
func (g *gate) openLocked() {
	if closed(g.broken) || closed(g.open) {
		return
	}
	close(g.open)
	if g.timer != nil {
		g.timer.Stop()
	}
}

// arrive counts a chat request.
func (g *gate) arrive() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.arrived++
	close(g.arrival)
	g.arrival = make(chan struct{})
	if g.arrived == 1 && g.timeout > 0 {
		g.timer = time.AfterFunc(g.timeout, g.breakOnTimeout)
	}
	if g.arrived == g.n {
		close(g.full)
		if !g.manual {
			g.openLocked()
		}
	}
}

func (g *gate) breakOnTimeout() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !closed(g.open) {
		close(g.broken)
	}
}

// release opens a manual gate (an automatic one opens by itself).
func (g *gate) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !closed(g.released) {
		close(g.released)
	}
	g.openLocked()
}

// wait counts a chat request and returns when its answer may go: nil, or
// why not (the gate broke, or the request ended).
func (g *gate) wait(ctx context.Context) error {
	g.arrive()
	select {
	case <-g.open:
		return nil
	case <-g.broken:
		s := g.state()
		return fmt.Errorf("hold barrier broken: %d of %d requests arrived within %v (full %v, released %v)",
			s.Arrived, s.Hold, g.timeout, s.Full, s.Released)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// arrivedAtLeast returns when k requests have arrived: nil, or why not
// (the gate broke, or ctx ended).
func (g *gate) arrivedAtLeast(ctx context.Context, k int) error {
	for {
		g.mu.Lock()
		n, next := g.arrived, g.arrival
		g.mu.Unlock()
		if n >= k {
			return nil
		}
		select {
		case <-next:
		case <-g.broken:
			return errors.New("hold barrier broken")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// serveControl answers /mock/hold and /mock/release:
//
//	GET  /mock/hold             the gate's state, as JSON
//	GET  /mock/hold?arrived=K   the same once K requests have arrived (503 if the gate breaks first)
//	POST /mock/release          opens the gate (a manual one waits for this)
func (g *gate) serveControl(w http.ResponseWriter, r *http.Request) {
	w.Header()["Content-Type"] = hdrJSON
	switch {
	case r.URL.Path == "/mock/hold" && r.Method == http.MethodGet:
		if v := r.URL.Query().Get("arrived"); v != "" {
			k, err := strconv.Atoi(v)
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":{"message":"arrived: want a number","type":"invalid_request_error"}}` + "\n"))
				return
			}
			if err := g.arrivedAtLeast(r.Context(), k); err != nil {
				if r.Context().Err() != nil {
					return
				}
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		}
		_ = json.NewEncoder(w).Encode(g.state())
	case r.URL.Path == "/mock/release" && r.Method == http.MethodPost:
		g.release()
		_ = json.NewEncoder(w).Encode(g.state())
	default:
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte(`{"error":{"message":"not found","type":"invalid_request_error"}}` + "\n"))
	}
}
