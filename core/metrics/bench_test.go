package metrics

import (
	"testing"
	"time"
)

// BenchmarkObserveRequest is the metrics work of every traced request.
func BenchmarkObserveRequest(b *testing.B) {
	m := New()
	b.ReportAllocs()
	for b.Loop() {
		m.ObserveRequest("acme", "gpt-4o-mini", "ok", 3*time.Millisecond, 200*time.Microsecond)
	}
}

func BenchmarkObserveRequestParallel(b *testing.B) {
	m := New()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveRequest("acme", "gpt-4o-mini", "ok", 3*time.Millisecond, 200*time.Microsecond)
		}
	})
}
