package auth

import (
	"context"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/internal/testdb"
)

// BenchmarkAuthenticateKeyHit is the per-request cost of a valid key whose
// lookup is cached: parse, hash, cache hit, last-used bookkeeping.
func BenchmarkAuthenticateKeyHit(b *testing.B) {
	a, key := benchAuthenticator(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.AuthenticateKey(context.Background(), key); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateKeyHitParallel is the same from every core at once
// (one key: the worst case for the cache's lock).
func BenchmarkAuthenticateKeyHitParallel(b *testing.B) {
	a, key := benchAuthenticator(b)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := a.AuthenticateKey(context.Background(), key); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkCacheHit is the LRU lookup alone.
func BenchmarkCacheHit(b *testing.B) {
	c := newCache[[32]byte, result](10000, time.Hour, time.Now)
	var k [32]byte
	c.put(k, result{})
	b.ReportAllocs()
	for b.Loop() {
		if _, fresh, _ := c.lookup(k); !fresh {
			b.Fatal("miss")
		}
	}
}

func benchAuthenticator(b *testing.B) (*Authenticator, string) {
	b.Helper()
	st := testdb.SQLite(b)
	_, _, key := addKey(b, st, "acme")
	a := New(st, Options{CacheTTL: time.Hour})
	if _, err := a.AuthenticateKey(context.Background(), key); err != nil { // fill the cache
		b.Fatal(err)
	}
	return a, key
}
