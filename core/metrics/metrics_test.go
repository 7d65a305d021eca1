package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return string(b)
}

func TestObserveAndExpose(t *testing.T) {
	m := New()
	m.WatchRecorder(func() RecorderStats { return RecorderStats{QueueDepth: 3, SpoolBytes: 4096, Written: 10, Spooled: 2} })
	restarts := int64(1)
	m.WatchPlugin("openai", func() int64 { return restarts })
	m.ObserveRequest("acme", "gpt-4o", "ok", 120*time.Millisecond, 700*time.Microsecond)
	m.ObserveRequest("acme", "gpt-4o", "rejected", time.Millisecond, -1)
	out := scrape(t, m)
	for _, want := range []string{
		`loom_requests_total{model="gpt-4o",status="ok",tenant="acme"} 1`,
		`loom_requests_total{model="gpt-4o",status="rejected",tenant="acme"} 1`,
		`loom_request_duration_seconds_count{model="gpt-4o",status="ok",tenant="acme"} 1`,
		`loom_gateway_overhead_seconds_count{model="gpt-4o",tenant="acme"} 1`,
		`loom_trace_queue_depth 3`,
		`loom_trace_spool_bytes 4096`,
		`loom_traces_written_total 10`,
		`loom_plugin_restarts_total{provider="openai"} 1`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
}

func TestLabelsAreBounded(t *testing.T) {
	m := New()
	// One tenant floods: its own budget fills, the rest is its "other".
	for i := 0; i < MaxModelsPerTenant+50; i++ {
		m.ObserveRequest("acme", fmt.Sprintf("model-%d", i), "ok", time.Millisecond, -1)
	}
	// Another tenant's models keep their names.
	m.ObserveRequest("beta", "gpt-4o", "ok", time.Millisecond, -1)
	out := scrape(t, m)
	if n := strings.Count(out, `loom_requests_total{model="model-`); n != MaxModelsPerTenant {
		t.Fatalf("%d acme model series, want %d", n, MaxModelsPerTenant)
	}
	if want := `loom_requests_total{model="other",status="ok",tenant="acme"} 50`; !strings.Contains(out, want) {
		t.Fatalf("exposition lacks %s", want)
	}
	if want := `loom_requests_total{model="gpt-4o",status="ok",tenant="beta"} 1`; !strings.Contains(out, want) {
		t.Fatalf("exposition lacks %s", want)
	}
	// A model admitted before the budget filled keeps its series.
	m.ObserveRequest("acme", "model-3", "ok", time.Millisecond, -1)
	if want := `loom_requests_total{model="model-3",status="ok",tenant="acme"} 2`; !strings.Contains(scrape(t, m), want) {
		t.Fatalf("exposition lacks %s", want)
	}
}

func TestTenantsAreBounded(t *testing.T) {
	m := New()
	for i := 0; i < MaxTenants+10; i++ {
		m.ObserveRequest(fmt.Sprintf("tenant-%d", i), "gpt-4o", "ok", time.Millisecond, -1)
	}
	out := scrape(t, m)
	if n := strings.Count(out, `loom_requests_total{model="gpt-4o",status="ok",tenant="tenant-`); n != MaxTenants {
		t.Fatalf("%d tenants with series, want %d", n, MaxTenants)
	}
	if want := `loom_requests_total{model="gpt-4o",status="ok",tenant="other"} 10`; !strings.Contains(out, want) {
		t.Fatalf("exposition lacks %s", want)
	}
}

func TestLabelValue(t *testing.T) {
	long := strings.Repeat("a", 200)
	tests := []struct{ in, want string }{
		{"gpt-4o-mini", "gpt-4o-mini"},
		{"", ""},
		{"caf\u00e9 \u6a21\u578b", "caf\u00e9 \u6a21\u578b"},
		{"a\x00b", "a\uFFFDb"},
		{"tab\there\nnl", "tab\uFFFDhere\uFFFDnl"},
		{"del\x7f c1\u0085", "del\uFFFD c1\uFFFD"},
		{"bad\xff\xfeutf8", "bad\uFFFD\uFFFDutf8"},
		{"lone \xed\xa0\x80 surrogate", "lone \uFFFD\uFFFD\uFFFD surrogate"},
		{long[:MaxLabelBytes], long[:MaxLabelBytes]},
		{long[:MaxLabelBytes+1], long[:MaxLabelBytes-3] + "…"},
		{long, long[:MaxLabelBytes-3] + "…"},
		// Cut at a character boundary: 42 × 3 bytes = 126, then a 4-byte one.
		{strings.Repeat("模", 42) + "😀x", strings.Repeat("模", 41) + "…"},
		{strings.Repeat("模", 42) + "é", strings.Repeat("模", 42) + "é"},
		// Replacements count as their encoded length.
		{strings.Repeat("\x00", 50), strings.Repeat("\uFFFD", 41) + "…"},
	}
	for _, tt := range tests {
		got := LabelValue(tt.in)
		if got != tt.want {
			t.Errorf("LabelValue(%.40q) = %q, want %q", tt.in, got, tt.want)
		}
		if len(got) > MaxLabelBytes || !utf8.ValidString(got) {
			t.Errorf("LabelValue(%.40q) = %q: %d bytes", tt.in, got, len(got))
		}
		if again := LabelValue(got); again != got {
			t.Errorf("LabelValue is not idempotent on %q: %q", got, again)
		}
	}
}

// FuzzLabelValue: any input gives a valid, short, control-free value that
// LabelValue maps to itself (so a raw hit on an exposed series is right).
func FuzzLabelValue(f *testing.F) {
	for _, s := range []string{"gpt-4o", "a\x00b", strings.Repeat("模", 50), "\xff\xfe", strings.Repeat("x", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := LabelValue(s)
		if len(got) > MaxLabelBytes || !utf8.ValidString(got) || LabelValue(got) != got {
			t.Fatalf("LabelValue(%q) = %q", s, got)
		}
		for _, r := range got {
			if r < 0x20 || (r >= 0x7f && r <= 0x9f) {
				t.Fatalf("LabelValue(%q) = %q holds %U", s, got, r)
			}
		}
		if len(s) <= MaxLabelBytes && utf8.ValidString(s) && !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }) && got != s {
			t.Fatalf("LabelValue(%q) = %q, want it unchanged", s, got)
		}
	})
}

// TestSanitisedSeries: a raw model is exposed under its LabelValue, and a
// later request naming the exposed value directly counts in the same series.
func TestSanitisedSeries(t *testing.T) {
	m := New()
	huge := "gpt-" + strings.Repeat("x", 4<<20)
	m.ObserveRequest("acme", huge, "ok", time.Millisecond, time.Microsecond)
	m.ObserveRequest("acme", huge+"y", "ok", time.Millisecond, time.Microsecond)
	m.ObserveRequest("acme", LabelValue(huge), "ok", time.Millisecond, time.Microsecond)
	m.ObserveRequest("ac\x00me", "gpt\x00", "ok", time.Millisecond, -1)
	out := scrape(t, m)
	if len(out) > 64<<10 {
		t.Fatalf("exposition of %d bytes", len(out))
	}
	for _, want := range []string{
		fmt.Sprintf(`loom_requests_total{model=%q,status="ok",tenant="acme"} 3`, LabelValue(huge)),
		fmt.Sprintf(`loom_gateway_overhead_seconds_count{model=%q,tenant="acme"} 3`, LabelValue(huge)),
		"loom_requests_total{model=\"gpt\uFFFD\",status=\"ok\",tenant=\"ac\uFFFDme\"} 1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	if strings.ContainsRune(out, 0) {
		t.Error("exposition holds a NUL byte")
	}
}

// TestKnownSeriesAllocateNothing: the hot path of a known series takes no
// allocation (and no lock: only sync.Map.Load and the collectors' atomics).
func TestKnownSeriesAllocateNothing(t *testing.T) {
	m := New()
	m.ObserveRequest("acme", "gpt-4o-mini", "ok", time.Millisecond, time.Microsecond)
	if n := testing.AllocsPerRun(1000, func() {
		m.ObserveRequest("acme", "gpt-4o-mini", "ok", time.Millisecond, time.Microsecond)
	}); n != 0 {
		t.Fatalf("%v allocations per known request", n)
	}
}
