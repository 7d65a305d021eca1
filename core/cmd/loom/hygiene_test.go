package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/sdk/sse"
)

// azureKey is the Azure provider's key startProxy sets.
const azureKey = "az-upstream-secret"

// redactedMark replaces a provider's key wherever its upstream reflects it
// (sdk/openaicompat).
const redactedMark = "[redacted]"

// loomNeedles are the forms of a Loom key that must never leave the
// gateway's authentication: the part of the secret beyond the displayed
// prefix (so the whole key too), and the SHA-256 the store keeps.
func loomNeedles(key string) []string {
	h := sha256.Sum256([]byte(key))
	x := hex.EncodeToString(h[:])
	return []string{key[len(auth.DisplayPrefix(key)) : len(key)-6], x, strings.ToUpper(x)}
}

// leaks returns the needles s contains.
func leaks(s string, needles ...string) []string {
	var out []string
	for _, n := range needles {
		if strings.Contains(s, n) {
			out = append(out, n)
		}
	}
	return out
}

// openedTrace is a trace with its sealed fields decrypted, all of its text in one string.
type openedTrace struct {
	store.Trace
	text string
}

// openTraces decrypts every trace of tenant, keyed by request id.
func openTraces(t *testing.T, st store.Store, tenant string) map[string][]openedTrace {
	t.Helper()
	mk, _ := base64.StdEncoding.DecodeString(testMasterKey)
	kr, err := seal.NewKeyring(mk, st)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]openedTrace{}
	for _, tr := range traces(t, st, tenant) {
		var all strings.Builder
		fmt.Fprintf(&all, "%+v\n", tr)
		for _, f := range []struct {
			name string
			s    store.Sealed
		}{{seal.FieldRequest, tr.Request}, {seal.FieldResponse, tr.Response}, {seal.FieldMessage, tr.Message}} {
			b, err := kr.Open(context.Background(), tr.TenantID, tr.KeyVersion, tr.ID, f.name, f.s)
			if err != nil {
				t.Fatal(err)
			}
			all.Write(b)
			all.WriteByte('\n')
		}
		out[tr.RequestID] = append(out[tr.RequestID], openedTrace{tr, all.String()})
	}
	return out
}

// randomCase spells s with each letter's case chosen at random.
func randomCase(rng *rand.Rand, s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z' && rng.IntN(2) == 0:
			b[i] = c - 32
		case c >= 'A' && c <= 'Z' && rng.IntN(2) == 0:
			b[i] = c + 32
		}
	}
	return string(b)
}

// hygieneCall is one generated request.
type hygieneCall struct {
	method, path, body string
	header             [][2]string // sent as spelled, in order
	model              string
	stream             bool
	status             int    // expected HTTP status
	traceStatus        string // expected trace status
	upstream           bool   // reaches the mock upstream
	beta               bool   // sends a legitimate OpenAI-Beta that must go upstream
	forwardPlant       bool   // a copy of the key is in a header Loom forwards
}

// plants are headers a naive proxy would forward, holding copies of the key.
var plants = []struct {
	name  string
	value func(key string) string
}{
	{"Proxy-Authorization", func(k string) string { return "Bearer " + k }},
	{"Cookie", func(k string) string { return "loom_key=" + k + "; theme=dark" }},
	{"X-Forwarded-For", func(k string) string { return "203.0.113.7, " + k }},
	{"X-Forwarded-Authorization", func(k string) string { return "Bearer " + k }},
	{"X-Forwarded-Host", func(k string) string { return k + ".example.com" }},
	{"Forwarded", func(k string) string { return "for=203.0.113.7;by=" + k }},
	{"X-Foo", func(k string) string { return k }},
	{"X-Loom-Key", func(k string) string { return k }},
	{"X-Original-Authorization", func(k string) string { return "Bearer " + k }},
	{"Authentication", func(k string) string { return "Bearer " + k }},
	{"Ocp-Apim-Subscription-Key", func(k string) string { return k }},
	{"X-Goog-Api-Key", func(k string) string { return k }},
	{"OpenAI-Organization", func(k string) string { return k }},
	{"OpenAI-Project", func(k string) string { return k }},
	{"Referer", func(k string) string { return "https://app.example/chat?key=" + k }},
	{"User-Agent", func(k string) string { return "acme-app/1.0 (" + k + ")" }},
	// The headers Loom does forward: a key in them must not go along.
	{"OpenAI-Beta", func(k string) string { return "assistants=v2; " + k }},
	{"Idempotency-Key", func(k string) string { return k }},
	{"X-Stainless-Retry-Count", func(k string) string { return k }},
	// The headers Loom reads keys from, holding the same (valid) key.
	{"Authorization", func(k string) string { return "Bearer " + k }},
	{"X-Api-Key", func(k string) string { return k }},
	{"Api-Key", func(k string) string { return k }},
}

var hygieneModels = []string{"gpt-ok", "azure/gpt-4o", "azure/my-deploy", "echo/echo-1",
	"leak-key", "leak-key-401", "leak-key-500", "azure/leak-key", "azure/leak-key-401", "azure/leak-key-500"}

func genHygieneCall(rng *rand.Rand, key string, i int) hygieneCall {
	c := hygieneCall{method: "POST", path: "/v1/chat/completions", status: 200, traceStatus: "ok", upstream: true}
	switch n := rng.IntN(20); {
	case n == 0:
		c.method, c.path = "GET", "/v1/models"
		c.upstream = false // the model list is cached after the first call
	case n <= 2:
		c.path, c.model = "/v1/embeddings", []string{"text-embedding-3-small", "echo/echo-1"}[n-1]
		c.body = fmt.Sprintf(`{"model":%q,"input":"text %d"}`, c.model, i)
	default:
		c.model, c.stream = hygieneModels[rng.IntN(len(hygieneModels))], rng.IntN(2) == 0
		c.body = fmt.Sprintf(`{"model":%q,"stream":%v,"messages":[{"role":"user","content":"hello number %d"}]}`, c.model, c.stream, i)
	}
	if strings.HasPrefix(c.model, "echo/") {
		c.upstream = false
	}
	switch {
	case strings.HasSuffix(c.model, "-401"):
		c.status, c.traceStatus = 401, "upstream_error"
	case strings.HasSuffix(c.model, "-500"):
		c.status, c.traceStatus = 500, "upstream_error"
	}
	// The key, under one of the headers Loom takes it from.
	pad := func() string { return strings.Repeat(" ", rng.IntN(3)) }
	switch rng.IntN(3) {
	case 0:
		c.header = append(c.header, [2]string{randomCase(rng, "Authorization"), randomCase(rng, "Bearer") + " " + pad() + key + pad()})
	case 1:
		c.header = append(c.header, [2]string{randomCase(rng, "X-Api-Key"), pad() + key})
	default:
		c.header = append(c.header, [2]string{randomCase(rng, "Api-Key"), key + pad()})
	}
	// Copies of it where a naive proxy would pass them on.
	planted := map[string]bool{}
	for _, j := range rng.Perm(len(plants))[:2+rng.IntN(6)] {
		c.header = append(c.header, [2]string{randomCase(rng, plants[j].name), plants[j].value(key)})
		planted[plants[j].name] = true
	}
	c.forwardPlant = planted["OpenAI-Beta"] || planted["Idempotency-Key"] || planted["X-Stainless-Retry-Count"]
	if rng.IntN(4) == 0 {
		c.path += "?api-key=" + key + "&key=" + key
	}
	if rng.IntN(2) == 0 && c.upstream && !planted["OpenAI-Beta"] {
		c.beta = true
		c.header = append(c.header, [2]string{randomCase(rng, "OpenAI-Beta"), "assistants=v2"})
	}
	return c
}

// TestHeaderHygiene sends a few hundred requests whose Loom key comes under
// every header spelling Loom accepts, with copies planted in headers a naive
// proxy would forward, through the openai, azure and echo routes, streamed
// and not, to an upstream that reflects its own key back. The Loom key never
// reaches the upstream, the log or a trace; the provider keys never reach
// the client, the log or a trace.
func TestHeaderHygiene(t *testing.T) {
	seed := uint64(20261121)
	if s := os.Getenv("LOOM_HYGIENE_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	n := 300
	if testing.Short() {
		n = 60
	}
	t.Logf("seed %d (LOOM_HYGIENE_SEED), %d requests", seed, n)
	rng := rand.New(rand.NewPCG(seed, seed))
	p := startProxy(t)
	calls := make([]hygieneCall, n)
	for i := range calls {
		calls[i] = genHygieneCall(rng, p.key, i)
	}
	needles := loomNeedles(p.key)
	providerKeys := []string{upstreamKey, azureKey}

	ids := make([]string, n)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				ids[i] = hygieneDo(t, p, calls[i])
			}
		}()
	}
	for i := range calls {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	// The upstream: no form of the Loom key in any method, path, query,
	// header name or value, or body.
	reqs := p.up.Requests()
	byID := map[string]upstreamRequest{}
	for _, r := range reqs {
		var all strings.Builder
		fmt.Fprintf(&all, "%s %s?%s\n%s\n", r.Method, r.Path, r.Query, r.RawBody)
		for k, vs := range r.Header {
			fmt.Fprintf(&all, "%s: %s\n", k, strings.Join(vs, "\x00"))
		}
		if l := leaks(all.String(), append(needles, p.key)...); l != nil {
			t.Errorf("the Loom key reached the upstream (%q):\n%s", l, all.String())
		}
		byID[r.RequestID] = r
	}
	upstreamCalls, betas, forwardPlants, kinds := 0, 0, 0, map[string]int{}
	for i, c := range calls {
		kinds[fmt.Sprintf("%s stream=%v status=%d", c.model, c.stream, c.status)]++
		if !c.upstream {
			continue
		}
		upstreamCalls++
		if c.forwardPlant {
			forwardPlants++
		}
		r, ok := byID[ids[i]]
		if !ok {
			t.Errorf("request %d (%s) never reached the upstream", i, c.model)
			continue
		}
		// The legitimate forwarded header still goes through.
		if c.beta {
			betas++
			if got := r.Header.Values("Openai-Beta"); len(got) != 1 || got[0] != "assistants=v2" {
				t.Errorf("request %d: upstream got OpenAI-Beta %q, want [assistants=v2]", i, got)
			}
		}
	}
	t.Logf("%d requests, %d reached the upstream (%d with a forwarded OpenAI-Beta, %d with the key in a forwarded header); by kind: %v",
		n, upstreamCalls, betas, forwardPlants, kinds)
	if betas == 0 || forwardPlants == 0 {
		t.Errorf("the generated requests do not exercise forwarding: %d with OpenAI-Beta, %d with the key in a forwarded header", betas, forwardPlants)
	}

	// The log, at debug level, holds the key's display prefix (the access
	// log names it) and nothing more of it, nor a provider key.
	logs := p.gw.stderr.String()
	if !strings.Contains(logs, auth.DisplayPrefix(p.key)) {
		t.Errorf("the access log never names the key by its prefix %s", auth.DisplayPrefix(p.key))
	}
	if l := leaks(logs, append(needles, providerKeys...)...); l != nil {
		t.Errorf("a secret reached Loom's log: %q", l)
	}

	// The traces: exactly one per request, with the expected outcome, and no
	// secret in any field, decrypted.
	st := openStore(t, p)
	waitTraces(t, st, "acme", int64(n))
	opened := openTraces(t, st, "acme")
	total := 0
	for _, trs := range opened {
		total += len(trs)
	}
	if total != n {
		t.Errorf("%d traces for %d requests", total, n)
	}
	for i, c := range calls {
		trs := opened[ids[i]]
		if len(trs) != 1 {
			t.Errorf("request %d (%s): %d traces", i, ids[i], len(trs))
			continue
		}
		tr := trs[0]
		if tr.Status != c.traceStatus || tr.HTTPStatus != c.status {
			t.Errorf("request %d (%s stream=%v): trace %s %d, want %s %d", i, c.model, c.stream, tr.Status, tr.HTTPStatus, c.traceStatus, c.status)
		}
		if l := leaks(tr.text, append(needles, providerKeys...)...); l != nil {
			t.Errorf("request %d (%s stream=%v): trace holds a secret %q:\n%s", i, c.model, c.stream, l, tr.text)
		}
	}
}

// hygieneDo sends c, checks what the client got, and returns Loom's request id.
func hygieneDo(t *testing.T, p *proxyEnv, c hygieneCall) string {
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, p.gw.url+c.path, body)
	if err != nil {
		t.Error(err)
		return ""
	}
	for _, h := range c.header {
		req.Header[h[0]] = append(req.Header[h[0]], h[1]) // as spelled: Go writes map keys unchanged
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return ""
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	id := resp.Header.Get("X-Request-Id")
	if resp.StatusCode != c.status {
		t.Errorf("%s %s (%s stream=%v): status %d, want %d: %.300s", c.method, c.path, c.model, c.stream, resp.StatusCode, c.status, got)
	}
	var all strings.Builder
	for k, vs := range resp.Header {
		fmt.Fprintf(&all, "%s: %s\n", k, strings.Join(vs, "\x00"))
	}
	all.Write(got)
	if l := leaks(all.String(), upstreamKey, azureKey); l != nil {
		t.Errorf("%s (stream=%v): a provider key reached the client:\n%s", c.model, c.stream, all.String())
	}
	if !strings.Contains(c.model, "leak-key") {
		return id
	}
	// The misbehaving upstream's answer arrives with its key masked, and
	// otherwise unchanged.
	secret := upstreamKey
	if strings.HasPrefix(c.model, "azure/") {
		secret = azureKey
	}
	if h := resp.Header.Get("X-Upstream-Request-Id"); h != "req-"+redactedMark {
		t.Errorf("%s: x-upstream-request-id %q, want %q", c.model, h, "req-"+redactedMark)
	}
	if h := resp.Header.Get("X-Ratelimit-Remaining-Requests"); h != redactedMark {
		t.Errorf("%s: x-ratelimit-remaining-requests %q, want %q", c.model, h, redactedMark)
	}
	switch {
	case c.status != 200:
		if !strings.Contains(string(got), "Incorrect API key provided: "+redactedMark+".") && !strings.Contains(string(got), "of key "+redactedMark+".") {
			t.Errorf("%s: error body not masked as expected: %s", c.model, got)
		}
	case !c.stream:
		if !strings.Contains(string(got), `"content":"You called with `+redactedMark+`"`) {
			t.Errorf("%s: body not masked as expected: %s", c.model, got)
		}
	default:
		var events []string
		rd := sse.NewReader(strings.NewReader(string(got)), 1<<20)
		for {
			ev, err := rd.Next()
			if err != nil {
				break
			}
			events = append(events, string(ev.Data))
		}
		sent := p.up.Sent(id)
		if len(sent) < 2 {
			t.Errorf("%s: upstream sent %d events", c.model, len(sent))
			return id
		}
		// The usage chunk Loom asked for is withheld; the event quoting the
		// key is masked; every other payload is byte for byte the upstream's.
		var want []string
		for j, ev := range sent {
			if j != len(sent)-2 {
				want = append(want, strings.ReplaceAll(ev, secret, redactedMark))
			}
		}
		if strings.Join(events, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s: client got\n%s\nwant\n%s", c.model, strings.Join(events, "\n"), strings.Join(want, "\n"))
		}
	}
	return id
}
