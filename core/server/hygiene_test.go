package server

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/internal/testdb"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/sdk/provider"
)

// spell returns name with each letter's case chosen at random.
func spell(rng *rand.Rand, name string) string {
	b := []byte(name)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' {
			if rng.IntN(2) == 0 {
				b[i] = c ^ 0x20
			}
		}
	}
	return string(b)
}

// keyHeaders are headers that may carry a copy of the client's key: those
// Loom reads it from, those a naive proxy forwards, and those Loom forwards.
var keyHeaders = []string{"Authorization", "X-Api-Key", "Api-Key", "Proxy-Authorization", "Cookie",
	"X-Forwarded-For", "X-Forwarded-Authorization", "Forwarded", "X-Foo", "X-Loom-Key", "OpenAI-Organization",
	"OpenAI-Project", "User-Agent", "Referer", "OpenAI-Beta", "Idempotency-Key", "X-Stainless-Retry-Count"}

// hygieneRequest is a raw HTTP/1.1 request whose key comes under a random
// spelling of a header Loom reads it from, with copies of it in random
// other headers, and legitimate values in some forwarded headers. It
// returns the request text and the forwarded headers whose values must go
// upstream as sent.
func hygieneRequest(rng *rand.Rand, key, path, body string) (string, map[string]string) {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: loom\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", path, len(body))
	switch rng.IntN(3) {
	case 0:
		fmt.Fprintf(&b, "%s: %s %s\r\n", spell(rng, "Authorization"), spell(rng, "Bearer"), key)
	case 1:
		fmt.Fprintf(&b, "%s: %s\r\n", spell(rng, "X-Api-Key"), key)
	default:
		fmt.Fprintf(&b, "%s: %s\r\n", spell(rng, "Api-Key"), key)
	}
	used := map[string]bool{}
	for _, i := range rng.Perm(len(keyHeaders))[:1+rng.IntN(len(keyHeaders))] {
		name := keyHeaders[i]
		v := key
		switch name {
		case "Authorization":
			v = "Bearer " + key // any copy under a key header must be the valid key
		case "X-Api-Key", "Api-Key":
		default:
			v = []string{key, "x " + key, key + "; y", "Bearer " + key}[rng.IntN(4)]
		}
		used[http.CanonicalHeaderKey(name)] = true
		fmt.Fprintf(&b, "%s: %s\r\n", spell(rng, name), v)
	}
	want := map[string]string{}
	for _, name := range forwardedHeaders {
		if !used[http.CanonicalHeaderKey(name)] && rng.IntN(2) == 0 {
			want[name] = fmt.Sprintf("value-%d", rng.IntN(1000))
			fmt.Fprintf(&b, "%s: %s\r\n", spell(rng, name), want[name])
		}
	}
	b.WriteString("\r\n")
	b.WriteString(body)
	return b.String(), want
}

// keyNeedles are the forms of a key that must not pass the gateway: the
// part of its secret beyond the displayed prefix (so the whole key), and
// its SHA-256 in hex.
func keyNeedles(key string) []string {
	h := sha256.Sum256([]byte(key))
	return []string{key[len(auth.DisplayPrefix(key)) : len(key)-6], hex.EncodeToString(h[:]), strings.ToUpper(hex.EncodeToString(h[:]))}
}

// What the server hands a plugin as the client's headers is at most the
// forwarded headers, each as the client sent it, and never the client's
// key, however its headers are spelled.
func TestUpstreamHeadersHoldNoKey(t *testing.T) {
	const seed = 20261121
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	key, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	forwarded, dropped := 0, 0
	for i := 0; i < 2000; i++ {
		raw, want := hygieneRequest(rng, key, "/v1/chat/completions", `{}`)
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := auth.KeyFromRequest(r); got != key {
			t.Fatalf("request %d: Loom reads the key %q from\n%s", i, got, raw)
		}
		got := upstreamHeaders(r)
		for k, v := range got {
			if !slices.Contains(forwardedHeaders, k) {
				t.Fatalf("request %d: %s handed to the plugin\n%s", i, k, raw)
			}
			for _, n := range keyNeedles(key) {
				if strings.Contains(k+v, n) {
					t.Fatalf("request %d: the key reaches the plugin in %s: %s\n%s", i, k, v, raw)
				}
			}
		}
		for _, k := range forwardedHeaders {
			if v, ok := want[k]; ok {
				if got[k] != v {
					t.Fatalf("request %d: %s = %q handed on, want %q\n%s", i, k, got[k], v, raw)
				}
				forwarded++
			} else if r.Header.Get(k) != "" {
				dropped++ // it held the key
			}
		}
	}
	t.Logf("%d forwarded header values passed on; %d holding the key held back", forwarded, dropped)
	if forwarded == 0 || dropped == 0 {
		t.Fatalf("the property was not exercised: %d forwarded, %d dropped", forwarded, dropped)
	}
}

// keyRecorder is a provider that records every request a plugin would get.
type keyRecorder struct {
	mu   sync.Mutex
	reqs []provider.Request
}

func (k *keyRecorder) Name() string { return "rec" }

func (k *keyRecorder) record(req *provider.Request) {
	k.mu.Lock()
	k.reqs = append(k.reqs, *req)
	k.mu.Unlock()
}

var okHeaders = map[string]string{"Content-Type": "application/json"}

func (k *keyRecorder) ChatCompletions(_ context.Context, req *provider.Request) (*provider.Response, error) {
	k.record(req)
	return &provider.Response{Status: 200, Headers: okHeaders, Body: []byte(`{"choices":[]}`)}, nil
}

func (k *keyRecorder) ChatCompletionsStream(_ context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	k.record(req)
	if err := out.Start(provider.StreamStart{Status: 200}); err != nil {
		return nil, err
	}
	for _, ev := range []string{`{"choices":[{"index":0,"delta":{"content":"hi"}}]}`, "[DONE]"} {
		if err := out.Send(provider.Event{Data: []byte(ev)}); err != nil {
			return nil, err
		}
	}
	return &provider.StreamEnd{}, nil
}

func (k *keyRecorder) Embeddings(_ context.Context, req *provider.Request) (*provider.Response, error) {
	k.record(req)
	return &provider.Response{Status: 200, Headers: okHeaders, Body: []byte(`{"data":[]}`)}, nil
}

func (k *keyRecorder) ListModels(context.Context) ([]provider.Model, error) { return nil, nil }

// Through the whole server, every request a plugin receives — headers,
// body, model, request id — holds no form of the client's key.
func TestPluginNeverSeesTheKey(t *testing.T) {
	ctx := context.Background()
	st := testdb.SQLite(t)
	tn, err := st.CreateTenant(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := auth.NewKey()
	if _, err := st.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Prefix: auth.DisplayPrefix(key), Hash: auth.HashKey(key)}); err != nil {
		t.Fatal(err)
	}
	rec := &keyRecorder{}
	rt := router.New(&config.Config{Tenants: []config.TenantRoutes{{Tenant: config.DefaultTenant,
		Routes: []config.Route{{Match: "*", Provider: "rec"}}}}})
	logs := &syncBuffer{}
	log := hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	s := New(Options{Store: st, Auth: auth.New(st, auth.Options{Logger: log}), Logger: log,
		Router: rt, Providers: providerMap{"rec": rec}, Recorder: newRecorder(t, st)})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	const seed, n = 20261122, 300
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	bodies := []struct{ path, body string }{
		{"/v1/chat/completions", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/chat/completions", `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/embeddings", `{"model":"text-embedding-3-small","input":"hi"}`},
	}
	for i := 0; i < n; i++ {
		b := bodies[rng.IntN(len(bodies))]
		raw, _ := hygieneRequest(rng, key, b.path, b.body)
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
		if err != nil {
			t.Fatal(err)
		}
		req.RequestURI, req.URL.Scheme, req.URL.Host = "", "http", strings.TrimPrefix(srv.URL, "http://")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d %s\n%s", i, resp.StatusCode, out, raw)
		}
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.reqs) != n {
		t.Fatalf("the provider got %d requests, want %d", len(rec.reqs), n)
	}
	withHeaders := 0
	for i, r := range rec.reqs {
		all := fmt.Sprintf("%s\n%s\n%s\n%v", r.RequestID, r.Model, r.Body, r.Headers)
		for _, n := range keyNeedles(key) {
			if strings.Contains(all, n) {
				t.Fatalf("request %d reached the plugin with the key:\n%s", i, all)
			}
		}
		if len(r.Headers) > 0 {
			withHeaders++
		}
	}
	t.Logf("%d requests reached the plugin, %d with forwarded headers", n, withHeaders)
	if withHeaders == 0 {
		t.Fatal("no forwarded header reached the plugin: the property was not exercised")
	}
	if strings.Contains(logs.String(), keyNeedles(key)[0]) {
		t.Fatal("the key reached the server's log")
	}
}
