package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestNewKeyShape(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 200; i++ {
		k, err := NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if KeyLength != 54 || len(k) != KeyLength {
			t.Fatalf("key %q has length %d, want 54", k, len(k))
		}
		if !strings.HasPrefix(k, "loom_") {
			t.Fatalf("key %q lacks the loom_ prefix", k)
		}
		if err := ParseKey(k); err != nil {
			t.Fatalf("ParseKey(NewKey()) = %v", err)
		}
		if seen[k] {
			t.Fatalf("duplicate key %q", k)
		}
		seen[k] = true
	}
}

func TestParseKey(t *testing.T) {
	good, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	// Flip one character of the secret to another base62 character.
	flip := func(s string, i int) string {
		c := byte('a')
		if s[i] == 'a' {
			c = 'b'
		}
		return s[:i] + string(c) + s[i+1:]
	}
	tests := []struct {
		name string
		key  string
		want error
	}{
		{"valid", good, nil},
		{"empty", "", ErrMalformedKey},
		{"openai key", "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKL", ErrMalformedKey},
		{"wrong prefix", "moon_" + good[5:], ErrMalformedKey},
		{"truncated", good[:len(good)-1], ErrMalformedKey},
		{"extra char", good + "a", ErrMalformedKey},
		{"non base62", good[:10] + "-" + good[11:], ErrMalformedKey},
		{"non ascii", good[:10] + "é" + good[12:], ErrMalformedKey},
		{"typo in secret", flip(good, 10), ErrBadChecksum},
		{"typo in checksum", flip(good, len(good)-1), ErrBadChecksum},
		{"swapped case", strings.ToUpper(good[:5]) + good[5:], ErrMalformedKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := ParseKey(tt.key); !errors.Is(err, tt.want) {
				t.Fatalf("ParseKey(%q) = %v, want %v", tt.key, err, tt.want)
			}
		})
	}
}

func TestDisplayPrefixHidesSecret(t *testing.T) {
	k, _ := NewKey()
	p := DisplayPrefix(k)
	if p != k[:13] || len(p) != 13 {
		t.Fatalf("DisplayPrefix = %q", p)
	}
	if HashKey(k) == HashKey(p) {
		t.Fatal("hash of prefix equals hash of key")
	}
}
