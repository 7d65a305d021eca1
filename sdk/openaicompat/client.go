// Package openaicompat calls OpenAI-compatible HTTP APIs on behalf of a
// Loom provider plugin: it sends Loom's request bodies upstream unchanged
// and turns the answers into provider results, passing stream events on as
// they arrive. Loom's OpenAI and Azure OpenAI plugins are built on it; a
// third-party plugin for any API that speaks OpenAI's wire format can be
// too, by supplying its own URLs and authentication headers.
package openaicompat

import (
	"crypto/tls"
	"net"
	"net/http"
	"time"
)

// ClientOptions tune the HTTP client NewHTTPClient builds. Zero fields take
// the defaults shown.
type ClientOptions struct {
	// DialTimeout bounds establishing a TCP connection (default 10s).
	DialTimeout time.Duration
	// TLSHandshakeTimeout bounds the TLS handshake (default 10s).
	TLSHandshakeTimeout time.Duration
	// KeepAlive is the TCP keep-alive period of connections (default 30s).
	KeepAlive time.Duration
	// MaxIdleConnsPerHost is how many idle keep-alive connections are kept
	// per upstream host (default 256): a gateway talks to few hosts, often.
	MaxIdleConnsPerHost int
	// IdleConnTimeout closes keep-alive connections idle for that long
	// (default 90s).
	IdleConnTimeout time.Duration
	// TLSConfig, when set, is used for TLS connections (e.g. a private CA).
	TLSConfig *tls.Config
}

// Defaults of ClientOptions.
const (
	DefaultDialTimeout         = 10 * time.Second
	DefaultTLSHandshakeTimeout = 10 * time.Second
	DefaultKeepAlive           = 30 * time.Second
	DefaultMaxIdleConnsPerHost = 256
	DefaultIdleConnTimeout     = 90 * time.Second

	connBufferSize = 1 << 10
)

// NewHTTPClient returns a pooled HTTP client for upstream calls, meant to
// be shared by every call of a provider:
//
//   - keep-alive connections, up to MaxIdleConnsPerHost idle ones per host;
//   - HTTP/2 when the upstream offers it (ALPN), HTTP/1.1 otherwise;
//   - dial and TLS handshake timeouts, but no overall timeout and no
//     response-header timeout: a call's deadline comes from its context
//     (Upstream derives it from Request.Timeout), since a streamed answer
//     may legitimately take minutes;
//   - no proxy from the environment, and no redirects followed: a 3xx is
//     returned as it is, so credentials are never sent to another host;
//   - 1 KiB connection buffers instead of 4 KiB: an HTTP/1.1 upstream holds
//     one connection per open stream for the stream's whole life, and
//     large reads and writes bypass the buffers anyway.
func NewHTTPClient(o ClientOptions) *http.Client {
	dialer := &net.Dialer{
		Timeout:   orDefault(o.DialTimeout, DefaultDialTimeout),
		KeepAlive: orDefault(o.KeepAlive, DefaultKeepAlive),
	}
	perHost := o.MaxIdleConnsPerHost
	if perHost <= 0 {
		perHost = DefaultMaxIdleConnsPerHost
	}
	t := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		ForceAttemptHTTP2:     true,
		TLSClientConfig:       o.TLSConfig,
		TLSHandshakeTimeout:   orDefault(o.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout),
		MaxIdleConns:          0, // no global limit: MaxIdleConnsPerHost bounds each host
		MaxIdleConnsPerHost:   perHost,
		IdleConnTimeout:       orDefault(o.IdleConnTimeout, DefaultIdleConnTimeout),
		ExpectContinueTimeout: time.Second,
		ReadBufferSize:        connBufferSize,
		WriteBufferSize:       connBufferSize,
	}
	return &http.Client{
		Transport: t,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}
