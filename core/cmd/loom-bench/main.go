// Command loom-bench is a load generator for OpenAI-compatible chat
// completion endpoints (Loom, or an upstream directly).
//
// Open loop (-mode open) sends requests on a fixed schedule regardless of
// how the server responds, so latency is not hidden by coordinated
// omission; closed loop (-mode closed) keeps -concurrency requests in
// flight.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	fs := flag.NewFlagSet("loom-bench", flag.ContinueOnError)
	var cfg Config
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080/v1", "base URL of the OpenAI-compatible API")
	fs.StringVar(&cfg.Path, "path", "/chat/completions", "path appended to -url")
	fs.StringVar(&cfg.Key, "key", "", "API key, sent as 'Authorization: Bearer KEY' if set")
	fs.StringVar(&cfg.Model, "model", "mock-model", "model name in the request body")
	fs.BoolVar(&cfg.Stream, "stream", false, "request streaming responses (with stream_options.include_usage)")
	fs.IntVar(&cfg.BodyBytes, "body-bytes", 256, "approximate request body size in bytes")
	fs.StringVar(&cfg.Mode, "mode", "closed", "load model: open (fixed rate) or closed (fixed concurrency)")
	fs.Float64Var(&cfg.Rate, "rate", 100, "open loop: requests per second")
	fs.IntVar(&cfg.Concurrency, "concurrency", 50, "closed loop: concurrent requests")
	fs.DurationVar(&cfg.Duration, "duration", 10*time.Second, "measured duration")
	fs.IntVar(&cfg.Requests, "requests", 0, "measured requests to send, then stop (instead of -duration; open loop: at -rate)")
	fs.DurationVar(&cfg.Warmup, "warmup", 2*time.Second, "unmeasured warmup before -duration")
	fs.IntVar(&cfg.MaxInflight, "max-inflight", 0, "open loop: max outstanding requests; excess are dropped and counted as errors (0 = max(100, 2*rate))")
	fs.DurationVar(&cfg.Timeout, "timeout", 30*time.Second, "per-request timeout")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	r, err := NewRunner(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loom-bench:", err)
		return 2
	}
	defer r.Close()

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	res := r.Run(ctx)

	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		if err := enc.Encode(res); err != nil {
			fmt.Fprintln(os.Stderr, "loom-bench:", err)
			return 1
		}
	} else {
		WriteTable(os.Stdout, res)
	}
	if res.Successes == 0 {
		return 1
	}
	return 0
}
