package plugin

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loom-runtime/loom/sdk/internal/providerpb"
	"github.com/loom-runtime/loom/sdk/provider"
)

// GRPCClient is the host half: a provider.Provider whose calls go to a
// plugin process. Get one from Dispense. It is safe for concurrent use.
//
// It behaves as a conforming provider should:
//
//   - provider.ErrUnsupported is returned when the plugin does not support
//     a call (its provider returned ErrUnsupported, or it is an older plugin
//     without the method);
//   - when the caller's ctx ends before the plugin answered, the result is a
//     Response (or StreamEnd) with Failure kind FailureCanceled (or
//     FailureTimeout for an expired deadline), not an error;
//   - when the StreamSender returns an error, the stream is cancelled (the
//     plugin's ctx ends) and the result is a StreamEnd with Failure kind
//     FailureCanceled;
//   - any other failure is a *CallError; IsPluginGone tells whether it means
//     the plugin process or its connection is gone.
//
// Request.Timeout is passed to the plugin and not turned into a gRPC
// deadline: the plugin reports an upstream timeout as a result.
type GRPCClient struct {
	client providerpb.ProviderClient
}

var _ provider.Provider = (*GRPCClient)(nil)

// Info implements provider.Provider.
func (c *GRPCClient) Info(ctx context.Context) (provider.Info, error) {
	resp, err := c.client.GetInfo(ctx, &providerpb.GetInfoRequest{})
	if err != nil {
		return provider.Info{}, fromRPCError("Info", err)
	}
	return infoFromProto(resp), nil
}

// Configure implements provider.Provider. The error of a rejected
// configuration reads "provider plugin: Configure: " followed by the
// provider's message.
func (c *GRPCClient) Configure(ctx context.Context, cfg provider.Config) error {
	_, err := c.client.Configure(ctx, configToProto(cfg))
	return fromRPCError("Configure", err)
}

// ChatCompletions implements provider.Provider.
func (c *GRPCClient) ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	if req == nil {
		return nil, errors.New("provider plugin: ChatCompletions: nil request")
	}
	resp, err := c.client.ChatCompletions(ctx, requestToProto(req))
	return unaryResult(ctx, "ChatCompletions", resp, err)
}

// Embeddings implements provider.Provider.
func (c *GRPCClient) Embeddings(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	if req == nil {
		return nil, errors.New("provider plugin: Embeddings: nil request")
	}
	resp, err := c.client.Embeddings(ctx, requestToProto(req))
	return unaryResult(ctx, "Embeddings", resp, err)
}

func unaryResult(ctx context.Context, method string, resp *providerpb.Response, err error) (*provider.Response, error) {
	if err != nil {
		if f := ctxFailure(ctx, err); f != nil {
			return &provider.Response{Failure: f}, nil
		}
		return nil, fromRPCError(method, err)
	}
	return responseFromProto(resp), nil
}

// ListModels implements provider.Provider.
func (c *GRPCClient) ListModels(ctx context.Context) ([]provider.Model, error) {
	resp, err := c.client.ListModels(ctx, &providerpb.ListModelsRequest{})
	if err != nil {
		return nil, fromRPCError("ListModels", err)
	}
	return modelsFromProto(resp.GetModels()), nil
}

// ChatCompletionsStream implements provider.Provider. It calls out in the
// calling goroutine as messages arrive and returns when the plugin sent
// the stream's end, out returned an error, ctx ended or the call failed;
// in every case the gRPC stream is finished when it returns.
func (c *GRPCClient) ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	const method = "ChatCompletionsStream"
	if req == nil {
		return nil, errors.New("provider plugin: ChatCompletionsStream: nil request")
	}
	// Cancelling callCtx (on every return) cancels the call: the plugin's
	// ctx ends and gRPC's own goroutine for the stream exits.
	callCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	fail := func(err error) (*provider.StreamEnd, error) {
		if f := ctxFailure(ctx, err); f != nil {
			return &provider.StreamEnd{Failure: f}, nil
		}
		return nil, fromRPCError(method, err)
	}
	violation := func(msg string) (*provider.StreamEnd, error) {
		st := status.New(codes.Internal, "plugin broke the stream protocol: "+msg)
		return nil, &CallError{Method: method, Status: st, err: st.Err()}
	}
	stopped := func(err error) (*provider.StreamEnd, error) {
		return &provider.StreamEnd{Failure: &provider.Failure{
			Kind:    provider.FailureCanceled,
			Message: "stream stopped by Loom: " + err.Error(),
		}}, nil
	}

	stream, err := c.client.ChatCompletionsStream(callCtx, requestToProto(req))
	if err != nil {
		return fail(err)
	}
	started := false
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return violation("stream closed without an end message")
		}
		if err != nil {
			return fail(err)
		}
		switch m := msg.GetMessage().(type) {
		case *providerpb.StreamMessage_Start:
			if started {
				return violation("second start message")
			}
			started = true
			if err := out.Start(startFromProto(m.Start)); err != nil {
				return stopped(err)
			}
		case *providerpb.StreamMessage_Event:
			if !started {
				return violation("event before the start message")
			}
			if err := out.Send(eventFromProto(m.Event)); err != nil {
				return stopped(err)
			}
		case *providerpb.StreamMessage_End:
			return endFromProto(m.End), nil
		default:
			// An empty message, or a kind added by a newer protocol
			// revision: nothing to do with it.
		}
	}
}

// ctxFailure is the Failure for a call that failed with callErr because
// its ctx ended, or nil.
func ctxFailure(ctx context.Context, callErr error) *provider.Failure {
	timeout := &provider.Failure{Kind: provider.FailureTimeout, Message: "deadline exceeded before the plugin answered"}
	switch err := ctx.Err(); {
	case err == nil:
		// gRPC sends the deadline along; the plugin's side may report it
		// expired a moment before ctx's own timer fires here.
		if _, ok := ctx.Deadline(); ok && status.Code(callErr) == codes.DeadlineExceeded {
			return timeout
		}
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return timeout
	default:
		return &provider.Failure{Kind: provider.FailureCanceled, Message: "request canceled before the plugin answered"}
	}
}
