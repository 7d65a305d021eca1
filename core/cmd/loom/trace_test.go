package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5"

	"github.com/loom-runtime/loom/core/internal/testpg"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/backend"
)

// openStore opens the store a gateway of the test writes to.
func openStore(t *testing.T, p *proxyEnv) store.Store {
	t.Helper()
	return openStoreAt(t, p.dir, p.env)
}

// openStoreAt opens the store a gateway run in dir with env writes to.
func openStoreAt(t *testing.T, dir string, env []string) store.Store {
	t.Helper()
	driver, dsn := "sqlite", filepath.Join(dir, "loom.db")
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "LOOM_STORE_DRIVER="); ok {
			driver = v
		}
		if v, ok := strings.CutPrefix(kv, "LOOM_STORE_DSN="); ok {
			dsn = v
		}
	}
	st, err := backend.Open(context.Background(), driver, dsn, 4, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func tenantID(t *testing.T, st store.Store, name string) string {
	t.Helper()
	tn, err := st.TenantByName(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return tn.ID
}

// traces returns the statuses of a tenant's traces, by trace id.
func traces(t *testing.T, st store.Store, tenant string) map[string]store.Trace {
	t.Helper()
	ctx := context.Background()
	id := tenantID(t, st, tenant)
	ids, err := st.TraceIDs(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]store.Trace, len(ids))
	for _, tid := range ids {
		tr, err := st.Trace(ctx, id, tid)
		if err != nil {
			t.Fatal(err)
		}
		out[tid] = tr
	}
	return out
}

// waitTraces waits until the tenant has n traces (the recorder is asynchronous).
func waitTraces(t *testing.T, st store.Store, tenant string, n int64) {
	t.Helper()
	id := tenantID(t, st, tenant)
	deadline := time.Now().Add(2 * time.Minute) // a guard against hanging, not a wait
	var got int64
	for time.Now().Before(deadline) {
		got, _ = st.CountTraces(context.Background(), id)
		if got >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("tenant %s has %d traces after 2 minutes, want %d", tenant, got, n)
}

// kind is one sort of request of the mixed load, and the trace status it must yield.
type kind struct {
	name, status string
	key          func(p *proxyEnv) string
	do           func(p *proxyEnv, key string) error // safe in any goroutine
}

func chatBody(model string, stream bool) string {
	return fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hello there"}]}`, model, stream)
}

func mixedKinds() []kind {
	acme := func(p *proxyEnv) string { return p.key }
	narrow := func(p *proxyEnv) string { return p.narrow }
	post := func(body string) func(*proxyEnv, string) error {
		return func(p *proxyEnv, key string) error {
			_, _, err := p.send("/v1/chat/completions", key, body)
			return err
		}
	}
	// leaveMidStream walks away after the first event of a stream that
	// the upstream holds open (hangstream) until it does.
	leaveMidStream := func(p *proxyEnv, key string) error {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", p.gw.url+"/v1/chat/completions", strings.NewReader(chatBody("hangstream", true)))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		if _, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || resp.StatusCode != 200 {
			return fmt.Errorf("hangstream: %d, first line: %v", resp.StatusCode, err)
		}
		cancel()
		resp.Body.Close()
		return nil
	}
	// leaveAtUpstream walks away once the upstream has the request, which
	// it never answers (hang).
	leaveAtUpstream := func(p *proxyEnv, key string) error {
		marker := uuid.NewString()
		body := fmt.Sprintf(`{"model":"hang","messages":[{"role":"user","content":%q}]}`, marker)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", p.gw.url+"/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		answered := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("a held request was answered %d", resp.StatusCode)
			} else if ctx.Err() != nil {
				err = nil // the walk-away
			}
			answered <- err
		}()
		err := p.up.waitFor(2*time.Minute, func(r upstreamRequest) bool { return bytes.Contains(r.RawBody, []byte(marker)) })
		cancel()
		return errors.Join(err, <-answered)
	}
	return []kind{
		{"ok", "ok", acme, post(chatBody("gpt-ok", false))},
		{"ok stream", "ok", acme, post(chatBody("gpt-ok", true))},
		{"ok echo stream", "ok", acme, post(chatBody("echo/echo-1", true))},
		{"embeddings", "ok", acme, func(p *proxyEnv, key string) error {
			_, _, err := p.send("/v1/embeddings", key, `{"model":"text-embedding-3-small","input":"hi"}`)
			return err
		}},
		{"upstream 429", "upstream_error", acme, post(chatBody("rate-limited", false))},
		{"upstream 500 stream", "upstream_error", acme, post(chatBody("server-error", true))},
		{"upstream timeout", "upstream_timeout", acme, post(chatBody("timeout/hang", false))},
		{"upstream unreachable", "upstream_unreachable", acme, post(chatBody("dead/x", true))},
		{"mid-stream failure", "stream_failure", acme, post(chatBody("cut", true))},
		{"disconnect before answer", "client_disconnect", acme, leaveAtUpstream},
		{"disconnect mid-stream", "client_disconnect", acme, leaveMidStream},
		{"invalid JSON", "rejected", acme, post(`{"model":`)},
		{"missing messages", "rejected", acme, post(`{"model":"gpt-ok"}`)},
		{"no route", "rejected", narrow, post(chatBody("claude-3", false))},
		{"NUL and odd characters in the model (refused, still traced)", "rejected", acme, post(`{"model":"gpt\u0000ok\u00e9\ud800","messages":[]}`)},
		{"invalid UTF-8 in the path", "rejected", acme, func(p *proxyEnv, key string) error {
			_, _, err := p.send("/v1/%ff%00x", key, `{}`)
			return err
		}},
	}
}

// 1,000 mixed requests through bin/loom yield exactly 1,000 traces, each
// with the status its outcome deserves — on SQLite and on PostgreSQL.
func TestEveryRequestIsTraced(t *testing.T) {
	for _, backendName := range []string{"sqlite", "postgres"} {
		t.Run(backendName, func(t *testing.T) {
			var extra []string
			if backendName == "postgres" {
				extra = storeEnv(t, "postgres")
			}
			p := startProxy(t, extra...)
			st := openStore(t, p)
			kinds := mixedKinds()
			const total = 1000
			want := map[string]int{} // tenant/status → count
			jobs := make(chan int)
			var wg sync.WaitGroup
			// A worker reports a failed request and stops sending, but
			// keeps draining jobs so that the loop below never blocks.
			var failed atomic.Bool
			for w := 0; w < 24; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range jobs {
						if failed.Load() {
							continue
						}
						k := kinds[i%len(kinds)]
						if err := k.do(p, k.key(p)); err != nil && !failed.Swap(true) {
							t.Errorf("request %d (%s): %v", i, k.name, err)
						}
					}
				}()
			}
			for i := 0; i < total; i++ {
				k := kinds[i%len(kinds)]
				tenant := "acme"
				if k.key(p) == p.narrow {
					tenant = "narrow"
				}
				want[tenant+"/"+k.status]++
				jobs <- i
			}
			close(jobs)
			wg.Wait()
			if failed.Load() {
				t.FailNow()
			}
			// A clean stop writes every trace before the process exits:
			// what the store holds then is all there will ever be.
			if code := p.gw.stop(t, syscall.SIGTERM); code != 0 {
				t.Fatalf("exit %d", code)
			}
			got := map[string]int{}
			n := 0
			for _, tenant := range []string{"acme", "narrow"} {
				for _, tr := range traces(t, st, tenant) {
					got[tenant+"/"+tr.Status]++
					n++
				}
			}
			if n != total || fmt.Sprint(sorted(got)) != fmt.Sprint(sorted(want)) {
				t.Fatalf("%d traces, want %d\n got: %v\nwant: %v", n, total, sorted(got), sorted(want))
			}
			if out := mustRun(t, p.dir, p.env, "verify"); !strings.Contains(out, fmt.Sprintf("%d traces verified", total)) {
				t.Fatalf("verify: %s", out)
			}
		})
	}
}

func sorted(m map[string]int) []string {
	var out []string
	for k, v := range m {
		out = append(out, fmt.Sprintf("%s=%d", k, v))
	}
	sort.Strings(out)
	return out
}

// What a trace holds for a streamed and a plain request: the request as
// sent, the response as relayed, the assembled message, usage, cost and
// latencies — sealed so that the database holds no plaintext.
func TestTraceContent(t *testing.T) {
	p := startProxy(t)
	ctx := context.Background()
	body := `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"a secret question"}]}`
	resp, relayed := p.post(t, "/v1/chat/completions", p.key, body)
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	st := openStore(t, p)
	waitTraces(t, st, "acme", 1)
	var tr store.Trace
	for _, x := range traces(t, st, "acme") {
		tr = x
	}
	if tr.RequestID != resp.Header.Get("X-Request-Id") || tr.Status != "ok" || !tr.Stream || tr.Endpoint != "chat.completions" ||
		tr.ProviderInstance != "openai" || tr.PluginName != "openai" || tr.PluginVersion == "" || tr.ConfigHash == "" {
		t.Fatalf("metadata %+v", tr)
	}
	if tr.UsageSource != "provider" || *tr.PromptTokens != 9 || *tr.CompletionTokens != 5 || tr.CostMicros == nil {
		t.Fatalf("usage %s %v %v cost %v", tr.UsageSource, tr.PromptTokens, tr.CompletionTokens, tr.CostMicros)
	}
	// gpt-4o at $2.50/$10 per 1M: 9×2.5 + 5×10 = 72.5 → 73 µ$ (rounded half up).
	if *tr.CostMicros != 73 {
		t.Fatalf("cost %d µ$, want 73", *tr.CostMicros)
	}
	if tr.LatencyUS <= 0 || tr.UpstreamUS == nil || tr.TTFBUS == nil || tr.OverheadUS < 0 || tr.OverheadUS > tr.LatencyUS {
		t.Fatalf("latencies %+v", tr)
	}
	if strings.Contains(string(tr.Request.Ciphertext), "secret question") {
		t.Fatal("plaintext in the store")
	}
	key, _ := base64.StdEncoding.DecodeString(testMasterKey)
	kr, err := seal.NewKeyring(key, st)
	if err != nil {
		t.Fatal(err)
	}
	open := func(field string, s store.Sealed) string {
		b, err := kr.Open(ctx, tr.TenantID, tr.KeyVersion, tr.ID, field, s)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if open(seal.FieldRequest, tr.Request) != body {
		t.Fatal("request not kept exactly as received")
	}
	if open(seal.FieldResponse, tr.Response) != string(relayed) {
		t.Fatalf("response in the trace differs from what the client got:\n%s\nvs\n%s", open(seal.FieldResponse, tr.Response), relayed)
	}
	if msg := open(seal.FieldMessage, tr.Message); !strings.Contains(msg, `"content":"word0 word1 word2 word3 word4 "`) {
		t.Fatalf("assembled message %s", msg)
	}
}

// SIGTERM with streams in flight: Loom waits for them up to its shutdown
// timeout, cuts the rest, and every request that reached it has its trace.
func TestShutdownTracesEveryRequest(t *testing.T) {
	for _, durability := range []string{"async", "sync"} {
		t.Run(durability, func(t *testing.T) {
			p := startProxy(t, "LOOM_SERVER_SHUTDOWN_TIMEOUT=700ms", "LOOM_TRACE_DURABILITY="+durability)
			const streams, quick = 30, 20
			var started, finished sync.WaitGroup
			started.Add(streams)
			for i := 0; i < streams; i++ {
				finished.Add(1)
				go func(i int) {
					defer finished.Done()
					model := "hangstream" // open until cut by the shutdown deadline
					if i%3 == 0 {
						model = "echo/echo-1" // finishes at once
					}
					req, _ := http.NewRequest("POST", p.gw.url+"/v1/chat/completions", strings.NewReader(chatBody(model, true)))
					req.Header.Set("Authorization", "Bearer "+p.key)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						started.Done()
						t.Errorf("stream %d: %v", i, err)
						return
					}
					rd := bufio.NewReader(resp.Body)
					rd.ReadString('\n')
					started.Done()
					for {
						if _, err := rd.ReadString('\n'); err != nil {
							break
						}
					}
					resp.Body.Close()
				}(i)
			}
			started.Wait()
			for i := 0; i < quick; i++ {
				p.post(t, "/v1/chat/completions", p.key, chatBody("gpt-ok", false))
			}
			if code := p.gw.stop(t, syscall.SIGTERM); code != 0 {
				t.Fatalf("exit %d after SIGTERM\n%s", code, p.gw.stderr.String())
			}
			finished.Wait()
			st := openStore(t, p)
			got := map[string]int{}
			for _, tr := range traces(t, st, "acme") {
				got[tr.Status]++
			}
			// The 20 hangstreams can only end by the shutdown's cut.
			if got["ok"]+got["shutdown"] != streams+quick || got["shutdown"] < 20 {
				t.Fatalf("statuses after shutdown: %v, want %d traces, at least 20 of them shutdown", got, streams+quick)
			}
			if out := mustRun(t, p.dir, p.env, "verify"); !strings.Contains(out, "OK:") {
				t.Fatalf("verify: %s", out)
			}
		})
	}
}

// loom verify passes on a clean store and fails, naming the row, once a
// trace is edited behind Loom's back; key rotation and crypto-shredding
// keep history verifiable.
func TestVerifyAndKeys(t *testing.T) {
	for _, backendName := range []string{"sqlite", "postgres"} {
		t.Run(backendName, func(t *testing.T) { testVerifyAndKeys(t, backendName) })
	}
}

func testVerifyAndKeys(t *testing.T, backendName string) {
	var extra []string
	if backendName == "postgres" {
		extra = storeEnv(t, "postgres")
	}
	p := startProxy(t, extra...)
	for i := 0; i < 20; i++ {
		p.post(t, "/v1/chat/completions", p.key, chatBody("gpt-ok", false))
	}
	st := openStore(t, p)
	waitTraces(t, st, "acme", 20)
	p.gw.stop(t, syscall.SIGTERM)
	if backendName == "postgres" {
		// Raw SQL, as a superuser: ciphertext only.
		conn, err := pgx.Connect(context.Background(), strings.TrimPrefix(extra[1], "LOOM_STORE_DSN="))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = conn.QueryRow(context.Background(),
			`SELECT count(*) FROM traces WHERE position('hello there'::bytea in request_ct) > 0 OR request_ct IS NULL`).Scan(&n)
		conn.Close(context.Background())
		if err != nil || n != 0 {
			t.Fatalf("raw SQL found %d plaintext or missing request bodies (%v)", n, err)
		}
	}
	if out := mustRun(t, p.dir, p.env, "verify", "--tenant", "acme"); !strings.Contains(out, "OK: 1 chains, 20 traces verified") {
		t.Fatalf("verify: %s", out)
	}

	// Rotate the tenant's data key: new traces use v2, old ones still open.
	if out := mustRun(t, p.dir, p.env, "keys", "rotate", "--tenant", "acme"); !strings.Contains(out, "version 2") {
		t.Fatalf("keys rotate: %s", out)
	}
	// Rotate the master key: every data key is rewrapped, no trace touched.
	newMaster := "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="
	env := append(append([]string(nil), p.env...), "LOOM_OLD_MASTER_KEY="+testMasterKey, "LOOM_MASTER_KEY="+newMaster)
	if out := mustRun(t, p.dir, env, "keys", "rotate-master"); !strings.Contains(out, "rewrapped") ||
		!strings.Contains(out, "the data keys themselves are unchanged (only rewrapped); add --rotate-data-keys") {
		t.Fatalf("rotate-master: %s", out)
	}
	// The gateway starts with the new master key and old traces still open.
	env = append(append([]string(nil), p.env...), "LOOM_MASTER_KEY="+newMaster)
	gw := startServe(t, p.dir, env)
	p.gw = gw
	p.post(t, "/v1/chat/completions", p.key, chatBody("gpt-ok", false))
	waitTraces(t, st, "acme", 21)
	gw.stop(t, syscall.SIGTERM)
	key, _ := base64.StdEncoding.DecodeString(newMaster)
	kr, _ := seal.NewKeyring(key, st)
	versions := map[int]int{}
	for _, tr := range traces(t, st, "acme") {
		if _, err := kr.Open(context.Background(), tr.TenantID, tr.KeyVersion, tr.ID, seal.FieldRequest, tr.Request); err != nil {
			t.Fatalf("trace %s (key v%d) unreadable after rotations: %v", tr.ID, tr.KeyVersion, err)
		}
		versions[tr.KeyVersion]++
	}
	if versions[1] != 20 || versions[2] != 1 {
		t.Fatalf("key versions used: %v", versions)
	}
	if r := runLoom(t, p.dir, p.env, "serve"); r.code == 0 || !strings.Contains(r.stderr, "master") {
		t.Fatalf("serve with the old master key: exit %d\n%s", r.code, r.stderr)
	}

	// Crypto-shredding: traces stay and verify, but no longer decrypt.
	if r := runLoom(t, p.dir, env, "tenant", "delete", "acme"); r.code != 2 || !strings.Contains(r.stderr, "--shred") {
		t.Fatalf("delete without --shred: exit %d %s", r.code, r.stderr)
	}
	mustRun(t, p.dir, env, "tenant", "delete", "acme", "--shred")
	for _, tr := range traces(t, st, "acme") {
		kr, _ := seal.NewKeyring(key, st)
		if _, err := kr.Open(context.Background(), tr.TenantID, tr.KeyVersion, tr.ID, seal.FieldRequest, tr.Request); err == nil {
			t.Fatal("a shredded tenant's trace still decrypts")
		}
	}
	if out := mustRun(t, p.dir, env, "verify"); !strings.Contains(out, "21 traces verified") {
		t.Fatalf("verify after shredding: %s", out)
	}

	// Tamper with one row behind Loom's back: verify fails and names it.
	ids := traces(t, st, "acme")
	var victim string
	for id := range ids {
		victim = id
		break
	}
	if err := st.(interface {
		TamperTrace(ctx context.Context, id, column string, value any) error
	}).TamperTrace(context.Background(), victim, "status", "ok"+" "); err != nil {
		t.Fatal(err)
	}
	r := runLoom(t, p.dir, env, "verify")
	if r.code != 1 || !strings.Contains(r.stdout, "BROKEN") || !strings.Contains(r.stdout, victim) {
		t.Fatalf("verify after tampering: exit %d\n%s", r.code, r.stdout)
	}

	// Retention: nothing is older than a year here.
	if out := mustRun(t, p.dir, env, "retention", "apply", "--older-than", "12mo"); !strings.Contains(out, "retention: 0 traces") {
		t.Fatalf("retention: %s", out)
	}
	if r := runLoom(t, p.dir, env, "retention", "apply", "--older-than", "soon"); r.code != 2 {
		t.Fatalf("bad age: exit %d", r.code)
	}
}

// --older-than counts calendar months and years in UTC; where the day does
// not exist in the earlier month, its last day: retention then keeps every
// month that has a trace younger than AGE, whatever today's date.
func TestCutoff(t *testing.T) {
	utc := func(y int, m time.Month, d, h int) time.Time { return time.Date(y, m, d, h, 0, 0, 0, time.UTC) }
	for _, c := range []struct {
		now  time.Time
		age  string
		want time.Time
		keep string // the oldest month retention keeps
	}{
		{utc(2026, 11, 21, 12), "90d", utc(2026, 8, 23, 12), "2026-08"},
		{utc(2026, 11, 21, 12), "12mo", utc(2025, 11, 21, 12), "2025-11"},
		{utc(2026, 11, 21, 12), "2y", utc(2024, 11, 21, 12), "2024-11"},
		{utc(2026, 12, 1, 0), "1mo", utc(2026, 11, 1, 0), "2026-11"},
		{utc(2026, 12, 9, 6), "1mo", utc(2026, 11, 9, 6), "2026-11"},
		{utc(2026, 12, 31, 23), "1mo", utc(2026, 11, 30, 23), "2026-11"},
		{utc(2027, 1, 1, 0), "1mo", utc(2026, 12, 1, 0), "2026-12"},
		{utc(2027, 1, 31, 9), "1mo", utc(2026, 12, 31, 9), "2026-12"},
		{utc(2025, 3, 31, 9), "1mo", utc(2025, 2, 28, 9), "2025-02"},
		{utc(2024, 3, 31, 9), "1mo", utc(2024, 2, 29, 9), "2024-02"},
		{utc(2026, 5, 31, 9), "3mo", utc(2026, 2, 28, 9), "2026-02"},
		{utc(2028, 2, 29, 9), "12mo", utc(2027, 2, 28, 9), "2027-02"},
		{utc(2028, 2, 29, 9), "1y", utc(2027, 2, 28, 9), "2027-02"},
		{utc(2028, 2, 29, 9), "4y", utc(2024, 2, 29, 9), "2024-02"},
		{utc(2026, 3, 1, 0), "1d", utc(2026, 2, 28, 0), "2026-02"},
		// Still December 31st in UTC-5, already January 1st in UTC.
		{time.Date(2026, 12, 31, 22, 0, 0, 0, time.FixedZone("UTC-5", -5*3600)), "1mo", utc(2026, 12, 1, 3), "2026-12"},
	} {
		got, err := cutoff(c.now, c.age)
		if err != nil || !got.Equal(c.want) {
			t.Errorf("cutoff(%s, %q) = %v, %v; want %v", c.now.Format(time.RFC3339), c.age, got, err, c.want)
			continue
		}
		if keep := got.UTC().Format("2006-01"); keep != c.keep {
			t.Errorf("cutoff(%s, %q): retention keeps from %s, want %s", c.now.Format(time.RFC3339), c.age, keep, c.keep)
		}
	}
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	for _, bad := range []string{"", "12", "-3d", "0mo", "1w", "mo"} {
		if _, err := cutoff(now, bad); err == nil {
			t.Errorf("cutoff(%q) accepted", bad)
		}
	}
}

// PostgreSQL stopped for 30 s under load: traces go to the spool and are
// replayed when it is back; afterwards every request the clients sent has
// exactly one trace (request ids compared).
func TestPostgresOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 40s")
	}
	pg := testpg.NewCluster(t)
	p := startProxy(t, "LOOM_STORE_DRIVER=postgres", "LOOM_STORE_DSN="+pg.DSN())
	var mu sync.Mutex
	var sent []string // x-request-id of every answered request
	statuses := map[int]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, _, err := p.send("/v1/chat/completions", p.key, chatBody("gpt-ok", (i+w)%2 == 0))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				sent = append(sent, resp.Header.Get("X-Request-Id"))
				statuses[resp.StatusCode]++
				mu.Unlock()
				time.Sleep(20 * time.Millisecond)
			}
		}(w)
	}
	time.Sleep(2 * time.Second)
	pg.Stop(t)
	time.Sleep(3 * time.Second)
	if code, _ := get(t, p.gw.url+"/readyz"); code != 503 {
		t.Errorf("readyz = %d while PostgreSQL is down", code)
	}
	time.Sleep(27 * time.Second)
	pg.Start(t)
	time.Sleep(3 * time.Second)
	close(stop)
	wg.Wait()
	if statuses[200] != len(sent) {
		t.Fatalf("requests answered during the outage: %v", statuses)
	}
	st := openStore(t, p)
	waitTraces(t, st, "acme", int64(len(sent)))
	if code := p.gw.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("exit %d", code)
	}
	byRequest := map[string]int{}
	for _, tr := range traces(t, st, "acme") {
		byRequest[tr.RequestID]++
	}
	missing, dup := 0, 0
	for _, id := range sent {
		switch byRequest[id] {
		case 0:
			missing++
		case 1:
		default:
			dup++
		}
	}
	if missing != 0 || dup != 0 || len(byRequest) != len(sent) {
		t.Fatalf("%d requests, %d traces: %d missing, %d duplicated", len(sent), len(byRequest), missing, dup)
	}
	if !strings.Contains(p.gw.stderr.String(), "replayed spooled traces") {
		t.Fatal("nothing was spooled and replayed: the outage was not exercised")
	}
	if out := mustRun(t, p.dir, p.env, "verify"); !strings.Contains(out, "OK:") {
		t.Fatalf("verify: %s", out)
	}
	t.Logf("%d requests across a 30s PostgreSQL outage, %d traces, 0 missing, 0 duplicated", len(sent), len(byRequest))
}
