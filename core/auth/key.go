// Package auth turns the API key on a request into a tenant: the key format,
// its hashing, a bounded lookup cache and the HTTP middleware.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash/crc32"
	"math/big"
	"strings"
)

// Key format: "loom_" + 32 random bytes in base62 (43 characters, zero
// padded; 43 characters that say a larger number are not a key) + a CRC32
// of those 43 characters in base62 (6 characters). The fixed prefix lets
// secret scanners recognise a key; the checksum rejects a mistyped key
// before any lookup.
const (
	KeyPrefix      = "loom_"
	secretBytes    = 32
	secretChars    = 43 // ceil(256 / log2(62))
	checksumChars  = 6  // 62^6 > 2^32
	KeyLength      = len(KeyPrefix) + secretChars + checksumChars
	displayedChars = 8 // characters of the secret shown in listings
)

const base62Digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

// Errors returned by ParseKey.
var (
	ErrMalformedKey = errors.New("malformed API key")
	ErrBadChecksum  = errors.New("API key checksum mismatch")
)

// NewKey returns a fresh random API key.
func NewKey() (string, error) {
	var raw [secretBytes]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("new key: %w", err)
	}
	secret := base62(new(big.Int).SetBytes(raw[:]), secretChars)
	sum := checksum(secret)
	return KeyPrefix + secret + string(sum[:]), nil
}

// ParseKey checks a key's shape and checksum without any lookup.
func ParseKey(key string) error {
	if len(key) != KeyLength || !strings.HasPrefix(key, KeyPrefix) {
		return ErrMalformedKey
	}
	rest := key[len(KeyPrefix):]
	for i := 0; i < len(rest); i++ {
		if !isBase62(rest[i]) {
			return ErrMalformedKey
		}
	}
	secret, sum := rest[:secretChars], rest[secretChars:]
	if c := checksum(secret); string(c[:]) != sum {
		return ErrBadChecksum
	}
	if !secretInRange(secret) {
		return ErrMalformedKey // 43 digits can say more than 32 bytes
	}
	return nil
}

// maxSecret is the largest secret: 2^256-1 in base62.
var maxSecret = base62(new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 8*secretBytes), big.NewInt(1)), secretChars)

// secretInRange reports whether the base62 digits of secret encode a
// number that fits in secretBytes bytes.
func secretInRange(secret string) bool {
	for i := 0; i < len(secret); i++ {
		if d, m := base62Value(secret[i]), base62Value(maxSecret[i]); d != m {
			return d < m
		}
	}
	return true
}

// base62Value is the value of the base62 digit c.
func base62Value(c byte) int {
	switch {
	case c <= '9':
		return int(c - '0')
	case c >= 'a':
		return int(c-'a') + 10
	default:
		return int(c-'A') + 36
	}
}

// HashKey is what the store keeps instead of the key.
func HashKey(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// DisplayPrefix is the part of a key safe to show in listings and logs.
func DisplayPrefix(key string) string {
	n := len(KeyPrefix) + displayedChars
	if len(key) < n {
		return KeyPrefix
	}
	return key[:n]
}

// checksum is the CRC32 of secret in base62. A uint32 has at most 6 base62
// digits (62^6 > 2^32), so no big.Int is needed.
func checksum(secret string) [checksumChars]byte {
	var out [checksumChars]byte
	n := crc32.ChecksumIEEE([]byte(secret))
	for i := checksumChars - 1; i >= 0; i-- {
		out[i] = base62Digits[n%62]
		n /= 62
	}
	return out
}

// base62 encodes n with exactly width digits, most significant first.
func base62(n *big.Int, width int) string {
	out := make([]byte, width)
	base := big.NewInt(62)
	mod := new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62Digits[mod.Int64()]
	}
	return string(out)
}

func isBase62(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}
