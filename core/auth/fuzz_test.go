package auth

import (
	"bufio"
	"hash/crc32"
	"math/big"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// refDigits are the base62 digits of the documented key format, in value order.
const refDigits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// refChecksum is the documented checksum of a secret: its CRC32 (IEEE) in
// base62, 6 digits, most significant first.
func refChecksum(secret string) string {
	n := uint64(crc32.ChecksumIEEE([]byte(secret)))
	out := make([]byte, 6)
	for i := 5; i >= 0; i-- {
		out[i] = refDigits[n%62]
		n /= 62
	}
	return string(out)
}

// refParseKey is the documented key format, checked independently of
// ParseKey: "loom_", 43 base62 digits encoding a 256-bit number, and the
// checksum of those 43 digits.
func refParseKey(key string) error {
	if len(key) != 54 || key[:5] != "loom_" {
		return ErrMalformedKey
	}
	for _, c := range []byte(key[5:]) {
		if strings.IndexByte(refDigits, c) < 0 {
			return ErrMalformedKey
		}
	}
	if refChecksum(key[5:48]) != key[48:] {
		return ErrBadChecksum
	}
	n := new(big.Int)
	for _, c := range []byte(key[5:48]) {
		n.Mul(n, big.NewInt(62))
		n.Add(n, big.NewInt(int64(strings.IndexByte(refDigits, c))))
	}
	if n.BitLen() > 256 {
		return ErrMalformedKey // 43 digits can say more than 32 bytes
	}
	return nil
}

// FuzzParseKey checks ParseKey against the documented format on any input
// and on the input turned into a key with a correct checksum (which the
// fuzzer could not find by itself), that NewKey's keys are accepted and
// every single-byte change of them is rejected, and that DisplayPrefix
// never shows more than the prefix.
func FuzzParseKey(f *testing.F) {
	const largest = "YHJSKWDa6oz1al1yMhwzwM8llg7hJNUca2J5RoW8xP1" // 2^256-1
	for _, s := range []string{
		"", "loom_", "sk-proj-abcdefghijklmnopqrstuvwxyz",
		"loom_" + strings.Repeat("0", 43) + refChecksum(strings.Repeat("0", 43)),
		"loom_" + largest + refChecksum(largest),
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkParseKey(t, s)
		// The input as a well-formed key: its bytes mapped to base62
		// digits (zero padded), with the right checksum.
		secret := make([]byte, 43)
		for i := range secret {
			secret[i] = '0'
			if i < len(s) {
				secret[i] = refDigits[s[i]%62]
			}
		}
		checkParseKey(t, "loom_"+string(secret)+refChecksum(string(secret)))

		key, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := ParseKey(key); err != nil {
			t.Fatalf("ParseKey(NewKey() = %q) = %v", key, err)
		}
		if err := refParseKey(key); err != nil {
			t.Fatalf("NewKey() = %q is not of the documented format: %v", key, err)
		}
		// Every other value of one byte, chosen by the input.
		pos := 0
		for _, c := range []byte(s) {
			pos = (pos*31 + int(c)) % len(key)
		}
		for b := range 256 {
			if byte(b) == key[pos] {
				continue
			}
			changed := key[:pos] + string([]byte{byte(b)}) + key[pos+1:]
			if err := ParseKey(changed); err == nil {
				t.Fatalf("ParseKey accepts %q, %q with byte %d changed", changed, key, pos)
			}
		}
		if got := DisplayPrefix(key); got != key[:13] {
			t.Fatalf("DisplayPrefix(%q) = %q, want its first 13 bytes", key, got)
		}
	})
}

func checkParseKey(t *testing.T, s string) {
	t.Helper()
	err, want := ParseKey(s), refParseKey(s)
	if err != want {
		t.Fatalf("ParseKey(%q) = %v, want %v", s, err, want)
	}
	// DisplayPrefix shows "loom_" and at most 8 more bytes of what it is
	// given, nothing else.
	p := DisplayPrefix(s)
	if len(p) > 13 || p != "loom_" && !strings.HasPrefix(s, p) {
		t.Fatalf("DisplayPrefix(%q) = %q: more than a 13-byte prefix", s, p)
	}
	if err == nil && p != s[:13] {
		t.Fatalf("DisplayPrefix(%q) = %q, want the first 13 bytes", s, p)
	}
}

// bearerRef is the Authorization value a key is taken from: the scheme
// "Bearer" in any case, a space, the key.
var bearerRef = regexp.MustCompile(`(?s)^(?i:bearer) (.*)$`)

// refKeyFromRequest is KeyFromRequest as documented: Authorization: Bearer,
// then x-api-key, then api-key; the first value of each header counts;
// surrounding white space is not part of the key.
func refKeyFromRequest(h http.Header) (string, bool) {
	if m := bearerRef.FindStringSubmatch(strings.TrimSpace(h.Get("authorization"))); m != nil {
		return strings.TrimSpace(m[1]), true
	}
	for _, name := range []string{"x-api-key", "api-key"} {
		if v := h.Get(name); v != "" {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// FuzzKeyFromRequest parses requests as the HTTP server does (header names
// in any case, a header repeated or left out) and checks KeyFromRequest
// against a reference, and that a valid key sent with any spelling of
// "Bearer" and any spacing comes back unchanged.
//
// spelling: bits 0–1 the case of the header names, bits 2–4 which of the
// three headers are sent, bit 5 each twice, bits 6–7 the case of "Bearer".
func FuzzKeyFromRequest(f *testing.F) {
	const key = "loom_00000000000000000000000000000000000000000002czCLJ"
	f.Add("Bearer "+key, "", "", byte(0b000100))
	f.Add("bearer  "+key+" ", key, "x", byte(0b011101))
	f.Add("Basic dXNlcjpwYXNz", " "+key, "", byte(0b101110))
	f.Add("Bearer", "", key, byte(0b110010))
	f.Add("BEARER\t"+key, "", " ", byte(0b111111))
	f.Fuzz(func(t *testing.T, authorization, xAPIKey, apiKey string, spelling byte) {
		names := [][3]string{
			{"Authorization", "X-Api-Key", "Api-Key"},
			{"authorization", "x-api-key", "api-key"},
			{"AUTHORIZATION", "X-API-KEY", "API-KEY"},
			{"aUTHORIZATIOn", "x-aPI-kEy", "aPi-KeY"},
		}[spelling&3]
		var raw strings.Builder
		raw.WriteString("GET /v1/models HTTP/1.1\r\nHost: loom\r\n")
		repeat := 1 + int(spelling>>5&1)
		for i, v := range []string{authorization, xAPIKey, apiKey} {
			if spelling&(4<<i) == 0 {
				continue
			}
			if strings.ContainsAny(v, "\r\n") {
				return // a line break ends the header: another request
			}
			for range repeat {
				raw.WriteString(names[i] + ": " + v + "\r\n")
			}
		}
		raw.WriteString("\r\n")
		r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw.String())))
		if err != nil {
			return // the server would refuse it before authentication
		}
		got, ok := KeyFromRequest(r)
		want, wantOK := refKeyFromRequest(r.Header)
		if got != want || ok != wantOK {
			t.Fatalf("KeyFromRequest(%q) = %q, %v; want %q, %v", r.Header, got, ok, want, wantOK)
		}
		if got != strings.TrimSpace(got) {
			t.Fatalf("key %q has surrounding white space", got)
		}

		// A valid key comes back whatever the spelling and spacing.
		scheme := []string{"Bearer", "bearer", "BEARER", "bEaReR"}[spelling>>6]
		spaces := strings.Repeat(" ", 1+len(authorization)%3)
		r, err = http.ReadRequest(bufio.NewReader(strings.NewReader(
			"GET /v1/models HTTP/1.1\r\nHost: loom\r\n" + names[0] + ":" + spaces + scheme + spaces + key + spaces + "\r\n\r\n")))
		if err != nil {
			t.Fatal(err)
		}
		if got, ok := KeyFromRequest(r); got != key || !ok {
			t.Fatalf("KeyFromRequest(%q) = %q, %v; want the key", r.Header, got, ok)
		}
	})
}
