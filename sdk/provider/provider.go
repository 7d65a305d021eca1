// Package provider is the public Go API of a Loom provider plugin: the
// Provider interface a plugin implements and the types that cross the plugin
// boundary. It has no dependency on Loom's core.
//
// Loom hands a provider the client's request body exactly as received (with
// the model already rewritten by Loom's router where needed) and expects the
// upstream's answer back unchanged: status, selected headers and raw body, or
// for streams the raw SSE event payloads in order. An upstream HTTP error is
// a result (Status ≥ 400 with the provider's body), never a Go error; a
// connection failure or timeout is a result with Failure set. A Go error
// returned by a Provider method means the plugin itself failed.
package provider

import (
	"context"
	"time"
)

// ProtocolVersion is the version of the plugin protocol this SDK speaks.
// Loom refuses plugins whose protocol version it does not know.
const ProtocolVersion = 1

// Capabilities a provider may report in Info.
const (
	CapChatCompletions = "chat_completions"
	CapChatStream      = "chat_completions_stream"
	CapEmbeddings      = "embeddings"
	CapListModels      = "list_models"
)

// Info describes a plugin.
type Info struct {
	Name            string   // plugin name, e.g. "openai"
	Version         string   // plugin version, e.g. "1.2.0"
	ProtocolVersion int      // ProtocolVersion of the SDK it was built with
	Capabilities    []string // Cap… constants
	Models          []Model  // models known without asking the upstream (may be empty)
}

// Config is what Loom sends a provider instance at start.
type Config struct {
	// Instance is the provider instance name from loom.hcl (provider "NAME").
	Instance string
	// Settings are the instance's plain settings from loom.hcl, as JSON
	// (an object; nested blocks become nested objects).
	Settings []byte
	// Secrets are the values of the environment variables named in the
	// instance's env block, by setting name. They override Settings.
	Secrets map[string]string
}

// Request is one call to the upstream.
type Request struct {
	// RequestID is Loom's id for the client request (UUIDv7), for logs and
	// for the upstream's request-id header if it takes one.
	RequestID string
	// Model is the upstream model (or deployment) chosen by Loom's router.
	Model string
	// Body is the request body to send upstream: the client's bytes, with
	// "model" rewritten when the router changed it and, for streams,
	// stream_options.include_usage forced on.
	Body []byte
	// Headers are client headers that belong upstream (e.g. OpenAI-Beta),
	// already filtered by Loom: never authorization or Loom's own headers.
	Headers map[string]string
	// Timeout bounds the whole upstream call (0: the provider's default).
	Timeout time.Duration
}

// Usage is the token accounting reported by the upstream.
type Usage struct {
	PromptTokens       int64
	CompletionTokens   int64
	TotalTokens        int64
	CachedPromptTokens int64 // included in PromptTokens, as OpenAI counts them
	ReasoningTokens    int64 // included in CompletionTokens
}

// Timings are measured by the provider around the upstream call. A
// provider that answers without calling its upstream (it has no
// credentials, say) leaves them zero: Loom then traces an error answer as
// the provider's own refusal, not as an upstream error, and charges nothing.
type Timings struct {
	// FirstByte is the time from sending the request to the first byte of
	// the response body (for streams: the first event).
	FirstByte time.Duration
	// Total is the time from sending the request to the end of the response.
	Total time.Duration
}

// FailureKind says why the upstream could not be reached or did not answer.
type FailureKind int

const (
	// FailureNone: the upstream answered (Status is its HTTP status).
	FailureNone FailureKind = iota
	// FailureTimeout: the upstream did not answer in time (Loom answers 504).
	FailureTimeout
	// FailureUnreachable: connecting or sending failed (Loom answers 502).
	FailureUnreachable
	// FailureProtocol: the upstream answered with something unusable, or a
	// stream broke off mid-way (Loom answers 502, or ends the stream).
	FailureProtocol
	// FailureCanceled: the request was canceled by Loom (client went away).
	FailureCanceled
)

func (k FailureKind) String() string {
	switch k {
	case FailureNone:
		return "none"
	case FailureTimeout:
		return "timeout"
	case FailureUnreachable:
		return "unreachable"
	case FailureProtocol:
		return "protocol"
	case FailureCanceled:
		return "canceled"
	}
	return "unknown"
}

// Failure describes an upstream that could not be used.
type Failure struct {
	Kind    FailureKind
	Message string // for Loom's log and the client's error message; no secrets
}

// Response is the upstream's answer to a unary call.
type Response struct {
	// Status is the upstream's HTTP status (0 when Failure is set).
	Status int
	// Headers are the upstream response headers worth relaying
	// (content-type, retry-after, x-ratelimit-*, openai-processing-ms, …).
	Headers map[string]string
	// Body is the upstream's response body, unchanged.
	Body []byte
	// Usage is parsed from a successful body; nil when absent.
	Usage   *Usage
	Timings Timings
	// Model is the model the upstream says it used, when it says.
	Model   string
	Failure *Failure
}

// Event is one SSE event from the upstream, as received.
type Event struct {
	// Data is the event's data payload (the text after "data: ", multiple
	// data lines joined with "\n"), byte for byte. "[DONE]" is an event too.
	Data []byte
	// UsageOnly marks the usage chunk a stream ends with when usage was
	// requested (no choices, usage set); Loom withholds it from clients that
	// did not ask for usage themselves.
	UsageOnly bool
}

// StreamStart is sent once, before any event: the upstream's status and
// headers. A status ≥ 400 is followed by no events; its body comes in
// StreamEnd.Body.
type StreamStart struct {
	Status  int
	Headers map[string]string
}

// StreamEnd closes a stream.
type StreamEnd struct {
	// Body is the upstream's error body when the stream never started (status ≥ 400).
	Body    []byte
	Usage   *Usage
	Timings Timings
	Model   string
	// Failure is set when the upstream could not be reached (then no
	// StreamStart was sent) or the stream broke off mid-way.
	Failure *Failure
}

// StreamSender receives a stream as it arrives. Start is called at most
// once and before Send; Send returns an error when Loom can no longer take
// events (the client went away): the provider must then stop and return.
type StreamSender interface {
	Start(StreamStart) error
	Send(Event) error
}

// Model is an entry of the provider's model list, in OpenAI's shape.
type Model struct {
	ID      string
	OwnedBy string
	Created int64
}

// Provider is what a plugin implements. Methods are called concurrently.
// Context cancellation means the client went away: stop the upstream call.
type Provider interface {
	// Info describes the plugin. It is called before Configure.
	Info(ctx context.Context) (Info, error)
	// Configure is called once per process, before any other call but Info.
	// An error stops Loom's start with the message shown to the operator.
	Configure(ctx context.Context, cfg Config) error
	// ChatCompletions performs a non-streaming chat completion.
	ChatCompletions(ctx context.Context, req *Request) (*Response, error)
	// ChatCompletionsStream performs a streaming chat completion, passing
	// the upstream's events to out as they arrive.
	ChatCompletionsStream(ctx context.Context, req *Request, out StreamSender) (*StreamEnd, error)
	// Embeddings creates embeddings.
	Embeddings(ctx context.Context, req *Request) (*Response, error)
	// ListModels lists the models the provider can reach.
	ListModels(ctx context.Context) ([]Model, error)
}

// ErrUnsupported may be returned by a provider for a call it does not
// implement; Loom answers the client with 404 (unsupported endpoint).
var ErrUnsupported = unsupported{}

type unsupported struct{}

func (unsupported) Error() string { return "not supported by this provider" }
