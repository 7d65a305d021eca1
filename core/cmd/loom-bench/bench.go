package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config describes one benchmark run.
type Config struct {
	URL         string // base URL, e.g. http://127.0.0.1:8080/v1
	Path        string // appended to URL
	Key         string
	Model       string
	Stream      bool
	BodyBytes   int
	Mode        string // "open" or "closed"
	Rate        float64
	Concurrency int
	Duration    time.Duration
	// Requests, when > 0, ends the run after that many measured requests
	// (open loop: scheduled slots) instead of after Duration.
	Requests    int
	Warmup      time.Duration
	MaxInflight int
	Timeout     time.Duration
}

// Result is the outcome of a run; it is printed as JSON with -json.
type Result struct {
	Mode          string           `json:"mode"`
	URL           string           `json:"url"`
	Stream        bool             `json:"stream"`
	TargetRate    float64          `json:"target_rps,omitempty"`
	Concurrency   int              `json:"concurrency,omitempty"`
	DurationS     float64          `json:"duration_s"`
	ElapsedS      float64          `json:"elapsed_s"`
	Requests      int64            `json:"requests"`
	Successes     int64            `json:"successes"`
	Errors        int64            `json:"errors"`
	ErrorsByKind  map[string]int64 `json:"errors_by_kind"`
	Throughput    float64          `json:"throughput_rps"`
	SentRate      float64          `json:"sent_rps"`
	Latency       Dist             `json:"latency"`
	ScheduleLag   *Dist            `json:"schedule_lag,omitempty"`
	TTFC          *Dist            `json:"ttfc,omitempty"`
	ChunkGap      *Dist            `json:"chunk_gap,omitempty"`
	ChunksPerResp float64          `json:"chunks_per_response,omitempty"`
}

// Error kinds (status codes are reported as "status_NNN").
const (
	errTransport  = "transport"
	errTimeout    = "timeout"
	errBodyRead   = "body_read"
	errIncomplete = "stream_incomplete"
	errDropped    = "dropped_max_inflight"
)

// sample is what one request contributes to the result.
type sample struct {
	start   time.Time     // actual send time
	end     time.Time     // body fully read
	lag     time.Duration // actual - intended send time (open loop)
	ttfc    time.Duration // time to first content chunk (stream)
	gaps    []time.Duration
	errKind string
}

// recorder accumulates samples from concurrent requests.
type recorder struct {
	mu        sync.Mutex
	measureAt time.Time // samples sent before this are warmup
	lastEnd   time.Time
	requests  int64
	successes int64
	errs      map[string]int64
	latency   []time.Duration
	lag       []time.Duration
	ttfc      []time.Duration
	gaps      []time.Duration
	chunks    int64
}

func newRecorder(measureAt time.Time, expected int, stream bool) *recorder {
	r := &recorder{
		measureAt: measureAt,
		errs:      make(map[string]int64),
		latency:   make([]time.Duration, 0, expected),
		lag:       make([]time.Duration, 0, expected),
	}
	if stream {
		r.ttfc = make([]time.Duration, 0, expected)
		r.gaps = make([]time.Duration, 0, expected*8)
	}
	return r
}

// inWindow reports whether a request sent (or intended) at t is measured.
func (r *recorder) inWindow(t time.Time) bool { return !t.Before(r.measureAt) }

func (r *recorder) add(s *sample, openLoop bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if openLoop {
		r.lag = append(r.lag, s.lag)
	}
	if s.end.After(r.lastEnd) {
		r.lastEnd = s.end
	}
	if s.errKind != "" {
		r.errs[s.errKind]++
		return
	}
	r.successes++
	r.latency = append(r.latency, s.end.Sub(s.start))
	if r.ttfc != nil {
		r.ttfc = append(r.ttfc, s.ttfc)
		r.gaps = append(r.gaps, s.gaps...)
		r.chunks += int64(len(s.gaps)) + 1
	}
}

func (r *recorder) drop() {
	r.mu.Lock()
	r.requests++
	r.errs[errDropped]++
	r.mu.Unlock()
}

// Runner executes a benchmark.
type Runner struct {
	cfg Config
	// scheduled, when set, is called once the open loop has sent or
	// dropped its last request (tests).
	scheduled func()

	client   *http.Client
	endpoint string
	body     []byte
	header   http.Header
	gapPool  sync.Pool
	brPool   sync.Pool
}

// NewRunner validates cfg and prepares the client and request body.
func NewRunner(cfg Config) (*Runner, error) {
	if cfg.URL == "" {
		return nil, errors.New("-url is required")
	}
	if cfg.Requests < 0 {
		return nil, errors.New("-requests must be >= 0")
	}
	if cfg.Duration <= 0 && cfg.Requests == 0 {
		return nil, errors.New("-duration must be > 0")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 60 * time.Second
	}
	var conns int
	switch cfg.Mode {
	case "open":
		if cfg.Rate <= 0 {
			return nil, errors.New("-rate must be > 0 in open mode")
		}
		if cfg.MaxInflight <= 0 {
			cfg.MaxInflight = max(100, min(int(cfg.Rate)*2, 20000))
		}
		conns = cfg.MaxInflight
	case "closed":
		if cfg.Concurrency <= 0 {
			return nil, errors.New("-concurrency must be > 0 in closed mode")
		}
		conns = cfg.Concurrency
	default:
		return nil, fmt.Errorf("unknown -mode %q (want open or closed)", cfg.Mode)
	}
	if cfg.Path == "" {
		cfg.Path = "/chat/completions"
	}
	tr := &http.Transport{
		Proxy: nil, // never route benchmark traffic through an env proxy
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DisableKeepAlives:   false,
		WriteBufferSize:     16 << 10,
		ReadBufferSize:      16 << 10,
	}
	body, err := buildBody(cfg)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	if cfg.Stream {
		h.Set("Accept", "text/event-stream")
	} else {
		h.Set("Accept", "application/json")
	}
	if cfg.Key != "" {
		h.Set("Authorization", "Bearer "+cfg.Key)
	}
	r := &Runner{
		cfg:      cfg,
		client:   &http.Client{Transport: tr, Timeout: cfg.Timeout},
		endpoint: strings.TrimRight(cfg.URL, "/") + cfg.Path,
		body:     body,
		header:   h,
	}
	r.gapPool.New = func() any { s := make([]time.Duration, 0, 64); return &s }
	r.brPool.New = func() any { return bufio.NewReaderSize(nil, 16<<10) }
	return r, nil
}

func buildBody(cfg Config) ([]byte, error) {
	type msg struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	}
	type streamOpts struct {
		IncludeUsage bool `json:"include_usage"`
	}
	type req struct {
		Model         string      `json:"model"`
		Messages      []msg       `json:"messages"`
		Stream        bool        `json:"stream,omitempty"`
		StreamOptions *streamOpts `json:"stream_options,omitempty"`
		MaxTokens     int         `json:"max_tokens"`
	}
	n := max(cfg.BodyBytes-120, 1) // roughly account for the JSON envelope
	words := strings.Repeat("lorem ", n/6+1)[:n]
	q := req{
		Model:     cfg.Model,
		Messages:  []msg{{Role: "user", Content: words}},
		Stream:    cfg.Stream,
		MaxTokens: 64,
	}
	if cfg.Stream {
		q.StreamOptions = &streamOpts{IncludeUsage: true}
	}
	return json.Marshal(q)
}

// Close releases idle connections.
func (r *Runner) Close() { r.client.CloseIdleConnections() }

// Run executes the benchmark until cfg.Warmup+cfg.Duration elapses (or,
// with cfg.Requests, until that many measured requests have been sent) or
// ctx is cancelled (then it stops sending and reports what it has).
func (r *Runner) Run(ctx context.Context) *Result {
	start := time.Now()
	measureAt := start.Add(r.cfg.Warmup)
	end := measureAt.Add(r.cfg.Duration) // unused with cfg.Requests
	var expected int
	switch {
	case r.cfg.Requests > 0:
		expected = r.cfg.Requests
	case r.cfg.Mode == "open":
		expected = int(r.cfg.Rate*r.cfg.Duration.Seconds()*1.1) + 16
	default:
		expected = 1 << 16
	}
	rec := newRecorder(measureAt, expected, r.cfg.Stream)

	if r.cfg.Mode == "open" {
		r.runOpen(ctx, rec, start, end)
	} else {
		r.runClosed(ctx, rec, end)
	}
	stoppedAt := time.Now()
	if r.cfg.Requests == 0 && stoppedAt.After(end) {
		stoppedAt = end
	}
	return r.result(rec, measureAt, stoppedAt)
}

// runOpen sends requests on a fixed schedule independent of responses.
func (r *Runner) runOpen(ctx context.Context, rec *recorder, start, end time.Time) {
	interval := time.Duration(float64(time.Second) / r.cfg.Rate)
	var wg sync.WaitGroup
	var inflight atomic.Int64
	maxInflight := int64(r.cfg.MaxInflight)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	slots := 0 // measured slots so far
schedule:
	for i := int64(0); ; i++ {
		intended := start.Add(time.Duration(i) * interval)
		measured := rec.inWindow(intended)
		if r.cfg.Requests > 0 {
			if measured && slots == r.cfg.Requests {
				break
			}
		} else if !intended.Before(end) {
			break
		}
		if measured {
			slots++
		}
		if d := time.Until(intended); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break schedule
			}
		} else if ctx.Err() != nil {
			break
		}
		if inflight.Load() >= maxInflight {
			if measured {
				rec.drop()
			}
			continue
		}
		inflight.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer inflight.Add(-1)
			var s sample
			r.do(&s, intended)
			if measured {
				rec.add(&s, true)
			}
			r.release(&s)
		}()
	}
	if r.scheduled != nil {
		r.scheduled()
	}
	wg.Wait()
}

// runClosed keeps Concurrency requests outstanding until end, or until
// cfg.Requests measured requests have been sent.
func (r *Runner) runClosed(ctx context.Context, rec *recorder, end time.Time) {
	var claimed atomic.Int64 // measured requests started
	var wg sync.WaitGroup
	for range r.cfg.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				now := time.Now()
				measured := rec.inWindow(now)
				if r.cfg.Requests > 0 {
					if measured && claimed.Add(1) > int64(r.cfg.Requests) {
						return
					}
				} else if !now.Before(end) {
					return
				}
				var s sample
				r.do(&s, now)
				if measured {
					rec.add(&s, false)
				}
				r.release(&s)
			}
		}()
	}
	wg.Wait()
}

func (r *Runner) release(s *sample) {
	if s.gaps != nil {
		g := s.gaps[:0]
		r.gapPool.Put(&g)
		s.gaps = nil
	}
}

var (
	dataPrefix = []byte("data:")
	doneMarker = []byte("[DONE]")
)

// do performs one request and fills s. The request context is not tied
// to the run context: in-flight requests complete (bounded by -timeout).
func (r *Runner) do(s *sample, intended time.Time) {
	req, err := http.NewRequest(http.MethodPost, r.endpoint, bytes.NewReader(r.body))
	if err != nil {
		s.errKind = errTransport
		return
	}
	req.Header = r.header.Clone()
	s.start = time.Now()
	s.lag = s.start.Sub(intended)
	resp, err := r.client.Do(req)
	if err != nil {
		s.end = time.Now()
		s.errKind = classify(err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, resp.Body)
		s.end = time.Now()
		s.errKind = "status_" + strconv.Itoa(resp.StatusCode)
		return
	}
	if !r.cfg.Stream {
		_, err = io.Copy(io.Discard, resp.Body)
		s.end = time.Now()
		if err != nil {
			s.errKind = classifyBody(err)
		}
		return
	}
	r.readStream(s, resp.Body)
}

// readStream scans SSE lines, timing the first and subsequent data events.
func (r *Runner) readStream(s *sample, body io.Reader) {
	br := r.brPool.Get().(*bufio.Reader)
	br.Reset(body)
	defer func() { br.Reset(nil); r.brPool.Put(br) }()
	gp := r.gapPool.Get().(*[]time.Duration)
	gaps := (*gp)[:0]
	var last time.Time
	chunks := 0
	done := false
	lineStart := true
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if lineStart && bytes.HasPrefix(line, dataPrefix) {
				now := time.Now()
				payload := bytes.TrimSpace(line[len(dataPrefix):])
				if bytes.Equal(payload, doneMarker) {
					done = true
				} else {
					if chunks == 0 {
						s.ttfc = now.Sub(s.start)
					} else {
						gaps = append(gaps, now.Sub(last))
					}
					last = now
					chunks++
				}
			}
			// A line longer than the buffer arrives in pieces; only the
			// first piece can carry the "data:" prefix.
			lineStart = line[len(line)-1] == '\n'
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			s.end = time.Now()
			s.errKind = classifyBody(err)
			s.gaps = gaps
			return
		}
	}
	s.end = time.Now()
	s.gaps = gaps
	if !done || chunks == 0 {
		s.errKind = errIncomplete
	}
}

func classify(err error) string {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return errTimeout
	}
	return errTransport
}

func classifyBody(err error) string {
	if k := classify(err); k == errTimeout {
		return k
	}
	return errBodyRead
}

func (r *Runner) result(rec *recorder, measureAt, stoppedAt time.Time) *Result {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	window := stoppedAt.Sub(measureAt)
	if window <= 0 {
		window = time.Nanosecond
	}
	elapsed := window
	if e := rec.lastEnd.Sub(measureAt); e > elapsed {
		elapsed = e
	}
	res := &Result{
		Mode:         r.cfg.Mode,
		URL:          r.endpoint,
		Stream:       r.cfg.Stream,
		DurationS:    window.Seconds(),
		ElapsedS:     elapsed.Seconds(),
		Requests:     rec.requests,
		Successes:    rec.successes,
		Errors:       rec.requests - rec.successes,
		ErrorsByKind: rec.errs,
		Throughput:   float64(rec.successes) / elapsed.Seconds(),
		SentRate:     float64(rec.requests) / window.Seconds(),
		Latency:      summarize(rec.latency),
	}
	if r.cfg.Mode == "open" {
		res.TargetRate = r.cfg.Rate
		d := summarize(rec.lag)
		res.ScheduleLag = &d
	} else {
		res.Concurrency = r.cfg.Concurrency
	}
	if r.cfg.Stream {
		t := summarize(rec.ttfc)
		g := summarize(rec.gaps)
		res.TTFC, res.ChunkGap = &t, &g
		if rec.successes > 0 {
			res.ChunksPerResp = float64(rec.chunks) / float64(rec.successes)
		}
	}
	return res
}

// WriteTable prints a human-readable report.
func WriteTable(w io.Writer, res *Result) {
	fmt.Fprintf(w, "mode=%s url=%s stream=%v", res.Mode, res.URL, res.Stream)
	if res.Mode == "open" {
		fmt.Fprintf(w, " target=%.0f req/s", res.TargetRate)
	} else {
		fmt.Fprintf(w, " concurrency=%d", res.Concurrency)
	}
	fmt.Fprintf(w, "\nwindow %.2fs (elapsed incl. drain %.2fs)\n", res.DurationS, res.ElapsedS)
	fmt.Fprintf(w, "requests   %d (sent %.1f req/s)\n", res.Requests, res.SentRate)
	fmt.Fprintf(w, "successes  %d\n", res.Successes)
	fmt.Fprintf(w, "errors     %d", res.Errors)
	if len(res.ErrorsByKind) > 0 {
		fmt.Fprint(w, " (")
		first := true
		for _, k := range sortedKeys(res.ErrorsByKind) {
			if !first {
				fmt.Fprint(w, ", ")
			}
			first = false
			fmt.Fprintf(w, "%s=%d", k, res.ErrorsByKind[k])
		}
		fmt.Fprint(w, ")")
	}
	fmt.Fprintf(w, "\nthroughput %.1f req/s\n\n", res.Throughput)
	fmt.Fprintf(w, "%-16s %8s %9s %9s %9s %9s %9s %9s\n", "(ms)", "count", "mean", "p50", "p90", "p99", "p99.9", "max")
	row := func(name string, d *Dist) {
		fmt.Fprintf(w, "%-16s %8d %9.3f %9.3f %9.3f %9.3f %9.3f %9.3f\n",
			name, d.Count, d.Mean, d.P50, d.P90, d.P99, d.P999, d.Max)
	}
	name := "latency"
	if res.Stream {
		name = "total"
	}
	row(name, &res.Latency)
	if res.TTFC != nil {
		row("first chunk", res.TTFC)
	}
	if res.ChunkGap != nil {
		row("inter-chunk gap", res.ChunkGap)
		fmt.Fprintf(w, "chunks/response  %.1f\n", res.ChunksPerResp)
	}
	if res.ScheduleLag != nil {
		row("schedule lag", res.ScheduleLag)
	}
}

func sortedKeys(m map[string]int64) []string { return slices.Sorted(maps.Keys(m)) }
