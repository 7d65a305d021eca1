// Package plugin connects a provider.Provider to Loom across a process
// boundary, using HashiCorp's go-plugin over gRPC.
//
// A plugin's main function is one line:
//
//	func main() { plugin.Serve(myprovider.New()) }
//
// Loom (the host) launches the binary with go-plugin's Client configured
// with Handshake, VersionedPlugins and GRPCDialOptions, then calls Dispense
// to get a provider.Provider that forwards every call to the plugin:
//
//	client := goplugin.NewClient(&goplugin.ClientConfig{
//		HandshakeConfig:  plugin.Handshake,
//		VersionedPlugins: plugin.VersionedPlugins(),
//		Cmd:              exec.Command(path),
//		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
//		GRPCDialOptions:  plugin.GRPCDialOptions(),
//	})
//	rpc, err := client.Client()
//	…
//	p, err := plugin.Dispense(rpc)
//
// A call whose error satisfies IsPluginGone means the process died or its
// connection broke: answer 502 and restart the plugin.
//
// The wire protocol is schema/proto/loom/provider/v1/provider.proto in
// Loom's repository; its generated code is internal to the SDK.
package plugin

import (
	"context"
	"fmt"
	"runtime"

	goplugin "github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/loom-runtime/loom/sdk/internal/providerpb"
	"github.com/loom-runtime/loom/sdk/provider"
)

// Handshake is the go-plugin handshake shared by Loom and every provider
// plugin. go-plugin refuses to connect when it differs.
//
// NEVER CHANGE the magic cookie: it is compiled into every plugin binary
// ever built, and a plugin only starts when Loom passes it exactly this
// key and value. The cookie is not a security measure; it only stops a
// plugin binary from running when a human starts it by hand.
//
// ProtocolVersion is provider.ProtocolVersion; with VersionedPlugins it is
// only the fallback go-plugin uses when the host sends no version list.
var Handshake = goplugin.HandshakeConfig{
	ProtocolVersion:  provider.ProtocolVersion,
	MagicCookieKey:   "LOOM_PROVIDER_PLUGIN",
	MagicCookieValue: "g4tHixm8D2TUcysv6oJHRdTcJk43xL5a",
}

// PluginName is the name under which the provider is registered in
// go-plugin's plugin set (the argument of ClientProtocol.Dispense).
const PluginName = "provider"

// VersionedPlugins is the plugin set for the host's
// goplugin.ClientConfig.VersionedPlugins, keyed by protocol major version.
// go-plugin picks the highest version both sides speak; the host can read
// it from Client.NegotiatedVersion.
func VersionedPlugins() map[int]goplugin.PluginSet {
	return versionedPlugins(nil)
}

func versionedPlugins(impl provider.Provider) map[int]goplugin.PluginSet {
	return map[int]goplugin.PluginSet{
		provider.ProtocolVersion: {PluginName: &ProviderPlugin{Impl: impl}},
	}
}

// ProviderPlugin is the go-plugin Plugin (gRPC only) for a provider. On
// the plugin side Impl is the provider being served; on the host side Impl
// is nil and GRPCClient returns a *GRPCClient.
type ProviderPlugin struct {
	goplugin.NetRPCUnsupportedPlugin
	Impl provider.Provider
}

var _ goplugin.GRPCPlugin = (*ProviderPlugin)(nil)

// GRPCServer registers the provider's gRPC service on s.
func (p *ProviderPlugin) GRPCServer(_ *goplugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return fmt.Errorf("plugin: ProviderPlugin.Impl is nil")
	}
	providerpb.RegisterProviderServer(s, &grpcServer{impl: p.Impl})
	return nil
}

// GRPCClient returns a *GRPCClient that calls the plugin over c.
func (p *ProviderPlugin) GRPCClient(_ context.Context, _ *goplugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &GRPCClient{client: providerpb.NewProviderClient(c)}, nil
}

// Dispense returns the provider served by the plugin behind c (from
// goplugin.Client.Client()).
func Dispense(c goplugin.ClientProtocol) (provider.Provider, error) {
	raw, err := c.Dispense(PluginName)
	if err != nil {
		return nil, fmt.Errorf("plugin: dispense %q: %w", PluginName, err)
	}
	p, ok := raw.(provider.Provider)
	if !ok {
		return nil, fmt.Errorf("plugin: dispense %q: got %T, not a provider", PluginName, raw)
	}
	return p, nil
}

// MaxMessageBytes is the largest gRPC message either side sends or accepts.
//
// gRPC's default receive limit is 4 MiB, but a request carries the
// client's whole body (up to Loom's server.max_body_bytes, 10 MiB by
// default, and operators may raise it) and a response the upstream's whole
// body (long completions, embeddings of large batches: easily tens of MiB).
// 64 MiB leaves room for both plus the envelope. Messages are never
// compressed: plugin and host talk over a local socket.
const MaxMessageBytes = 64 << 20

// Flow-control windows of the plugin connection. Setting them turns off
// gRPC's bandwidth-delay estimation, which sends a PING (and gets one
// back) with the data of nearly every call: on a local socket the window
// never needs to adapt, and those pings cost a write and a wake-up on both
// sides of every request. A stream may run ahead of its reader by at most
// StreamWindowBytes; all calls together by ConnWindowBytes.
const (
	StreamWindowBytes = 1 << 20
	ConnWindowBytes   = 16 << 20
)

// GRPCDialOptions are the dial options the host passes in
// goplugin.ClientConfig.GRPCDialOptions: they set the client's message
// limits to MaxMessageBytes and fixed flow-control windows.
func GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes),
			grpc.MaxCallSendMsgSize(MaxMessageBytes),
		),
		grpc.WithInitialWindowSize(StreamWindowBytes),
		grpc.WithInitialConnWindowSize(ConnWindowBytes),
	}
}

// GRPCServerOptions are the options of the plugin's gRPC server: they set
// its message limits to MaxMessageBytes, fixed flow-control windows, and
// a pool of long-lived goroutines for calls (a goroutine per call grows a
// fresh stack every time; calls mostly wait on the upstream, so the pool
// is larger than the number of cores; when every worker is busy a call
// gets a goroutine of its own, as without the pool). Serve uses them.
func GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.MaxSendMsgSize(MaxMessageBytes),
		grpc.InitialWindowSize(StreamWindowBytes),
		grpc.InitialConnWindowSize(ConnWindowBytes),
		grpc.NumStreamWorkers(uint32(max(16, 4*runtime.GOMAXPROCS(0)))),
	}
}

// newGRPCServer is the goplugin.ServeConfig.GRPCServer factory: go-plugin's
// options (TLS when AutoMTLS is on) plus ours.
func newGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	return grpc.NewServer(append(opts, GRPCServerOptions()...)...)
}
