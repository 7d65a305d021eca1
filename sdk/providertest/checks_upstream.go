package providertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// runUpstream runs the checks for a provider that calls an upstream.
func (s *suite) runUpstream(t *testing.T) {
	t.Run("info", s.checkInfo)
	t.Run("configure", s.checkConfigure)
	t.Run("unsupported_calls", s.checkUnsupported)

	t.Run("chat_completions", s.checkChat)
	for _, status := range []int{400, 429, 500, 503} {
		t.Run("chat_completions/upstream_status_"+strconv.Itoa(status), func(t *testing.T) { s.checkChatStatus(t, status) })
	}
	t.Run("chat_completions/forwards_headers", s.checkForwardsHeaders)
	t.Run("chat_completions/timeout", s.checkChatTimeout)
	t.Run("chat_completions/unreachable", s.checkChatUnreachable)

	t.Run("chat_completions_stream", s.checkStream)
	t.Run("chat_completions_stream/upstream_status_429", s.checkStreamStatus)
	t.Run("chat_completions_stream/timeout", s.checkStreamTimeout)
	t.Run("chat_completions_stream/unreachable", s.checkStreamUnreachable)
	t.Run("chat_completions_stream/cut_off", s.checkStreamCutOff)
	t.Run("chat_completions_stream/cancel", func(t *testing.T) { s.checkStreamStop(t, false) })
	t.Run("chat_completions_stream/sender_error", func(t *testing.T) { s.checkStreamStop(t, true) })

	t.Run("embeddings", s.checkEmbeddings)
	t.Run("list_models", s.checkListModels)
}

// chatBody is a chat request body, deliberately not in Go's JSON encoding
// (spacing, escapes, an unknown field, number formats), so a provider that
// re-encodes it instead of passing it through is caught.
func (s *suite) chatBody(stream bool) []byte {
	model, _ := json.Marshal(s.h.Model)
	body := `{"model": ` + string(model) + ` ,"messages":[{"role":"system","content":"Be brief."},` +
		`{"role":"user","content":"Say \"hello\" \u00e9 <b>&amp;</b>"}],` +
		`"temperature":0.50, "max_tokens":1e2,"x_loom_conformance":{"keep":[1,2.50,"x",null]}`
	if stream {
		body += `,"stream":true,"stream_options":{"include_usage":true}`
	}
	return []byte(body + "}\n")
}

func (s *suite) embeddingsBody() []byte {
	model, _ := json.Marshal(s.h.Model)
	return []byte(`{"input": ["hello world", "second \u00e9 input"], "model":` + string(model) + `,"encoding_format":"float"}`)
}

func (s *suite) checkInfo(t *testing.T) {
	ctx, cancel := s.ctx(t)
	defer cancel()
	// Info is called before Configure.
	info, err := s.connect(t, s.h.New()).Info(ctx)
	if err != nil {
		t.Fatalf("Info on an unconfigured provider: %v", err)
	}
	checkInfo(t, info)
}

func (s *suite) checkConfigure(t *testing.T) {
	u := NewFakeUpstream(t)
	p := s.configured(t, u.URL)
	ctx, cancel := s.ctx(t)
	defer cancel()
	info, err := p.Info(ctx)
	if err != nil {
		t.Fatalf("Info after Configure: %v", err)
	}
	checkInfo(t, info)
}

// checkUnsupported: calls for capabilities the provider does not report
// return provider.ErrUnsupported.
func (s *suite) checkUnsupported(t *testing.T) {
	_, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	tested := false
	want := func(c string, err error) {
		tested = true
		if !errors.Is(err, provider.ErrUnsupported) {
			t.Errorf("capability %q is not reported, so the call must return provider.ErrUnsupported; got error %v", c, err)
		}
	}
	if !s.caps[provider.CapChatCompletions] {
		_, err := p.ChatCompletions(ctx, s.request(s.chatBody(false)))
		want(provider.CapChatCompletions, err)
	}
	if !s.caps[provider.CapChatStream] {
		_, err := p.ChatCompletionsStream(ctx, s.request(s.chatBody(true)), newRecorder())
		want(provider.CapChatStream, err)
	}
	if !s.caps[provider.CapEmbeddings] {
		_, err := p.Embeddings(ctx, s.request(s.embeddingsBody()))
		want(provider.CapEmbeddings, err)
	}
	if !tested {
		t.Skip("the provider reports every call capability")
	}
}

// checkUpstreamGot checks the upstream received exactly body at a path
// ending in suffix, n times (n < 0: at least once).
func checkUpstreamGot(t *testing.T, u *FakeUpstream, suffix string, body []byte, n int) {
	t.Helper()
	reqs := u.Requests()
	if n >= 0 && len(reqs) != n || len(reqs) == 0 {
		t.Errorf("the upstream received %d requests, want %d", len(reqs), max(n, 1))
	}
	for _, r := range reqs {
		if r.Request.Method != http.MethodPost {
			t.Errorf("upstream request: method %s, want POST", r.Request.Method)
		}
		if !strings.HasSuffix(strings.TrimSuffix(r.Request.URL.Path, "/"), suffix) {
			t.Errorf("upstream request: path %q does not end in %q", r.Request.URL.Path, suffix)
		}
		if !bytes.Equal(r.Body, body) {
			t.Errorf("upstream request: body differs from Request.Body (it must be sent byte for byte)\n got: %q\nwant: %q", r.Body, body)
		}
	}
}

func (s *suite) checkChat(t *testing.T) {
	s.needs(t, provider.CapChatCompletions)
	u, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	body := s.chatBody(false)
	resp, err := p.ChatCompletions(ctx, s.request(body))
	if err != nil {
		t.Fatalf("ChatCompletions: %v", err)
	}
	if resp == nil {
		t.Fatal("ChatCompletions returned a nil Response and no error")
	}
	if resp.Failure != nil {
		t.Fatalf("ChatCompletions: Failure = %+v, want nil", *resp.Failure)
	}
	if resp.Status != http.StatusOK {
		t.Errorf("Status = %d, want 200", resp.Status)
	}
	if !bytes.Equal(resp.Body, []byte(upstreamChatBody)) {
		t.Errorf("Body differs from the upstream's (it must be returned byte for byte)\n got: %q\nwant: %q", resp.Body, upstreamChatBody)
	}
	if ct, _ := header(resp.Headers, "Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Headers[Content-Type] = %q, want the upstream's application/json (headers: %v)", ct, resp.Headers)
	}
	checkUsage(t, "ChatCompletions", resp.Usage, upstreamChatUsage)
	if resp.Model != upstreamModel {
		t.Errorf("Model = %q, want %q (the model the upstream says it used)", resp.Model, upstreamModel)
	}
	checkTimings(t, "ChatCompletions", resp.Timings)
	checkUpstreamGot(t, u, "/chat/completions", body, 1)
	s.checkUpstream(t, u)
}

func (s *suite) checkChatStatus(t *testing.T, status int) {
	s.needs(t, provider.CapChatCompletions)
	u, p := s.setup(t)
	errBody := upstreamErrorBody(status)
	u.SetHandler(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Retry-After", "7")
		writeJSON(w, status, errBody)
	})
	ctx, cancel := s.ctx(t)
	defer cancel()
	body := s.chatBody(false)
	resp, err := p.ChatCompletions(ctx, s.request(body))
	if err != nil {
		t.Fatalf("ChatCompletions returned an error for an upstream %d; an upstream HTTP error is a result (Status, Body), not a Go error: %v", status, err)
	}
	if resp == nil {
		t.Fatal("ChatCompletions returned a nil Response and no error")
	}
	if resp.Failure != nil {
		t.Errorf("Failure = %+v, want nil: the upstream answered (HTTP %d is a result)", *resp.Failure, status)
	}
	if resp.Status != status {
		t.Errorf("Status = %d, want the upstream's %d", resp.Status, status)
	}
	if !bytes.Equal(resp.Body, []byte(errBody)) {
		t.Errorf("Body differs from the upstream's error body\n got: %q\nwant: %q", resp.Body, errBody)
	}
	if ra, _ := header(resp.Headers, "Retry-After"); ra != "7" {
		t.Errorf("Headers[Retry-After] = %q, want the upstream's \"7\" (headers: %v)", ra, resp.Headers)
	}
	if resp.Usage != nil {
		t.Errorf("Usage = %+v, want nil for an error body without usage", *resp.Usage)
	}
	checkUpstreamGot(t, u, "/chat/completions", body, -1)
	s.checkUpstream(t, u)
}

func (s *suite) checkForwardsHeaders(t *testing.T) {
	s.needs(t, provider.CapChatCompletions)
	u, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	req := s.request(s.chatBody(false))
	req.Headers = map[string]string{
		"OpenAI-Beta":        "assistants=v2",
		"X-Conformance-Test": "forwarded",
	}
	if _, err := p.ChatCompletions(ctx, req); err != nil {
		t.Fatalf("ChatCompletions: %v", err)
	}
	reqs := u.Requests()
	if len(reqs) == 0 {
		t.Fatal("the upstream received no request")
	}
	for k, v := range req.Headers {
		if got := reqs[0].Request.Header.Get(k); got != v {
			t.Errorf("upstream request header %s = %q, want %q (Request.Headers must be forwarded)", k, got, v)
		}
	}
	s.checkUpstream(t, u)
}

// hang is an upstream that never answers.
func hang(u *FakeUpstream) UpstreamHandler {
	return func(_ http.ResponseWriter, r *http.Request, _ []byte) {
		select {
		case <-r.Context().Done():
		case <-u.Done():
		}
	}
}

// shortTimeout is the Request.Timeout of the timeout checks; a provider
// must report the failure well within timeoutSlack after it.
const (
	shortTimeout = 300 * time.Millisecond
	timeoutSlack = 5 * time.Second
)

func (s *suite) checkChatTimeout(t *testing.T) {
	s.needs(t, provider.CapChatCompletions)
	u, p := s.setup(t)
	u.SetHandler(hang(u))
	ctx, cancel := s.ctx(t)
	defer cancel()
	req := s.request(s.chatBody(false))
	req.Timeout = shortTimeout
	start := time.Now()
	resp, err := p.ChatCompletions(ctx, req)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("ChatCompletions returned an error for an upstream that does not answer; want a Response with Failure{Kind: FailureTimeout}: %v", err)
	}
	checkFailure(t, "ChatCompletions", resp.Failure, provider.FailureTimeout)
	if resp.Status != 0 {
		t.Errorf("Status = %d, want 0 with a Failure", resp.Status)
	}
	if elapsed > shortTimeout+timeoutSlack {
		t.Errorf("ChatCompletions took %v with Request.Timeout %v", elapsed, shortTimeout)
	}
	s.checkUpstream(t, u)
}

func (s *suite) checkChatUnreachable(t *testing.T) {
	s.needs(t, provider.CapChatCompletions)
	p := s.configured(t, closedURL(t))
	ctx, cancel := s.ctx(t)
	defer cancel()
	resp, err := p.ChatCompletions(ctx, s.request(s.chatBody(false)))
	if err != nil {
		t.Fatalf("ChatCompletions returned an error for an unreachable upstream; want a Response with Failure{Kind: FailureUnreachable}: %v", err)
	}
	checkFailure(t, "ChatCompletions", resp.Failure, provider.FailureUnreachable)
	if resp.Status != 0 {
		t.Errorf("Status = %d, want 0 with a Failure", resp.Status)
	}
}

func checkFailure(t *testing.T, what string, f *provider.Failure, want provider.FailureKind) {
	t.Helper()
	if f == nil {
		t.Errorf("%s: Failure is nil, want kind %v", what, want)
		return
	}
	if f.Kind != want {
		t.Errorf("%s: Failure = {Kind: %v, Message: %q}, want kind %v", what, f.Kind, f.Message, want)
	}
	if f.Message == "" {
		t.Errorf("%s: Failure.Message is empty (Loom logs it and shows it to the client)", what)
	}
}

func (s *suite) checkStream(t *testing.T) {
	s.needs(t, provider.CapChatStream)
	u, p := s.setup(t)
	rec := newRecorder()
	var buffered atomic.Bool
	u.SetHandler(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		startStream(w)
		sawData := false
		for _, e := range upstreamEvents {
			_, _ = io.WriteString(w, e.raw)
			flush(w)
			if e.data == "" || sawData {
				continue
			}
			sawData = true
			// The provider must pass the first event on before the upstream
			// sends the next one: events are relayed as they arrive.
			select {
			case <-rec.firstEvent:
			case <-time.After(5 * time.Second):
				buffered.Store(true)
			case <-r.Context().Done():
				return
			case <-u.Done():
				return
			}
		}
	})
	ctx, cancel := s.ctx(t)
	defer cancel()
	body := s.chatBody(true)
	end, err := p.ChatCompletionsStream(ctx, s.request(body), rec)
	if err != nil {
		t.Fatalf("ChatCompletionsStream: %v", err)
	}
	if end == nil {
		t.Fatal("ChatCompletionsStream returned a nil StreamEnd and no error")
	}
	starts, events, violations := rec.snapshot()
	for _, v := range violations {
		t.Errorf("StreamSender contract: %s", v)
	}
	if buffered.Load() {
		t.Error("the provider did not pass the first event on within 5s while the upstream waited: events must be relayed as they arrive, not buffered")
	}
	if end.Failure != nil {
		t.Errorf("StreamEnd.Failure = %+v, want nil", *end.Failure)
	}
	if len(starts) != 1 {
		t.Fatalf("Start called %d times, want 1", len(starts))
	}
	if starts[0].Status != http.StatusOK {
		t.Errorf("StreamStart.Status = %d, want 200", starts[0].Status)
	}
	if ct, _ := header(starts[0].Headers, "Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("StreamStart.Headers[Content-Type] = %q, want the upstream's text/event-stream (headers: %v)", ct, starts[0].Headers)
	}
	var want []provider.Event
	for _, e := range upstreamEvents {
		if e.data != "" {
			want = append(want, provider.Event{Data: []byte(e.data), UsageOnly: e.usageOnly})
		}
	}
	checkEvents(t, events, want)
	checkUsage(t, "StreamEnd", end.Usage, upstreamStreamUsage)
	if end.Model != upstreamModel {
		t.Errorf("StreamEnd.Model = %q, want %q (the model the upstream says it used)", end.Model, upstreamModel)
	}
	if len(end.Body) != 0 {
		t.Errorf("StreamEnd.Body = %q, want empty for a stream that started with 200", end.Body)
	}
	checkTimings(t, "StreamEnd", end.Timings)
	checkUpstreamGot(t, u, "/chat/completions", body, 1)
	s.checkUpstream(t, u)
}

func checkEvents(t *testing.T, got, want []provider.Event) {
	t.Helper()
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			t.Errorf("event %d missing: want %q (UsageOnly %v)", i, want[i].Data, want[i].UsageOnly)
		case i >= len(want):
			t.Errorf("event %d unexpected: %q (UsageOnly %v)", i, got[i].Data, got[i].UsageOnly)
		case !bytes.Equal(got[i].Data, want[i].Data):
			t.Errorf("event %d: Data differs from the upstream's (it must be byte for byte, data lines joined with \\n)\n got: %q\nwant: %q", i, got[i].Data, want[i].Data)
		case got[i].UsageOnly != want[i].UsageOnly:
			t.Errorf("event %d (%q): UsageOnly = %v, want %v", i, got[i].Data, got[i].UsageOnly, want[i].UsageOnly)
		}
	}
}

func (s *suite) checkStreamStatus(t *testing.T) {
	s.needs(t, provider.CapChatStream)
	u, p := s.setup(t)
	errBody := upstreamErrorBody(http.StatusTooManyRequests)
	u.SetHandler(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		w.Header().Set("Retry-After", "7")
		writeJSON(w, http.StatusTooManyRequests, errBody)
	})
	ctx, cancel := s.ctx(t)
	defer cancel()
	rec := newRecorder()
	end, err := p.ChatCompletionsStream(ctx, s.request(s.chatBody(true)), rec)
	if err != nil {
		t.Fatalf("ChatCompletionsStream returned an error for an upstream 429; an upstream HTTP error is a result (StreamStart{429}, StreamEnd.Body), not a Go error: %v", err)
	}
	if end == nil {
		t.Fatal("ChatCompletionsStream returned a nil StreamEnd and no error")
	}
	starts, events, violations := rec.snapshot()
	for _, v := range violations {
		t.Errorf("StreamSender contract: %s", v)
	}
	if len(starts) != 1 {
		t.Fatalf("Start called %d times, want 1 (with the upstream's 429)", len(starts))
	}
	if starts[0].Status != http.StatusTooManyRequests {
		t.Errorf("StreamStart.Status = %d, want 429", starts[0].Status)
	}
	if ra, _ := header(starts[0].Headers, "Retry-After"); ra != "7" {
		t.Errorf("StreamStart.Headers[Retry-After] = %q, want the upstream's \"7\" (headers: %v)", ra, starts[0].Headers)
	}
	if len(events) != 0 {
		t.Errorf("%d events sent after a 429 start, want none", len(events))
	}
	if !bytes.Equal(end.Body, []byte(errBody)) {
		t.Errorf("StreamEnd.Body differs from the upstream's error body\n got: %q\nwant: %q", end.Body, errBody)
	}
	if end.Failure != nil {
		t.Errorf("StreamEnd.Failure = %+v, want nil: the upstream answered", *end.Failure)
	}
	s.checkUpstream(t, u)
}

func (s *suite) checkStreamTimeout(t *testing.T) {
	s.needs(t, provider.CapChatStream)
	u, p := s.setup(t)
	u.SetHandler(hang(u))
	ctx, cancel := s.ctx(t)
	defer cancel()
	req := s.request(s.chatBody(true))
	req.Timeout = shortTimeout
	rec := newRecorder()
	start := time.Now()
	end, err := p.ChatCompletionsStream(ctx, req, rec)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("ChatCompletionsStream returned an error for an upstream that does not answer; want a StreamEnd with Failure{Kind: FailureTimeout}: %v", err)
	}
	if end == nil {
		t.Fatal("ChatCompletionsStream returned a nil StreamEnd and no error")
	}
	checkFailure(t, "StreamEnd", end.Failure, provider.FailureTimeout)
	if starts, _, _ := rec.snapshot(); len(starts) != 0 {
		t.Errorf("Start called with %+v for an upstream that never answered, want no Start", starts[0])
	}
	if elapsed > shortTimeout+timeoutSlack {
		t.Errorf("ChatCompletionsStream took %v with Request.Timeout %v", elapsed, shortTimeout)
	}
	s.checkUpstream(t, u)
}

func (s *suite) checkStreamUnreachable(t *testing.T) {
	s.needs(t, provider.CapChatStream)
	p := s.configured(t, closedURL(t))
	ctx, cancel := s.ctx(t)
	defer cancel()
	rec := newRecorder()
	end, err := p.ChatCompletionsStream(ctx, s.request(s.chatBody(true)), rec)
	if err != nil {
		t.Fatalf("ChatCompletionsStream returned an error for an unreachable upstream; want a StreamEnd with Failure{Kind: FailureUnreachable}: %v", err)
	}
	if end == nil {
		t.Fatal("ChatCompletionsStream returned a nil StreamEnd and no error")
	}
	checkFailure(t, "StreamEnd", end.Failure, provider.FailureUnreachable)
	if starts, _, _ := rec.snapshot(); len(starts) != 0 {
		t.Errorf("Start called with %+v for an unreachable upstream, want no Start", starts[0])
	}
}

func (s *suite) checkStreamCutOff(t *testing.T) {
	s.needs(t, provider.CapChatStream)
	u, p := s.setup(t)
	var sent []provider.Event
	for _, e := range upstreamEvents {
		if e.data != "" && len(sent) < 2 {
			sent = append(sent, provider.Event{Data: []byte(e.data)})
		}
	}
	u.SetHandler(func(w http.ResponseWriter, _ *http.Request, _ []byte) {
		startStream(w)
		n := 0
		for _, e := range upstreamEvents {
			if n == 2 {
				break
			}
			_, _ = io.WriteString(w, e.raw)
			if e.data != "" {
				n++
			}
		}
		flush(w)
		// Break the connection mid-stream: no [DONE], no end of the
		// chunked body.
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		_ = conn.Close()
	})
	ctx, cancel := s.ctx(t)
	defer cancel()
	rec := newRecorder()
	end, err := p.ChatCompletionsStream(ctx, s.request(s.chatBody(true)), rec)
	if err != nil {
		t.Fatalf("ChatCompletionsStream returned an error for a stream cut off mid-way; want the events so far, then a StreamEnd with Failure{Kind: FailureProtocol}: %v", err)
	}
	if end == nil {
		t.Fatal("ChatCompletionsStream returned a nil StreamEnd and no error")
	}
	starts, events, violations := rec.snapshot()
	for _, v := range violations {
		t.Errorf("StreamSender contract: %s", v)
	}
	if len(starts) != 1 || starts[0].Status != http.StatusOK {
		t.Errorf("starts = %+v, want one with status 200", starts)
	}
	checkEvents(t, events, sent)
	checkFailure(t, "StreamEnd", end.Failure, provider.FailureProtocol)
	s.checkUpstream(t, u)
}

// checkStreamStop: when ctx is cancelled mid-stream (or, with senderErr,
// when Send returns an error), the provider stops: it cancels the
// upstream request within a second, returns, and calls Send no more.
func (s *suite) checkStreamStop(t *testing.T, senderErr bool) {
	s.needs(t, provider.CapChatStream)
	u, p := s.setup(t)
	upstreamEnded := make(chan time.Time, 1)
	u.SetHandler(func(w http.ResponseWriter, r *http.Request, _ []byte) {
		startStream(w)
		// An endless stream: a content chunk every 20ms.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			_, _ = io.WriteString(w, "data: "+chunk(`{"content":"more "}`, "null")+"\n\n")
			flush(w)
			select {
			case <-tick.C:
			case <-r.Context().Done():
				upstreamEnded <- time.Now()
				return
			case <-u.Done():
				return
			}
		}
	})
	ctx, cancel := s.ctx(t)
	defer cancel()
	stopped := make(chan time.Time, 1)
	rec := newRecorder()
	rec.onEvent = func(n int, _ provider.Event) error {
		if n != 2 {
			return nil
		}
		stopped <- time.Now()
		if senderErr {
			return errors.New("providertest: the client went away")
		}
		cancel()
		return nil
	}
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		_, _ = p.ChatCompletionsStream(ctx, s.request(s.chatBody(true)), rec)
	}()
	var stopAt time.Time
	select {
	case stopAt = <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the provider did not relay 2 events within 10s")
	}
	what := "ctx was cancelled"
	if senderErr {
		what = "StreamSender.Send returned an error"
	}
	select {
	case at := <-upstreamEnded:
		if d := at.Sub(stopAt); d > time.Second {
			t.Errorf("the upstream request ended %v after %s, want within 1s", d, what)
		}
	case <-time.After(3 * time.Second):
		t.Errorf("the upstream request was still open 3s after %s: the provider must stop the upstream call", what)
	}
	select {
	case <-returned:
	case <-time.After(3 * time.Second):
		t.Errorf("ChatCompletionsStream had not returned 3s after %s", what)
	}
	if senderErr {
		rec.mu.Lock()
		after := rec.afterErr
		rec.mu.Unlock()
		if after > 0 {
			t.Errorf("Send called %d more times after it returned an error, want none: the provider must stop", after)
		}
	}
}

func (s *suite) checkEmbeddings(t *testing.T) {
	s.needs(t, provider.CapEmbeddings)
	u, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	body := s.embeddingsBody()
	resp, err := p.Embeddings(ctx, s.request(body))
	if err != nil {
		t.Fatalf("Embeddings: %v", err)
	}
	if resp == nil {
		t.Fatal("Embeddings returned a nil Response and no error")
	}
	if resp.Failure != nil {
		t.Fatalf("Embeddings: Failure = %+v, want nil", *resp.Failure)
	}
	if resp.Status != http.StatusOK {
		t.Errorf("Status = %d, want 200", resp.Status)
	}
	if !bytes.Equal(resp.Body, []byte(upstreamEmbeddingsBody)) {
		t.Errorf("Body differs from the upstream's (it must be returned byte for byte)\n got: %q\nwant: %q", resp.Body, upstreamEmbeddingsBody)
	}
	checkUsage(t, "Embeddings", resp.Usage, usageOf(5, 0, 5, 0, 0))
	if resp.Model != "text-embedding-fake-002" {
		t.Errorf("Model = %q, want %q (the model the upstream says it used)", resp.Model, "text-embedding-fake-002")
	}
	checkTimings(t, "Embeddings", resp.Timings)
	checkUpstreamGot(t, u, "/embeddings", body, 1)
	s.checkUpstream(t, u)
}

func (s *suite) checkListModels(t *testing.T) {
	_, p := s.setup(t)
	ctx, cancel := s.ctx(t)
	defer cancel()
	models, err := p.ListModels(ctx)
	if errors.Is(err, provider.ErrUnsupported) && !s.caps[provider.CapListModels] {
		t.Skip("the provider does not list models")
	}
	if err != nil {
		t.Fatalf("ListModels: %v", err)
	}
	for i, m := range models {
		if m.ID == "" {
			t.Errorf("model %d: ID is empty", i)
		}
	}
}
