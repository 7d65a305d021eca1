package metrics

import (
	"fmt"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
	for i := 0; i < MaxModels+50; i++ {
		m.ObserveRequest("acme", fmt.Sprintf("model-%d", i), "ok", time.Millisecond, -1)
	}
	out := scrape(t, m)
	if n := strings.Count(out, "loom_requests_total{"); n != MaxModels+1 {
		t.Fatalf("%d request series, want %d (%d models + other)", n, MaxModels+1, MaxModels)
	}
	if !strings.Contains(out, `model="other"`) {
		t.Fatal("no overflow series")
	}
}
