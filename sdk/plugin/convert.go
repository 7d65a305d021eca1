package plugin

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/loom-runtime/loom/sdk/internal/providerpb"
	"github.com/loom-runtime/loom/sdk/provider"
)

// Converters between the public types of package provider and the wire
// types of package providerpb. Each pair must carry every field: the
// round-trip test in this package fails when one is forgotten.
//
// Protobuf strings must be valid UTF-8 (marshalling fails otherwise), but
// Go strings need not be: an upstream header value in Latin-1 would make a
// whole response fail. The ...ToProto converters therefore replace invalid
// bytes in strings with U+FFFD (see str and strMap). Bodies are bytes and
// pass unchanged.

// str returns s with invalid UTF-8 replaced.
func str(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// strs is str for each element.
func strs(in []string) []string {
	for _, s := range in {
		if !utf8.ValidString(s) {
			out := make([]string, len(in))
			for i, s := range in {
				out[i] = str(s)
			}
			return out
		}
	}
	return in
}

// strMap is str for each key and value.
func strMap(in map[string]string) map[string]string {
	for k, v := range in {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			out := make(map[string]string, len(in))
			for k, v := range in {
				out[str(k)] = str(v)
			}
			return out
		}
	}
	return in
}

func infoToProto(in provider.Info) *providerpb.GetInfoResponse {
	return &providerpb.GetInfoResponse{
		Name:            str(in.Name),
		Version:         str(in.Version),
		ProtocolVersion: int32(in.ProtocolVersion),
		Capabilities:    strs(in.Capabilities),
		Models:          modelsToProto(in.Models),
	}
}

func infoFromProto(in *providerpb.GetInfoResponse) provider.Info {
	return provider.Info{
		Name:            in.GetName(),
		Version:         in.GetVersion(),
		ProtocolVersion: int(in.GetProtocolVersion()),
		Capabilities:    in.GetCapabilities(),
		Models:          modelsFromProto(in.GetModels()),
	}
}

func configToProto(in provider.Config) *providerpb.ConfigureRequest {
	return &providerpb.ConfigureRequest{
		Instance:     str(in.Instance),
		SettingsJson: in.Settings,
		Secrets:      strMap(in.Secrets),
	}
}

func configFromProto(in *providerpb.ConfigureRequest) provider.Config {
	return provider.Config{
		Instance: in.GetInstance(),
		Settings: in.GetSettingsJson(),
		Secrets:  in.GetSecrets(),
	}
}

func requestToProto(in *provider.Request) *providerpb.Request {
	return &providerpb.Request{
		RequestId: str(in.RequestID),
		Model:     str(in.Model),
		Body:      in.Body,
		Headers:   strMap(in.Headers),
		TimeoutNs: int64(in.Timeout),
	}
}

func requestFromProto(in *providerpb.Request) *provider.Request {
	return &provider.Request{
		RequestID: in.GetRequestId(),
		Model:     in.GetModel(),
		Body:      in.GetBody(),
		Headers:   in.GetHeaders(),
		Timeout:   time.Duration(in.GetTimeoutNs()),
	}
}

func responseToProto(in *provider.Response) *providerpb.Response {
	return &providerpb.Response{
		Status:  int32(in.Status),
		Headers: strMap(in.Headers),
		Body:    in.Body,
		Usage:   usageToProto(in.Usage),
		Timings: timingsToProto(in.Timings),
		Model:   str(in.Model),
		Failure: failureToProto(in.Failure),
	}
}

func responseFromProto(in *providerpb.Response) *provider.Response {
	return &provider.Response{
		Status:  int(in.GetStatus()),
		Headers: in.GetHeaders(),
		Body:    in.GetBody(),
		Usage:   usageFromProto(in.GetUsage()),
		Timings: timingsFromProto(in.GetTimings()),
		Model:   in.GetModel(),
		Failure: failureFromProto(in.GetFailure()),
	}
}

func startToProto(in provider.StreamStart) *providerpb.StreamMessage {
	return &providerpb.StreamMessage{Message: &providerpb.StreamMessage_Start{Start: &providerpb.StreamStart{
		Status:  int32(in.Status),
		Headers: strMap(in.Headers),
	}}}
}

func startFromProto(in *providerpb.StreamStart) provider.StreamStart {
	return provider.StreamStart{
		Status:  int(in.GetStatus()),
		Headers: in.GetHeaders(),
	}
}

func eventToProto(in provider.Event) *providerpb.StreamMessage {
	return &providerpb.StreamMessage{Message: &providerpb.StreamMessage_Event{Event: &providerpb.Event{
		Data:      in.Data,
		UsageOnly: in.UsageOnly,
	}}}
}

func eventFromProto(in *providerpb.Event) provider.Event {
	return provider.Event{
		Data:      in.GetData(),
		UsageOnly: in.GetUsageOnly(),
	}
}

func endToProto(in *provider.StreamEnd) *providerpb.StreamMessage {
	if in == nil {
		in = &provider.StreamEnd{}
	}
	return &providerpb.StreamMessage{Message: &providerpb.StreamMessage_End{End: &providerpb.StreamEnd{
		Body:    in.Body,
		Usage:   usageToProto(in.Usage),
		Timings: timingsToProto(in.Timings),
		Model:   str(in.Model),
		Failure: failureToProto(in.Failure),
	}}}
}

func endFromProto(in *providerpb.StreamEnd) *provider.StreamEnd {
	return &provider.StreamEnd{
		Body:    in.GetBody(),
		Usage:   usageFromProto(in.GetUsage()),
		Timings: timingsFromProto(in.GetTimings()),
		Model:   in.GetModel(),
		Failure: failureFromProto(in.GetFailure()),
	}
}

func usageToProto(in *provider.Usage) *providerpb.Usage {
	if in == nil {
		return nil
	}
	return &providerpb.Usage{
		PromptTokens:       in.PromptTokens,
		CompletionTokens:   in.CompletionTokens,
		TotalTokens:        in.TotalTokens,
		CachedPromptTokens: in.CachedPromptTokens,
		ReasoningTokens:    in.ReasoningTokens,
	}
}

func usageFromProto(in *providerpb.Usage) *provider.Usage {
	if in == nil {
		return nil
	}
	return &provider.Usage{
		PromptTokens:       in.GetPromptTokens(),
		CompletionTokens:   in.GetCompletionTokens(),
		TotalTokens:        in.GetTotalTokens(),
		CachedPromptTokens: in.GetCachedPromptTokens(),
		ReasoningTokens:    in.GetReasoningTokens(),
	}
}

func timingsToProto(in provider.Timings) *providerpb.Timings {
	return &providerpb.Timings{
		FirstByteNs: int64(in.FirstByte),
		TotalNs:     int64(in.Total),
	}
}

func timingsFromProto(in *providerpb.Timings) provider.Timings {
	return provider.Timings{
		FirstByte: time.Duration(in.GetFirstByteNs()),
		Total:     time.Duration(in.GetTotalNs()),
	}
}

// The wire enum and provider.FailureKind share their numbers; kinds this
// SDK does not know (from a newer plugin) arrive as FailureProtocol.
var failureKinds = map[provider.FailureKind]providerpb.FailureKind{
	provider.FailureNone:        providerpb.FailureKind_FAILURE_KIND_NONE,
	provider.FailureTimeout:     providerpb.FailureKind_FAILURE_KIND_TIMEOUT,
	provider.FailureUnreachable: providerpb.FailureKind_FAILURE_KIND_UNREACHABLE,
	provider.FailureProtocol:    providerpb.FailureKind_FAILURE_KIND_PROTOCOL,
	provider.FailureCanceled:    providerpb.FailureKind_FAILURE_KIND_CANCELED,
}

func failureToProto(in *provider.Failure) *providerpb.Failure {
	if in == nil {
		return nil
	}
	kind, ok := failureKinds[in.Kind]
	if !ok {
		kind = providerpb.FailureKind_FAILURE_KIND_PROTOCOL
	}
	return &providerpb.Failure{Kind: kind, Message: str(in.Message)}
}

func failureFromProto(in *providerpb.Failure) *provider.Failure {
	if in == nil {
		return nil
	}
	out := &provider.Failure{Kind: provider.FailureProtocol, Message: in.GetMessage()}
	for k, v := range failureKinds {
		if v == in.GetKind() {
			out.Kind = k
		}
	}
	return out
}

func modelsToProto(in []provider.Model) []*providerpb.Model {
	if in == nil {
		return nil
	}
	out := make([]*providerpb.Model, len(in))
	for i, m := range in {
		out[i] = &providerpb.Model{Id: str(m.ID), OwnedBy: str(m.OwnedBy), Created: m.Created}
	}
	return out
}

func modelsFromProto(in []*providerpb.Model) []provider.Model {
	if in == nil {
		return nil
	}
	out := make([]provider.Model, len(in))
	for i, m := range in {
		out[i] = provider.Model{ID: m.GetId(), OwnedBy: m.GetOwnedBy(), Created: m.GetCreated()}
	}
	return out
}
