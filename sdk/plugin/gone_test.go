package plugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loom-runtime/loom/sdk/provider"
)

func TestIsPluginGoneValues(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("boom"), false},
		{context.Canceled, false},
		{provider.ErrUnsupported, false},
		{status.Error(codes.Unknown, "provider said no"), false},
		{status.Error(codes.Canceled, "context canceled"), false},
		{status.Error(codes.Unavailable, "error reading from server: EOF"), true},
		{status.Error(codes.Canceled, "grpc: the client connection is closing"), true},
		{fmt.Errorf("wrapped: %w", io.EOF), true},
		{fmt.Errorf("wrapped: %w", io.ErrUnexpectedEOF), true},
		{fromRPCError("Info", status.Error(codes.Unavailable, "connection refused")), true},
	} {
		if got := IsPluginGone(c.err); got != c.want {
			t.Errorf("IsPluginGone(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}

// The server side goes away during a unary call, during a stream, and
// before a call: every error is IsPluginGone.
func TestIsPluginGoneServerClosed(t *testing.T) {
	t.Run("unary", func(t *testing.T) {
		s := &scripted{block: true, entered: make(chan struct{})}
		p, _, server := connect(t, s)
		errc := make(chan error, 1)
		go func() {
			_, err := p.ChatCompletions(t.Context(), &provider.Request{})
			errc <- err
		}()
		<-s.entered
		server.Stop()
		select {
		case err := <-errc:
			if !IsPluginGone(err) {
				t.Errorf("call in flight: %v, IsPluginGone = false", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("the call did not return after the server closed")
		}
		_, err := p.Info(t.Context())
		if !IsPluginGone(err) {
			t.Errorf("call after close: %v, IsPluginGone = false", err)
		}
	})
	t.Run("stream", func(t *testing.T) {
		e := newEndless()
		p, _, server := connect(t, &scripted{stream: e.stream})
		stopped := make(chan struct{})
		out := &sink{onEvent: func(n int) error {
			if n == 2 {
				go func() {
					server.Stop()
					close(stopped)
				}()
			}
			return nil
		}}
		end, err := p.ChatCompletionsStream(t.Context(), &provider.Request{}, out)
		<-stopped // GRPCServer.Stop is not safe for concurrent use
		if !IsPluginGone(err) {
			t.Errorf("stream broken by the server closing: %+v, %v; IsPluginGone = false", end, err)
		}
	})
	t.Run("client_closed", func(t *testing.T) {
		p, client, _ := connect(t, &scripted{})
		// Close the connection itself: GRPCClient.Close would also stop
		// the server, racing with the test's cleanup.
		if err := client.Conn.Close(); err != nil {
			t.Fatal(err)
		}
		_, err := p.Info(t.Context())
		if !IsPluginGone(err) {
			t.Errorf("call on a closed connection: %v, IsPluginGone = false", err)
		}
	})
}
