package plugin

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/loom-runtime/loom/sdk/internal/providerpb"
	"github.com/loom-runtime/loom/sdk/provider"
)

// grpcServer is the plugin half: it serves a provider.Provider as the
// generated providerpb.ProviderServer.
type grpcServer struct {
	providerpb.UnimplementedProviderServer
	impl provider.Provider
}

func (s *grpcServer) GetInfo(ctx context.Context, _ *providerpb.GetInfoRequest) (*providerpb.GetInfoResponse, error) {
	info, err := s.impl.Info(ctx)
	if err != nil {
		return nil, toRPCError(err)
	}
	return infoToProto(info), nil
}

func (s *grpcServer) Configure(ctx context.Context, req *providerpb.ConfigureRequest) (*providerpb.ConfigureResponse, error) {
	if err := s.impl.Configure(ctx, configFromProto(req)); err != nil {
		return nil, toRPCError(err)
	}
	return &providerpb.ConfigureResponse{}, nil
}

func (s *grpcServer) ChatCompletions(ctx context.Context, req *providerpb.Request) (*providerpb.Response, error) {
	return unary(s.impl.ChatCompletions(ctx, requestFromProto(req)))
}

func (s *grpcServer) Embeddings(ctx context.Context, req *providerpb.Request) (*providerpb.Response, error) {
	return unary(s.impl.Embeddings(ctx, requestFromProto(req)))
}

func unary(resp *provider.Response, err error) (*providerpb.Response, error) {
	if err != nil {
		return nil, toRPCError(err)
	}
	if resp == nil {
		return nil, status.Error(codes.Internal, "provider returned neither a response nor an error")
	}
	return responseToProto(resp), nil
}

func (s *grpcServer) ListModels(ctx context.Context, _ *providerpb.ListModelsRequest) (*providerpb.ListModelsResponse, error) {
	models, err := s.impl.ListModels(ctx)
	if err != nil {
		return nil, toRPCError(err)
	}
	return &providerpb.ListModelsResponse{Models: modelsToProto(models)}, nil
}

func (s *grpcServer) ChatCompletionsStream(req *providerpb.Request, stream grpc.ServerStreamingServer[providerpb.StreamMessage]) error {
	// stream.Context() ends when the host cancels the call (the client went
	// away) or the connection breaks: the provider sees its ctx cancelled.
	out := &streamSender{stream: stream, ctx: stream.Context()}
	end, err := s.impl.ChatCompletionsStream(stream.Context(), requestFromProto(req), out)
	if err != nil {
		return toRPCError(err)
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if out.misuse != nil {
		return status.Error(codes.Internal, out.misuse.Error())
	}
	if err := out.ctx.Err(); err != nil {
		// Nobody is listening any more; the status is not delivered.
		return toRPCError(err)
	}
	return stream.Send(endToProto(end))
}

// streamSender is the provider.StreamSender the plugin half hands to the
// provider: it writes to the gRPC stream. It is safe for concurrent use.
type streamSender struct {
	stream  grpc.ServerStreamingServer[providerpb.StreamMessage]
	ctx     context.Context
	mu      sync.Mutex
	started bool
	misuse  error // a violation of the StreamSender contract by the provider
}

// errHostGone is what Start and Send return once the host stopped reading.
var errHostGone = errors.New("loom stopped reading the stream")

func (s *streamSender) Start(st provider.StreamStart) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		s.misuse = errors.New("provider called StreamSender.Start twice")
		return s.misuse
	}
	s.started = true
	return s.send(startToProto(st))
}

func (s *streamSender) Send(ev provider.Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started {
		s.misuse = errors.New("provider called StreamSender.Send before Start")
		return s.misuse
	}
	return s.send(eventToProto(ev))
}

func (s *streamSender) send(m *providerpb.StreamMessage) error {
	if err := s.ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", errHostGone, err)
	}
	if err := s.stream.Send(m); err != nil {
		return fmt.Errorf("%w: %w", errHostGone, err)
	}
	return nil
}
