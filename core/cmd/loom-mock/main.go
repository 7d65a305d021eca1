// Command loom-mock is a fast OpenAI-compatible mock upstream used for
// benchmarking and testing Loom. It serves precomputed responses with
// configurable latency and streaming shape, and can hold its answers until
// a given number of requests have arrived (-hold).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "loom-mock:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("loom-mock", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:8089", "listen address (use :0 for a random port)")
	latency := fs.Duration("latency", 0, "delay before a non-stream response / the first stream chunk")
	chunks := fs.Int("chunks", 20, "number of content chunks per streamed response")
	gap := fs.Duration("chunk-gap", 0, "delay between streamed chunks")
	echo := fs.Bool("echo", false, "start each answer with the last message's text (for tests; costs a JSON parse)")
	slowChunks := fs.Int("slow-chunks", 40, "content chunks per streamed response for the model "+SlowModel)
	slowGap := fs.Duration("slow-chunk-gap", 250*time.Millisecond, "delay between streamed chunks for the model "+SlowModel)
	printAddr := fs.Bool("print-addr", false, "print 'listening on ADDR' to stdout once listening")
	hold := fs.Int("hold", 0, "hold chat answers until this many chat requests have arrived (a barrier, for tests; GET /mock/hold reports it)")
	holdRelease := fs.Bool("hold-release", false, "with -hold, answers then also wait for POST /mock/release")
	holdTimeout := fs.Duration("hold-timeout", 10*time.Minute, "with -hold, answer held requests 503 if the barrier is not passed this long after the first arrival (0: never)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *chunks < 0 || *slowChunks < 0 {
		return errors.New("-chunks and -slow-chunks must be >= 0")
	}
	if *hold < 0 || *holdTimeout < 0 {
		return errors.New("-hold and -hold-timeout must be >= 0")
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := newServer(NewHandler(Config{Latency: *latency, Chunks: *chunks, ChunkGap: *gap, Echo: *echo,
		SlowChunks: *slowChunks, SlowChunkGap: *slowGap, Hold: *hold, HoldRelease: *holdRelease, HoldTimeout: *holdTimeout}))
	if *printAddr {
		fmt.Printf("listening on %s\n", ln.Addr())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Printf("loom-mock: shutdown: %v", err)
		_ = srv.Close()
	}
	return nil
}

// newServer returns an http.Server tuned for high request rates.
func newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(os.Stderr, "loom-mock: ", 0),
	}
}
