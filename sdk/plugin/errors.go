package plugin

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loom-runtime/loom/sdk/provider"
)

// toRPCError turns a Go error returned by a provider into the gRPC status
// the plugin sends. Only provider.ErrUnsupported and context errors keep a
// meaning of their own; every other error is UNKNOWN with its message, so
// a provider can never make the host believe the plugin died (UNAVAILABLE)
// by returning some gRPC error of its own.
func toRPCError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, provider.ErrUnsupported):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Unknown, err.Error())
}

// fromRPCError turns the error of a gRPC call into the error GRPCClient
// returns: provider.ErrUnsupported for UNIMPLEMENTED (also what an older
// plugin answers for a method it does not have), otherwise a *CallError.
func fromRPCError(method string, err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		st = status.New(codes.Unknown, err.Error())
	}
	if st.Code() == codes.Unimplemented {
		return provider.ErrUnsupported
	}
	return &CallError{Method: method, Status: st, err: err}
}

// CallError is the error GRPCClient returns when a call to the plugin
// failed: the provider returned an error, or the plugin process or its
// connection is gone (see IsPluginGone).
type CallError struct {
	// Method is the provider method called, e.g. "ChatCompletions".
	Method string
	// Status is the gRPC status of the call.
	Status *status.Status
	err    error
}

// Error returns "provider plugin: METHOD: MESSAGE". For an error the
// provider returned itself, MESSAGE is the provider's message unchanged.
func (e *CallError) Error() string {
	msg := e.Status.Message()
	if e.Status.Code() != codes.Unknown {
		msg = strings.ToLower(e.Status.Code().String()) + ": " + msg
	}
	return "provider plugin: " + e.Method + ": " + msg
}

// GRPCStatus lets status.FromError and status.Code see the call's status.
func (e *CallError) GRPCStatus() *status.Status { return e.Status }

// Unwrap returns the underlying gRPC error.
func (e *CallError) Unwrap() error { return e.err }

// IsPluginGone reports whether err means the plugin process died or the
// connection to it broke (gRPC UNAVAILABLE, a closed connection, EOF, a
// reset or refused socket), as opposed to an error the provider returned.
// The host answers such a request with 502 and restarts the plugin.
func IsPluginGone(err error) bool {
	if err == nil {
		return false
	}
	for _, target := range []error{
		io.EOF, io.ErrUnexpectedEOF, net.ErrClosed,
		syscall.ECONNRESET, syscall.ECONNREFUSED, syscall.EPIPE,
		goplugin.ErrProcessNotFound,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	var se interface{ GRPCStatus() *status.Status }
	if !errors.As(err, &se) {
		return false
	}
	st := se.GRPCStatus()
	switch st.Code() {
	case codes.Unavailable:
		return true
	case codes.Canceled:
		// grpc.ErrClientConnClosing: the host closed (or go-plugin tore
		// down) the connection to the plugin.
		return strings.Contains(st.Message(), "client connection is closing")
	}
	return false
}
