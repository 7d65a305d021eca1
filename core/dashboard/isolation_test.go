package dashboard

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
)

// Tenant A, with its key, tries to reach tenant B's data through every
// endpoint; the admin token sees everything, a wrong one nothing.
func TestCrossTenant(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		e.seedStandard(t)
		aSeeds, bSeeds := e.seedsOf(e.ofTenant(e.a)), e.seedsOf(e.ofTenant(e.b))
		aIDs := ids(newestFirst(aSeeds))

		t.Run("trace detail: B's ids are not found, exactly like unknown ids", func(t *testing.T) {
			_, unknown := e.request(t, "GET", "/api/v1/traces/"+uuid.Must(uuid.NewV7()).String(), e.a.key, "")
			_, malformed := e.request(t, "GET", "/api/v1/traces/not-a-uuid", e.a.key, "")
			if !bytes.Equal(unknown, malformed) {
				t.Fatalf("unknown %s vs malformed %s", unknown, malformed)
			}
			for _, s := range bSeeds {
				resp, body := e.request(t, "GET", "/api/v1/traces/"+s.id, e.a.key, "")
				wantError(t, resp, body, 404, "invalid_request_error", "trace_not_found", "")
				if !bytes.Equal(body, unknown) {
					t.Fatalf("B's trace: %s\nunknown id: %s", body, unknown)
				}
				// B sees it.
				if d := getJSON[detailT](t, e, "/api/v1/traces/"+s.id, e.b.key); d.ID != s.id || !d.Readable {
					t.Fatalf("B's own trace: %+v", d)
				}
			}
		})

		t.Run("listing: only A's traces, whatever the filters and cursor", func(t *testing.T) {
			for _, q := range []string{"", "&model=gpt-4o", "&stream=true", "&provider=openai", "&status=ok", "&min_latency_ms=0"} {
				for _, s := range listAll(t, e, "/api/v1/traces?limit=13"+q, e.a.key) {
					if !slices.Contains(aIDs, s.ID) || s.Tenant != "acme" {
						t.Fatalf("A's listing%s has %s of %q", q, s.ID, s.Tenant)
					}
				}
			}
			if got := listAll(t, e, "/api/v1/traces?limit=200", e.a.key); len(got) != len(aSeeds) {
				t.Fatalf("A lists %d traces, has %d", len(got), len(aSeeds))
			}
			// A cursor at B's newest trace only positions A's listing.
			b0 := newestFirst(bSeeds)[0]
			l := getJSON[listT](t, e, "/api/v1/traces?limit=200&cursor="+mustCursor(t, b0.cursor()), e.a.key)
			want := e.seedsOf(func(s *seed) bool {
				c := s.cursor()
				return s.tenant.id == e.a.id && (c.CreatedAt.Before(b0.createdAt()) || (c.CreatedAt.Equal(b0.createdAt()) && c.ID < b0.id))
			})
			if !slices.Equal(l.idsOf(), ids(newestFirst(want))) {
				t.Fatalf("A's listing before B's cursor: %v", l.idsOf())
			}
		})

		t.Run("analytics count A's traces only", func(t *testing.T) {
			for _, w := range []string{"1h", "24h", "7d", "30d"} {
				from := e.base.Add(-windowDurations[w])
				aN := len(e.seedsOf(and(e.ofTenant(e.a), inWindow(from, e.base))))
				bN := len(e.seedsOf(and(e.ofTenant(e.b), inWindow(from, e.base))))
				if bN == 0 {
					t.Fatalf("B has no trace in %s: the test proves nothing", w)
				}
				s := getJSON[summaryRespT](t, e, "/api/v1/analytics/summary?window="+w, e.a.key)
				var byModel int64
				for _, m := range s.ByModel {
					byModel += m.Requests
				}
				ts := getJSON[timeseriesT](t, e, "/api/v1/analytics/timeseries?window="+w, e.a.key)
				var series int64
				for _, b := range ts.Buckets {
					series += b.Requests
				}
				if s.Overall.Requests != int64(aN) || byModel != int64(aN) || series != int64(aN) {
					t.Fatalf("%s: summary %d, by model %d, series %d; A has %d (B %d)", w, s.Overall.Requests, byModel, series, aN, bN)
				}
				all := getJSON[summaryRespT](t, e, "/api/v1/analytics/summary?window="+w, adminToken)
				if all.Overall.Requests != int64(aN+bN) {
					t.Fatalf("%s: admin sees %d, want %d", w, all.Overall.Requests, aN+bN)
				}
			}
		})

		t.Run("a tenant key cannot choose a tenant", func(t *testing.T) {
			for _, path := range []string{"/api/v1/traces", "/api/v1/traces/" + aSeeds[0].id, "/api/v1/traces/" + bSeeds[0].id,
				"/api/v1/analytics/summary", "/api/v1/analytics/timeseries", "/api/v1/traces/live"} {
				for _, name := range []string{"bravo", "acme", "nope"} {
					resp, body := e.request(t, "GET", path+"?tenant="+name, e.a.key, "")
					wantError(t, resp, body, 403, "invalid_request_error", "admin_only", "tenant")
				}
			}
		})

		t.Run("admin endpoints refuse tenant keys", func(t *testing.T) {
			for _, key := range []string{e.a.key, e.b.key} {
				for _, r := range []struct{ method, path, body string }{
					{"GET", "/api/v1/admin/tenants", ""},
					{"POST", "/api/v1/admin/tenants", `{"name":"evil"}`},
					{"POST", "/api/v1/admin/tenants/bravo/keys", `{"label":"mine now"}`},
					{"POST", "/api/v1/admin/tenants/acme/keys", `{}`},
					{"DELETE", "/api/v1/admin/keys/" + uuid.NewString(), ""},
				} {
					resp, body := e.request(t, r.method, r.path, key, r.body)
					wantError(t, resp, body, 403, "invalid_request_error", "admin_only", "")
				}
			}
			if _, err := st.TenantByName(context.Background(), "evil"); err == nil {
				t.Fatal("a tenant key created a tenant")
			}
			if keys, _ := st.ListAPIKeys(context.Background(), e.b.id); len(keys) != 1 {
				t.Fatalf("B has %d keys", len(keys))
			}
		})

		t.Run("admin token", func(t *testing.T) {
			all := listAll(t, e, "/api/v1/traces?limit=200", adminToken)
			if len(all) != len(e.seeds) {
				t.Fatalf("admin lists %d of %d", len(all), len(e.seeds))
			}
			for _, s := range listAll(t, e, "/api/v1/traces?limit=200&tenant=bravo", adminToken) {
				if s.Tenant != "bravo" {
					t.Fatalf("narrowed to bravo: %s of %s", s.ID, s.Tenant)
				}
			}
			for _, path := range []string{"/api/v1/traces", "/api/v1/traces/" + bSeeds[0].id, "/api/v1/analytics/summary",
				"/api/v1/analytics/timeseries", "/api/v1/traces/live"} {
				resp, body := e.request(t, "GET", path+"?tenant=nope", adminToken, "")
				wantError(t, resp, body, 404, "invalid_request_error", "tenant_not_found", "tenant")
			}
		})

		t.Run("bad credentials", func(t *testing.T) {
			for _, h := range []http.Header{
				{},
				{"Authorization": {"Bearer wrong-admin-token"}},
				{"Authorization": {"Bearer " + adminToken + "x"}},
				{"Authorization": {"Bearer " + adminToken[:len(adminToken)-1]}},
				{"Authorization": {"Basic " + adminToken}},
				{"Authorization": {"Bearer "}},
				{"X-Api-Key": {adminToken}}, // the admin token goes in Authorization only
			} {
				for _, path := range []string{"/api/v1/traces", "/api/v1/traces/live", "/api/v1/analytics/summary", "/api/v1/admin/tenants"} {
					req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
					for k, v := range h {
						req.Header[k] = v
					}
					resp, body := doReq(t, e, req)
					wantError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "")
				}
			}
		})
	})
}

// With no admin token configured nothing is admin, not even an empty bearer.
func TestNoAdminToken(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st, func(c *envConfig) { c.adminToken = "" })
		for _, auth := range []string{"Bearer ", "Bearer", "Bearer  ", "bearer \t", "Bearer " + adminToken} {
			for _, path := range []string{"/api/v1/admin/tenants", "/api/v1/traces"} {
				req, _ := http.NewRequest("GET", e.srv.URL+path, nil)
				req.Header.Set("Authorization", auth)
				resp, body := doReq(t, e, req)
				wantError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "")
			}
		}
		resp, body := e.request(t, "GET", "/api/v1/admin/tenants", e.a.key, "")
		wantError(t, resp, body, 403, "invalid_request_error", "admin_only", "")
		getJSON[listT](t, e, "/api/v1/traces", e.a.key)
	})
}

func doReq(t *testing.T, e *env, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp, b.Bytes()
}

// The dashboard is mounted on Loom's server: request ids, 404 and 405 in
// the OpenAI envelope, and no traces of its own.
func TestRoutes(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		tests := []struct {
			method, path, token string
			status              int
			code                string
		}{
			{"OPTIONS", "/api/v1/traces", "", 405, "method_not_allowed"},
			{"OPTIONS", "/api/v1/admin/tenants", "", 405, "method_not_allowed"},
			{"POST", "/api/v1/traces", e.a.key, 405, "method_not_allowed"},
			{"HEAD", "/api/v1/analytics/summary", e.a.key, 405, ""},
			{"DELETE", "/api/v1/traces/" + uuid.NewString(), e.a.key, 405, "method_not_allowed"},
			{"POST", "/api/v1/traces/live", e.a.key, 405, "method_not_allowed"},
			{"PUT", "/api/v1/analytics/timeseries", adminToken, 405, "method_not_allowed"},
			{"DELETE", "/api/v1/admin/tenants", adminToken, 405, "method_not_allowed"},
			{"GET", "/api/v1/admin/keys/" + uuid.NewString(), adminToken, 405, "method_not_allowed"},
			{"GET", "/api/v1/admin/tenants/acme/keys", adminToken, 405, "method_not_allowed"},
			{"GET", "/api/v1/nope", e.a.key, 404, "unknown_url"},
			{"GET", "/api/v1/nope", "", 404, "unknown_url"},
			{"GET", "/api/v1", e.a.key, 404, "unknown_url"},
			{"GET", "/api/v1/", e.a.key, 404, "unknown_url"},
			{"GET", "/api/v1/traces/", e.a.key, 404, "unknown_url"},
			{"GET", "/api/v1/traces/a/b", e.a.key, 404, "unknown_url"},
			{"GET", "/api/v1/admin", adminToken, 404, "unknown_url"},
			{"GET", "/api/v2/traces", e.a.key, 404, "unknown_url"},
			{"GET", "/api/v1/traces", "", 401, "invalid_api_key"},
			{"GET", "/api/v1/traces/" + uuid.NewString(), "", 401, "invalid_api_key"},
			{"GET", "/api/v1/analytics/timeseries", "", 401, "invalid_api_key"},
			{"DELETE", "/api/v1/admin/keys/x", "", 401, "invalid_api_key"},
		}
		before, _ := st.CountTraces(context.Background(), e.a.id)
		for _, tt := range tests {
			t.Run(tt.method+" "+tt.path, func(t *testing.T) {
				resp, body := e.request(t, tt.method, tt.path, tt.token, "")
				if _, err := uuid.Parse(resp.Header.Get("X-Request-Id")); err != nil {
					t.Fatalf("no request id: %v", resp.Header)
				}
				if tt.code == "" { // HEAD: no body
					if resp.StatusCode != tt.status {
						t.Fatalf("status %d", resp.StatusCode)
					}
					return
				}
				wantError(t, resp, body, tt.status, "invalid_request_error", tt.code, "")
			})
		}
		// Dashboard requests are not traced; /v1 requests still are.
		getJSON[listT](t, e, "/api/v1/traces", e.a.key)
		getJSON[summaryRespT](t, e, "/api/v1/analytics/summary", e.a.key)
		if n, _ := st.CountTraces(context.Background(), e.a.id); n != before {
			t.Fatalf("dashboard requests were traced: %d traces, %d before", n, before)
		}
		resp, body := e.request(t, "GET", "/v1/models", e.a.key, "")
		if resp.StatusCode != 200 {
			t.Fatalf("/v1/models: %d %s", resp.StatusCode, body)
		}
		deadline := time.Now().Add(time.Minute) // a guard against hanging, not a wait
		for {
			if n, _ := st.CountTraces(context.Background(), e.a.id); n == before+1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the /v1 request was not traced")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}
