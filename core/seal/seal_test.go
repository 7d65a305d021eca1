package seal

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/loom-runtime/loom/core/store"
)

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// testKey returns an unwrapped data key for tenantID built from random bytes.
func testKey(t testing.TB, tenantID string, version int) *TenantKey {
	t.Helper()
	tk, err := newTenantKey(tenantID, version, randomBytes(t, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func bodies(t testing.TB) []struct {
	name string
	body []byte
} {
	big := randomBytes(t, 1<<20+123)
	return []struct {
		name string
		body []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"one byte", []byte{0x42}},
		{"zero byte", []byte{0}},
		{"json", []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`)},
		{"utf-8 multibyte", []byte("Grüße, 世界! こんにちは 🧵🪡 — ℵ₀")},
		{"invalid utf-8", []byte{0xff, 0xfe, 0xc3, 0x28, 0xa0, 0xa1, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc, 0x80}},
		{"over 1 MB", big},
	}
}

func TestSealOpenRoundTrip(t *testing.T) {
	tk := testKey(t, "tenant-a", 1)
	for _, tc := range bodies(t) {
		t.Run(tc.name, func(t *testing.T) {
			s, err := tk.Seal("trace-1", FieldRequest, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Nonce) != NonceSize {
				t.Errorf("nonce is %d bytes, want %d", len(s.Nonce), NonceSize)
			}
			if s.Ciphertext == nil || len(s.Ciphertext) != len(tc.body)+TagSize {
				t.Errorf("ciphertext is %d bytes (nil %v), want %d", len(s.Ciphertext), s.Ciphertext == nil, len(tc.body)+TagSize)
			}
			if len(tc.body) > 16 && bytes.Contains(s.Ciphertext, tc.body[:16]) {
				t.Error("ciphertext contains the plaintext")
			}
			got, err := tk.open("trace-1", FieldRequest, s)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil {
				t.Fatal("opened to nil; want a non-nil slice even for an empty body")
			}
			if !bytes.Equal(got, tc.body) {
				t.Fatalf("round trip changed the body (%d bytes in, %d out)", len(tc.body), len(got))
			}
		})
	}
}

// TestSealedLayout: nonce and ciphertext share one exact allocation (see
// TestAllocations) but cannot overwrite each other through append.
func TestSealedLayout(t *testing.T) {
	tk := testKey(t, "tenant-a", 1)
	s, err := tk.Seal("trace-1", FieldRequest, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if cap(s.Nonce) != NonceSize {
		t.Errorf("cap(Nonce) = %d, want %d so appending cannot clobber the ciphertext", cap(s.Nonce), NonceSize)
	}
	if cap(s.Ciphertext) != len(s.Ciphertext) {
		t.Errorf("cap(Ciphertext) = %d, len %d: the allocation should be exact", cap(s.Ciphertext), len(s.Ciphertext))
	}
}

func TestSealFreshNonce(t *testing.T) {
	tk := testKey(t, "tenant-a", 1)
	body := []byte("the same prompt, twice")
	seen := map[string]bool{}
	cts := map[string]bool{}
	for range 100 {
		s, err := tk.Seal("trace-1", FieldRequest, body)
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(s.Nonce)] {
			t.Fatal("nonce repeated")
		}
		if cts[string(s.Ciphertext)] {
			t.Fatal("ciphertext repeated")
		}
		seen[string(s.Nonce)] = true
		cts[string(s.Ciphertext)] = true
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func TestTamperedFieldDoesNotOpen(t *testing.T) {
	const tenant, trace = "tenant-a", "0190d6c8-0000-7000-8000-000000000001"
	tkA := testKey(t, tenant, 1)
	tkB := testKey(t, "tenant-b", 1)
	// Tenant B holding exactly tenant A's data key (say, by a bug or a
	// copied key row that somehow unwrapped): the tenant id in the
	// associated data still rejects A's fields.
	tkBwithA := &TenantKey{tenantID: "tenant-b", version: 1, aead: tkA.aead}
	body := []byte(`{"messages":[{"role":"user","content":"secret"}]}`)
	good, err := tkA.Seal(trace, FieldRequest, body)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := tkA.Seal(trace, FieldMessage, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := len(good.Ciphertext)
	tests := []struct {
		name  string
		key   *TenantKey
		trace string
		field string
		s     store.Sealed
	}{
		{"ciphertext first bit", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: flip(good.Ciphertext, 0)}},
		{"ciphertext middle bit", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: flip(good.Ciphertext, (n-TagSize)/2)}},
		{"tag first bit", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: flip(good.Ciphertext, n-TagSize)}},
		{"tag last bit", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: flip(good.Ciphertext, n-1)}},
		{"tag of empty body", tkA, trace, FieldMessage, store.Sealed{Nonce: empty.Nonce, Ciphertext: flip(empty.Ciphertext, 3)}},
		{"nonce bit", tkA, trace, FieldRequest, store.Sealed{Nonce: flip(good.Nonce, 5), Ciphertext: good.Ciphertext}},
		{"nonce short", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce[:NonceSize-1], Ciphertext: good.Ciphertext}},
		{"nonce long", tkA, trace, FieldRequest, store.Sealed{Nonce: append(bytes.Clone(good.Nonce), 0), Ciphertext: good.Ciphertext}},
		{"nonce missing", tkA, trace, FieldRequest, store.Sealed{Ciphertext: good.Ciphertext}},
		{"ciphertext truncated", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: good.Ciphertext[:n-1]}},
		{"ciphertext extended", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: append(bytes.Clone(good.Ciphertext), 0)}},
		{"ciphertext shorter than tag", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: good.Ciphertext[:TagSize-1]}},
		{"ciphertext empty", tkA, trace, FieldRequest, store.Sealed{Nonce: good.Nonce, Ciphertext: []byte{}}},
		{"other trace id", tkA, "0190d6c8-0000-7000-8000-000000000002", FieldRequest, good},
		{"other field", tkA, trace, FieldResponse, good},
		{"field name case", tkA, trace, "Request", good},
		{"other tenant's own key", tkB, trace, FieldRequest, good},
		{"other tenant with this tenant's key", tkBwithA, trace, FieldRequest, good},
		{"same tenant id, another version's key", testKey(t, tenant, 2), trace, FieldRequest, good},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.key.open(tc.trace, tc.field, tc.s)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("open: err %v, want ErrOpen", err)
			}
			if got != nil {
				t.Fatal("open returned data with an error")
			}
		})
	}
	// And the untampered value opens.
	if got, err := tkA.open(trace, FieldRequest, good); err != nil || !bytes.Equal(got, body) {
		t.Fatalf("untampered: %q, %v", got, err)
	}
}

// TestAssociatedDataLayout pins the layout the package documentation
// specifies, byte for byte.
func TestAssociatedDataLayout(t *testing.T) {
	lp := func(s string) []byte {
		return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	wantKey := cat([]byte("loom/tenant-key/v1\x00"), lp("t-1"), lp("12"))
	if got := KeyAD("t-1", 12); !bytes.Equal(got, wantKey) {
		t.Errorf("KeyAD = %q, want %q", got, wantKey)
	}
	wantField := cat([]byte("loom/trace-field/v1\x00"), lp("t-1"), lp("tr-9"), lp("response"))
	if got := FieldAD("t-1", "tr-9", "response"); !bytes.Equal(got, wantField) {
		t.Errorf("FieldAD = %q, want %q", got, wantField)
	}

	// Injective: moving bytes between parts changes the encoding.
	pairs := []struct{ a, b [3]string }{
		{[3]string{"ab", "c", "d"}, [3]string{"a", "bc", "d"}},
		{[3]string{"a", "b\x00", "c"}, [3]string{"a", "b", "\x00c"}},
		{[3]string{"", "ab", "c"}, [3]string{"a", "b", "c"}},
		{[3]string{"a", "", "bc"}, [3]string{"a", "b", "c"}},
	}
	for _, p := range pairs {
		if bytes.Equal(FieldAD(p.a[0], p.a[1], p.a[2]), FieldAD(p.b[0], p.b[1], p.b[2])) {
			t.Errorf("FieldAD%q == FieldAD%q", p.a, p.b)
		}
	}
	if bytes.Equal(KeyAD("t1", 1), KeyAD("t", 11)) {
		t.Error("KeyAD(t1, 1) == KeyAD(t, 11)")
	}
}

func TestWrapUnwrap(t *testing.T) {
	m, err := loadMaster(randomBytes(t, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	other, err := loadMaster(randomBytes(t, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	dk := randomBytes(t, KeySize)
	wrapped, nonce, err := m.wrap("tenant-a", 3, dk)
	if err != nil {
		t.Fatal(err)
	}
	if len(wrapped) != WrappedSize || len(nonce) != NonceSize {
		t.Fatalf("wrapped %d bytes, nonce %d bytes", len(wrapped), len(nonce))
	}
	if bytes.Contains(wrapped, dk[:8]) {
		t.Fatal("wrapped key contains the key")
	}
	got, err := m.unwrap("tenant-a", 3, wrapped, nonce)
	if err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("unwrap: %v (equal %v)", err, bytes.Equal(got, dk))
	}

	tests := []struct {
		name    string
		m       master
		tenant  string
		version int
		wrapped []byte
		nonce   []byte
	}{
		{"moved to another tenant", m, "tenant-b", 3, wrapped, nonce},
		{"moved to another version", m, "tenant-a", 2, wrapped, nonce},
		{"moved to version 30", m, "tenant-a", 30, wrapped, nonce},
		{"wrong master key", other, "tenant-a", 3, wrapped, nonce},
		{"wrapped bit flipped", m, "tenant-a", 3, flip(wrapped, 7), nonce},
		{"tag bit flipped", m, "tenant-a", 3, flip(wrapped, WrappedSize-1), nonce},
		{"nonce bit flipped", m, "tenant-a", 3, wrapped, flip(nonce, 0)},
		{"wrapped truncated", m, "tenant-a", 3, wrapped[:WrappedSize-1], nonce},
		{"nonce missing", m, "tenant-a", 3, wrapped, nil},
		{"wrapped missing", m, "tenant-a", 3, nil, nonce},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.m.unwrap(tc.tenant, tc.version, tc.wrapped, tc.nonce)
			if !errors.Is(err, ErrUnwrap) {
				t.Fatalf("err %v, want ErrUnwrap", err)
			}
			if got != nil {
				t.Fatal("returned key material with an error")
			}
			if !strings.Contains(err.Error(), "master key") {
				t.Errorf("error %q should point at the master key", err)
			}
		})
	}
}

func TestMasterKeyLength(t *testing.T) {
	for _, n := range []int{0, 16, 24, 31, 33, 64} {
		if _, err := NewKeyring(make([]byte, n), newMemStore()); err == nil {
			t.Errorf("NewKeyring with a %d-byte master key: no error", n)
		}
		if _, err := RotateMaster(context.Background(), newMemStore(), make([]byte, n), make([]byte, KeySize), RotateOptions{}); err == nil {
			t.Errorf("RotateMaster with a %d-byte old master key: no error", n)
		}
		if _, err := RotateMaster(context.Background(), newMemStore(), make([]byte, KeySize), make([]byte, n), RotateOptions{}); err == nil {
			t.Errorf("RotateMaster with a %d-byte new master key: no error", n)
		}
	}
	if _, err := NewKeyring(make([]byte, KeySize), nil); err == nil {
		t.Error("NewKeyring with a nil store: no error")
	}
}

// TestErrorsCarryNoKeyMaterial: nothing secret in error strings or in the
// String of a key.
func TestErrorsCarryNoKeyMaterial(t *testing.T) {
	mk := randomBytes(t, KeySize)
	m, _ := loadMaster(mk)
	dk := randomBytes(t, KeySize)
	wrapped, nonce, _ := m.wrap("tenant-a", 1, dk)
	_, err := m.unwrap("tenant-b", 1, wrapped, nonce)
	tk, _ := newTenantKey("tenant-a", 1, dk)
	for _, s := range []string{err.Error(), tk.String()} {
		for _, secret := range [][]byte{mk, dk, wrapped} {
			for _, enc := range []string{string(secret[:6]), hexString(secret[:6])} {
				if strings.Contains(s, enc) {
					t.Fatalf("%q contains key material", s)
				}
			}
		}
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
