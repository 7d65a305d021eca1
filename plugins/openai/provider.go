package main

import (
	"net/http"
	"strings"
	"time"

	"github.com/loom-runtime/loom/plugins/internal/compat"
	"github.com/loom-runtime/loom/plugins/internal/settings"
	"github.com/loom-runtime/loom/sdk/openaicompat"
	"github.com/loom-runtime/loom/sdk/provider"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

const (
	defaultBaseURL        = "https://api.openai.com/v1"
	defaultTimeout        = 10 * time.Minute
	defaultConnectTimeout = 10 * time.Second
)

// knownSettings are the settings of an openai provider block (any of them
// may come from the environment through the block's env section):
//
//	base_url                 API base URL (default https://api.openai.com/v1); any
//	                         OpenAI-compatible server's works
//	api_key                  sent as "Authorization: Bearer …"; without it Loom starts,
//	                         and every call answers 503 saying to set OPENAI_API_KEY
//	organization             sent as OpenAI-Organization
//	project                  sent as OpenAI-Project
//	timeout                  bound of a call without a timeout of its own (default "10m")
//	connect_timeout          bound of connecting, TLS included (default "10s")
//	max_idle_conns_per_host  idle keep-alive connections kept (default 256)
var knownSettings = []string{"base_url", "api_key", "organization", "project", "timeout", "connect_timeout", "max_idle_conns_per_host"}

func newProvider() *compat.Provider {
	return compat.New(provider.Info{
		Name:            "openai",
		Version:         version,
		ProtocolVersion: provider.ProtocolVersion,
		Capabilities:    compat.AllCapabilities,
	}, configure)
}

// config is an openai provider's configuration.
type config struct {
	baseURL             string // no trailing slash
	apiKey              string
	organization        string
	project             string
	timeout             time.Duration
	connectTimeout      time.Duration
	maxIdleConnsPerHost int
}

func parseConfig(cfg provider.Config) (config, error) {
	v, err := settings.Parse(cfg, knownSettings...)
	if err != nil {
		return config{}, err
	}
	c := config{
		baseURL:             v.URL("base_url", defaultBaseURL, defaultBaseURL),
		apiKey:              strings.TrimSpace(v.String("api_key", "")),
		organization:        strings.TrimSpace(v.String("organization", "")),
		project:             strings.TrimSpace(v.String("project", "")),
		timeout:             v.Duration("timeout", defaultTimeout),
		connectTimeout:      v.Duration("connect_timeout", defaultConnectTimeout),
		maxIdleConnsPerHost: v.PositiveInt("max_idle_conns_per_host", openaicompat.DefaultMaxIdleConnsPerHost),
	}
	if err := v.Err(); err != nil {
		return config{}, err
	}
	return c, nil
}

// url returns the URL of endpoint: the model is in the body.
func (c config) url(endpoint, _ string) (string, error) {
	return c.baseURL + "/" + endpoint, nil
}

// setHeaders sets the credentials on an upstream request.
func (c config) setHeaders(h http.Header) {
	h.Set("Authorization", "Bearer "+c.apiKey)
	if c.organization != "" {
		h.Set("OpenAI-Organization", c.organization)
	}
	if c.project != "" {
		h.Set("OpenAI-Project", c.project)
	}
}

func configure(cfg provider.Config) (*compat.Setup, error) {
	c, err := parseConfig(cfg)
	if err != nil {
		return nil, err
	}
	if c.apiKey == "" {
		// Loom starts without a key; calls explain what is missing.
		return &compat.Setup{NotReady: &openaicompat.LocalError{
			// 503, not 401: the client's key is fine; the gateway is not set up.
			Status:  http.StatusServiceUnavailable,
			Message: "The openai provider has no api_key configured (set OPENAI_API_KEY).",
			Type:    "server_error",
			Code:    "provider_not_configured",
		}}, nil
	}
	client := openaicompat.NewHTTPClient(openaicompat.ClientOptions{
		DialTimeout:         c.connectTimeout,
		TLSHandshakeTimeout: c.connectTimeout,
		MaxIdleConnsPerHost: c.maxIdleConnsPerHost,
	})
	u, err := openaicompat.NewUpstream(openaicompat.UpstreamOptions{
		Client:     client,
		URL:        c.url,
		SetHeaders: c.setHeaders,
		Timeout:    c.timeout,
		UserAgent:  "loom-provider-openai/" + version,
	})
	if err != nil {
		return nil, err
	}
	return &compat.Setup{Upstream: u}, nil
}
