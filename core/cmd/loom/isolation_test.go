package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loom-runtime/loom/core/internal/testbin"
	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/schema"
)

// Five tenants send 10,000 requests at once — streams and plain answers,
// through three providers (two plugin processes of the openai plugin and
// one of azure) — to an upstream that answers none of them until all have
// arrived (loom-mock -hold), so that all are in flight together however
// slow the machine (the test checks it at the client and in Loom while the
// upstream holds them). Afterwards each request has exactly one trace, stored
// under the tenant whose key sent it and holding that request's body and
// answer only; and every way a tenant can read — every dashboard endpoint,
// with or without query-string tricks, and on PostgreSQL plain SQL as the
// least-privilege role Loom serves as — shows it its own traces and nothing
// of the others'.
//
// The upstream is loom-mock in a process of its own (the file descriptors
// of 10,000 connections on each side would not fit one process), run with
// -echo so that each answer carries its request's marker.
func TestTenantIsolationUnderLoad(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	for _, backendName := range []string{"postgres", "sqlite"} {
		t.Run(backendName, func(t *testing.T) { testIsolation(t, backendName, n) })
	}
}

var isoTenants = []string{"amber", "birch", "cedar", "dune", "ember"}

// isoModels: requested model → provider instance.
var isoModels = []struct{ model, provider string }{
	{"gpt-4o", "openai"},
	{"azure/gpt-4o", "azure"},
	{"alt/gpt-4o-mini", "alt"},
}

// isoConfig points three providers at the upstream. Its answers wait until
// every request has arrived, and 10,000 connections to it may meet a full
// accept queue: the calls are allowed as long as that can take on a busy
// machine (the default connect timeout is 10 s).
func isoConfig(pluginsDir, upstream string) string {
	return fmt.Sprintf(`
plugins_dir = %q
provider "openai" {
  settings {
    base_url        = "%[2]s/v1"
    connect_timeout = "2m"
    timeout         = "%[3]s"
  }
  env { api_key = "OPENAI_API_KEY" }
}
provider "alt" {
  plugin = "openai"
  settings {
    base_url        = "%[2]s/v1"
    connect_timeout = "2m"
    timeout         = "%[3]s"
  }
  env { api_key = "OPENAI_API_KEY" }
}
provider "azure" {
  settings {
    endpoint        = %[2]q
    connect_timeout = "2m"
    timeout         = "%[3]s"
  }
  env { api_key = "AZURE_OPENAI_API_KEY" }
}
tenant "default" {
  route {
    match    = "azure/*"
    provider = "azure"
  }
  route {
    match    = "alt/*"
    provider = "alt"
    model    = "*"
  }
  route {
    match    = "*"
    provider = "openai"
  }
}
`, pluginsDir, upstream, isoHoldTimeout+5*time.Minute)
}

// isoReq is one request of the load and what came of it.
type isoReq struct {
	tenant int
	key    string
	model  int
	stream bool
	marker string // "tenant=<name> n=<i> nonce=<hex>", the whole prompt
	body   string
	// Filled by the load.
	status    int
	requestID string
	answer    []byte
	err       error
}

// isoTenant is one tenant of the test and what it should see.
type isoTenant struct {
	name, id string
	keys     []string
	keyIDs   []string
	traces   map[string]int       // trace id → request index (from the store)
	created  map[string]time.Time // trace id → created_at (from the store)
}

const isoAdmin = "admin-token-isolation"

func testIsolation(t *testing.T, backendName string, n int) {
	start := time.Now()
	ctx := context.Background()
	dir := t.TempDir()
	var phases []string // how long each part took, for the summary line
	last := start
	lap := func(name string) {
		phases = append(phases, fmt.Sprintf("%s %v", name, time.Since(last).Round(100*time.Millisecond)))
		last = time.Now()
	}
	// The upstream, in a process of its own, holding every answer until
	// all n requests have arrived and the test releases them.
	mock := exec.Command(testbin.Mock(t), "-listen", "127.0.0.1:0", "-print-addr", "-echo",
		"-hold", strconv.Itoa(n), "-hold-release", "-hold-timeout", isoHoldTimeout.String(),
		"-chunks", "3", "-chunk-gap", "10ms")
	mockOut, err := mock.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	mockErr := &lockedBuffer{}
	mock.Stderr = mockErr
	if err := mock.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mock.Process.Kill(); mock.Wait() })
	line, err := bufio.NewReader(mockOut).ReadString('\n')
	addr, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
	if err != nil || !ok {
		t.Fatalf("loom-mock said %q (%v)\n%s", line, err, mockErr.String())
	}
	upstream := "http://" + addr

	writeFile(t, filepath.Join(dir, "loom.hcl"), isoConfig(filepath.Join(testbin.Dir(t), "plugins"), upstream))
	base := []string{"LOOM_MASTER_KEY=" + testMasterKey, "OPENAI_API_KEY=sk-upstream", "AZURE_OPENAI_API_KEY=az-upstream"}
	// cliEnv is what the CLI (and this test's store) use: on PostgreSQL the
	// superuser; serveEnv what `loom serve` uses: on PostgreSQL a role
	// with only the documented grants, so that row-level security binds it.
	var cliEnv, serveEnv []string
	var superDSN, appDSN string
	if backendName == "postgres" {
		superDSN = testpg.DSN(t)
		cliEnv = slices.Concat(base, []string{"LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN=" + superDSN})
		mustRun(t, dir, cliEnv, "migrate")
		appDSN = isoAppRole(t, superDSN)
		serveEnv = slices.Concat(base, []string{"LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN=" + appDSN})
	} else {
		cliEnv = slices.Concat(base, []string{"LOOM_STORE_DRIVER=sqlite", "LOOM_STORE_DSN=" + filepath.Join(dir, "loom.db")})
		serveEnv = cliEnv
	}

	// Tenants and two keys each, from the CLI.
	tenants := make([]*isoTenant, len(isoTenants))
	for i, name := range isoTenants {
		mustRun(t, dir, cliEnv, "tenant", "create", name)
		tenants[i] = &isoTenant{name: name, traces: map[string]int{}, created: map[string]time.Time{}}
		for k := 0; k < 2; k++ {
			tenants[i].keys = append(tenants[i].keys, lastLine(mustRun(t, dir, cliEnv, "key", "create", "--tenant", name)))
		}
	}
	st := openStoreAt(t, dir, cliEnv)
	for _, tn := range tenants {
		tn.id = tenantID(t, st, tn.name)
		keys, err := st.ListAPIKeys(ctx, tn.id)
		if err != nil || len(keys) != 2 {
			t.Fatalf("keys of %s: %d, %v", tn.name, len(keys), err)
		}
		for _, k := range keys {
			tn.keyIDs = append(tn.keyIDs, k.ID)
		}
	}

	gw := startServe(t, dir, slices.Concat(serveEnv, []string{"LOOM_TRACE_QUEUE_SIZE=" + strconv.Itoa(2*n),
		"LOOM_ADMIN_TOKEN=" + isoAdmin, "LOOM_LOG_LEVEL=warn"}))
	// The dashboard reads use up to 16 connections, kept alive.
	dashTransport := &http.Transport{MaxIdleConnsPerHost: 16}
	defer dashTransport.CloseIdleConnections()
	dash := &isoDash{url: gw.url, client: &http.Client{Transport: dashTransport, Timeout: time.Minute}}

	// A live tail per tenant, open before the first request.
	tails := make([]*isoTail, len(tenants))
	for i, tn := range tenants {
		tails[i] = dash.tail(t, tn.keys[1])
	}

	// The requests: every tenant sends every kind, through both keys and
	// all three ways of presenting a key.
	reqs := make([]*isoReq, n)
	for i := range reqs {
		tn := i % len(tenants)
		r := &isoReq{tenant: tn, model: i / len(tenants) % len(isoModels), stream: i/(len(tenants)*len(isoModels))%2 == 0,
			key: tenants[tn].keys[i/(len(tenants)*len(isoModels)*2)%2]}
		var nonce [8]byte
		rand.Read(nonce[:])
		r.marker = fmt.Sprintf("tenant=%s n=%d nonce=%s", tenants[tn].name, i, hex.EncodeToString(nonce[:]))
		r.body = fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":%q}]}`,
			isoModels[r.model].model, r.stream, r.marker)
		reqs[i] = r
	}

	lap("setup")
	load := isoLoad(t, gw.url, upstream, reqs)
	lap("load")
	for i, r := range reqs {
		if r.err != nil || r.status != 200 {
			t.Fatalf("request %d (%s): status %d, %v: %.300s\nloom: %.2000s\nloom-mock: %.2000s",
				i, r.marker, r.status, r.err, r.answer, gw.stderr.String(), mockErr.String())
		}
	}
	if load.early != "" {
		t.Fatalf("the upstream did not hold all %d requests at once: %s", n, load.early)
	}
	t.Logf("%d requests in flight at once after %v (held by the upstream: %d at the client, %d in Loom's trace queue), all answered %v later",
		n, load.gathered.Round(time.Millisecond), load.clientInFlight, load.loomInFlight, load.answered.Round(time.Millisecond))
	if load.clientInFlight != int64(n) || load.loomInFlight != int64(n) {
		t.Fatalf("while the upstream held all %d requests: %d in flight at the client, %d in Loom's trace queue; want %d each",
			n, load.clientInFlight, load.loomInFlight, n)
	}

	leaks := &isoLeaks{}
	leak := func(format string, args ...any) { t.Helper(); leaks.add(t, format, args...) }

	// What the client got: 200, its own marker back, nobody else's.
	byRequestID := map[string]int{}
	for i, r := range reqs {
		if _, dup := byRequestID[r.requestID]; dup || r.requestID == "" {
			t.Fatalf("request %d: x-request-id %q missing or not unique", i, r.requestID)
		}
		byRequestID[r.requestID] = i
		if strings.Count(string(r.answer), "tenant=") != 1 || !strings.Contains(string(r.answer), r.marker) {
			leak("request %d (%s) was answered with %.400s", i, r.marker, r.answer)
		}
		if r.stream && !bytes.HasSuffix(r.answer, []byte("data: [DONE]\n\n")) {
			t.Fatalf("stream %d did not end with [DONE]: %.400s", i, r.answer)
		}
	}

	// The store: exactly one trace per request, under the sender's tenant,
	// holding that request and the answer the client got.
	perTenant := n / len(tenants)
	// Traces are written in the background: wait for them (the deadline
	// only keeps a broken recorder from hanging the test).
	for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(50 * time.Millisecond) {
		var stored int64
		for _, tn := range tenants {
			c, err := st.CountTraces(ctx, tn.id)
			if err != nil {
				t.Fatal(err)
			}
			stored += c
		}
		if stored >= int64(n) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d traces stored for %d requests", stored, n)
		}
	}
	lap("traces stored")
	all := isoAllTraces(t, st)
	if len(all) != n {
		t.Fatalf("%d traces for %d requests", len(all), n)
	}
	master, _ := base64.StdEncoding.DecodeString(testMasterKey)
	kr, err := seal.NewKeyring(master, st)
	if err != nil {
		t.Fatal(err)
	}
	traced := make([]int, n) // traces per request
	tenantOfID := map[string]int{}
	for i, tn := range tenants {
		tenantOfID[tn.id] = i
	}
	for _, tr := range all {
		i, ok := byRequestID[tr.RequestID]
		if !ok {
			t.Fatalf("trace %s has request id %q, which no request was answered with", tr.ID, tr.RequestID)
		}
		r := reqs[i]
		if traced[i]++; traced[i] > 1 {
			t.Fatalf("request %d has %d traces", i, traced[i])
		}
		if got, ok := tenantOfID[tr.TenantID]; !ok || got != r.tenant {
			leak("trace %s of request %d (%s) is stored under tenant %s", tr.ID, i, r.marker, tr.TenantID)
			continue
		}
		tenants[r.tenant].traces[tr.ID] = i
		tenants[r.tenant].created[tr.ID] = tr.CreatedAt
		if tr.Status != "ok" || tr.HTTPStatus != 200 || tr.Stream != r.stream || tr.ProviderInstance != isoModels[r.model].provider {
			t.Fatalf("trace of request %d: status %s %d, stream %v, provider %s", i, tr.Status, tr.HTTPStatus, tr.Stream, tr.ProviderInstance)
		}
		open := func(field string, s store.Sealed) string {
			b, err := kr.Open(ctx, tr.TenantID, tr.KeyVersion, tr.ID, field, s)
			if err != nil {
				t.Fatalf("trace %s %s: %v", tr.ID, field, err)
			}
			return string(b)
		}
		if got := open(seal.FieldRequest, tr.Request); got != r.body {
			leak("trace of request %d (%s) holds the request %.300s", i, r.marker, got)
		}
		if got := open(seal.FieldResponse, tr.Response); got != string(r.answer) {
			leak("trace of request %d (%s) holds the response %.300s\nthe client got %.300s", i, r.marker, got, r.answer)
		}
		if r.stream {
			if got := open(seal.FieldMessage, tr.Message); strings.Count(got, "tenant=") != 1 || !strings.Contains(got, r.marker) {
				leak("trace of stream %d (%s) holds the message %.300s", i, r.marker, got)
			}
		}
	}
	for _, tn := range tenants {
		if len(tn.traces) != perTenant {
			t.Fatalf("tenant %s has %d traces, sent %d requests", tn.name, len(tn.traces), perTenant)
		}
	}

	// The dashboard, through every endpoint.
	lap("store checked")
	isoDashboardChecks(t, leaks, dash, tenants, tails, reqs)
	lap("dashboard checked")

	// SQL, as the role Loom serves as.
	if backendName == "postgres" {
		isoSQLChecks(t, leaks, appDSN, superDSN, tenants, reqs)
		lap("SQL checked")
	}

	if code := gw.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("loom serve exited %d\n%s", code, gw.stderr.String())
	}
	if out := mustRun(t, dir, cliEnv, "verify"); !strings.Contains(out, fmt.Sprintf("%d traces verified", n)) {
		t.Fatalf("verify: %s", out)
	}
	lap("verified")
	if n := leaks.count(); n != 0 {
		t.Fatalf("%d leaks", n)
	}
	t.Logf("isolation (%s): %d requests, %d tenants, concurrency %d, %d traces, leaks: 0, load %v, total %v (%s)",
		backendName, n, len(tenants), load.loomInFlight, len(all), (load.gathered + load.answered).Round(time.Millisecond),
		time.Since(start).Round(100*time.Millisecond), strings.Join(phases, ", "))
}

// isoLeaks counts what a tenant saw of another tenant's data.
type isoLeaks struct {
	mu sync.Mutex
	n  int
}

// add counts a leak and reports it (the first 20 of them).
func (l *isoLeaks) add(t *testing.T, format string, args ...any) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	if l.n <= 20 {
		t.Errorf("LEAK: "+format, args...)
	}
}

func (l *isoLeaks) count() int { l.mu.Lock(); defer l.mu.Unlock(); return l.n }

// isoAppRole creates a login role with exactly the grants that
// 0003_dashboard.sql documents for the serving role (neither superuser nor
// BYPASSRLS) and returns the DSN connecting as it.
func isoAppRole(t *testing.T, superDSN string) string {
	t.Helper()
	ctx := context.Background()
	ms, err := schema.Migrations(schema.Postgres)
	if err != nil {
		t.Fatal(err)
	}
	var grants []string
	re := regexp.MustCompile(`(?m)^--\s+(GRANT [^;]+ TO loom_app;)\s*$`)
	for _, m := range ms {
		for _, g := range re.FindAllStringSubmatch(m.SQL, -1) {
			grants = append(grants, g[1])
		}
	}
	if len(grants) < 6 {
		t.Fatalf("found %d documented GRANTs", len(grants))
	}
	var suffix [4]byte
	rand.Read(suffix[:])
	role := "loom_iso_" + hex.EncodeToString(suffix[:])
	conn, err := pgx.Connect(ctx, superDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE ROLE `+role+` LOGIN NOSUPERUSER NOBYPASSRLS`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, superDSN)
		if err != nil {
			t.Logf("drop role %s: %v", role, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, `DROP OWNED BY `+role+`; DROP ROLE `+role); err != nil {
			t.Logf("drop role %s: %v", role, err)
		}
	})
	for _, g := range grants {
		if _, err := conn.Exec(ctx, strings.ReplaceAll(g, "loom_app", role)); err != nil {
			t.Fatalf("%s: %v", g, err)
		}
	}
	u, err := url.Parse(superDSN)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	return u.String()
}

// isoAllTraces reads every trace of every tenant, walking the hash chains
// (which name no tenant).
func isoAllTraces(t *testing.T, st store.Store) []store.Trace {
	t.Helper()
	ctx := context.Background()
	chains, err := st.Chains(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var all []store.Trace
	for _, c := range chains {
		var after int64
		for {
			page, err := st.ChainTraces(ctx, c.ID, after, 1000)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			all = append(all, page...)
			after = page[len(page)-1].ChainSeq
		}
	}
	return all
}

// isoHoldTimeout bounds how long loom-mock holds the requests waiting for
// the rest (then it answers them 503): only a broken test gets near it.
const isoHoldTimeout = 10 * time.Minute

type isoLoadResult struct {
	gathered       time.Duration // from the first request sent to all held by the upstream
	answered       time.Duration // from the release to the last answer read
	clientInFlight int64         // requests written and not answered, while all were held
	loomInFlight   int64         // loom_trace_queue_depth, while all were held
	early          string        // why the requests were not all held at once, if they were not
}

// isoLoad sends every request at once, each on its own connection, to
// Loom, whose upstream (loom-mock -hold len(reqs) -hold-release at
// mockURL) answers none of them until all have arrived. Once all have,
// it counts the requests in flight at the client (written and not yet
// answered) and in Loom (its trace queue depth), then releases the
// answers and reads them.
func isoLoad(t *testing.T, gwURL, mockURL string, reqs []*isoReq) isoLoadResult {
	t.Helper()
	n := len(reqs)
	// One connection per request (HTTP/1.1): none is answered, so none is
	// free for another request, before all have been sent. Dials are
	// bounded so that the gateway's accept queue (somaxconn) is less
	// likely to overflow into SYN retries, and may take as long as the
	// kernel's retries do.
	dials := make(chan struct{}, 256)
	dialer := &net.Dialer{Timeout: 2 * time.Minute}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			dials <- struct{}{}
			defer func() { <-dials }()
			return dialer.DialContext(ctx, network, addr)
		},
		MaxIdleConns:        n,
		MaxIdleConnsPerHost: n,
		DisableCompression:  true,
	}
	defer tr.CloseIdleConnections()
	// Longer than the upstream holds anything: a request that is not
	// answered ends with the upstream's 503, which says why.
	client := &http.Client{Transport: tr, Timeout: isoHoldTimeout + 5*time.Minute}

	var written, answered atomic.Int64
	allWritten := make(chan struct{})
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) {
		if written.Add(1) == int64(n) {
			close(allWritten)
		}
	}}
	var released atomic.Bool
	early := make(chan string, 1) // the first answer before the release

	headers := []string{"Authorization", "X-Api-Key", "Api-Key"}
	began := time.Now()
	var wg sync.WaitGroup
	for i, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				answered.Add(1)
				if !released.Load() {
					select {
					case early <- fmt.Sprintf("request %d (%s) ended before the release: status %d, %v: %.300s", i, r.marker, r.status, r.err, r.answer):
					default:
					}
				}
			}()
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace),
				"POST", gwURL+"/v1/chat/completions", strings.NewReader(r.body))
			req.Header.Set("Content-Type", "application/json")
			switch h := headers[i/7%len(headers)]; h {
			case "Authorization":
				req.Header.Set(h, "Bearer "+r.key)
			default:
				req.Header.Set(h, r.key)
			}
			resp, err := client.Do(req)
			if err != nil {
				r.err = err
				return
			}
			r.status, r.requestID = resp.StatusCode, resp.Header.Get("X-Request-Id")
			r.answer, r.err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}()
	}

	// Wait until the upstream holds all n requests (it answers this GET
	// then, or with a 503 when its hold times out), or one ends early.
	held := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("%s/mock/hold?arrived=%d", mockURL, n))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				err = fmt.Errorf("loom-mock: %d %s", resp.StatusCode, b)
			}
		}
		held <- err
	}()
	var res isoLoadResult
	select {
	case err := <-held:
		if err != nil {
			res.early = err.Error()
			break
		}
		res.gathered = time.Since(began)
		// Every request reached the upstream, so every one was written:
		// only the client's bookkeeping of the last writes may lag.
		<-allWritten
		res.clientInFlight = written.Load() - answered.Load()
		req, _ := http.NewRequest("GET", gwURL+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+isoAdmin)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			res.early = fmt.Sprintf("GET /metrics: %v", err)
			break
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		v, ok := metricValue(string(b), "loom_trace_queue_depth")
		if !ok {
			res.early = fmt.Sprintf("no loom_trace_queue_depth in /metrics: %.500s", b)
			break
		}
		res.loomInFlight = int64(v)
	case why := <-early:
		res.early = why
	}
	// Release the answers (also after a failure, so that every request
	// ends) and read them.
	released.Store(true)
	release := time.Now()
	resp, err := http.Post(mockURL+"/mock/release", "", nil)
	if err != nil {
		t.Fatalf("release the upstream's answers: %v", err)
	}
	resp.Body.Close()
	wg.Wait()
	res.answered = time.Since(release)
	return res
}

// isoDash is a dashboard API client.
type isoDash struct {
	url    string
	client *http.Client
}

// fetch sends a request and reads its answer; safe in any goroutine.
func (d *isoDash) fetch(method, path, key, body string) (int, []byte, error) {
	req, err := http.NewRequest(method, d.url+path, strings.NewReader(body))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := d.client.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	return resp.StatusCode, b, nil
}

// do is fetch for the test's own goroutine: a failed request ends the test.
func (d *isoDash) do(t *testing.T, method, path, key, body string) (int, []byte) {
	t.Helper()
	code, b, err := d.fetch(method, path, key, body)
	if err != nil {
		t.Fatal(err)
	}
	return code, b
}

func (d *isoDash) getJSON(t *testing.T, path, key string, v any) {
	t.Helper()
	code, body := d.do(t, "GET", path, key, "")
	if code != 200 {
		t.Fatalf("GET %s: %d %s", path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v: %.300s", path, err, body)
	}
}

type isoSummary struct {
	ID        string `json:"id"`
	Tenant    string `json:"tenant"`
	RequestID string `json:"request_id"`
	Model     string `json:"model"`
}

// list follows the cursor of GET /api/v1/traces?query to its end.
func (d *isoDash) list(t *testing.T, query, key string) []isoSummary {
	t.Helper()
	var out []isoSummary
	cursor := ""
	for {
		var page struct {
			Data       []isoSummary `json:"data"`
			NextCursor *string      `json:"next_cursor"`
		}
		path := "/api/v1/traces?limit=200" + query
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		d.getJSON(t, path, key, &page)
		out = append(out, page.Data...)
		if page.NextCursor == nil {
			return out
		}
		cursor = *page.NextCursor
	}
}

type isoAggregate struct {
	Requests int64 `json:"requests"`
	Errors   int64 `json:"errors"`
}

func (d *isoDash) summary(t *testing.T, query, key string) (isoAggregate, map[string]int64) {
	t.Helper()
	var s struct {
		Overall isoAggregate `json:"overall"`
		ByModel []struct {
			Model    string `json:"model"`
			Requests int64  `json:"requests"`
		} `json:"by_model"`
	}
	d.getJSON(t, "/api/v1/analytics/summary?window=1h"+query, key, &s)
	by := map[string]int64{}
	for _, m := range s.ByModel {
		by[m.Model] = m.Requests
	}
	return s.Overall, by
}

func (d *isoDash) timeseries(t *testing.T, query, key string) (requests, errors int64) {
	t.Helper()
	var s struct {
		Buckets []isoAggregate `json:"buckets"`
	}
	d.getJSON(t, "/api/v1/analytics/timeseries?window=1h&bucket=1m"+query, key, &s)
	for _, b := range s.Buckets {
		requests += b.Requests
		errors += b.Errors
	}
	return requests, errors
}

// isoTail is an open live tail and the traces it has sent.
type isoTail struct {
	mu   sync.Mutex
	seen []isoSummary
	err  error
}

func (tl *isoTail) got() ([]isoSummary, error) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return slices.Clone(tl.seen), tl.err
}

// tail opens GET /api/v1/traces/live with key and collects its events
// until the test ends.
func (d *isoDash) tail(t *testing.T, key string) *isoTail {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", d.url+"/api/v1/traces/live", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	if first, _ := rd.ReadString('\n'); resp.StatusCode != 200 || first != ": connected\n" {
		cancel()
		t.Fatalf("live tail: %d %q", resp.StatusCode, first)
	}
	tl := &isoTail{}
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); resp.Body.Close(); <-done })
	go func() {
		defer close(done)
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				if ctx.Err() == nil {
					tl.mu.Lock()
					tl.err = err
					tl.mu.Unlock()
				}
				return
			}
			data, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "data: ")
			if !ok {
				continue
			}
			var s isoSummary
			err = json.Unmarshal([]byte(data), &s)
			tl.mu.Lock()
			if err != nil {
				tl.err = fmt.Errorf("live event %q: %w", data, err)
			}
			tl.seen = append(tl.seen, s)
			tl.mu.Unlock()
		}
	}()
	return tl
}

// isoDashboardChecks reads through every dashboard endpoint with each
// tenant's key and counts what it sees of other tenants.
func isoDashboardChecks(t *testing.T, leaks *isoLeaks, d *isoDash, tenants []*isoTenant, tails []*isoTail, reqs []*isoReq) {
	t.Helper()
	perTenant := len(reqs) / len(tenants)
	wantByModel := func(tn int) map[string]int64 {
		m := map[string]int64{}
		for _, r := range reqs {
			if r.tenant == tn {
				m[isoModels[r.model].model]++
			}
		}
		return m
	}
	// Query-string tricks a tenant might try to widen or move its view:
	// none may change what it sees. (?tenant= itself is refused below.)
	tricks := func(other *isoTenant) []string {
		return []string{"&tenant_id=" + other.id, "&tenant_name=" + other.name, "&Tenant=" + other.name,
			"&scope=all", "&tenant%5B%5D=" + other.name, "&tenant_id=" + other.id + "&all=true"}
	}

	// Unknown, malformed and other tenants' ids all get one same 404.
	unknownID := uuid.Must(uuid.NewV7()).String()
	code, notFound := d.do(t, "GET", "/api/v1/traces/"+unknownID, tenants[0].keys[0], "")
	if code != 404 || !strings.Contains(string(notFound), `"code":"trace_not_found"`) {
		t.Fatalf("unknown trace id: %d %s", code, notFound)
	}
	if _, malformed := d.do(t, "GET", "/api/v1/traces/not-a-trace-id", tenants[0].keys[0], ""); !bytes.Equal(malformed, notFound) {
		t.Fatalf("malformed id answers %s, unknown %s", malformed, notFound)
	}

	t.Run("trace by id", func(t *testing.T) {
		// Every tenant's key against every trace: its own open, with its
		// own request and answer; every other tenant's is the unknown 404.
		type job struct {
			tenant int
			id     string
		}
		jobs := make(chan job)
		var wg sync.WaitGroup
		var own, foreign atomic.Int64
		// A worker reports a failed request and stops asking, but keeps
		// draining jobs so that the sender below never blocks.
		var failed atomic.Bool
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range jobs {
					if failed.Load() {
						continue
					}
					tn := tenants[j.tenant]
					owner, ok := tn.traces[j.id]
					code, body, err := d.fetch("GET", "/api/v1/traces/"+j.id, tn.keys[int(j.id[len(j.id)-1])%2], "")
					if err != nil {
						if !failed.Swap(true) {
							t.Errorf("%s reading trace %s: %v", tn.name, j.id, err)
						}
						continue
					}
					if !ok {
						foreign.Add(1)
						if code != 404 || !bytes.Equal(body, notFound) {
							leaks.add(t, "%s's key reads another tenant's trace %s: %d %.300s", tn.name, j.id, code, body)
						}
						continue
					}
					own.Add(1)
					// The marker is in the request, the response and, for a
					// stream, the assembled message: that many times, and no
					// other marker. (Cheaper than decoding, under -race.)
					r, markers := reqs[owner], 2
					if r.stream {
						markers = 3
					}
					if code != 200 || !bytes.Contains(body, []byte(`"tenant":"`+tn.name+`"`)) || !bytes.Contains(body, []byte(`"readable":true`)) ||
						bytes.Count(body, []byte("tenant=")) != markers || bytes.Count(body, []byte(r.marker)) != markers {
						leaks.add(t, "%s's own trace %s (%s): %d %.400s", tn.name, j.id, r.marker, code, body)
					}
				}
			}()
		}
		// Each trace is read by its owner; by the first tenant (so that it
		// tries every other tenant's every id); and by one more tenant,
		// taken in turn, so that every tenant tries every other's ids.
		wantForeign := 0
		for o, owner := range tenants {
			j := 0
			for id := range owner.traces {
				jobs <- job{o, id}
				if o != 0 {
					jobs <- job{0, id}
					wantForeign++
				}
				if other := (o + 1 + j%(len(tenants)-1)) % len(tenants); other != 0 {
					jobs <- job{other, id}
					wantForeign++
				}
				j++
			}
		}
		close(jobs)
		wg.Wait()
		if own.Load() != int64(len(reqs)) || foreign.Load() != int64(wantForeign) {
			t.Fatalf("read %d own and %d foreign traces", own.Load(), foreign.Load())
		}
		t.Logf("%d traces read by their owner, %d reads of another tenant's trace id", own.Load(), foreign.Load())
		// Query-string tricks on the detail: still the unknown 404.
		a, b := tenants[0], tenants[1]
		var bID string
		for id := range b.traces {
			bID = id
			break
		}
		for _, q := range tricks(b) {
			if code, body := d.do(t, "GET", "/api/v1/traces/"+bID+"?"+q[1:], a.keys[0], ""); code != 404 || !bytes.Equal(body, notFound) {
				leaks.add(t, "%s reads %s's trace with ?%s: %d %.300s", a.name, b.name, q[1:], code, body)
			}
		}
	})

	t.Run("list", func(t *testing.T) {
		for ti, tn := range tenants {
			got := d.list(t, "", tn.keys[0])
			ids := map[string]bool{}
			for _, s := range got {
				if _, ok := tn.traces[s.ID]; !ok || s.Tenant != tn.name || ids[s.ID] {
					leaks.add(t, "%s's listing has trace %s of %q (or twice)", tn.name, s.ID, s.Tenant)
				}
				ids[s.ID] = true
			}
			if len(got) != perTenant || len(ids) != perTenant {
				t.Errorf("%s's listing: %d traces (%d distinct), want %d", tn.name, len(got), len(ids), perTenant)
			}
			// With a trick, the first page is byte for byte the same (and
			// the listing above showed where its cursor leads).
			code, first := d.do(t, "GET", "/api/v1/traces?limit=200", tn.keys[0], "")
			if code != 200 {
				t.Fatalf("%s's first page: %d %s", tn.name, code, first)
			}
			for _, q := range tricks(tenants[(ti+1)%len(tenants)]) {
				code, page := d.do(t, "GET", "/api/v1/traces?limit=200"+q, tn.keys[0], "")
				var p struct {
					Data []isoSummary `json:"data"`
				}
				json.Unmarshal(page, &p)
				for _, s := range p.Data {
					if _, ok := tn.traces[s.ID]; !ok || s.Tenant != tn.name {
						leaks.add(t, "%s's listing%s has trace %s of %q", tn.name, q, s.ID, s.Tenant)
					}
				}
				if code != 200 || !bytes.Equal(page, first) {
					t.Errorf("%s's first page%s differs from its first page: %d %.300s", tn.name, q, code, page)
				}
			}
			// A filter narrows within the tenant only.
			for model, want := range wantByModel(ti) {
				got := d.list(t, "&model="+url.QueryEscape(model), tn.keys[1])
				for _, s := range got {
					if _, ok := tn.traces[s.ID]; !ok || s.Model != model {
						leaks.add(t, "%s's listing of %s has trace %s of %q, model %s", tn.name, model, s.ID, s.Tenant, s.Model)
					}
				}
				if int64(len(got)) != want {
					t.Errorf("%s's listing of %s: %d traces, want %d", tn.name, model, len(got), want)
				}
			}
		}
	})

	t.Run("summary and timeseries", func(t *testing.T) {
		for ti, tn := range tenants {
			other := tenants[(ti+1)%len(tenants)]
			want := wantByModel(ti)
			for _, q := range append([]string{""}, tricks(other)...) {
				overall, by := d.summary(t, q, tn.keys[0])
				if overall.Requests != int64(perTenant) || overall.Errors != 0 || fmt.Sprint(by) != fmt.Sprint(want) {
					leaks.add(t, "%s's summary%s: %+v by model %v, want %d requests, %v", tn.name, q, overall, by, perTenant, want)
				}
				if requests, errors := d.timeseries(t, q, tn.keys[1]); requests != int64(perTenant) || errors != 0 {
					leaks.add(t, "%s's timeseries%s: %d requests, %d errors, want %d, 0", tn.name, q, requests, errors, perTenant)
				}
			}
		}
		// The admin sees them all, and each tenant by name.
		if overall, _ := d.summary(t, "", isoAdmin); overall.Requests != int64(len(reqs)) {
			t.Errorf("admin summary: %d requests, want %d", overall.Requests, len(reqs))
		}
		for _, tn := range tenants {
			if overall, _ := d.summary(t, "&tenant="+tn.name, isoAdmin); overall.Requests != int64(perTenant) {
				t.Errorf("admin summary of %s: %d requests, want %d", tn.name, overall.Requests, perTenant)
			}
		}
	})

	t.Run("tenant parameter refused to tenant keys", func(t *testing.T) {
		a, b := tenants[0], tenants[1]
		var bID string
		for id := range b.traces {
			bID = id
			break
		}
		for _, path := range []string{"/api/v1/traces?tenant=" + b.name, "/api/v1/traces?tenant=" + a.name,
			"/api/v1/traces/" + bID + "?tenant=" + b.name, "/api/v1/analytics/summary?tenant=" + b.name,
			"/api/v1/analytics/timeseries?tenant=" + b.name, "/api/v1/traces/live?tenant=" + b.name} {
			code, body := d.do(t, "GET", path, a.keys[0], "")
			if code != 403 || !strings.Contains(string(body), `"code":"admin_only"`) || !strings.Contains(string(body), `"param":"tenant"`) {
				leaks.add(t, "%s: GET %s = %d %.300s, want 403 admin_only", a.name, path, code, body)
			}
		}
	})

	t.Run("admin endpoints refuse tenant keys", func(t *testing.T) {
		a, b := tenants[0], tenants[1]
		for _, c := range []struct{ method, path, body string }{
			{"GET", "/api/v1/admin/tenants", ""},
			{"POST", "/api/v1/admin/tenants", `{"name":"intruder"}`},
			{"POST", "/api/v1/admin/tenants/" + b.name + "/keys", `{"label":"stolen"}`},
			{"POST", "/api/v1/admin/tenants/" + a.name + "/keys", `{"label":"extra"}`},
			{"DELETE", "/api/v1/admin/keys/" + b.keyIDs[0], ""},
		} {
			code, body := d.do(t, c.method, c.path, a.keys[0], c.body)
			if code != 403 || !strings.Contains(string(body), `"code":"admin_only"`) || strings.Contains(string(body), "loom_") {
				leaks.add(t, "%s: %s %s = %d %.300s, want 403 admin_only", a.name, c.method, c.path, code, body)
			}
		}
		var list struct {
			Data []struct {
				Name string `json:"name"`
			} `json:"data"`
		}
		d.getJSON(t, "/api/v1/admin/tenants", isoAdmin, &list)
		if len(list.Data) != len(tenants) {
			t.Errorf("admin lists %d tenants after the attempts: %+v", len(list.Data), list.Data)
		}
		// B's key still works, and so does /metrics refuse tenant keys.
		if code, _ := d.do(t, "GET", "/api/v1/analytics/summary", b.keys[0], ""); code != 200 {
			t.Errorf("%s's key after %s's attempt to revoke it: %d", b.name, a.name, code)
		}
		if code, _ := d.do(t, "GET", "/metrics", a.keys[0], ""); code != 401 {
			t.Errorf("/metrics with a tenant key: %d", code)
		}
	})

	t.Run("live tail", func(t *testing.T) {
		// A tail sends the traces it finds whose requests started within
		// the dashboard's live look-back (2 minutes) of its poll: on a
		// slow machine the requests of the load, in flight together
		// until the last one arrived, may have started earlier than that
		// by the time their traces are stored. So every trace that started
		// within the look-back of now must come (the tail polls every
		// second: wait for it, the deadline only keeps a stuck tail from
		// hanging the test), older ones may; none of another tenant, none
		// twice.
		const lookback, slack = 2 * time.Minute, 2 * time.Second
		deadline := time.Now().Add(2 * time.Minute)
		for ti, tn := range tenants {
			var seen []isoSummary
			var missing []string
			var err error
			for {
				seen, err = tails[ti].got()
				got := map[string]bool{}
				for _, s := range seen {
					got[s.ID] = true
				}
				floor := time.Now().Add(-lookback + slack)
				missing = missing[:0]
				for id, at := range tn.created {
					if !got[id] && at.After(floor) {
						missing = append(missing, id)
					}
				}
				if len(missing) == 0 || err != nil || time.Now().After(deadline) {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			if err != nil {
				t.Fatalf("%s's live tail: %v", tn.name, err)
			}
			ids := map[string]bool{}
			for _, s := range seen {
				if _, ok := tn.traces[s.ID]; !ok || s.Tenant != tn.name || ids[s.ID] {
					leaks.add(t, "%s's live tail sent trace %s of %q (or twice)", tn.name, s.ID, s.Tenant)
				}
				ids[s.ID] = true
			}
			if len(missing) != 0 {
				t.Errorf("%s's live tail did not send %d of its traces started within the look-back (e.g. %s)", tn.name, len(missing), missing[0])
			}
			t.Logf("%s's live tail sent %d of its %d traces", tn.name, len(seen), perTenant)
		}
	})
}

// isoSQLChecks queries PostgreSQL directly as the serving role: with the
// scope of one tenant an unfiltered SELECT returns that tenant's rows only;
// without a scope, none; a partition read directly, permission denied.
func isoSQLChecks(t *testing.T, leaks *isoLeaks, appDSN, superDSN string, tenants []*isoTenant, reqs []*isoReq) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, appDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var super, bypass bool
	if err := conn.QueryRow(ctx, `SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&super, &bypass); err != nil || super || bypass {
		t.Fatalf("the serving role: superuser %v, bypassrls %v, %v", super, bypass, err)
	}
	// rows runs query in a transaction that first applies the settings.
	rows := func(query string, set ...string) ([][2]string, error) {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		for i := 0; i+1 < len(set); i += 2 {
			if _, err := tx.Exec(ctx, `SELECT set_config($1, $2, true)`, set[i], set[i+1]); err != nil {
				t.Fatal(err)
			}
		}
		r, err := tx.Query(ctx, query)
		if err != nil {
			return nil, err
		}
		var out [][2]string
		for r.Next() {
			var a, b string
			if err := r.Scan(&a, &b); err != nil {
				t.Fatal(err)
			}
			out = append(out, [2]string{a, b})
		}
		return out, r.Err()
	}
	byRequestID := map[string]int{}
	for i, r := range reqs {
		byRequestID[r.requestID] = i
	}
	for ti, tn := range tenants {
		got, err := rows(`SELECT id::text, tenant_id::text FROM traces`, "loom.tenant_id", tn.id)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range got {
			if _, ok := tn.traces[row[0]]; !ok || row[1] != tn.id {
				leaks.add(t, "SELECT FROM traces as %s returns trace %s of tenant %s", tn.name, row[0], row[1])
			}
		}
		if len(got) != len(tn.traces) {
			t.Errorf("SELECT FROM traces as %s: %d rows, want %d", tn.name, len(got), len(tn.traces))
		}
		other := tenants[(ti+1)%len(tenants)]
		got, err = rows(`SELECT request_id, tenant_id::text FROM traces WHERE tenant_id = '`+other.id+`'`, "loom.tenant_id", tn.id)
		if err != nil || len(got) != 0 {
			leaks.add(t, "SELECT of %s's traces as %s: %d rows, %v", other.name, tn.name, len(got), err)
		}
		got, err = rows(`SELECT request_id, tenant_id::text FROM traces`, "loom.tenant_id", tn.id)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range got {
			if i, ok := byRequestID[row[0]]; !ok || reqs[i].tenant != ti {
				leaks.add(t, "%s's scope shows request %s", tn.name, row[0])
			}
		}
	}
	for _, set := range [][]string{nil, {"loom.tenant_id", ""}, {"loom.scope", "tenant"}, {"loom.scope", "writer"}} {
		got, err := rows(`SELECT id::text, tenant_id::text FROM traces`, set...)
		if err != nil || len(got) != 0 {
			leaks.add(t, "SELECT FROM traces with %v: %d rows, %v; want none", set, len(got), err)
		}
	}
	// After a scoped transaction, the same connection sees nothing again.
	var n int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM traces`).Scan(&n); err != nil || n != 0 {
		leaks.add(t, "count(*) outside a transaction after scoped ones: %d, %v", n, err)
	}
	// The partitions cannot be read directly.
	var parts []string
	su, err := pgx.Connect(ctx, superDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer su.Close(ctx)
	r, err := su.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'traces'::regclass`)
	if err != nil {
		t.Fatal(err)
	}
	for r.Next() {
		var p string
		r.Scan(&p)
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		t.Fatal("no trace partitions")
	}
	for _, p := range parts {
		_, err := rows(`SELECT id::text, tenant_id::text FROM `+p, "loom.tenant_id", tenants[0].id)
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42501" {
			leaks.add(t, "SELECT FROM partition %s as the serving role: %v, want permission denied", p, err)
		}
	}
	// The other tables holding tenant rows have no row-level security, by
	// design (0003_dashboard.sql: api_keys is looked up by hash before the
	// tenant is known; tenant_keys hold wrapped data keys): the serving role
	// reads all of them whatever the scope. Reported, not asserted.
	var keys, dataKeys, tenantRows int64
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tx.Exec(ctx, `SELECT set_config('loom.tenant_id', $1, true)`, tenants[0].id)
	err = tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM api_keys), (SELECT count(*) FROM tenant_keys), (SELECT count(*) FROM tenants)`).
		Scan(&keys, &dataKeys, &tenantRows)
	tx.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("with %s's scope the serving role reads %d api_keys, %d tenant_keys and %d tenants rows (no row-level security on those tables)",
		tenants[0].name, keys, dataKeys, tenantRows)

	// Ground truth, as the superuser: each tenant has exactly its own.
	for _, tn := range tenants {
		if err := su.QueryRow(ctx, `SELECT count(*) FROM traces WHERE tenant_id = $1`, tn.id).Scan(&n); err != nil || n != int64(len(tn.traces)) {
			t.Errorf("superuser count of %s's traces: %d, %v; want %d", tn.name, n, err, len(tn.traces))
		}
	}
}
