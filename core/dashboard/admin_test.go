package dashboard

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/store"
)

type tenantT struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	CreatedAt string `json:"created_at"`
}

type createdKeyT struct {
	ID        string `json:"id"`
	Prefix    string `json:"prefix"`
	Label     string `json:"label"`
	CreatedAt string `json:"created_at"`
	Key       string `json:"key"`
}

type revokedKeyT struct {
	ID        string  `json:"id"`
	Prefix    string  `json:"prefix"`
	RevokedAt *string `json:"revoked_at"`
}

func TestAdmin(t *testing.T) {
	forEachStore(t, func(t *testing.T, st store.Store) {
		e := newEnv(t, st)
		ctx := context.Background()

		// Create a tenant.
		resp, body := e.request(t, "POST", "/api/v1/admin/tenants", adminToken, `{"name":"delta-1"}`)
		if resp.StatusCode != 201 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		wantKeys(t, body, "id", "name", "status", "created_at")
		tn := decodeStrict[tenantT](t, body)
		stored, err := st.TenantByName(ctx, "delta-1")
		if err != nil || tn.ID != stored.ID || tn.Name != "delta-1" || tn.Status != "active" ||
			tn.CreatedAt != stored.CreatedAt.UTC().Format(stampFormat) {
			t.Fatalf("created %+v, stored %+v (%v)", tn, stored, err)
		}
		// List them, by name.
		list := getJSON[struct {
			Data []tenantT `json:"data"`
		}](t, e, "/api/v1/admin/tenants", adminToken)
		var names []string
		for _, x := range list.Data {
			names = append(names, x.Name)
		}
		if strings.Join(names, ",") != "acme,bravo,delta-1" {
			t.Fatalf("tenants %v", names)
		}

		// A key for it: shown once, and it works.
		resp, body = e.request(t, "POST", "/api/v1/admin/tenants/delta-1/keys", adminToken, `{"label":"ci"}`)
		if resp.StatusCode != 201 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		wantKeys(t, body, "id", "prefix", "label", "created_at", "key")
		k := decodeStrict[createdKeyT](t, body)
		if auth.ParseKey(k.Key) != nil || k.Prefix != auth.DisplayPrefix(k.Key) || k.Label != "ci" || k.CreatedAt == "" {
			t.Fatalf("key %+v", k)
		}
		keys, _ := st.ListAPIKeys(ctx, tn.ID)
		if len(keys) != 1 || keys[0].ID != k.ID || keys[0].Hash != auth.HashKey(k.Key) {
			t.Fatalf("stored keys %+v", keys)
		}
		if l := getJSON[listT](t, e, "/api/v1/traces", k.Key); len(l.Data) != 0 {
			t.Fatalf("new tenant sees %d traces", len(l.Data))
		}
		// No body: no label.
		resp, body = e.request(t, "POST", "/api/v1/admin/tenants/delta-1/keys", adminToken, "")
		if resp.StatusCode != 201 || decodeStrict[createdKeyT](t, body).Label != "" {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}

		// Revoke: the key stops working; revoking again keeps the first time.
		resp, body = e.request(t, "DELETE", "/api/v1/admin/keys/"+k.ID, adminToken, "")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		wantKeys(t, body, "id", "prefix", "revoked_at")
		r1 := decodeStrict[revokedKeyT](t, body)
		if r1.ID != k.ID || r1.Prefix != k.Prefix || r1.RevokedAt == nil {
			t.Fatalf("revoked %+v", r1)
		}
		time.Sleep(5 * time.Millisecond) // the auth cache TTL
		resp, body = e.request(t, "GET", "/api/v1/traces", k.Key, "")
		wantError(t, resp, body, 401, "invalid_request_error", "invalid_api_key", "")
		r2 := decodeStrict[revokedKeyT](t, mustBody(t, e, "DELETE", "/api/v1/admin/keys/"+k.ID, adminToken, "", 200))
		if *r2.RevokedAt != *r1.RevokedAt {
			t.Fatalf("revoked again at %s, first %s", *r2.RevokedAt, *r1.RevokedAt)
		}

		// Errors.
		tests := []struct {
			name, method, path, body string
			status                   int
			code, param              string
		}{
			{"duplicate tenant", "POST", "/api/v1/admin/tenants", `{"name":"acme"}`, 409, "tenant_exists", "name"},
			{"bad tenant name", "POST", "/api/v1/admin/tenants", `{"name":"Bad Name"}`, 400, "invalid_value", "name"},
			{"empty tenant name", "POST", "/api/v1/admin/tenants", `{"name":""}`, 400, "invalid_value", "name"},
			{"long tenant name", "POST", "/api/v1/admin/tenants", `{"name":"` + strings.Repeat("a", 65) + `"}`, 400, "invalid_value", "name"},
			{"no tenant name", "POST", "/api/v1/admin/tenants", `{}`, 400, "missing_required_parameter", "name"},
			{"tenant name not a string", "POST", "/api/v1/admin/tenants", `{"name":7}`, 400, "invalid_type", "name"},
			{"not JSON", "POST", "/api/v1/admin/tenants", `{"name":`, 400, "invalid_json", ""},
			{"not an object", "POST", "/api/v1/admin/tenants", `["acme"]`, 400, "invalid_type", ""},
			{"too large", "POST", "/api/v1/admin/tenants", `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 413, "request_too_large", ""},
			{"key for unknown tenant", "POST", "/api/v1/admin/tenants/nope/keys", `{"label":"x"}`, 404, "tenant_not_found", ""},
			{"label too long", "POST", "/api/v1/admin/tenants/acme/keys", `{"label":"` + strings.Repeat("l", 201) + `"}`, 400, "invalid_value", "label"},
			{"label not a string", "POST", "/api/v1/admin/tenants/acme/keys", `{"label":true}`, 400, "invalid_type", "label"},
			{"revoke unknown key", "DELETE", "/api/v1/admin/keys/" + uuid.NewString(), "", 404, "key_not_found", ""},
			{"revoke malformed key id", "DELETE", "/api/v1/admin/keys/nope", "", 404, "key_not_found", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				resp, body := e.request(t, tt.method, tt.path, adminToken, tt.body)
				wantError(t, resp, body, tt.status, "invalid_request_error", tt.code, tt.param)
			})
		}

		// A deleted tenant gets no new keys.
		if err := e.kr.Shred(ctx, tn.ID); err != nil {
			t.Fatal(err)
		}
		resp, body = e.request(t, "POST", "/api/v1/admin/tenants/delta-1/keys", adminToken, `{}`)
		wantError(t, resp, body, 409, "invalid_request_error", "tenant_deleted", "")
	})
}

func mustBody(t *testing.T, e *env, method, path, token, body string, status int) []byte {
	t.Helper()
	resp, b := e.request(t, method, path, token, body)
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, status, b)
	}
	return b
}
