// Package relay writes a provider's answer to the client: non-stream bodies
// as returned, streams as Server-Sent Events flushed one event at a time,
// payload bytes and order exactly as the upstream sent them.
package relay

import (
	"errors"
	"net/http"
	"net/textproto"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/sse"
)

// CopyHeaders copies upstream response headers worth relaying to h. Hop-by-hop
// and length headers are dropped; the upstream's own request id is renamed
// so it cannot be confused with Loom's x-request-id. Names are matched and
// set in canonical form, as http.Header.Set does; the values share one
// allocation.
func CopyHeaders(h http.Header, upstream map[string]string) {
	if len(upstream) == 0 {
		return
	}
	vals := make([]string, 0, len(upstream))
	for k, v := range upstream {
		name := textproto.CanonicalMIMEHeaderKey(k)
		switch name {
		case "Connection", "Keep-Alive", "Transfer-Encoding", "Te", "Trailer", "Upgrade",
			"Proxy-Authenticate", "Proxy-Connection", "Content-Length", "Content-Encoding",
			"Set-Cookie", "X-Loom-Overhead-Ms",
			// Credential headers: no answer needs them, and they may hold a provider's key.
			"Authorization", "Proxy-Authorization", "Api-Key", "X-Api-Key", "Cookie":
			continue
		case "X-Request-Id":
			name = "X-Upstream-Request-Id"
		}
		vals = append(vals, v)
		n := len(vals)
		h[name] = vals[n-1 : n : n]
	}
}

// ErrClientGone is returned by Send once the client can no longer be written to.
var ErrClientGone = errors.New("client went away")

// Stream is a provider.StreamSender writing to an HTTP client.
type Stream struct {
	w  http.ResponseWriter
	rc *http.ResponseController
	// ClientWantsUsage: the client asked for stream_options.include_usage
	// itself; otherwise the usage-only chunk Loom asked for is withheld.
	clientWantsUsage bool
	now              func() time.Time

	started   bool // StreamStart received
	committed bool // status line written to the client
	status    int
	headers   map[string]string

	// FirstByte is when the first event reached the client (zero if none did).
	FirstByte time.Time
	// Events counts events written; Withheld counts usage-only chunks held back.
	Events, Withheld int
	sawDone          bool
	heldDone         bool
	failure          []byte // the error event Fail recorded, written by Finish
	err              error

	// Tap, when set, sees every event written to the client, as written.
	Tap func(data []byte)
	// HoldDone: keep the final [DONE] until Finish (sync durability
	// writes the trace first).
	HoldDone bool
}

// NewStream returns a Stream writing to w.
func NewStream(w http.ResponseWriter, clientWantsUsage bool, now func() time.Time) *Stream {
	if now == nil {
		now = time.Now
	}
	return &Stream{w: w, rc: http.NewResponseController(w), clientWantsUsage: clientWantsUsage, now: now}
}

// Start records the upstream status. A successful stream's headers are
// written at once (so clients see the stream open); an error status waits
// for the error body, which arrives with the end of the stream.
func (s *Stream) Start(st provider.StreamStart) error {
	if s.started {
		return errors.New("stream started twice")
	}
	s.started, s.status, s.headers = true, st.Status, st.Headers
	if st.Status >= 300 {
		return nil
	}
	h := s.w.Header()
	CopyHeaders(h, st.Headers)
	h.Set("Content-Type", "text/event-stream; charset=utf-8")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // tell buffering reverse proxies to pass events through
	s.w.WriteHeader(st.Status)
	s.committed = true
	return s.flush()
}

// Send writes one event and flushes it.
func (s *Stream) Send(ev provider.Event) error {
	if s.err != nil {
		return s.err
	}
	if !s.committed {
		return errors.New("event before a successful stream start")
	}
	if ev.UsageOnly && !s.clientWantsUsage {
		s.Withheld++
		return nil
	}
	if string(ev.Data) == "[DONE]" {
		s.sawDone = true
		if s.HoldDone {
			s.heldDone = true
			if s.Tap != nil {
				s.Tap(ev.Data)
			}
			return nil
		}
	}
	if s.Tap != nil {
		s.Tap(ev.Data)
	}
	if err := sse.WriteEvent(s.w, ev.Data); err != nil {
		s.err = ErrClientGone
		return s.err
	}
	if err := s.flush(); err != nil {
		return err
	}
	if s.FirstByte.IsZero() {
		s.FirstByte = s.now()
	}
	s.Events++
	return nil
}

func (s *Stream) flush() error {
	if err := s.rc.Flush(); err != nil {
		s.err = ErrClientGone
		return s.err
	}
	return nil
}

// Committed reports whether a status was written to the client: after
// that, errors can only be reported inside the stream.
func (s *Stream) Committed() bool { return s.committed }

// Status is the upstream status from StreamStart (0 if none came).
func (s *Stream) Status() int { return s.status }

// Headers are the upstream headers from StreamStart.
func (s *Stream) Headers() map[string]string { return s.headers }

// SawDone reports whether [DONE] was relayed.
func (s *Stream) SawDone() bool { return s.sawDone }

// Fail ends a committed stream with an error event in OpenAI's shape
// (what OpenAI's SDKs raise as an API error), without [DONE]: it records
// the event in the trace now and Finish writes it.
func (s *Stream) Fail(body []byte) {
	if !s.committed || s.err != nil {
		return
	}
	if s.Tap != nil {
		s.Tap(body)
	}
	s.failure = body
}

// Finish writes the stream's last event: the error event recorded by Fail,
// or a [DONE] held back by HoldDone. The caller commits the trace first, so
// with sync durability a client never sees the end of a stream whose trace
// is not durable.
func (s *Stream) Finish() {
	if s.err != nil {
		return
	}
	last := s.failure
	switch {
	case last != nil:
		s.failure = nil
	case s.heldDone:
		s.heldDone = false
		last = []byte("[DONE]")
	default:
		return
	}
	if sse.WriteEvent(s.w, last) == nil {
		s.flush()
	}
}
