package openaicompat

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
)

// Redacted replaces a provider's own credential wherever its upstream
// reflects it: in a response header, an error message ("Incorrect API key
// provided: sk-…"), a body or a stream event. The credential must never
// reach Loom, whose clients, logs and traces are not meant to hold it.
const Redacted = "[redacted]"

// minSecretLen is the shortest credential redacted: replacing a shorter
// value would mangle ordinary text without protecting anything.
const minSecretLen = 8

// credentialHeaders are the request headers whose values are credentials.
var credentialHeaders = []string{"Authorization", "Proxy-Authorization", "Api-Key", "X-Api-Key"}

// secrets are the credentials of one upstream call.
type secrets [][]byte

// credentials returns the credentials SetHeaders put on h: the values of
// the credential headers, or for "Scheme token" values the token (which
// masks the whole value too).
func credentials(h http.Header) secrets {
	var s secrets
	add := func(v string) {
		v = strings.TrimSpace(v)
		if len(v) < minSecretLen {
			return
		}
		for _, have := range s {
			if string(have) == v {
				return
			}
		}
		s = append(s, []byte(v))
	}
	for _, name := range credentialHeaders {
		for _, v := range h.Values(name) {
			if _, token, ok := strings.Cut(strings.TrimSpace(v), " "); ok {
				v = token
			}
			add(v)
		}
	}
	// Longest first: a credential holding another is masked whole.
	slices.SortStableFunc(s, func(a, b []byte) int { return len(b) - len(a) })
	return s
}

// redact returns b with every credential replaced by Redacted; b itself
// when it holds none (the common case costs one scan per credential).
func (s secrets) redact(b []byte) []byte {
	for _, secret := range s {
		if bytes.Contains(b, secret) {
			b = bytes.ReplaceAll(b, secret, []byte(Redacted))
		}
	}
	return b
}

// redactString is redact for a string.
func (s secrets) redactString(v string) string {
	for _, secret := range s {
		if strings.Contains(v, string(secret)) {
			v = strings.ReplaceAll(v, string(secret), Redacted)
		}
	}
	return v
}

// redactHeaders redacts the values of relayed headers in place.
func (s secrets) redactHeaders(h map[string]string) map[string]string {
	if len(s) == 0 {
		return h
	}
	for k, v := range h {
		h[k] = s.redactString(v)
	}
	return h
}
