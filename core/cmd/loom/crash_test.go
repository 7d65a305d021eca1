package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/trace"
)

// crashBatchInterval is the recorder's batch interval in these tests.
const crashBatchInterval = 100 * time.Millisecond

// SIGKILL loom under load and restart it on the same store and spool: the
// spool is replayed, no request has two traces, and with sync durability
// every response a client received in full has its trace. With the store
// down (PostgreSQL), traces wait in the spool, survive a SIGKILL and a
// second SIGKILL during their replay, and reach the store exactly once.
// Afterwards `loom verify` passes: a chain cut by a crash is a prefix of
// what it would have been, not a broken one.
func TestCrashRecovery(t *testing.T) {
	for _, tc := range []struct{ durability, backend string }{
		{trace.Async, "sqlite"}, {trace.Sync, "sqlite"}, {trace.Async, "postgres"}, {trace.Sync, "postgres"},
	} {
		t.Run(tc.durability+"/"+tc.backend, func(t *testing.T) { testCrashRecovery(t, tc.durability, tc.backend) })
	}
}

func testCrashRecovery(t *testing.T, durability, backend string) {
	env := []string{
		"LOOM_TRACE_DURABILITY=" + durability,
		"LOOM_TRACE_SPOOL_DIR=spool", // relative to the gateway's directory, kept across restarts
		"LOOM_TRACE_BATCH_INTERVAL=" + crashBatchInterval.String(),
		"LOOM_TRACE_BATCH_SIZE=8", // many small spool files: a replay long enough to be killed
	}
	var pg *testpg.Cluster
	if backend == "postgres" {
		pg = testpg.NewCluster(t)
		env = append(env, "LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN="+pg.DSN())
	}
	p := startProxy(t, env...)
	st := openStore(t, p)
	spoolDir := filepath.Join(p.dir, "spool")
	serves := 1 // each `loom serve` starts a hash chain of its own
	syncMode := durability == trace.Sync

	// Scenario 1: the store is up; SIGKILL mid-load, restart.
	l := startCrashLoad(p.gw.url, p.key)
	l.waitFull(t, 100)
	kill := killUnderLoad(t, p.gw)
	reqs := l.halt()
	p.gw = startServe(t, p.dir, p.env)
	serves++
	waitSpoolEmpty(t, spoolDir, 2*time.Minute)
	f := checkCrash(t, st, reqs, syncMode, kill)
	t.Logf("store up: %s", f)

	if backend == "postgres" {
		// Scenario 2: PostgreSQL down; traces go to the spool, then SIGKILL.
		l := startCrashLoad(p.gw.url, p.key)
		l.waitFull(t, 20) // the key is cached, some traces reach the store
		pg.Stop(t)
		waitSpoolFiles(t, spoolDir, 10) // a replay long enough to be killed
		kill := killUnderLoad(t, p.gw)
		reqs := l.halt()
		spooled, err := trace.ReadSpool(spoolDir)
		if err != nil {
			t.Fatal(err)
		}
		files := spoolFiles(t, spoolDir)
		if len(spooled) == 0 {
			t.Fatal("nothing was spooled while PostgreSQL was down: the outage was not exercised")
		}
		pg.Start(t)

		// SIGKILL again while the spool is being replayed, then restart.
		gw := startServeNoWait(t, p.dir, p.env)
		serves++
		waitLog(t, gw, "replayed spooled traces", 2*time.Minute)
		killGateway(t, gw)
		left, err := trace.ReadSpool(spoolDir)
		if err != nil {
			t.Fatal(err)
		}
		leftFiles := spoolFiles(t, spoolDir)
		if leftFiles >= files {
			t.Fatalf("%d of %d spool files left after the replay logged progress", leftFiles, files)
		}
		if leftFiles == 0 {
			t.Logf("the replay finished before the second SIGKILL landed: nothing left to replay after it")
		}

		begin := time.Now()
		p.gw = startServe(t, p.dir, p.env)
		serves++
		waitSpoolEmpty(t, spoolDir, 2*time.Minute)
		replayTime := time.Since(begin)
		if leftFiles > 0 && !strings.Contains(p.gw.stderr.String(), "replayed spooled traces") {
			t.Fatalf("the restarted gateway did not log its replay:\n%s", p.gw.stderr.String())
		}
		all := traces(t, st, "acme")
		byRequest := map[string]int{}
		for _, tr := range all {
			byRequest[tr.RequestID]++
		}
		for _, sp := range spooled {
			if _, ok := all[sp.ID]; !ok || byRequest[sp.RequestID] != 1 {
				t.Errorf("spooled trace %s (request %s): in store %v, traces of its request %d", sp.ID, sp.RequestID, ok, byRequest[sp.RequestID])
			}
		}
		f := checkCrash(t, st, reqs, syncMode, kill)
		t.Logf("store down: %s; spooled %d traces in %d files; second SIGKILL during replay left %d traces in %d files; "+
			"final replay of them took %v (from process start to empty spool)",
			f, len(spooled), files, len(left), leftFiles, replayTime.Round(time.Millisecond))
	}

	if code := p.gw.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d after SIGTERM\n%s", code, p.gw.stderr.String())
	}
	total := len(traces(t, st, "acme")) + len(traces(t, st, "narrow"))
	out := mustRun(t, p.dir, p.env, "verify")
	if want := fmt.Sprintf("OK: %d chains, %d traces verified", serves, total); !strings.Contains(out, want) {
		t.Fatalf("verify: want %q\n%s", want, out)
	}
}

// crashReq is one request of the crash load and what its client got.
type crashReq struct {
	requestID string // X-Request-Id; empty when no response arrived
	full      bool   // the client received the response in full
	done      time.Time
}

// crashLoad sends requests from several goroutines until halted: plain and
// streamed completions back to back, and 2 s streams always in flight.
type crashLoad struct {
	transport *http.Transport
	stop      chan struct{}
	wg        sync.WaitGroup
	mu        sync.Mutex
	reqs      []crashReq
}

func startCrashLoad(url, key string) *crashLoad {
	l := &crashLoad{transport: &http.Transport{MaxIdleConnsPerHost: 16}, stop: make(chan struct{})}
	client := &http.Client{Transport: l.transport, Timeout: 15 * time.Second}
	work := func(w int, model string) {
		defer l.wg.Done()
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			r, sent := crashRequest(client, url, key, model, model == "slowstream" || (i+w)%2 == 0)
			if !sent {
				return // the gateway is gone
			}
			l.mu.Lock()
			l.reqs = append(l.reqs, r)
			l.mu.Unlock()
		}
	}
	for w := 0; w < 4; w++ {
		l.wg.Add(1)
		go work(w, "gpt-ok")
	}
	for w := 0; w < 2; w++ {
		l.wg.Add(1)
		go work(w, "slowstream")
	}
	return l
}

// waitFull waits until n responses have been received in full.
func (l *crashLoad) waitFull(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a guard against hanging, not a wait
	for {
		l.mu.Lock()
		full := 0
		for _, r := range l.reqs {
			if r.full {
				full++
			}
		}
		l.mu.Unlock()
		if full >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d responses received in full after 2 minutes of load, want %d", full, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// halt stops the load and returns every request it sent.
func (l *crashLoad) halt() []crashReq {
	close(l.stop)
	l.wg.Wait()
	l.transport.CloseIdleConnections()
	return l.reqs
}

// crashRequest sends one completion; the response is received in full when
// a plain body was read to its end and is JSON, or a stream reached
// "data: [DONE]" and then the end of its body. sent is false when no
// connection could be made (the gateway was already dead).
func crashRequest(client *http.Client, url, key, model string, stream bool) (r crashReq, sent bool) {
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(chatBody(model, stream)))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return r, false
	}
	if err != nil {
		return r, true
	}
	defer resp.Body.Close()
	r.requestID = resp.Header.Get("X-Request-Id")
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		return r, true
	}
	if stream {
		r.full = bytes.Contains(body, []byte("data: [DONE]\n"))
	} else {
		r.full = json.Valid(body)
	}
	if r.full {
		r.done = time.Now()
	}
	return r, true
}

// crashFigures are what one crash measured.
type crashFigures struct {
	requests, responded, full, traces, lost, duplicated int
	lostBefore                                          int           // lost, of responses complete before the last queue depth sample
	oldestLost                                          time.Duration // how long before the kill the oldest lost response was complete
	kill                                                crashKill
}

func (f crashFigures) String() string {
	return fmt.Sprintf("%d requests, %d answered, %d received in full, %d traces of them, %d fully received without a trace "+
		"(oldest %v before the kill; %d complete before the queue depth read %v before the kill, which was %d), %d duplicated",
		f.requests, f.responded, f.full, f.traces, f.lost, f.oldestLost.Round(time.Millisecond),
		f.lostBefore, f.kill.at.Sub(f.kill.sampled).Round(time.Millisecond), f.kill.depth, f.duplicated)
}

// checkCrash counts the traces of each request (by request id) after a
// crash: none may have two; in sync durability every response received in
// full has one. In async durability the traces a crash can lose are those
// the recorder still held in memory, admitted and not yet durable (the
// loom_trace_queue_depth gauge; normally the last batch interval's): of
// the responses complete when the gauge was read just before the kill, at
// most that many may have lost their trace.
func checkCrash(t *testing.T, st store.Store, reqs []crashReq, sync bool, kill crashKill) crashFigures {
	t.Helper()
	byRequest := map[string][]store.Trace{}
	for _, tr := range traces(t, st, "acme") {
		byRequest[tr.RequestID] = append(byRequest[tr.RequestID], tr)
	}
	f := crashFigures{requests: len(reqs), kill: kill}
	for id, trs := range byRequest {
		if len(trs) > 1 {
			f.duplicated++
			t.Errorf("request %s has %d traces", id, len(trs))
		}
	}
	for _, r := range reqs {
		if r.requestID != "" {
			f.responded++
		}
		if !r.full {
			continue
		}
		f.full++
		trs := byRequest[r.requestID]
		if len(trs) == 0 {
			f.lost++
			f.oldestLost = max(f.oldestLost, kill.at.Sub(r.done))
			if r.done.Before(kill.sampled) {
				f.lostBefore++
			}
			if sync {
				t.Errorf("sync durability: request %s was received in full but has no trace", r.requestID)
			}
			continue
		}
		f.traces++
		if trs[0].Status != trace.StatusOK {
			t.Errorf("request %s received in full has a trace with status %s", r.requestID, trs[0].Status)
		}
	}
	if int64(f.lostBefore) > kill.depth {
		t.Errorf("async durability: %d responses complete before the queue depth was read lost their trace, but only %d traces were in memory",
			f.lostBefore, kill.depth)
	}
	if f.full == 0 || f.full == f.requests {
		t.Fatalf("the load did not run as meant: %s", f)
	}
	return f
}

// crashKill is a SIGKILL under load: when, and the traces the recorder held
// in memory (admitted, not yet durable) when last read before it.
type crashKill struct {
	at, sampled time.Time
	depth       int64
}

// killUnderLoad reads the recorder's queue depth, then SIGKILLs the gateway.
func killUnderLoad(t *testing.T, gw *gateway) crashKill {
	t.Helper()
	k := crashKill{sampled: time.Now()}
	k.depth = int64(gaugeValue(t, gw, "loom_trace_queue_depth"))
	k.at = killGateway(t, gw)
	return k
}

// killGateway SIGKILLs a running `loom serve` and returns when the signal was sent.
func killGateway(t *testing.T, gw *gateway) time.Time {
	t.Helper()
	kill := time.Now()
	if code := gw.stop(t, syscall.SIGKILL); code != -1 {
		t.Fatalf("loom serve exited with %d, not killed", code)
	}
	return kill
}

// waitLog waits until the gateway's log holds s.
func waitLog(t *testing.T, gw *gateway, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(gw.stderr.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log after %v:\n%s", s, timeout, gw.stderr.String())
		}
		time.Sleep(time.Millisecond)
	}
}

var spoolName = regexp.MustCompile(`^[0-9]{20}\.spool$`)

// spoolFiles counts the complete spool files waiting in dir.
func spoolFiles(t *testing.T, dir string) int {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(dir, "*.spool"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, m := range matches {
		if spoolName.MatchString(filepath.Base(m)) {
			n++
		}
	}
	return n
}

// waitSpoolFiles waits until at least n complete spool files wait in dir.
func waitSpoolFiles(t *testing.T, dir string, n int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute) // a guard against hanging, not a wait
	for got := spoolFiles(t, dir); got < n; got = spoolFiles(t, dir) {
		if time.Now().After(deadline) {
			t.Fatalf("%d spool files after 2 minutes, want %d", got, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSpoolEmpty waits until every spooled batch has been replayed.
func waitSpoolEmpty(t *testing.T, dir string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for n := spoolFiles(t, dir); n > 0; n = spoolFiles(t, dir) {
		if time.Now().After(deadline) {
			t.Fatalf("%d spool files still waiting after %v", n, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
