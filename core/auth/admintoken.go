package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// AdminToken checks requests for the admin token (LOOM_ADMIN_TOKEN) in
// Authorization: Bearer. The zero value, like an empty token, is disabled
// and matches nothing.
type AdminToken struct {
	hash [32]byte
	ok   bool
}

// NewAdminToken returns the checker for token; empty: admin access is disabled.
func NewAdminToken(token string) AdminToken {
	if token == "" {
		return AdminToken{}
	}
	return AdminToken{hash: sha256.Sum256([]byte(token)), ok: true}
}

// Enabled reports whether an admin token is configured.
func (a AdminToken) Enabled() bool { return a.ok }

// Match reports whether r carries the admin token as Authorization: Bearer.
// The comparison runs in constant time, over SHA-256 digests so the
// token's length does not leak either. Other key headers are not looked at.
func (a AdminToken) Match(r *http.Request) bool {
	if !a.ok {
		return false
	}
	scheme, token, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return false
	}
	h := sha256.Sum256([]byte(strings.TrimSpace(token)))
	return subtle.ConstantTimeCompare(h[:], a.hash[:]) == 1
}
