package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/loom-runtime/loom/core/request"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/sdk/openaicompat"
	"github.com/loom-runtime/loom/sdk/provider"
)

// FuzzStreamRelay feeds an upstream SSE body through the code that turns
// it into client bytes and a trace: openaicompat.Upstream.Stream (what the
// provider plugins run) parses it, relay.Stream writes each event to the
// client, capture.tap records it, server.stream ends the stream. Only the
// gRPC hop between plugin and Loom is left out. Properties:
//
//   - the client receives exactly the upstream's dispatched events, payload
//     bytes and order, up to and including the first [DONE] (the usage-only
//     chunk may be withheld when the client did not ask for usage); without
//     [DONE] they are followed by one error event and the trace says
//     stream_failure;
//   - the trace's captured response is the client's bytes (a whole-event
//     prefix of them when the capture limit cuts it, flagged truncated);
//   - the result is the same whether the upstream body arrives whole, one
//     byte at a time or in chunks split at fuzzed points.
//
// flags: bit 0 HoldDone (sync durability), bit 1 the client asks for usage
// itself, bit 2 a trace capture limit of relayCaptureLimit bytes.
func FuzzStreamRelay(f *testing.F) {
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n"), []byte{3}, byte(2))
	f.Add([]byte("data: a\r\n\r\ndata: b\rdata: c\r\r: note\n\ndata: [DONE]\r\n\r\n"), []byte{1, 2}, byte(1))
	f.Add([]byte("\xEF\xBB\xBFdata: x\n\ndata: y"), []byte{2}, byte(6))
	// One server per HoldDone and capture limit: building one costs more
	// than relaying a stream. Server.stream keeps no state between calls.
	var servers [2][2]*Server
	for hold := range 2 {
		for limited := range 2 {
			servers[hold][limited] = New(Options{Recorder: &recordSink{}, HoldDone: hold == 1, MaxTraceBodyBytes: int64(limited * relayCaptureLimit)})
		}
	}
	f.Fuzz(func(t *testing.T, body, splits []byte, flags byte) {
		s := servers[flags&1][flags>>2&1]
		wantUsage, limited := flags&2 != 0, flags&4 != 0
		whole := relayOnce(t, s, body, func(r io.Reader) io.Reader { return r }, wantUsage)
		checkRelay(t, body, whole, wantUsage, limited)
		for _, feed := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{
			{"byte by byte", iotest.OneByteReader},
			{"split", func(r io.Reader) io.Reader { return &splitReader{r: r, sizes: splits} }},
		} {
			got := relayOnce(t, s, body, feed.wrap, wantUsage)
			if !got.equal(whole) {
				t.Fatalf("%s differs from the whole body (input %q, splits %v):\n%s\nwhole:\n%s", feed.name, body, splits, got, whole)
			}
		}
	})
}

// relayResult is what one relayed stream left behind.
type relayResult struct {
	status    int
	client    []byte // the bytes the client received
	captured  []byte // the trace's response
	truncated bool
	trace     string // the trace's status
	traceErr  string
}

func (r relayResult) equal(o relayResult) bool {
	return r.status == o.status && bytes.Equal(r.client, o.client) && bytes.Equal(r.captured, o.captured) &&
		r.truncated == o.truncated && r.trace == o.trace && r.traceErr == o.traceErr
}

func (r relayResult) String() string {
	return "status " + http.StatusText(r.status) + ", trace " + r.trace + " (" + r.traceErr + ")\nclient   " +
		strings.ReplaceAll(string(r.client), "\n", `\n`) + "\ncaptured " + strings.ReplaceAll(string(r.captured), "\n", `\n`)
}

// relayCaptureLimit is the trace capture limit of the limited runs.
const relayCaptureLimit = 64

// relayOnce streams body, read through wrap, to a client of s.
func relayOnce(t *testing.T, s *Server, body []byte, wrap func(io.Reader) io.Reader, wantUsage bool) relayResult {
	t.Helper()
	up, err := openaicompat.NewUpstream(openaicompat.UpstreamOptions{
		Client: &http.Client{Transport: sseBody(func() io.Reader { return wrap(bytes.NewReader(body)) })},
		URL:    func(endpoint, _ string) (string, error) { return "http://upstream.invalid/v1/" + endpoint, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	sink := s.o.Recorder.(*recordSink)
	sink.recs = sink.recs[:0]
	reqBody := []byte(`{"model":"m","messages":[],"stream":true}`)
	if wantUsage {
		reqBody = []byte(`{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}`)
	}
	peek, err := request.Peek(reqBody)
	if err != nil {
		t.Fatal(err)
	}
	c := &call{
		peek:     peek,
		target:   router.Target{Provider: "fuzz", Model: "m", Route: "*"},
		provider: upstreamProvider{up},
		req:      &provider.Request{Model: "m", Body: reqBody},
		cap:      &capture{rec: &trace.Record{}, maxBody: s.o.MaxTraceBodyBytes},
	}
	w := httptest.NewRecorder()
	if err := s.stream(w, httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil), c); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(sink.recs) != 1 || sink.recs[0] != c.cap.rec {
		t.Fatalf("%d traces submitted, want this request's one", len(sink.recs))
	}
	if ct := w.Header().Get("Content-Type"); ct != "text/event-stream; charset=utf-8" {
		t.Fatalf("content type %q", ct)
	}
	rec := c.cap.rec
	return relayResult{status: w.Code, client: w.Body.Bytes(), captured: rec.Response, truncated: rec.ResponseTruncated,
		trace: rec.Status, traceErr: rec.Error}
}

// checkRelay checks a relayed stream against the events a reference
// parser finds in body.
func checkRelay(t *testing.T, body []byte, got relayResult, wantUsage, limited bool) {
	t.Helper()
	events := referenceEvents(body)
	done := -1
	for i, ev := range events {
		if ev == "[DONE]" {
			done = i
			break
		}
	}
	if done >= 0 {
		events = events[:done+1]
	}
	if got.status != http.StatusOK {
		t.Fatalf("status %d", got.status)
	}
	// Walk the client's bytes event by event.
	rest := got.client
	withheld := 0
	for _, ev := range events {
		enc := encodeEvent(ev)
		if bytes.HasPrefix(rest, enc) {
			rest = rest[len(enc):]
			continue
		}
		// Only the usage-only chunk may be missing, and only for a client
		// that did not ask for usage.
		if wantUsage || ev == "[DONE]" || !strings.Contains(ev, `"usage"`) {
			t.Fatalf("input %q: event %q missing from the client's bytes; left: %q", body, ev, rest)
		}
		withheld++
	}
	if withheld > 1 {
		t.Fatalf("input %q: %d events withheld", body, withheld)
	}
	if done >= 0 {
		if len(rest) != 0 || got.trace != trace.StatusOK {
			t.Fatalf("input %q: after [DONE] the client got %q more; trace %s", body, rest, got.trace)
		}
	} else {
		// No [DONE]: one error event in OpenAI's shape ends the stream.
		payload, ok := bytes.CutPrefix(rest, []byte("data: "))
		payload, ok2 := bytes.CutSuffix(payload, []byte("\n\n"))
		var e struct {
			Error struct{ Type, Code string } `json:"error"`
		}
		if !ok || !ok2 || bytes.ContainsAny(payload, "\r\n") || json.Unmarshal(payload, &e) != nil ||
			e.Error.Type != "server_error" || e.Error.Code != "upstream_bad_response" {
			t.Fatalf("input %q: the stream without [DONE] ended with %q, want one error event", body, rest)
		}
		if got.trace != trace.StatusStreamFailure || got.traceErr == "" {
			t.Fatalf("input %q: trace status %s (%q), want %s", body, got.trace, got.traceErr, trace.StatusStreamFailure)
		}
	}
	// The trace holds what the client got: all of it, or whole events up
	// to the capture limit.
	switch {
	case !limited || !got.truncated:
		if !bytes.Equal(got.captured, got.client) || got.truncated {
			t.Fatalf("input %q: captured %q (truncated %v), client got %q", body, got.captured, got.truncated, got.client)
		}
	default:
		if !bytes.HasPrefix(got.client, got.captured) || len(got.captured) >= len(got.client) ||
			len(got.captured) > 0 && !bytes.HasSuffix(got.captured, []byte("\n\n")) {
			t.Fatalf("input %q: truncated capture %q is not a whole-event prefix of %q", body, got.captured, got.client)
		}
	}
}

// referenceEvents is the data of every event the WHATWG event stream
// rules dispatch from in, written from the standard independently of
// package sse.
func referenceEvents(in []byte) []string {
	in = bytes.TrimPrefix(in, []byte("\xEF\xBB\xBF"))
	var events, data []string
	hasData := false
	start := 0
	for i := 0; i < len(in); i++ {
		if in[i] != '\n' && in[i] != '\r' {
			continue
		}
		line := string(in[start:i])
		if in[i] == '\r' && i+1 < len(in) && in[i+1] == '\n' {
			i++
		}
		start = i + 1
		switch {
		case line == "":
			if hasData {
				events = append(events, strings.Join(data, "\n"))
			}
			data, hasData = nil, false
		case line[0] == ':':
		default:
			field, value, _ := strings.Cut(line, ":")
			if field == "data" {
				data, hasData = append(data, strings.TrimPrefix(value, " ")), true
			}
		}
	}
	return events // an unterminated last line, or an event without a blank line after it, is never dispatched
}

// encodeEvent is an event as Loom writes it: one "data: " line per line
// of data, then a blank line.
func encodeEvent(data string) []byte {
	return []byte("data: " + strings.ReplaceAll(data, "\n", "\ndata: ") + "\n\n")
}

// splitReader returns its input in chunks of the sizes given (1 to 16
// bytes each, cycling through sizes).
type splitReader struct {
	r     io.Reader
	sizes []byte
	n     int
}

func (s *splitReader) Read(p []byte) (int, error) {
	size := 1 + s.n%7
	if len(s.sizes) > 0 {
		size = 1 + int(s.sizes[s.n%len(s.sizes)]%16)
	}
	s.n++
	return s.r.Read(p[:min(len(p), size)])
}

// sseBody is an upstream answering every request with 200 and a fresh
// event-stream body.
type sseBody func() io.Reader

func (b sseBody) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	return &http.Response{StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"text/event-stream"}},
		Body:    io.NopCloser(b()),
		Request: req, ContentLength: -1}, nil
}

// upstreamProvider is a provider that streams from an openaicompat
// upstream, as the provider plugins do.
type upstreamProvider struct{ up *openaicompat.Upstream }

func (upstreamProvider) Name() string { return "fuzz" }
func (p upstreamProvider) ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	return p.up.Stream(ctx, req, out)
}
func (upstreamProvider) ChatCompletions(context.Context, *provider.Request) (*provider.Response, error) {
	return nil, errors.New("not used")
}
func (upstreamProvider) Embeddings(context.Context, *provider.Request) (*provider.Response, error) {
	return nil, errors.New("not used")
}
func (upstreamProvider) ListModels(context.Context) ([]provider.Model, error) { return nil, nil }

// recordSink keeps the traces submitted to it.
type recordSink struct{ recs []*trace.Record }

func (s *recordSink) Admit(string) (trace.Admission, error) { return trace.Admission{}, nil }
func (s *recordSink) Submit(rec *trace.Record)              { s.recs = append(s.recs, rec) }
