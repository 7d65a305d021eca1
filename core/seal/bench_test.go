package seal

import (
	"context"
	"testing"

	"github.com/loom-runtime/loom/core/store"
)

// A typical trace: a 2 KB request and a 2 KB response.
const benchBodySize = 2048

func benchKeyring(b *testing.B) (*Keyring, []byte, []byte) {
	b.Helper()
	k, err := NewKeyring(randomBytes(b, KeySize), newMemStore())
	if err != nil {
		b.Fatal(err)
	}
	if _, err := k.Current(context.Background(), "tenant-a"); err != nil {
		b.Fatal(err)
	}
	return k, randomBytes(b, benchBodySize), randomBytes(b, benchBodySize)
}

// BenchmarkSealTrace: what the recorder does per trace: look up the
// tenant's current key (cached) and seal request and response.
func BenchmarkSealTrace(b *testing.B) {
	ctx := context.Background()
	k, req, resp := benchKeyring(b)
	const trace = "0190d6c8-1b2c-7d3e-8f40-a1b2c3d4e5f6"
	b.SetBytes(2 * benchBodySize)
	b.ReportAllocs()
	for b.Loop() {
		tk, err := k.Current(ctx, "tenant-a")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tk.Seal(trace, FieldRequest, req); err != nil {
			b.Fatal(err)
		}
		if _, err := tk.Seal(trace, FieldResponse, resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenTrace: opening both fields of such a trace (key cached).
func BenchmarkOpenTrace(b *testing.B) {
	ctx := context.Background()
	k, req, resp := benchKeyring(b)
	const trace = "0190d6c8-1b2c-7d3e-8f40-a1b2c3d4e5f6"
	tk, _ := k.Current(ctx, "tenant-a")
	sreq, _ := tk.Seal(trace, FieldRequest, req)
	sresp, _ := tk.Seal(trace, FieldResponse, resp)
	var sealed = [2]store.Sealed{sreq, sresp}
	b.SetBytes(2 * benchBodySize)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open(ctx, "tenant-a", tk.Version(), trace, FieldRequest, sealed[0]); err != nil {
			b.Fatal(err)
		}
		if _, err := k.Open(ctx, "tenant-a", tk.Version(), trace, FieldResponse, sealed[1]); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSealTraceParallel: the same from every CPU at once, to check
// the key cache does not serialise.
func BenchmarkSealTraceParallel(b *testing.B) {
	ctx := context.Background()
	k, req, resp := benchKeyring(b)
	const trace = "0190d6c8-1b2c-7d3e-8f40-a1b2c3d4e5f6"
	b.SetBytes(2 * benchBodySize)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			tk, err := k.Current(ctx, "tenant-a")
			if err != nil {
				b.Error(err)
				return
			}
			tk.Seal(trace, FieldRequest, req)
			tk.Seal(trace, FieldResponse, resp)
		}
	})
}
