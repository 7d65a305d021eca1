package trace

import (
	"testing"
	"time"
)

func TestOverhead(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	tests := []struct {
		name string
		rec  Record
		end  time.Time
		want time.Duration
	}{
		{"no body, no provider call", Record{Start: t0}, at(3), 3 * time.Millisecond},
		// A slow upload refused with 413: the upload is the client's time.
		{"refused after a slow upload", Record{Start: t0, Received: at(1500)}, at(1502), 2 * time.Millisecond},
		{"answered", Record{Start: t0, Received: at(10), Dispatched: at(12), Returned: at(112), Upstream: 99 * time.Millisecond}, at(115),
			(2 + 1 + 3) * time.Millisecond},
		// The client left a stream: the provider measured no upstream
		// time, so the whole call is taken as the upstream's.
		{"stream the client left", Record{Start: t0, Received: at(1), Dispatched: at(2), Returned: at(1500)}, at(1501), 2 * time.Millisecond},
		{"panic inside the provider call", Record{Start: t0, Received: at(1), Dispatched: at(2)}, at(50), time.Millisecond},
		{"upstream longer than the call (clock skew)", Record{Start: t0, Dispatched: at(5), Returned: at(10), Upstream: time.Second}, at(10), 5 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rec.Overhead(tt.end); got != tt.want {
				t.Fatalf("Overhead = %v, want %v", got, tt.want)
			}
		})
	}
}
