package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentileKnownData(t *testing.T) {
	samples := make([]time.Duration, 1000)
	for i := range samples {
		// Reverse order so summarize has to sort.
		samples[i] = time.Duration(1000-i) * time.Millisecond
	}
	d := summarize(samples)
	want := Dist{Count: 1000, Mean: 500.5, Min: 1, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000}
	if d != want {
		t.Fatalf("got %+v\nwant %+v", d, want)
	}

	sorted := []time.Duration{10, 20, 30, 40}
	for _, tc := range []struct {
		p    float64
		want time.Duration
	}{{0, 10}, {1, 10}, {25, 10}, {26, 20}, {50, 20}, {75, 30}, {99, 40}, {100, 40}} {
		if got := percentile(sorted, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("empty: %v", got)
	}
	if d := summarize(nil); d != (Dist{}) {
		t.Errorf("empty summarize: %+v", d)
	}
	one := summarize([]time.Duration{3 * time.Millisecond})
	if one.P50 != 3 || one.P999 != 3 || one.Max != 3 {
		t.Errorf("single: %+v", one)
	}
}

// mockServer is a minimal in-process OpenAI-style upstream. It counts
// requests and checks the auth header.
func mockServer(t *testing.T, chunks int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("Authorization") != "Bearer sk-test" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if !strings.Contains(string(body), `"stream":true`) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"object":"chat.completion","choices":[{"message":{"role":"assistant","content":"hi"}}]}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for i := 0; i < chunks; i++ {
			if i > 0 {
				time.Sleep(time.Millisecond)
			}
			_, _ = io.WriteString(w, `data: {"choices":[{"delta":{"content":"x"}}]}`+"\n\n")
			fl.Flush()
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
		fl.Flush()
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func runBench(t *testing.T, cfg Config) *Result {
	t.Helper()
	r, err := NewRunner(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	return r.Run(context.Background())
}

func checkNoErrors(t *testing.T, res *Result) {
	t.Helper()
	if res.Errors != 0 || len(res.ErrorsByKind) != 0 {
		t.Fatalf("errors: %d %v", res.Errors, res.ErrorsByKind)
	}
	if res.Successes != res.Requests || res.Latency.Count != int(res.Successes) {
		t.Fatalf("requests=%d successes=%d latency samples=%d", res.Requests, res.Successes, res.Latency.Count)
	}
	l := res.Latency
	if !(l.Min > 0 && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.P999 && l.P999 <= l.Max) {
		t.Fatalf("latency distribution not monotonic: %+v", l)
	}
}

func TestOpenLoop(t *testing.T) {
	srv, hits := mockServer(t, 0)
	res := runBench(t, Config{
		URL: srv.URL + "/v1", Key: "sk-test", Model: "m", Mode: "open",
		Rate: 200, Duration: time.Second, BodyBytes: 512,
	})
	// The schedule has 200 slots in 1 s at 200 req/s, however late they run.
	if res.Requests != 200 {
		t.Fatalf("open loop at 200 req/s for 1s sent %d requests", res.Requests)
	}
	if hits.Load() != res.Requests {
		t.Fatalf("server saw %d requests, bench reports %d", hits.Load(), res.Requests)
	}
	checkNoErrors(t, res)
	if res.ScheduleLag == nil || res.ScheduleLag.Count != int(res.Requests) {
		t.Fatalf("schedule lag missing: %+v", res.ScheduleLag)
	}
	if res.ScheduleLag.Min < 0 {
		t.Fatalf("negative schedule lag: %+v", res.ScheduleLag)
	}
}

func TestOpenLoopWarmupExcluded(t *testing.T) {
	srv, hits := mockServer(t, 0)
	res := runBench(t, Config{
		URL: srv.URL + "/v1", Key: "sk-test", Mode: "open",
		Rate: 100, Duration: 500 * time.Millisecond, Warmup: 300 * time.Millisecond,
	})
	// 30 slots of warmup, then 50 measured, however late they run.
	if res.Requests != 50 {
		t.Fatalf("measured %d requests, want 50", res.Requests)
	}
	if sent := hits.Load(); sent != 80 {
		t.Fatalf("server saw %d requests incl. warmup, want 80", sent)
	}
	checkNoErrors(t, res)
}

func TestClosedLoop(t *testing.T) {
	srv, hits := mockServer(t, 0)
	res := runBench(t, Config{
		URL: srv.URL + "/v1/", Key: "sk-test", Mode: "closed",
		Concurrency: 4, Requests: 200,
	})
	if res.Requests != 200 {
		t.Fatalf("closed loop with -requests 200 sent %d requests", res.Requests)
	}
	if hits.Load() != res.Requests {
		t.Fatalf("server saw %d requests, bench reports %d", hits.Load(), res.Requests)
	}
	checkNoErrors(t, res)
	if res.Throughput <= 0 || res.ScheduleLag != nil {
		t.Fatalf("bad result: %+v", res)
	}
}

func TestStreamTTFCBelowTotal(t *testing.T) {
	const chunks = 5
	srv, _ := mockServer(t, chunks)
	res := runBench(t, Config{
		URL: srv.URL + "/v1", Key: "sk-test", Mode: "closed", Stream: true,
		Concurrency: 2, Requests: 20,
	})
	checkNoErrors(t, res)
	if res.Requests != 20 {
		t.Fatalf("%d requests, want 20", res.Requests)
	}
	if res.TTFC == nil || res.ChunkGap == nil {
		t.Fatal("stream stats missing")
	}
	if res.TTFC.Count != res.Latency.Count {
		t.Fatalf("ttfc samples %d != total samples %d", res.TTFC.Count, res.Latency.Count)
	}
	for _, p := range [][2]float64{
		{res.TTFC.P50, res.Latency.P50}, {res.TTFC.P99, res.Latency.P99}, {res.TTFC.Max, res.Latency.Max},
	} {
		if p[0] > p[1] {
			t.Fatalf("ttfc %v > total %v", p[0], p[1])
		}
	}
	if res.ChunksPerResp != chunks {
		t.Fatalf("chunks per response = %v, want %d", res.ChunksPerResp, chunks)
	}
	if res.ChunkGap.Count != res.Latency.Count*(chunks-1) || res.ChunkGap.Mean < 0.5 {
		t.Fatalf("gap stats: %+v (server sleeps 1ms between chunks)", res.ChunkGap)
	}
}

func TestErrorsByKind(t *testing.T) {
	srv, _ := mockServer(t, 0)
	// Wrong key → 401 from the mock.
	res := runBench(t, Config{URL: srv.URL + "/v1", Key: "wrong", Mode: "closed", Concurrency: 1, Requests: 5})
	if res.Successes != 0 || res.ErrorsByKind["status_401"] != 5 || res.Requests != 5 {
		t.Fatalf("want 5 status_401 errors: %+v", res)
	}
	// Nothing listening → transport errors.
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	res = runBench(t, Config{URL: url + "/v1", Mode: "open", Rate: 50, Requests: 5})
	if res.Successes != 0 || res.ErrorsByKind[errTransport] != 5 || res.Requests != 5 {
		t.Fatalf("want 5 transport errors: %+v", res)
	}
	// Truncated stream (no [DONE]) → stream_incomplete.
	trunc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "data: {}\n\n")
	}))
	defer trunc.Close()
	res = runBench(t, Config{URL: trunc.URL, Mode: "closed", Stream: true, Concurrency: 1, Requests: 5})
	if res.Successes != 0 || res.ErrorsByKind[errIncomplete] != 5 || res.Requests != 5 {
		t.Fatalf("want 5 stream_incomplete errors: %+v", res)
	}
}

// With -max-inflight 5 and the first 5 requests held by the server, the
// other 25 of a 30-request schedule are dropped, not queued: the schedule
// runs to its end while nothing completes.
func TestMaxInflightDrops(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	defer srv.Close()
	r, err := NewRunner(Config{URL: srv.URL, Mode: "open", Rate: 100, Requests: 30, MaxInflight: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	scheduled := make(chan struct{})
	r.scheduled = func() { close(scheduled) }
	done := make(chan *Result)
	go func() { done <- r.Run(context.Background()) }()
	<-scheduled // every slot sent or dropped, the first 5 still held
	close(release)
	res := <-done
	if res.Requests != 30 || res.Successes != 5 || res.ErrorsByKind[errDropped] != 25 || res.Errors != 25 {
		t.Fatalf("requests %d, successes %d, errors %v; want 30, 5 and 25 dropped", res.Requests, res.Successes, res.ErrorsByKind)
	}
}

// -requests ends a run after that many measured requests, warmup excluded,
// in both modes.
func TestRequestsBound(t *testing.T) {
	for _, cfg := range []Config{
		{Mode: "closed", Concurrency: 3, Requests: 10},
		{Mode: "closed", Concurrency: 3, Requests: 10, Warmup: 20 * time.Millisecond},
		{Mode: "open", Rate: 1000, Requests: 10},
		{Mode: "open", Rate: 1000, Requests: 10, Warmup: 5 * time.Millisecond},
	} {
		srv, hits := mockServer(t, 0)
		cfg.URL, cfg.Key = srv.URL+"/v1", "sk-test"
		res := runBench(t, cfg)
		checkNoErrors(t, res)
		if res.Requests != 10 {
			t.Errorf("%+v: %d measured requests, want 10", cfg, res.Requests)
		}
		if cfg.Warmup == 0 && hits.Load() != 10 {
			t.Errorf("%+v: server saw %d requests, want 10", cfg, hits.Load())
		}
		if cfg.Mode == "open" && cfg.Warmup > 0 && hits.Load() != 15 {
			t.Errorf("%+v: server saw %d requests, want 5 of warmup and 10", cfg, hits.Load())
		}
	}
	if _, err := NewRunner(Config{URL: "http://127.0.0.1:1", Mode: "closed", Concurrency: 1, Requests: -1}); err == nil {
		t.Error("-requests -1 accepted")
	}
}

func TestBuildBodySize(t *testing.T) {
	for _, n := range []int{256, 4096, 65536} {
		b, err := buildBody(Config{Model: "m", BodyBytes: n, Stream: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < n*9/10 || len(b) > n*11/10 {
			t.Errorf("body-bytes %d: got %d bytes", n, len(b))
		}
		if !strings.Contains(string(b), `"stream":true`) || !strings.Contains(string(b), `"include_usage":true`) {
			t.Errorf("stream body missing flags: %.200s", b)
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{Mode: "open", Rate: 1, Duration: time.Second},
		{URL: "http://127.0.0.1:1", Mode: "open", Duration: time.Second},
		{URL: "http://127.0.0.1:1", Mode: "closed", Duration: time.Second},
		{URL: "http://127.0.0.1:1", Mode: "weird", Duration: time.Second},
		{URL: "http://127.0.0.1:1", Mode: "closed", Concurrency: 1},
	} {
		if _, err := NewRunner(cfg); err == nil {
			t.Errorf("expected error for %+v", cfg)
		}
	}
}

func TestWriteTable(t *testing.T) {
	var sb strings.Builder
	d := Dist{Count: 1, Mean: 1, Min: 1, P50: 1, P90: 1, P99: 1, P999: 1, Max: 1}
	WriteTable(&sb, &Result{
		Mode: "open", Stream: true, TargetRate: 10, Requests: 2, Successes: 1, Errors: 1,
		ErrorsByKind: map[string]int64{"status_500": 1}, Latency: d, TTFC: &d, ChunkGap: &d, ScheduleLag: &d,
	})
	out := sb.String()
	for _, want := range []string{"status_500=1", "first chunk", "inter-chunk gap", "schedule lag", "p99.9", "total"} {
		if !strings.Contains(out, want) {
			t.Errorf("table missing %q:\n%s", want, out)
		}
	}
}
