package metrics

import (
	"fmt"
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

// BenchmarkObserveRequestOverflow: a tenant cycling through more model
// names than its budget, most of them counted under "other".
func BenchmarkObserveRequestOverflow(b *testing.B) {
	m := New()
	models := make([]string, 1000)
	for i := range models {
		models[i] = fmt.Sprintf("model-%d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.ObserveRequest("acme", models[i%len(models)], "ok", 3*time.Millisecond, 200*time.Microsecond)
		i++
	}
}
