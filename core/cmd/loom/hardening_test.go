package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/loom-runtime/loom/core/metrics"
	"github.com/loom-runtime/loom/core/store"
)

// TestAzureDotSegmentDeployments: a model naming the deployment "." or
// ".." is refused by the azure plugin with a 400; its request never
// reaches the upstream (where /openai/deployments/../chat/completions
// would resolve to another endpoint), and it is traced.
func TestAzureDotSegmentDeployments(t *testing.T) {
	p := startProxy(t)
	type sent struct{ model, rid string }
	var all []sent
	for _, model := range []string{"azure/.", "azure/.."} {
		for _, stream := range []bool{false, true} {
			resp, body := p.post(t, "/v1/chat/completions", p.key, chatBody(model, stream))
			var env struct {
				Error struct{ Type, Code, Message string }
			}
			if resp.StatusCode != http.StatusBadRequest || json.Unmarshal(body, &env) != nil ||
				env.Error.Type != "invalid_request_error" || env.Error.Code != "invalid_deployment" {
				t.Errorf("%s (stream %v): %d %s", model, stream, resp.StatusCode, body)
			}
			all = append(all, sent{model, resp.Header.Get("X-Request-Id")})
		}
	}
	// A deployment whose name only contains dots still goes through.
	resp, body := p.post(t, "/v1/chat/completions", p.key, chatBody("azure/v1.5", false))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("azure/v1.5: %d %s", resp.StatusCode, body)
	}
	if up, ok := p.up.Find(resp.Header.Get("X-Request-Id")); !ok || up.Path != "/openai/deployments/v1.5/chat/completions" {
		t.Fatalf("azure/v1.5 reached the upstream at %q (%v)", up.Path, ok)
	}
	for _, s := range all {
		if up, ok := p.up.Find(s.rid); ok {
			t.Errorf("%s reached the upstream at %s", s.model, up.Path)
		}
	}
	for _, up := range p.up.Requests() {
		if strings.Contains(up.Path, "/./") || strings.Contains(up.Path, "/../") {
			t.Errorf("the upstream received the path %q", up.Path)
		}
	}
	// Every refused request has its trace.
	st := openStore(t, p)
	waitTraces(t, st, "acme", int64(len(all)+1))
	byRequest := map[string]int{}
	for _, tr := range traces(t, st, "acme") {
		byRequest[tr.RequestID] = tr.HTTPStatus
	}
	for _, s := range all {
		if got, ok := byRequest[s.rid]; !ok || got != http.StatusBadRequest {
			t.Errorf("%s: trace with HTTP status %d (found %v), want 400", s.model, got, ok)
		}
	}
}

// metricLabels matches the label set of a loom_* sample in the text
// exposition (label values are quoted, with \\, \" and \n escaped).
var metricLabels = regexp.MustCompile(`(?m)^(loom_[a-z_]+)\{((?:[a-z_]+="(?:[^"\\]|\\.)*",?)*)\} `)

var metricLabel = regexp.MustCompile(`([a-z_]+)="((?:[^"\\]|\\.)*)"`)

// TestMetricsLabels: through the real gateway, model names that are
// huge, hold control bytes or come in hundreds stay bounded in /metrics,
// and one tenant's flood of model names never turns another tenant's
// model into "other".
func TestMetricsLabels(t *testing.T) {
	p := startProxy(t)
	huge := "gpt-" + strings.Repeat("x", 64<<10)
	// Sent first, while acme's model budget is still open. The API refuses
	// them (400: over 256 bytes, control characters), and their refusals
	// are still counted, under the model name as the trace keeps it.
	for _, model := range []string{huge, huge + "y", "gpt-nul\x00bell\x07"} {
		m, _ := json.Marshal(model) // control bytes as \u escapes
		resp, body := p.post(t, "/v1/chat/completions", p.key, `{"model":`+string(m)+`,"messages":[{"role":"user","content":"hi"}]}`)
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("model of %d bytes: %d %s", len(model), resp.StatusCode, body)
		}
	}
	// acme floods: more distinct models than any budget.
	const flood = 150
	var wg sync.WaitGroup
	jobs := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range jobs {
				resp, body, err := p.send("/v1/chat/completions", p.key, chatBody(fmt.Sprintf("gpt-flood-%03d", i), false))
				if err != nil || resp.StatusCode != http.StatusOK {
					t.Errorf("flood %d: %v %s", i, err, body)
				}
			}
		})
	}
	for i := range flood {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	// Then another tenant's first request.
	if resp, body := p.post(t, "/v1/chat/completions", p.narrow, chatBody("gpt-narrow-1", false)); resp.StatusCode != http.StatusOK {
		t.Fatalf("narrow: %d %s", resp.StatusCode, body)
	}

	code, out := get(t, p.gw.url+"/metrics", "Authorization", "Bearer admin-token-secret")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	t.Logf("/metrics: %d bytes", len(out))
	if strings.ContainsRune(out, 0) {
		t.Error("/metrics holds a NUL byte")
	}
	want := `loom_requests_total{model="gpt-narrow-1",status="ok",tenant="narrow"} 1`
	if !strings.Contains(out, want) {
		t.Errorf("/metrics lacks %s (another tenant's flood pushed it out)", want)
	}
	acmeModels, bad := map[string]bool{}, map[string]bool{}
	for _, m := range metricLabels.FindAllStringSubmatch(out, -1) {
		labels := map[string]string{}
		for _, l := range metricLabel.FindAllStringSubmatch(m[2], -1) {
			v := l[2]
			labels[l[1]] = v
			if len(v) > metrics.MaxLabelBytes || !utf8.ValidString(v) || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				if !bad[v] {
					t.Errorf("%s: label %s has a value of %d bytes: %.80q…", m[1], l[1], len(v), v)
				}
				bad[v] = true
			}
		}
		if m[1] == "loom_requests_total" && labels["tenant"] == "acme" {
			acmeModels[labels["model"]] = true
		}
	}
	if n := len(acmeModels); n != metrics.MaxModelsPerTenant+1 || !acmeModels[metrics.Other] {
		t.Errorf("acme has %d model labels (other among them: %v), want %d and other", n, acmeModels[metrics.Other], metrics.MaxModelsPerTenant)
	}
	// The sanitised names: control bytes replaced, huge names cut with an
	// ellipsis; the two huge names share their first bytes, so one series.
	cut := metrics.LabelValue(huge)
	if len(cut) > metrics.MaxLabelBytes || !strings.HasSuffix(cut, "…") || cut != metrics.LabelValue(huge+"y") {
		t.Fatalf("LabelValue(huge) = %.40q… (%d bytes)", cut, len(cut))
	}
	for model, n := range map[string]string{"gpt-nul\uFFFDbell\uFFFD": "1", cut: "2"} {
		if line := fmt.Sprintf(`loom_requests_total{model=%q,status="rejected",tenant="acme"} %s`, model, n); !strings.Contains(out, line) {
			t.Errorf("/metrics lacks %s", line)
		}
	}
}

// TestVerifyReportsExactPosition: `loom verify` on a tampered store names
// the break by its chain sequence number (1-based: a chain's first trace
// is seq 1, as the README says) and counts exactly the traces that
// verified before it — on SQLite and PostgreSQL.
func TestVerifyReportsExactPosition(t *testing.T) {
	for _, backendName := range []string{"sqlite", "postgres"} {
		t.Run(backendName, func(t *testing.T) {
			var extra []string
			if backendName == "postgres" {
				extra = storeEnv(t, "postgres")
			}
			p := startProxy(t, extra...)
			const n = 10
			for range n {
				p.post(t, "/v1/chat/completions", p.key, chatBody("gpt-ok", false))
			}
			st := openStore(t, p)
			waitTraces(t, st, "acme", n)
			p.gw.stop(t, syscall.SIGTERM)
			bySeq := map[int64]store.Trace{}
			for _, tr := range traces(t, st, "acme") {
				bySeq[tr.ChainSeq] = tr
			}
			if len(bySeq) != n || bySeq[1].ID == "" || bySeq[n].ID == "" {
				t.Fatalf("chain seqs %v, want 1 to %d", slices.Sorted(maps.Keys(bySeq)), n)
			}
			chain := bySeq[1].ChainID
			tamper := st.(interface {
				TamperTrace(ctx context.Context, id, column string, value any) error
			})
			for _, tc := range []struct {
				seq  int64
				good int
			}{{7, 6}, {1, 0}} { // the second tampering moves the first break to seq 1
				victim := bySeq[tc.seq].ID
				if err := tamper.TamperTrace(context.Background(), victim, "status", "forged"); err != nil {
					t.Fatal(err)
				}
				want := fmt.Sprintf("chain %s: BROKEN after %d good traces: chain %s, seq %d (trace %s): its content does not match its hash",
					chain, tc.good, chain, tc.seq, victim)
				for _, args := range [][]string{{"verify"}, {"verify", "--tenant", "acme"}} {
					r := runLoom(t, p.dir, p.env, args...)
					if r.code != 1 || !strings.Contains(r.stdout, want) {
						t.Errorf("loom %s after tampering with seq %d: exit %d\n%s\nwant a line starting %q", strings.Join(args, " "), tc.seq, r.code, r.stdout, want)
					}
				}
			}
		})
	}
}

// TestLiveTailBounds: through the real gateway, a tenant can hold at most
// 10 live tails at once (README, Dashboard); the 11th is a 429 in the
// OpenAI error envelope, other tenants and the admin keep their own
// places, and a closed tail frees its place.
func TestLiveTailBounds(t *testing.T) {
	p := startProxy(t)
	type stream struct {
		resp   *http.Response
		cancel context.CancelFunc
	}
	open := func(key string) (*stream, []byte) {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", p.gw.url+"/api/v1/traces/live", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			cancel()
			return &stream{resp: resp}, b
		}
		s := &stream{resp: resp, cancel: cancel}
		t.Cleanup(func() { s.cancel(); s.resp.Body.Close() })
		return s, nil
	}
	const perTenant = 10
	var acme []*stream
	for i := range perTenant {
		s, body := open(p.key)
		if s.resp.StatusCode != http.StatusOK {
			t.Fatalf("live tail %d of acme: %d %s", i+1, s.resp.StatusCode, body)
		}
		acme = append(acme, s)
	}
	s, body := open(p.key)
	var env struct {
		Error struct{ Type, Code, Message string }
	}
	if s.resp.StatusCode != http.StatusTooManyRequests || json.Unmarshal(body, &env) != nil ||
		env.Error.Type != "rate_limit_error" || env.Error.Code != "too_many_live_tails" ||
		!strings.Contains(env.Error.Message, fmt.Sprintf("at most %d at once", perTenant)) {
		t.Fatalf("live tail %d of acme: %d %s", perTenant+1, s.resp.StatusCode, body)
	}
	for name, key := range map[string]string{"narrow": p.narrow, "admin": "admin-token-secret"} {
		if s, body := open(key); s.resp.StatusCode != http.StatusOK {
			t.Fatalf("%s, while acme is at its bound: %d %s", name, s.resp.StatusCode, body)
		}
	}
	// Closing one frees its place once the gateway has noticed.
	acme[0].cancel()
	acme[0].resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, body := open(p.key)
		if s.resp.StatusCode == http.StatusOK {
			break
		}
		if s.resp.StatusCode != http.StatusTooManyRequests || time.Now().After(deadline) {
			t.Fatalf("after closing a tail: %d %s", s.resp.StatusCode, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The gateway still serves.
	if resp, body := p.post(t, "/v1/chat/completions", p.key, chatBody("gpt-ok", false)); resp.StatusCode != http.StatusOK {
		t.Fatalf("chat after the live tails: %d %s", resp.StatusCode, body)
	}
}
