package auth

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/internal/testdb"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/sqlite"
)

// countingStore is the real SQLite store, counting the lookups that reach it.
type countingStore struct {
	*sqlite.Store
	lookups atomic.Int64
}

func (c *countingStore) KeyByHash(ctx context.Context, h [32]byte) (store.KeyMatch, error) {
	c.lookups.Add(1)
	return c.Store.KeyByHash(ctx, h)
}

func newStore(t *testing.T) *countingStore {
	t.Helper()
	st := testdb.SQLite(t)
	return &countingStore{Store: st}
}

// addKey creates a tenant (if needed) and a key for it, returning both.
func addKey(t testing.TB, st store.Store, tenant string) (store.Tenant, store.APIKey, string) {
	t.Helper()
	ctx := context.Background()
	tn, err := st.TenantByName(ctx, tenant)
	if err != nil {
		if tn, err = st.CreateTenant(ctx, tenant); err != nil {
			t.Fatal(err)
		}
	}
	plain, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := st.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Prefix: DisplayPrefix(plain), Hash: HashKey(plain)})
	if err != nil {
		t.Fatal(err)
	}
	return tn, k, plain
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func wantCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	e, ok := err.(*apierror.Error)
	if !ok {
		t.Fatalf("error %v (%T) is not an *apierror.Error", err, err)
	}
	if e.Status != status || e.Code != code {
		t.Fatalf("got %d %s (%s), want %d %s", e.Status, e.Code, e.Message, status, code)
	}
	if status == http.StatusUnauthorized && e.Type != apierror.TypeInvalidRequest {
		t.Fatalf("type %q, want invalid_request_error", e.Type)
	}
}

func TestHeaderForms(t *testing.T) {
	st := newStore(t)
	tn, _, key := addKey(t, st, "acme")
	a := New(st, Options{})
	other := "loom_" + key[5:] // same key: used where two headers must agree
	tests := []struct {
		name    string
		headers map[string]string
		ok      bool
	}{
		{"authorization bearer", map[string]string{"Authorization": "Bearer " + key}, true},
		{"lower-case scheme", map[string]string{"Authorization": "bearer " + key}, true},
		{"upper-case scheme", map[string]string{"Authorization": "BEARER " + key}, true},
		{"extra spaces", map[string]string{"Authorization": "  Bearer   " + key + "  "}, true},
		{"lower-case header name", map[string]string{"authorization": "Bearer " + key}, true},
		{"x-api-key", map[string]string{"x-api-key": key}, true},
		{"X-API-KEY", map[string]string{"X-API-KEY": key}, true},
		{"api-key (Azure clients)", map[string]string{"api-key": key}, true},
		{"Api-Key", map[string]string{"Api-Key": key}, true},
		{"bearer wins over x-api-key", map[string]string{"Authorization": "Bearer " + other, "x-api-key": "junk"}, true},
		{"basic auth then api-key", map[string]string{"Authorization": "Basic dXNlcjpwYXNz", "api-key": key}, true},
		{"no header", map[string]string{}, false},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, false},
		{"basic auth only", map[string]string{"Authorization": "Basic dXNlcjpwYXNz"}, false},
		{"key without scheme", map[string]string{"Authorization": key}, false},
		{"empty x-api-key", map[string]string{"x-api-key": ""}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/v1/models", nil)
			for k, v := range tt.headers {
				r.Header.Set(k, v)
			}
			p, err := a.Authenticate(context.Background(), r)
			if !tt.ok {
				wantCode(t, err, 401, "invalid_api_key")
				return
			}
			if err != nil {
				t.Fatalf("Authenticate: %v", err)
			}
			if p.TenantID != tn.ID || p.TenantName != "acme" {
				t.Fatalf("principal %+v, want tenant acme", p)
			}
		})
	}
}

func TestKeyStates(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	_, _, good := addKey(t, st, "acme")
	_, revokedKey, revoked := addKey(t, st, "acme")
	if _, err := st.RevokeAPIKey(ctx, revokedKey.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	off, _, disabled := addKey(t, st, "offco")
	if err := st.SetTenantStatus(ctx, off.ID, store.TenantDisabled); err != nil {
		t.Fatal(err)
	}
	unknown, _ := NewKey()
	badSum := good[:len(good)-1] + map[bool]string{true: "b", false: "a"}[good[len(good)-1] == 'a']

	a := New(st, Options{})
	tests := []struct {
		name, key, code string
		msg             string
	}{
		{"valid", good, "", ""},
		{"malformed", "loom_short", "invalid_api_key", "Malformed"},
		{"openai key sent to loom", "sk-abc123", "invalid_api_key", "Malformed"},
		{"bad checksum", badSum, "invalid_api_key", "checksum"},
		{"unknown", unknown, "invalid_api_key", "Incorrect API key"},
		{"revoked", revoked, "invalid_api_key", "revoked"},
		{"disabled tenant", disabled, "invalid_api_key", "disabled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := a.AuthenticateKey(ctx, tt.key)
			if tt.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantCode(t, err, 401, tt.code)
			if msg := err.(*apierror.Error).Message; !bytes.Contains([]byte(msg), []byte(tt.msg)) {
				t.Fatalf("message %q does not mention %q", msg, tt.msg)
			}
			if bytes.Contains(err.(*apierror.Error).Body(), []byte(tt.key)) && len(tt.key) > 12 {
				t.Fatal("error body echoes the key")
			}
		})
	}
	// Malformed and bad-checksum keys never reach the store.
	before := st.lookups.Load()
	for i := 0; i < 10; i++ {
		a.AuthenticateKey(ctx, "loom_short")
		a.AuthenticateKey(ctx, badSum)
	}
	if n := st.lookups.Load() - before; n != 0 {
		t.Fatalf("%d store lookups for keys that fail the format check", n)
	}
}

func TestCacheExpiry(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	tn, k, key := addKey(t, st, "acme")
	a := New(st, Options{CacheTTL: 5 * time.Second, Now: clock.Now})

	if _, err := a.AuthenticateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		a.AuthenticateKey(ctx, key)
	}
	if n := st.lookups.Load(); n != 1 {
		t.Fatalf("%d store lookups for 6 authentications within the TTL, want 1", n)
	}

	t.Run("revoked key stops within the TTL", func(t *testing.T) {
		if _, err := st.RevokeAPIKey(ctx, k.ID, time.Now()); err != nil {
			t.Fatal(err)
		}
		clock.Advance(4 * time.Second)
		if _, err := a.AuthenticateKey(ctx, key); err != nil {
			t.Fatalf("cached key failed before the TTL: %v", err)
		}
		clock.Advance(1 * time.Second)
		_, err := a.AuthenticateKey(ctx, key)
		wantCode(t, err, 401, "invalid_api_key")
	})

	t.Run("disabled tenant stops within the TTL", func(t *testing.T) {
		_, _, key2 := addKey(t, st, "acme")
		if _, err := a.AuthenticateKey(ctx, key2); err != nil {
			t.Fatal(err)
		}
		if err := st.SetTenantStatus(ctx, tn.ID, store.TenantDisabled); err != nil {
			t.Fatal(err)
		}
		clock.Advance(5 * time.Second)
		_, err := a.AuthenticateKey(ctx, key2)
		wantCode(t, err, 401, "invalid_api_key")
		if err := st.SetTenantStatus(ctx, tn.ID, store.TenantActive); err != nil {
			t.Fatal(err)
		}
		clock.Advance(5 * time.Second)
		if _, err := a.AuthenticateKey(ctx, key2); err != nil {
			t.Fatalf("re-enabled tenant still refused after the TTL: %v", err)
		}
	})

	t.Run("unknown keys are cached too", func(t *testing.T) {
		plain, _ := NewKey()
		before := st.lookups.Load()
		for i := 0; i < 5; i++ {
			_, err := a.AuthenticateKey(ctx, plain)
			wantCode(t, err, 401, "invalid_api_key")
		}
		if n := st.lookups.Load() - before; n != 1 {
			t.Fatalf("%d lookups for a repeated unknown key, want 1", n)
		}
		// The key is created afterwards: it works once the negative entry expires.
		if _, err := st.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Prefix: DisplayPrefix(plain), Hash: HashKey(plain)}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.AuthenticateKey(ctx, plain); err == nil {
			t.Fatal("negative cache entry ignored")
		}
		clock.Advance(5 * time.Second)
		if _, err := a.AuthenticateKey(ctx, plain); err != nil {
			t.Fatalf("new key refused after the TTL: %v", err)
		}
	})
}

func TestCacheIsBounded(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	a := New(st, Options{CacheSize: 3})
	for i := 0; i < 10; i++ {
		_, _, key := addKey(t, st, "acme")
		if _, err := a.AuthenticateKey(ctx, key); err != nil {
			t.Fatal(err)
		}
		if n := a.cache.len(); n > 3 {
			t.Fatalf("cache holds %d entries, bound is 3", n)
		}
	}
}

func TestConcurrentMissesShareOneLookup(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	_, _, key := addKey(t, st, "acme")
	a := New(st, Options{})
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := a.AuthenticateKey(ctx, key); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if n := st.lookups.Load(); n > 5 {
		t.Fatalf("%d store lookups for 50 simultaneous first uses of one key", n)
	}
}

func TestStoreDown(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	_, _, cached := addKey(t, st, "acme")
	_, _, uncached := addKey(t, st, "acme")
	var logs bytes.Buffer
	a := New(st, Options{Logger: hclog.New(&hclog.LoggerOptions{Output: &logs})})
	if _, err := a.AuthenticateKey(ctx, cached); err != nil {
		t.Fatal(err)
	}
	st.Store.Close()
	if _, err := a.AuthenticateKey(ctx, cached); err != nil {
		t.Fatalf("cached key failed while the store is down: %v", err)
	}
	_, err := a.AuthenticateKey(ctx, uncached)
	wantCode(t, err, 503, "store_unavailable")
	if bytes.Contains(logs.Bytes(), []byte(uncached)) || bytes.Contains(logs.Bytes(), []byte(uncached[13:])) {
		t.Fatalf("the raw key reached the log: %s", logs.String())
	}
	if logs.Len() == 0 {
		t.Fatal("store failure was not logged")
	}
}

func TestLastUsedIsRecorded(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	clock := &fakeClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	tn, k, key := addKey(t, st, "acme")
	a := New(st, Options{Now: clock.Now})
	if _, err := a.AuthenticateKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	keys, err := st.ListAPIKeys(ctx, tn.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 1 || keys[0].ID != k.ID || keys[0].LastUsedAt == nil || !keys[0].LastUsedAt.Equal(clock.Now()) {
		t.Fatalf("last used not recorded: %+v", keys)
	}
}

// Two tenants hammer one authenticator at once (run with -race): every
// request must come out with its own tenant, never the other one's.
func TestConcurrentTenantsNeverMix(t *testing.T) {
	st := newStore(t)
	ta, _, keyA := addKey(t, st, "tenant-a")
	tb, _, keyB := addKey(t, st, "tenant-b")
	a := New(st, Options{CacheTTL: 20 * time.Millisecond}) // short TTL: exercise misses too
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.Authenticate(r.Context(), r)
		if err != nil {
			apierror.Write(w, err)
			return
		}
		ctx := WithPrincipal(r.Context(), p)
		time.Sleep(time.Duration(len(p.TenantName)%3) * time.Microsecond)
		got, _ := FromContext(ctx)
		fmt.Fprint(w, got.TenantID)
	}))
	defer srv.Close()

	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	var wg sync.WaitGroup
	var mixed, failed atomic.Int64
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				key, want := keyA, ta.ID
				if (g+i)%2 == 1 {
					key, want = keyB, tb.ID
				}
				req, _ := http.NewRequest("GET", srv.URL, nil)
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
				} else if string(body) != want {
					mixed.Add(1)
				}
			}
		}(g)
	}
	wg.Wait()
	if mixed.Load() != 0 || failed.Load() != 0 {
		t.Fatalf("%d responses with the other tenant, %d failures", mixed.Load(), failed.Load())
	}
}

// While the store is unreachable, a key that was valid when last checked
// keeps working past the TTL (for StaleFor); refused keys stay refused.
func TestStaleKeysServeDuringStoreOutage(t *testing.T) {
	ctx := context.Background()
	st := newStore(t)
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, _, good := addKey(t, st, "acme")
	unknown, _ := NewKey()
	a := New(st, Options{CacheTTL: 5 * time.Second, StaleFor: time.Minute, Now: clock.Now})
	if _, err := a.AuthenticateKey(ctx, good); err != nil {
		t.Fatal(err)
	}
	a.AuthenticateKey(ctx, unknown)
	st.Store.Close()
	clock.Advance(30 * time.Second)
	if _, err := a.AuthenticateKey(ctx, good); err != nil {
		t.Fatalf("valid key refused 30s into an outage: %v", err)
	}
	_, err := a.AuthenticateKey(ctx, unknown)
	wantCode(t, err, 503, "store_unavailable")
	clock.Advance(time.Minute)
	_, err = a.AuthenticateKey(ctx, good)
	wantCode(t, err, 503, "store_unavailable")
}
