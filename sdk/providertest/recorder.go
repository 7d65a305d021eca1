package providertest

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/loom-runtime/loom/sdk/provider"
)

// recorder is the StreamSender of the suite: it records what the provider
// sends and the StreamSender contract violations it sees.
type recorder struct {
	// onEvent, when set, is called after each event is recorded (n counts
	// from 1); its error is what Send returns.
	onEvent func(n int, ev provider.Event) error

	mu          sync.Mutex
	starts      []provider.StreamStart
	events      []provider.Event
	sendErrs    int // Send calls that returned an error
	afterErr    int // Send calls after one returned an error
	violations  []string
	firstEvent  chan struct{}
	firstClosed bool
}

func newRecorder() *recorder {
	return &recorder{firstEvent: make(chan struct{})}
}

func (r *recorder) Start(s provider.StreamStart) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.starts) > 0 {
		r.violations = append(r.violations, "Start called more than once")
	}
	if len(r.events) > 0 {
		r.violations = append(r.violations, "Start called after Send")
	}
	r.starts = append(r.starts, provider.StreamStart{Status: s.Status, Headers: copyHeaders(s.Headers)})
	return nil
}

func (r *recorder) Send(ev provider.Event) error {
	r.mu.Lock()
	if len(r.starts) == 0 {
		r.violations = append(r.violations, "Send called before Start")
	} else if st := r.starts[0].Status; st >= 400 {
		r.violations = append(r.violations, fmt.Sprintf("Send called after a Start with status %d (error streams carry no events)", st))
	}
	if r.sendErrs > 0 {
		r.afterErr++
	}
	ev = provider.Event{Data: bytes.Clone(ev.Data), UsageOnly: ev.UsageOnly}
	r.events = append(r.events, ev)
	n := len(r.events)
	if !r.firstClosed {
		r.firstClosed = true
		close(r.firstEvent)
	}
	hook := r.onEvent
	r.mu.Unlock()

	var err error
	if hook != nil {
		err = hook(n, ev)
	}
	if err != nil {
		r.mu.Lock()
		r.sendErrs++
		r.mu.Unlock()
	}
	return err
}

// snapshot returns copies of what was recorded.
func (r *recorder) snapshot() (starts []provider.StreamStart, events []provider.Event, violations []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(starts, r.starts...), append(events, r.events...), append(violations, r.violations...)
}

func copyHeaders(h map[string]string) map[string]string {
	if h == nil {
		return nil
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[k] = v
	}
	return out
}
