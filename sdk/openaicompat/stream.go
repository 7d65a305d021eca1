package openaicompat

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
	"github.com/loom-runtime/loom/sdk/sse"
)

// afterDoneWait bounds how long Stream waits, after [DONE], for the
// upstream to end its body (which lets the connection be reused) before it
// gives up on the connection.
const afterDoneWait = 100 * time.Millisecond

// Stream sends req (a chat completion request with "stream": true) to the
// chat completions endpoint and passes the answer to out as it arrives:
//
//   - no answer (unreachable, timeout before the headers, canceled): no
//     Start, a StreamEnd with the Failure;
//   - an HTTP status ≥ 300: Start with the status and headers, no event,
//     the upstream's body in StreamEnd.Body;
//   - a 2xx: Start, then one Send per SSE event in order, each event's data
//     byte for byte ([DONE] included; a credential quoted in one is
//     replaced by Redacted), then a StreamEnd with the usage (from
//     any chunk that has one), the model (from the first chunk naming one)
//     and the timings. A stream that ends without [DONE], breaks off or
//     carries an oversized event ends with a FailureProtocol (a
//     FailureTimeout when the call's deadline cut it).
//
// Only one event is held in memory at a time (the SSE reader's buffer, at
// most about twice MaxEventBytes): nothing is buffered between events.
// When out.Send or out.Start returns an error, Stream stops at once,
// closes the upstream response (which cancels the upstream request) and
// returns a StreamEnd with a FailureCanceled.
func (u *Upstream) Stream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	if out == nil {
		return nil, errors.New("openaicompat: nil StreamSender")
	}
	c, err := u.newCall(ctx, http.MethodPost, EndpointChatCompletions, req, "text/event-stream")
	if err != nil {
		return nil, err
	}
	defer c.cancel()
	// Ask for an uncompressed stream: a compressing upstream may hold
	// events back until its compressor flushes.
	c.req.Header.Set("Accept-Encoding", "identity")
	resp, err := u.send(c)
	if err != nil {
		return &provider.StreamEnd{Failure: c.failure(err, phaseConnect), Timings: provider.Timings{Total: time.Since(c.start)}}, nil
	}
	defer resp.Body.Close()

	start := provider.StreamStart{Status: resp.StatusCode, Headers: c.secrets.redactHeaders(relayHeaders(resp.Header))}
	if resp.StatusCode >= 300 {
		if err := out.Start(start); err != nil {
			return &provider.StreamEnd{Failure: receiverStopped(err), Timings: provider.Timings{Total: time.Since(c.start)}}, nil
		}
		body, firstByte, err := readBody(resp.Body, resp.ContentLength, u.o.MaxBodyBytes, c.start)
		end := &provider.StreamEnd{Body: c.secrets.redact(body), Timings: provider.Timings{FirstByte: firstByte, Total: time.Since(c.start)}}
		if err != nil {
			end.Failure = c.failure(err, phaseBody)
		}
		return end, nil
	}
	if err := out.Start(start); err != nil {
		return &provider.StreamEnd{Failure: receiverStopped(err), Timings: provider.Timings{Total: time.Since(c.start)}}, nil
	}
	end := u.relay(c, resp.Body, out)
	end.Timings.Total = time.Since(c.start)
	return end, nil
}

var errEndedEarly = errors.New("the upstream ended the response")

// relay passes the events of a successful stream to out.
func (u *Upstream) relay(c *call, body io.ReadCloser, out provider.StreamSender) *provider.StreamEnd {
	end := &provider.StreamEnd{}
	rd := sse.NewReader(body, u.o.MaxEventBytes)
	for {
		ev, err := rd.Next()
		if err != nil {
			if err == io.EOF {
				err = errEndedEarly
			}
			end.Failure = c.failure(err, phaseStream)
			return end
		}
		if end.Timings.FirstByte == 0 {
			end.Timings.FirstByte = max(time.Since(c.start), 1)
		}
		done := string(ev.Data) == "[DONE]"
		usageOnly := false
		if !done {
			ci := inspectChunk(ev.Data, end.Model == "")
			if ci.usage != nil {
				end.Usage = ci.usage
			}
			if end.Model == "" {
				end.Model = ci.model
			}
			usageOnly = ci.usageOnly
		}
		// A payload is passed on byte for byte, unless it quotes the key.
		if err := out.Send(provider.Event{Data: c.secrets.redact(ev.Data), UsageOnly: usageOnly}); err != nil {
			c.cancel()
			body.Close()
			end.Failure = receiverStopped(err)
			return end
		}
		if done {
			finishBody(body, c.cancel)
			return end
		}
	}
}

// finishBody reads what follows [DONE] (normally nothing but the end of
// the body), so the connection can serve another call, unless the upstream
// keeps it open for longer than afterDoneWait: then the call is canceled.
func finishBody(body io.Reader, cancel context.CancelFunc) {
	t := time.AfterFunc(afterDoneWait, cancel)
	defer t.Stop()
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
}
