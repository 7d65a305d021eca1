package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store/postgres"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/sdk/provider"
)

// storeResult is scenario (e): the trace recorder (seal, price, chain,
// batch) writing into PostgreSQL as fast as it can take traces.
type storeResult struct {
	written  int64 // traces durable in the store during the window
	window   time.Duration
	rate     float64 // traces/s
	failed   int64   // batch writes that failed
	spooled  int64   // traces that went to the spool instead
	producer string  // how the traces were produced
}

// Typical bodies: a small chat request and its non-stream answer.
var (
	traceRequest  = []byte(`{"model":"mock-model","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write one sentence about the sea, please, in plain words, and keep it short."}],"temperature":0.7}`)
	traceResponse = []byte(`{"id":"chatcmpl-loommock","object":"chat.completion","created":1700000000,"model":"mock-model","choices":[{"index":0,"message":{"role":"assistant","content":"tok tok tok tok tok tok tok tok tok tok tok tok tok tok tok tok tok tok tok tok "},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}}`)
)

// traceStore drives core/trace's Recorder, with Loom's default settings,
// into the PostgreSQL at dsn: producers submit typical traces whenever the
// recorder admits one (a closed loop on its queue of 10,000), and the
// rate is the traces the store took during the window, after a warmup.
// It runs in this process, without HTTP, plugins or the load tool, so it
// measures the store path alone (on a 2-core machine Loom's request path
// cannot produce 10,000 requests/s).
func traceStore(ctx context.Context, dsn string, warmup, window time.Duration) (storeResult, error) {
	res := storeResult{producer: "recorder driven in-process (seal + chain + batched INSERT), Loom's defaults: queue 10000, batch 500, 5 ms"}
	st, err := postgres.Open(ctx, dsn, 0, nil)
	if err != nil {
		return res, err
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		return res, err
	}
	tn, err := st.CreateTenant(ctx, "trace-bench")
	if err != nil {
		return res, err
	}
	var master [32]byte
	if _, err := rand.Read(master[:]); err != nil {
		return res, err
	}
	kr, err := seal.NewKeyring(master[:], st)
	if err != nil {
		return res, err
	}
	spool, err := os.MkdirTemp("", "loom-bench-spool-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(spool)
	// One tenant writes every trace: it may hold the whole queue.
	rec, err := trace.Start(ctx, trace.Options{Store: st, Keyring: kr, SpoolDir: spool, TenantShare: 100})
	if err != nil {
		return res, err
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := rec.Admit(tn.ID); err != nil {
					time.Sleep(200 * time.Microsecond) // the queue is full: the store is the bottleneck
					continue
				}
				rec.Submit(typicalRecord(tn.ID))
			}
		}()
	}
	sleep := func(d time.Duration) error {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
			return nil
		}
	}
	err = sleep(warmup)
	s0, t0 := rec.Stats(), time.Now()
	if err == nil {
		err = sleep(window)
	}
	s1, t1 := rec.Stats(), time.Now()
	close(stop)
	wg.Wait()
	cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if cerr := rec.Close(cctx); cerr != nil && err == nil {
		err = fmt.Errorf("trace recorder: %w", cerr)
	}
	if err != nil {
		return res, err
	}
	res.written, res.window = s1.Written-s0.Written, t1.Sub(t0)
	res.rate = float64(res.written) / res.window.Seconds()
	res.failed, res.spooled = s1.Failed, s1.Spooled
	return res, nil
}

func typicalRecord(tenantID string) *trace.Record {
	id, _ := uuid.NewV7()
	reqID, _ := uuid.NewV7()
	end := time.Now()
	start := end.Add(-3 * time.Millisecond)
	return &trace.Record{
		ID: id.String(), TenantID: tenantID, RequestID: reqID.String(), Endpoint: "chat.completions",
		RequestedModel: "mock-model", UpstreamModel: "mock-model", ReportedModel: "mock-model",
		ProviderInstance: "openai", PluginName: "openai", PluginVersion: "bench",
		Status: trace.StatusOK, HTTPStatus: 200,
		Request: traceRequest, Response: traceResponse,
		Usage: &provider.Usage{PromptTokens: 10, CompletionTokens: 20, TotalTokens: 30},
		Start: start, End: end, TTFB: 2900 * time.Microsecond, Upstream: 2500 * time.Microsecond, UpstreamTTFB: 2400 * time.Microsecond,
		ConfigHash: "bench",
	}
}
