package openaicompat

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// recorder is a provider.StreamSender that records what it is given.
type recorder struct {
	mu       sync.Mutex
	starts   []provider.StreamStart
	events   []provider.Event
	onEvent  func(n int, ev provider.Event) error // n counts from 1
	startErr error
	failed   bool // Send returned an error
	afterErr int  // calls after that
}

func (r *recorder) Start(s provider.StreamStart) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.starts = append(r.starts, s)
	return r.startErr
}

func (r *recorder) Send(ev provider.Event) error {
	r.mu.Lock()
	if r.failed {
		r.afterErr++
	}
	r.events = append(r.events, ev)
	n, f := len(r.events), r.onEvent
	r.mu.Unlock()
	if f == nil {
		return nil
	}
	err := f(n, ev)
	if err != nil {
		r.mu.Lock()
		r.failed = true
		r.mu.Unlock()
	}
	return err
}

func (r *recorder) eventData() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.events))
	for i, e := range r.events {
		out[i] = string(e.Data)
		if e.UsageOnly {
			out[i] += " [usage-only]"
		}
	}
	return out
}

const (
	chunk1    = `{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}`
	chunk2    = `{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"delta":{"content":"say \"usage\": {1}"}}],"usage":null}`
	usageOnly = `{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":21,"completion_tokens":3,"total_tokens":24,"prompt_tokens_details":{"cached_tokens":5},"completion_tokens_details":{"reasoning_tokens":1}}}`
)

// wireStream is an upstream stream mixing line endings, a comment, an
// event with three data lines and an event field.
const wireStream = ": keep-alive\r\n\r\n" +
	"data: " + chunk1 + "\r\n\r\n" +
	"data: " + chunk2 + "\n\n" +
	"data: {\"id\":\"c1\",\r\ndata:  \"choices\":[{\"delta\":{\"content\":\"x\"}}],\rdata: \"usage\":null}\n\n" +
	"event: message\ndata: " + usageOnly + "\n\n" +
	"data: [DONE]\n\n"

var wireEvents = []string{
	chunk1,
	chunk2,
	"{\"id\":\"c1\",\n \"choices\":[{\"delta\":{\"content\":\"x\"}}],\n\"usage\":null}",
	usageOnly + " [usage-only]",
	"[DONE]",
}

func startSSE(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Request-Id", "req_stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
}

// writeEvents writes raw in pieces ending after each blank line, flushing
// each.
func writeEvents(w http.ResponseWriter, raw string) {
	for raw != "" {
		i := len(raw)
		for _, sep := range []string{"\n\n", "\r\n\r\n"} {
			if j := strings.Index(raw, sep); j >= 0 && j+len(sep) < i {
				i = j + len(sep)
			}
		}
		io.WriteString(w, raw[:i])
		w.(http.Flusher).Flush()
		raw = raw[i:]
	}
}

func TestStream(t *testing.T) {
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		startSSE(w)
		writeEvents(w, wireStream)
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	rec := &recorder{}
	end, err := u.Stream(context.Background(), chatRequest(chatBody), rec)
	if err != nil {
		t.Fatal(err)
	}
	if end.Failure != nil {
		t.Fatalf("failure %+v", end.Failure)
	}
	if len(rec.starts) != 1 || rec.starts[0].Status != 200 || rec.starts[0].Headers["Content-Type"] != "text/event-stream" || rec.starts[0].Headers["X-Request-Id"] != "req_stream" {
		t.Errorf("starts %+v", rec.starts)
	}
	got := rec.eventData()
	if strings.Join(got, "\n---\n") != strings.Join(wireEvents, "\n---\n") {
		t.Errorf("events:\n%q\nwant\n%q", got, wireEvents)
	}
	want := provider.Usage{PromptTokens: 21, CompletionTokens: 3, TotalTokens: 24, CachedPromptTokens: 5, ReasoningTokens: 1}
	if end.Usage == nil || *end.Usage != want {
		t.Errorf("usage %+v", end.Usage)
	}
	if end.Model != "gpt-4o-mini-2024-07-18" || len(end.Body) != 0 {
		t.Errorf("model %q body %q", end.Model, end.Body)
	}
	if end.Timings.FirstByte <= 0 || end.Timings.FirstByte > end.Timings.Total {
		t.Errorf("timings %+v", end.Timings)
	}
	r := f.received()[0]
	if r.header.Get("Accept") != "text/event-stream" || r.header.Get("Accept-Encoding") != "identity" || !bytes.Equal(r.body, []byte(chatBody)) {
		t.Errorf("request headers %v body %q", r.header, r.body)
	}
}

// TestStreamPassesEventsOnAsTheyArrive: the upstream sends the second event
// only once the first has reached the sender.
func TestStreamPassesEventsOnAsTheyArrive(t *testing.T) {
	first := make(chan struct{})
	f := newFake(t, nil)
	f.setHandler(func(w http.ResponseWriter, r *http.Request, body []byte) {
		startSSE(w)
		io.WriteString(w, "data: "+chunk1+"\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-first:
		case <-time.After(5 * time.Second):
			return // the client sees no [DONE]: the test fails
		case <-f.done:
			return
		}
		io.WriteString(w, "data: [DONE]\n\n")
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	rec := &recorder{onEvent: func(n int, _ provider.Event) error {
		if n == 1 {
			close(first)
		}
		return nil
	}}
	end, err := u.Stream(context.Background(), chatRequest(chatBody), rec)
	if err != nil || end.Failure != nil || len(rec.events) != 2 {
		t.Fatalf("err %v failure %+v events %q", err, end.Failure, rec.eventData())
	}
}

func TestStreamUpstreamError(t *testing.T) {
	errBody := `{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}`
	f := newFake(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Retry-After", "7")
		w.Header().Set("X-Ratelimit-Remaining-Requests", "0")
		w.WriteHeader(429)
		io.WriteString(w, errBody)
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	rec := &recorder{}
	end, err := u.Stream(context.Background(), chatRequest(chatBody), rec)
	if err != nil || end.Failure != nil {
		t.Fatalf("%v %+v", err, end.Failure)
	}
	if len(rec.starts) != 1 || rec.starts[0].Status != 429 || rec.starts[0].Headers["Retry-After"] != "7" || rec.starts[0].Headers["X-Ratelimit-Remaining-Requests"] != "0" {
		t.Errorf("starts %+v", rec.starts)
	}
	if len(rec.events) != 0 || string(end.Body) != errBody || end.Usage != nil {
		t.Errorf("events %q end %+v", rec.eventData(), end)
	}
}

func TestStreamFailures(t *testing.T) {
	tests := []struct {
		name    string
		handler func(f *fake) func(w http.ResponseWriter, r *http.Request, body []byte)
		timeout time.Duration
		events  int // events passed on before the failure
		kind    provider.FailureKind
		message string
		started bool
	}{
		{
			name: "connection cut mid-stream",
			handler: func(*fake) func(w http.ResponseWriter, r *http.Request, body []byte) {
				return func(w http.ResponseWriter, r *http.Request, body []byte) {
					startSSE(w)
					io.WriteString(w, "data: "+chunk1+"\r\n\r\ndata: "+chunk2+"\r\n\r\ndata: {\"partial\"")
					w.(http.Flusher).Flush()
					conn, _, err := http.NewResponseController(w).Hijack()
					if err != nil {
						panic(err)
					}
					conn.Close()
				}
			},
			events: 2, kind: provider.FailureProtocol, message: "upstream stream ended before [DONE]", started: true,
		},
		{
			name: "body ends without [DONE]",
			handler: func(*fake) func(w http.ResponseWriter, r *http.Request, body []byte) {
				return func(w http.ResponseWriter, r *http.Request, body []byte) {
					startSSE(w)
					io.WriteString(w, "data: "+chunk1+"\n\n")
				}
			},
			events: 1, kind: provider.FailureProtocol, message: "upstream stream ended before [DONE]: the upstream ended the response", started: true,
		},
		{
			name: "body ends inside an event",
			handler: func(*fake) func(w http.ResponseWriter, r *http.Request, body []byte) {
				return func(w http.ResponseWriter, r *http.Request, body []byte) {
					startSSE(w)
					io.WriteString(w, "data: "+chunk1+"\n\ndata: [DONE]\n")
				}
			},
			events: 1, kind: provider.FailureProtocol, message: "upstream stream ended before [DONE]", started: true,
		},
		{
			name: "event too large",
			handler: func(*fake) func(w http.ResponseWriter, r *http.Request, body []byte) {
				return func(w http.ResponseWriter, r *http.Request, body []byte) {
					startSSE(w)
					io.WriteString(w, "data: "+chunk1+"\n\ndata: "+strings.Repeat("x", 5000)+"\n\ndata: [DONE]\n\n")
				}
			},
			events: 1, kind: provider.FailureProtocol, message: "larger than 4096 bytes", started: true,
		},
		{
			name: "timeout mid-stream",
			handler: func(f *fake) func(w http.ResponseWriter, r *http.Request, body []byte) {
				return func(w http.ResponseWriter, r *http.Request, body []byte) {
					startSSE(w)
					io.WriteString(w, "data: "+chunk1+"\n\n")
					w.(http.Flusher).Flush()
					select {
					case <-r.Context().Done():
					case <-f.done:
					}
				}
			},
			timeout: 300 * time.Millisecond,
			events:  1, kind: provider.FailureTimeout, message: "did not finish the stream within the timeout of 300ms", started: true,
		},
		{
			name: "timeout before the headers",
			handler: func(f *fake) func(w http.ResponseWriter, r *http.Request, body []byte) {
				return func(w http.ResponseWriter, r *http.Request, body []byte) {
					select {
					case <-r.Context().Done():
					case <-f.done:
					}
				}
			},
			timeout: 300 * time.Millisecond,
			kind:    provider.FailureTimeout, message: "did not answer within the timeout of 300ms",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, nil)
			f.setHandler(tt.handler(f))
			u := upstreamFor(t, f.URL, UpstreamOptions{MaxEventBytes: 4096})
			req := chatRequest(chatBody)
			req.Timeout = tt.timeout
			rec := &recorder{}
			start := time.Now()
			end, err := u.Stream(context.Background(), req, rec)
			if err != nil {
				t.Fatal(err)
			}
			if time.Since(start) > 5*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
			if end.Failure == nil || end.Failure.Kind != tt.kind || !strings.Contains(end.Failure.Message, tt.message) {
				t.Errorf("failure %+v, want kind %v with %q", end.Failure, tt.kind, tt.message)
			}
			if len(rec.events) != tt.events {
				t.Errorf("events %q, want %d", rec.eventData(), tt.events)
			}
			if started := len(rec.starts) == 1; started != tt.started {
				t.Errorf("starts %+v", rec.starts)
			}
		})
	}
}

func TestStreamUnreachable(t *testing.T) {
	u := upstreamFor(t, closedURL(t), UpstreamOptions{})
	rec := &recorder{}
	end, err := u.Stream(context.Background(), chatRequest(chatBody), rec)
	if err != nil || end.Failure == nil || end.Failure.Kind != provider.FailureUnreachable || len(rec.starts) != 0 {
		t.Fatalf("%v %+v %+v", err, end.Failure, rec.starts)
	}
}

// endlessStream is an upstream handler sending a chunk every 10ms until
// the request ends; it reports when it noticed.
func endlessStream(f *fake, ended chan<- time.Time) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		startSSE(w)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			io.WriteString(w, "data: "+chunk2+"\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-tick.C:
			case <-r.Context().Done():
				if ended != nil {
					ended <- time.Now()
				}
				return
			case <-f.done:
				return
			}
		}
	}
}

func TestStreamSendErrorStopsUpstream(t *testing.T) {
	f := newFake(t, nil)
	ended := make(chan time.Time, 1)
	f.setHandler(endlessStream(f, ended))
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	var stoppedAt time.Time
	rec := &recorder{onEvent: func(n int, _ provider.Event) error {
		if n == 3 {
			stoppedAt = time.Now()
			return errors.New("client went away")
		}
		return nil
	}}
	end, err := u.Stream(context.Background(), chatRequest(chatBody), rec)
	if err != nil {
		t.Fatal(err)
	}
	if end.Failure == nil || end.Failure.Kind != provider.FailureCanceled || !strings.Contains(end.Failure.Message, "client went away") {
		t.Errorf("failure %+v", end.Failure)
	}
	if rec.afterErr != 0 || len(rec.events) != 3 {
		t.Errorf("Send called %d times after its error (%d events)", rec.afterErr, len(rec.events))
	}
	select {
	case at := <-ended:
		if d := at.Sub(stoppedAt); d > time.Second {
			t.Errorf("the upstream request ended %v after the send error", d)
		}
	case <-time.After(2 * time.Second):
		t.Error("the upstream request was still open 2s after the send error")
	}
}

func TestStreamStartErrorStops(t *testing.T) {
	f := newFake(t, nil)
	ended := make(chan time.Time, 1)
	f.setHandler(endlessStream(f, ended))
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	rec := &recorder{startErr: errors.New("no")}
	end, err := u.Stream(context.Background(), chatRequest(chatBody), rec)
	if err != nil || end.Failure == nil || end.Failure.Kind != provider.FailureCanceled || len(rec.events) != 0 {
		t.Fatalf("%v %+v", err, end)
	}
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		t.Error("the upstream request was still open 2s after Start failed")
	}
}

func TestStreamCanceled(t *testing.T) {
	f := newFake(t, nil)
	ended := make(chan time.Time, 1)
	f.setHandler(endlessStream(f, ended))
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := &recorder{onEvent: func(n int, _ provider.Event) error {
		if n == 2 {
			cancel()
		}
		return nil
	}}
	end, err := u.Stream(ctx, chatRequest(chatBody), rec)
	if err != nil || end.Failure == nil || end.Failure.Kind != provider.FailureCanceled {
		t.Fatalf("%v %+v", err, end.Failure)
	}
	select {
	case <-ended:
	case <-time.After(2 * time.Second):
		t.Error("the upstream request was still open 2s after cancellation")
	}
}

// TestStreamReusesConnections: a stream read to [DONE] leaves its
// connection reusable.
func TestStreamReusesConnections(t *testing.T) {
	var conns atomic.Int32
	f := newFakeWith(t, func(w http.ResponseWriter, r *http.Request, body []byte) {
		startSSE(w)
		writeEvents(w, wireStream)
	}, func(s *httptest.Server) {
		s.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	for range 10 {
		end, err := u.Stream(context.Background(), chatRequest(chatBody), &recorder{})
		if err != nil || end.Failure != nil {
			t.Fatalf("%v %+v", err, end.Failure)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("10 streams used %d connections, want 1", n)
	}
}

// TestStreamUpstreamLingersAfterDone: an upstream that keeps the response
// open after [DONE] does not hold the stream up.
func TestStreamUpstreamLingersAfterDone(t *testing.T) {
	f := newFake(t, nil)
	f.setHandler(func(w http.ResponseWriter, r *http.Request, body []byte) {
		startSSE(w)
		io.WriteString(w, "data: "+chunk1+"\n\ndata: [DONE]\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-f.done:
		}
	})
	u := upstreamFor(t, f.URL, UpstreamOptions{})
	start := time.Now()
	end, err := u.Stream(context.Background(), chatRequest(chatBody), &recorder{})
	if err != nil || end.Failure != nil {
		t.Fatalf("%v %+v", err, end.Failure)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

// TestStreamNoGoroutineLeak cancels 500 streams mid-way and checks no
// goroutine stays behind.
func TestStreamNoGoroutineLeak(t *testing.T) {
	f := newFake(t, nil)
	f.setHandler(endlessStream(f, nil))
	client := NewHTTPClient(ClientOptions{})
	u := upstreamFor(t, f.URL, UpstreamOptions{Client: client})
	// Warm up: the first calls start the transport's and server's own
	// goroutines.
	runCanceled(t, u, 5)
	client.CloseIdleConnections()
	before := settledGoroutines(0)
	runCanceled(t, u, 500)
	client.CloseIdleConnections()
	after := settledGoroutines(before + 10)
	t.Logf("goroutines: %d before, %d after 500 canceled streams", before, after)
	if after > before+10 {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines: %d before, %d after 500 canceled streams\n%s", before, after, buf)
	}
}

func runCanceled(t *testing.T, u *Upstream, n int) {
	t.Helper()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 50)
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			rec := &recorder{onEvent: func(n int, _ provider.Event) error {
				if i%2 == 0 && n == 2 {
					cancel()
				}
				if i%2 == 1 && n == 2 {
					return errors.New("gone")
				}
				return nil
			}}
			end, err := u.Stream(ctx, chatRequest(chatBody), rec)
			if err != nil || end.Failure == nil || end.Failure.Kind != provider.FailureCanceled {
				t.Errorf("stream %d: %v %+v", i, err, end)
			}
		}()
	}
	wg.Wait()
}

// settledGoroutines waits for the goroutine count to drop to target (or
// stop changing) and returns it.
func settledGoroutines(target int) int {
	n := runtime.NumGoroutine()
	for range 100 {
		if n <= target && target > 0 {
			return n
		}
		time.Sleep(20 * time.Millisecond)
		m := runtime.NumGoroutine()
		if target == 0 && m == n {
			return n
		}
		n = m
	}
	return n
}

func TestInspectChunk(t *testing.T) {
	u := `"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}`
	tests := []struct {
		chunk     string
		wantModel bool
		usage     bool
		model     string
		usageOnly bool
	}{
		{chunk1, true, false, "gpt-4o-mini-2024-07-18", false},
		{chunk1, false, false, "", false}, // model known: no decoding
		{chunk2, false, false, "", false}, // "usage" inside a string
		{`{"choices":[],` + u + `}`, false, true, "", true},
		{`{"choices": [ ] ,` + u + `,"model":"m"}`, true, true, "m", true},
		{`{"choices":null,` + u + `}`, false, true, "", true},
		{`{` + u + `}`, false, true, "", true},
		{`{"choices":[{"delta":{}}],` + u + `}`, false, true, "", false},
		{`{"choices":[],"usage":null}`, false, false, "", false},
		{`{"choices":[],"usage" : null}`, false, false, "", false},
		{`{"model":"","choices":[],"prompt_filter_results":[{"prompt_index":0}]}`, true, false, "", false}, // Azure's first chunk
		{`{"model":"gpt-\u00e9\"x","choices":[]}`, true, false, "gpt-é\"x", false},
		{`{"nested":{"usage":{"prompt_tokens":9}},"choices":[{}]}`, false, false, "", false},
		{`{"choices":[],"usage":{"prompt_tokens":1.0,"completion_tokens":"x","total_tokens":null}}`, false, true, "", true},
		{`not json "usage": {`, true, false, "", false},
		{`{"usage":{"prompt_tokens":1`, true, false, "", false},
	}
	for _, tt := range tests {
		ci := inspectChunk([]byte(tt.chunk), tt.wantModel)
		if (ci.usage != nil) != tt.usage || ci.model != tt.model || ci.usageOnly != tt.usageOnly {
			t.Errorf("inspectChunk(%s, %v) = usage %+v model %q usageOnly %v", tt.chunk, tt.wantModel, ci.usage, ci.model, ci.usageOnly)
		}
	}
}

func TestScanTop(t *testing.T) {
	tests := []struct{ in, model, usage, choices string }{
		{`{"model":"m","usage":{"a":[1,{"b":"}"}]},"choices":[]}`, `"m"`, `{"a":[1,{"b":"}"}]}`, `[]`},
		{" \n{ \"x\" : \"a\\\"b\\\\\" , \"model\" :\t\"m\" }", `"m"`, ``, ``},
		{`{"x":[{"model":"inner"}],"model":null}`, `null`, ``, ``},
		{`{"x":"{\"model\":\"inner\"}","usage":12}`, ``, `12`, ``},
		{`{"model":"m"`, `"m"`, ``, ``},
		{`{"model":`, ``, ``, ``},
		{`["model"]`, ``, ``, ``},
		{``, ``, ``, ``},
		{`{"a":"unterminated`, ``, ``, ``},
		{`{"a":[1,2,"x`, ``, ``, ``},
	}
	for _, tt := range tests {
		f := scanTop([]byte(tt.in))
		if string(f.model) != tt.model || string(f.usage) != tt.usage || string(f.choices) != tt.choices {
			t.Errorf("scanTop(%q) = model %q usage %q choices %q", tt.in, f.model, f.usage, f.choices)
		}
	}
}

func TestParseBody(t *testing.T) {
	u, m := parseBody([]byte(answerBody))
	if u == nil || *u != (provider.Usage{PromptTokens: 19, CompletionTokens: 10, TotalTokens: 29, CachedPromptTokens: 3, ReasoningTokens: 4}) || m != "gpt-4o-mini-2024-07-18" {
		t.Errorf("parseBody = %+v %q", u, m)
	}
	for _, body := range []string{``, `{}`, `{"usage":null}`, `{"usage":"x"}`, `<html>`, `{"usage":[1]}`} {
		if u, _ := parseBody([]byte(body)); u != nil {
			t.Errorf("parseBody(%s) usage = %+v", body, u)
		}
	}
}

func FuzzScanTop(f *testing.F) {
	f.Add([]byte(answerBody))
	f.Add([]byte(usageOnly))
	f.Add([]byte(`{"a":"\\\"","model":"x\"y"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fields := scanTop(b)
		for _, v := range [][]byte{fields.model, fields.usage, fields.choices} {
			if len(v) > len(b) {
				t.Fatal("value longer than input")
			}
		}
		_ = inspectChunk(b, true)
		_, _ = parseBody(b)
	})
}

func ExampleUpstream_Stream() {
	client := NewHTTPClient(ClientOptions{})
	u, err := NewUpstream(UpstreamOptions{
		Client: client,
		URL: func(endpoint, model string) (string, error) {
			return "https://api.example.com/v1/" + endpoint, nil
		},
		SetHeaders: func(h http.Header) { h.Set("Authorization", "Bearer "+"sk-…") },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = u // u.Stream(ctx, req, out) from a provider's ChatCompletionsStream
}
