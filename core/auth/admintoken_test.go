package auth

import (
	"net/http/httptest"
	"testing"
)

func TestAdminToken(t *testing.T) {
	const tok = "admin-secret"
	tests := []struct {
		name   string
		token  string // configured
		header string // Authorization; "" for none
		want   bool
	}{
		{"bearer", tok, "Bearer " + tok, true},
		{"scheme case", tok, "bEaReR " + tok, true},
		{"padded", tok, "  Bearer   " + tok + "  ", true},
		{"wrong token", tok, "Bearer other", false},
		{"prefix", tok, "Bearer " + tok[:5], false},
		{"other scheme", tok, "Basic " + tok, false},
		{"no scheme", tok, tok, false},
		{"no header", tok, "", false},
		{"disabled", "", "Bearer ", false},
		{"disabled, empty bearer", "", "Bearer", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			a := NewAdminToken(tt.token)
			if a.Enabled() != (tt.token != "") {
				t.Errorf("Enabled() = %v with token %q", a.Enabled(), tt.token)
			}
			if got := a.Match(r); got != tt.want {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
	// The admin token is only ever read from Authorization.
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("X-Api-Key", tok)
	if NewAdminToken(tok).Match(r) {
		t.Error("matched a token sent in X-Api-Key")
	}
	if (AdminToken{}).Match(r) || (AdminToken{}).Enabled() {
		t.Error("the zero AdminToken is not disabled")
	}
}
