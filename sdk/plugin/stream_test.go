package plugin

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// endless is a provider stream that starts, then sends events until Send
// fails, and reports when its ctx ended and what Send returned.
type endless struct {
	ctxDone  chan time.Time
	sendErr  chan error
	sentMore chan struct{} // closed after the first event was sent
}

func newEndless() *endless {
	return &endless{ctxDone: make(chan time.Time, 1), sendErr: make(chan error, 1), sentMore: make(chan struct{})}
}

func (e *endless) stream(ctx context.Context, out provider.StreamSender) (*provider.StreamEnd, error) {
	go func() {
		<-ctx.Done()
		e.ctxDone <- time.Now()
	}()
	if err := out.Start(provider.StreamStart{Status: 200}); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		if err := out.Send(provider.Event{Data: []byte(`{"n":1}`)}); err != nil {
			e.sendErr <- err
			return &provider.StreamEnd{Failure: &provider.Failure{Kind: provider.FailureCanceled, Message: err.Error()}}, nil
		}
		if i == 0 {
			close(e.sentMore)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Cancelling the caller's ctx cancels the provider's ctx, makes its Send
// fail, and returns at once with Failure Canceled.
func TestStreamClientCancel(t *testing.T) {
	e := newEndless()
	p, _, _ := connect(t, &scripted{stream: e.stream})
	ctx, cancel := context.WithCancel(t.Context())
	var cancelledAt time.Time
	out := &sink{onEvent: func(n int) error {
		if n == 3 {
			cancelledAt = time.Now()
			cancel()
		}
		return nil
	}}
	end, err := p.ChatCompletionsStream(ctx, &provider.Request{}, out)
	if err != nil {
		t.Fatalf("got error %v, want a StreamEnd with Failure Canceled", err)
	}
	if end.Failure == nil || end.Failure.Kind != provider.FailureCanceled {
		t.Errorf("end = %+v, want Failure Canceled", end)
	}
	returned := time.Now()
	if d := returned.Sub(cancelledAt); d > time.Second {
		t.Errorf("returned %v after cancel", d)
	}
	select {
	case at := <-e.ctxDone:
		if d := at.Sub(cancelledAt); d > time.Second {
			t.Errorf("provider's ctx ended %v after the cancel, want within 1s", d)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("provider's ctx did not end")
	}
	select {
	case err := <-e.sendErr:
		if !errors.Is(err, errHostGone) {
			t.Errorf("provider's Send returned %v, want errHostGone", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("provider's Send did not fail after the cancel")
	}
	n := len(out.events)
	time.Sleep(50 * time.Millisecond)
	if len(out.events) != n || n < 3 {
		t.Errorf("events after return: %d then %d", n, len(out.events))
	}
}

// An error from the StreamSender stops the stream: no more calls, the
// provider's ctx ends.
func TestStreamSenderError(t *testing.T) {
	e := newEndless()
	p, _, _ := connect(t, &scripted{stream: e.stream})
	out := &sink{onEvent: func(n int) error {
		if n == 2 {
			return errors.New("client went away")
		}
		return nil
	}}
	start := time.Now()
	end, err := p.ChatCompletionsStream(t.Context(), &provider.Request{}, out)
	if err != nil {
		t.Fatal(err)
	}
	if end.Failure == nil || end.Failure.Kind != provider.FailureCanceled || !strings.Contains(end.Failure.Message, "client went away") {
		t.Errorf("end = %+v, want Failure Canceled with the sender's error", end)
	}
	select {
	case <-e.ctxDone:
	case <-time.After(time.Second):
		t.Fatal("provider's ctx did not end within 1s of the sender's error")
	}
	time.Sleep(50 * time.Millisecond)
	if len(out.events) != 2 {
		t.Errorf("sender got %d events, want 2 (none after its error)", len(out.events))
	}
	if time.Since(start) > 2*time.Second {
		t.Error("too slow")
	}
}

// 200 cancelled streams leave no goroutine behind, on either half.
func TestStreamNoGoroutineLeak(t *testing.T) {
	p, _, _ := connect(t, &scripted{stream: func(ctx context.Context, out provider.StreamSender) (*provider.StreamEnd, error) {
		return newEndless().stream(ctx, out)
	}})
	// Even streams: the caller cancels its ctx. Odd streams: the sender
	// fails and the caller's ctx lives on (the client half must end the
	// call itself).
	run := func(i int) {
		ctx := t.Context()
		cancel := func() {}
		if i%2 == 0 {
			ctx, cancel = context.WithCancel(ctx)
			defer cancel()
		}
		out := &sink{onEvent: func(n int) error {
			switch {
			case i%2 == 0 && n == 1:
				cancel()
			case i%2 == 1 && n == 1:
				return errors.New("stop")
			}
			return nil
		}}
		if _, err := p.ChatCompletionsStream(ctx, &provider.Request{}, out); err != nil {
			t.Fatal(err)
		}
	}
	run(0) // warm the connection up
	run(1)
	// stable waits until the goroutine count reaches limit (or, with
	// limit < 0, stops changing) and returns it.
	stable := func(limit int) int {
		n := runtime.NumGoroutine()
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
			m := runtime.NumGoroutine()
			if limit >= 0 && m <= limit || limit < 0 && m == n {
				return m
			}
			n = m
		}
		return n
	}
	base := stable(-1)
	for i := range 200 {
		run(i)
	}
	if n := stable(base); n > base {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("%d goroutines after 200 cancelled streams, %d before:\n%s", n, base, buf)
	}
}
