package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/store"
)

// The soak's size. `make test` runs the short default; `make soak` runs
// -soak.requests=100000 -soak.outage=30s.
var (
	soakRequests = flag.Int("soak.requests", 1500, "TestSoak: requests to send")
	soakOutage   = flag.Duration("soak.outage", 3*time.Second, "TestSoak: how long PostgreSQL is stopped mid-run")
	soakWorkers  = flag.Int("soak.workers", 32, "TestSoak: concurrent clients")
	soakKills    = flag.Int("soak.kills", 0, "TestSoak: plugin SIGKILLs spread over the run (0: one per 20,000 requests, at least one)")
	soakSeed     = flag.Uint64("soak.seed", 0, "TestSoak: random seed (0: from the clock; the seed is logged)")
)

// soakKind is one sort of soak request: how often it is sent, how the
// client behaves, and which trace statuses it may end in. Any request may
// also end in plugin_failure when it was in flight during a plugin SIGKILL.
type soakKind struct {
	name    string
	weight  int
	model   string
	stream  bool
	client  string // "full" reads the whole answer, "cut" stops at a random byte, "leave" gives up before the answer
	allowed []string
}

func soakKinds() []soakKind {
	return []soakKind{
		// 70 % streamed.
		{"stream", 55, "soak-ok", true, "full", []string{"ok"}},
		{"stream, client leaves at a random byte", 8, "soak-long", true, "cut", []string{"client_disconnect", "ok"}},
		{"stream, upstream resets the connection mid-stream", 5, "soak-reset", true, "full", []string{"stream_failure"}},
		{"stream, upstream 5xx", 2, "soak-5xx", true, "full", []string{"upstream_error"}},
		{"non-stream", 20, "soak-ok", false, "full", []string{"ok"}},
		{"non-stream, upstream 5xx", 4, "soak-5xx", false, "full", []string{"upstream_error"}},
		{"upstream slower than the timeout", 3, "timeout/soak-slow", false, "full", []string{"upstream_timeout"}},
		{"client leaves before the answer", 3, "soak-slow", false, "leave", []string{"client_disconnect"}},
	}
}

// soakUpstream is the mocked LLM provider of the soak. It keeps no per-request
// state but the request id Loom gave each prompt nonce (for clients that
// leave before they see Loom's x-request-id).
type soakUpstream struct {
	*httptest.Server
	ids sync.Map // nonce → Loom request id
}

func newSoakUpstream(t *testing.T) *soakUpstream {
	u := &soakUpstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.Close)
	return u
}

func (u *soakUpstream) serve(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Model    string `json:"model"`
		Stream   bool   `json:"stream"`
		Messages []struct {
			Content string `json:"content"`
		} `json:"messages"`
	}
	raw, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(raw, &req); err != nil || len(req.Messages) == 0 {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	u.ids.Store(req.Messages[0].Content, r.Header.Get("X-Client-Request-Id"))
	switch req.Model {
	case "soak-5xx":
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadGateway)
		io.WriteString(w, `{"error":{"message":"upstream overloaded","type":"server_error","param":null,"code":null}}`)
		return
	case "soak-slow":
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
			return
		}
	}
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"chatcmpl-soak","object":"chat.completion","created":1700000000,"model":%q,`+
			`"choices":[{"index":0,"message":{"role":"assistant","content":"soaked"},"finish_reason":"stop"}],`+
			`"usage":{"prompt_tokens":12,"completion_tokens":2,"total_tokens":14}}`, req.Model)
		return
	}
	words, gap := 8, time.Millisecond
	if req.Model == "soak-long" {
		words, gap = 30, 2*time.Millisecond
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	for i, ev := range streamEvents(req.Model, false, words) {
		if req.Model == "soak-reset" && i == 3 {
			rc.Flush()
			if conn, _, err := rc.Hijack(); err == nil {
				if tc, ok := conn.(*net.TCPConn); ok {
					tc.SetLinger(0) // close with a TCP reset
				}
				conn.Close()
			}
			return
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", ev); err != nil {
			return
		}
		rc.Flush()
		select {
		case <-time.After(gap):
		case <-r.Context().Done():
			return
		}
	}
}

// soakOutcome is what one soak client saw.
type soakOutcome struct {
	kind      int
	nonce     string
	requestID string // Loom's x-request-id, if the client got that far
	status    int    // HTTP status, 0 if none
	refused   bool   // 503 trace_capacity_exhausted: Loom did not accept the request
	err       string // transport error a "full" client must never see
}

// TestSoak sends mixed traffic with random faults through bin/loom on
// PostgreSQL — clients leaving at a random byte, upstream 5xx and resets
// mid-stream, an upstream slower than the timeout, plugin SIGKILLs and
// PostgreSQL stopped — and then checks that every accepted request has
// exactly one trace with a status its outcome allows, that `loom verify`
// passes, and that goroutines and memory came back near their baseline.
func TestSoak(t *testing.T) {
	n, workers := *soakRequests, *soakWorkers
	kills := *soakKills
	if kills == 0 {
		kills = max(1, n/20000)
	}
	seed := *soakSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("soak: %d requests, %d clients, %d plugin kills, PostgreSQL stopped for %v, seed %d", n, workers, kills, *soakOutage, seed)

	pg := testpg.NewCluster(t)
	up := newSoakUpstream(t)
	// At log level info, not startProxy's debug.
	p := startProxyTo(t, up.URL, "LOOM_LOG_LEVEL=info", "LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN="+pg.DSN())
	gw, dir, env, key := p.gw, p.dir, p.env, p.key
	pid := gw.cmd.Process.Pid

	transport := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: 0, IdleConnTimeout: 30 * time.Second}
	client := &http.Client{Transport: transport}
	kinds := soakKinds()
	var wheel []int // kind index by weight
	for i, k := range kinds {
		for j := 0; j < k.weight; j++ {
			wheel = append(wheel, i)
		}
	}

	send := func(rng *rand.Rand, i int) soakOutcome {
		o := soakOutcome{kind: wheel[rng.IntN(len(wheel))], nonce: fmt.Sprintf("soak %d %x", i, rng.Uint64())}
		k := kinds[o.kind]
		body := fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":%q}]}`, k.model, k.stream, o.nonce)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if k.client == "leave" {
			ctx, cancel = context.WithTimeout(ctx, time.Duration(50+rng.IntN(400))*time.Millisecond)
			defer cancel()
		}
		req, _ := http.NewRequestWithContext(ctx, "POST", gw.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			if k.client != "leave" {
				o.err = err.Error()
			}
			return o
		}
		defer resp.Body.Close()
		o.requestID, o.status = resp.Header.Get("X-Request-Id"), resp.StatusCode
		if k.client == "cut" {
			// Leave at a random byte of a stream about 6 KB long.
			io.CopyN(io.Discard, resp.Body, int64(rng.IntN(6000)))
			return o
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil && k.client == "full" && k.model != "soak-reset" {
			o.err = err.Error()
		}
		o.refused = resp.StatusCode == http.StatusServiceUnavailable && strings.Contains(string(b), "trace_capacity_exhausted")
		return o
	}

	// Warm up, then take the baseline.
	warm := rand.New(rand.NewPCG(seed, 0))
	for i := 0; i < 100; i++ {
		send(warm, -i)
	}
	base := soakProbe(t, gw, pid, transport)
	t.Logf("baseline: %d goroutines in loom, %.1f MiB RSS (loom %.1f + plugins %.1f)", base.goroutines, base.rssMiB(), base.loomMiB, base.pluginMiB)

	// Faults on a schedule: PostgreSQL stopped at 20 % of the requests,
	// plugin kills spread between 10 % and 90 %.
	var sent atomic.Int64
	var faults sync.WaitGroup
	var outageDone atomic.Bool
	faults.Add(1)
	go func() {
		defer faults.Done()
		for sent.Load() < int64(n/5) {
			time.Sleep(5 * time.Millisecond)
		}
		pg.Stop(t)
		t.Logf("PostgreSQL stopped after %d requests", sent.Load())
		time.Sleep(*soakOutage)
		pg.Start(t)
		outageDone.Store(true)
		t.Logf("PostgreSQL started again after %d requests", sent.Load())
	}()
	var killed atomic.Int64
	faults.Add(1)
	go func() {
		defer faults.Done()
		for k := 0; k < kills; k++ {
			at := int64(n/10 + (k+1)*(n*8/10)/(kills+1))
			for sent.Load() < at {
				time.Sleep(2 * time.Millisecond)
			}
			for _, p := range childPids(t, pid, "loom-provider-openai") {
				if syscall.Kill(p, syscall.SIGKILL) == nil {
					killed.Add(1)
				}
			}
		}
	}()

	start := time.Now()
	outcomes := make([]soakOutcome, n)
	jobs := make(chan int, workers)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)+1))
			for i := range jobs {
				outcomes[i] = send(rng, i)
				sent.Add(1)
			}
		}(w)
	}
	for i := 0; i < n; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	faults.Wait()
	elapsed := time.Since(start)
	if !outageDone.Load() {
		t.Fatal("the PostgreSQL outage did not happen")
	}

	// Which request ids were accepted, and which kind each is.
	accepted := 0
	kindOf := map[string]int{}
	unknown := map[int]int{} // kind → accepted requests whose id neither client nor upstream saw
	var transportErrors []string
	for _, o := range outcomes {
		if o.err != "" {
			transportErrors = append(transportErrors, kinds[o.kind].name+": "+o.err)
		}
		if o.refused {
			continue
		}
		accepted++
		id := o.requestID
		if id == "" {
			if v, ok := up.ids.Load(o.nonce); ok {
				id = v.(string)
			}
		}
		if id == "" {
			unknown[o.kind]++
			continue
		}
		kindOf[id] = o.kind
	}
	if len(transportErrors) > 0 {
		t.Errorf("%d clients that read whole answers got transport errors, e.g. %q", len(transportErrors), transportErrors[0])
	}

	st := openStoreAt(t, dir, env)
	tenant := tenantID(t, st, "acme")
	wantTraces := int64(accepted + 100) // the warm-up requests are traced too
	deadline := time.Now().Add(2*time.Minute + *soakOutage)
	var got int64
	for time.Now().Before(deadline) {
		if got, _ = st.CountTraces(context.Background(), tenant); got >= wantTraces {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // anything extra would show up now
	after := soakProbe(t, gw, pid, transport)

	// Every trace, by request id.
	perRequest := map[string]int{}
	statusOf := map[string]string{}
	var cursor *store.TraceCursor
	for {
		page, err := st.ListTraces(context.Background(), store.TenantScope(tenant), store.TraceFilter{}, cursor, 5000)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range page {
			perRequest[s.RequestID]++
			statusOf[s.RequestID] = s.Status
		}
		if len(page) < 5000 {
			break
		}
		last := page[len(page)-1]
		cursor = &store.TraceCursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}

	missing, duplicated, orphans := 0, 0, 0
	byKind := make([]map[string]int, len(kinds))
	for i := range byKind {
		byKind[i] = map[string]int{}
	}
	var wrong []string
	for id, c := range perRequest {
		if c > 1 {
			duplicated += c - 1
		}
		k, ok := kindOf[id]
		if !ok {
			orphans++ // a warm-up request, or one whose id the client never saw
			continue
		}
		s := statusOf[id]
		byKind[k][s]++
		if s != "plugin_failure" && !slices.Contains(kinds[k].allowed, s) && len(wrong) < 10 {
			wrong = append(wrong, fmt.Sprintf("%s: %s (request %s)", kinds[k].name, s, id))
		}
	}
	for id := range kindOf {
		if perRequest[id] == 0 {
			missing++
		}
	}
	unknownTotal := 0
	for _, c := range unknown {
		unknownTotal += c
	}
	// Traces the clients could not name must be exactly the warm-up plus
	// the accepted requests whose id nobody saw.
	if orphans != 100+unknownTotal {
		t.Errorf("%d traces of requests no client sent, want %d (100 warm-up + %d unnamed)", orphans, 100+unknownTotal, unknownTotal)
	}

	for i, k := range kinds {
		t.Logf("  %-52s %v", k.name, soakCounts(byKind[i]))
	}
	t.Logf("soak: %d requests in %v (%.0f/s), %d accepted, %d refused; %d traces: %d missing, %d duplicated; %d plugin processes killed",
		n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds(), accepted, n-accepted, len(perRequest)-100, missing, duplicated, killed.Load())
	t.Logf("after: %d goroutines in loom (baseline %d), %.1f MiB RSS (loom %.1f + plugins %.1f; baseline %.1f)",
		after.goroutines, base.goroutines, after.rssMiB(), after.loomMiB, after.pluginMiB, base.rssMiB())
	if missing != 0 || duplicated != 0 || int64(len(perRequest)) != wantTraces || got != wantTraces {
		t.Errorf("traces: %d distinct requests, %d counted, want %d; %d missing, %d duplicated", len(perRequest), got, wantTraces, missing, duplicated)
	}
	if len(wrong) > 0 {
		t.Errorf("traces with a status their outcome does not allow:\n%s", strings.Join(wrong, "\n"))
	}
	if killed.Load() == 0 {
		t.Error("no plugin process was killed: the fault was not exercised")
	}
	if !strings.Contains(gw.stderr.String(), "replayed spooled traces") {
		t.Error("nothing was spooled and replayed: the PostgreSQL outage was not exercised")
	}
	// Goroutines: the same handful of background loops, plus a few for the
	// plugin connections restarted meanwhile. Memory: Go keeps freed pages
	// for a while, so allow the heap's growth under load but not a leak
	// proportional to the requests.
	if after.goroutines > base.goroutines+10 {
		t.Errorf("loom has %d goroutines after the soak, %d before", after.goroutines, base.goroutines)
	}
	if after.rssMiB() > base.rssMiB()+96 {
		t.Errorf("RSS %.1f MiB after the soak, %.1f MiB before", after.rssMiB(), base.rssMiB())
	}

	if code := gw.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("loom exited %d", code)
	}
	out := mustRun(t, dir, env, "verify")
	if !strings.Contains(out, "OK:") {
		t.Fatalf("verify: %s", out)
	}
	t.Logf("verify: %s", strings.TrimSpace(lastLine(out)))
}

// soakSample is loom's goroutines and the memory of loom and its plugins.
type soakSample struct {
	goroutines         int
	loomMiB, pluginMiB float64
}

func (s soakSample) rssMiB() float64 { return s.loomMiB + s.pluginMiB }

// soakProbe lets idle connections go, waits for loom to settle, and samples it.
func soakProbe(t *testing.T, gw *gateway, pid int, tr *http.Transport) soakSample {
	t.Helper()
	tr.CloseIdleConnections()
	var s soakSample
	for i := 0; i < 20; i++ { // settle: up to 2 s for closed connections' goroutines to end
		time.Sleep(100 * time.Millisecond)
		g := gaugeValue(t, gw, "go_goroutines")
		if i > 0 && int(g) == s.goroutines {
			break
		}
		s.goroutines = int(g)
	}
	s.loomMiB = float64(soakRSSKiB(pid)) / 1024
	for _, p := range childPids(t, pid, "loom-provider-") {
		s.pluginMiB += float64(soakRSSKiB(p)) / 1024
	}
	return s
}

// soakRSSKiB is a process's resident set size from /proc.
func soakRSSKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}

func soakCounts(m map[string]int) string { return strings.Join(sorted(m), " ") }
