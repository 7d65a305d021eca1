package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
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
	defaultAPIVersion     = "2024-10-21"
	defaultTimeout        = 10 * time.Minute
	defaultConnectTimeout = 10 * time.Second
	exampleEndpoint       = "https://myresource.openai.azure.com"
	// modelPrefix marks a model that names a deployment directly.
	modelPrefix = "azure/"
)

// knownSettings are the settings of an azure provider block (any of them
// may come from the environment through the block's env section):
//
//	endpoint                 the resource's endpoint, e.g. https://myres.openai.azure.com
//	api_key                  sent as "api-key"; without it or the endpoint Loom starts,
//	                         and every call answers 503 saying what to set
//	api_version              the api-version query parameter (default "2024-10-21")
//	deployments              a block mapping model names to deployment names:
//	                         deployments { "gpt-4o" = "prod-gpt4o" }
//	timeout                  bound of a call without a timeout of its own (default "10m")
//	connect_timeout          bound of connecting, TLS included (default "10s")
//	max_idle_conns_per_host  idle keep-alive connections kept (default 256)
//
// A request's model picks the deployment: "azure/<deployment>" names it
// directly, a model in deployments is mapped, any other model is taken as
// the deployment's name. The deployment is one segment of the upstream
// URL's path, escaped; "." and ".." are refused (in deployments at
// configuration, in a request with a 400), since they would not name a
// deployment but move the path to another of the resource's endpoints.
var knownSettings = []string{"endpoint", "api_key", "api_version", "deployments", "timeout", "connect_timeout", "max_idle_conns_per_host"}

func newProvider() *compat.Provider {
	return compat.New(provider.Info{
		Name:            "azure",
		Version:         version,
		ProtocolVersion: provider.ProtocolVersion,
		Capabilities:    compat.AllCapabilities,
	}, configure)
}

// config is an azure provider's configuration.
type config struct {
	endpoint            string // no trailing slash
	apiKey              string
	apiVersion          string
	deployments         map[string]string // model → deployment
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
		endpoint:            v.URL("endpoint", "", exampleEndpoint),
		apiKey:              strings.TrimSpace(v.String("api_key", "")),
		apiVersion:          strings.TrimSpace(v.String("api_version", defaultAPIVersion)),
		deployments:         v.StringMap("deployments"),
		timeout:             v.Duration("timeout", defaultTimeout),
		connectTimeout:      v.Duration("connect_timeout", defaultConnectTimeout),
		maxIdleConnsPerHost: v.PositiveInt("max_idle_conns_per_host", openaicompat.DefaultMaxIdleConnsPerHost),
	}
	for model, d := range c.deployments {
		if dotSegment(d) {
			v.Invalid("deployments."+model, fmt.Errorf("%q is not a deployment name: it would change the upstream URL's path", d))
		}
	}
	if c.apiVersion == "" {
		v.Invalid("api_version", errors.New(`empty: give an Azure OpenAI API version such as "`+defaultAPIVersion+`", or leave the setting out`))
	}
	if err := v.Err(); err != nil {
		return config{}, err
	}
	return c, nil
}

// deployment returns the deployment that serves model: the rest of an
// "azure/…" model, else the deployment the deployments map names for it,
// else the model name itself.
func (c config) deployment(model string) string {
	if d, ok := strings.CutPrefix(model, modelPrefix); ok {
		return d
	}
	if d, ok := c.deployments[model]; ok {
		return d
	}
	return model
}

// dotSegment reports whether a deployment name is a dot segment, which
// url.PathEscape leaves as it is and which any URL normaliser (Azure's
// front door, a proxy, an API gateway) resolves: ".." would turn
// /openai/deployments/../chat/completions into /openai/chat/completions.
func dotSegment(deployment string) bool { return deployment == "." || deployment == ".." }

// url returns the URL of endpoint for model's deployment. check refuses a
// dot segment first; url refuses it again rather than build such a URL.
func (c config) url(endpoint, model string) (string, error) {
	d := c.deployment(model)
	if dotSegment(d) {
		return "", fmt.Errorf("azure: deployment %q is a dot segment", d)
	}
	return c.endpoint + "/openai/deployments/" + url.PathEscape(d) + "/" + endpoint +
		"?api-version=" + url.QueryEscape(c.apiVersion), nil
}

// setHeaders sets the credentials on an upstream request.
func (c config) setHeaders(h http.Header) {
	h.Set("api-key", c.apiKey)
}

// check refuses a request whose model names no deployment, as Azure
// answers for a deployment it does not have, and (400) one whose
// deployment is "." or "..", which would name another path than a
// deployment's.
func (c config) check(req *provider.Request) *openaicompat.LocalError {
	d := c.deployment(req.Model)
	if dotSegment(d) {
		return &openaicompat.LocalError{
			Status:  http.StatusBadRequest,
			Message: fmt.Sprintf("The model %q names the deployment %q, which is not a valid Azure OpenAI deployment name.", req.Model, d),
			Type:    "invalid_request_error",
			Code:    "invalid_deployment",
		}
	}
	if strings.TrimSpace(d) != "" {
		return nil
	}
	return &openaicompat.LocalError{
		Status:  http.StatusNotFound,
		Message: fmt.Sprintf("The model %q names no Azure OpenAI deployment: use a deployment name, azure/<deployment>, or a model listed in the provider's deployments block.", req.Model),
		Type:    "invalid_request_error",
		Code:    "DeploymentNotFound",
	}
}

// models lists the configured deployments, as azure/<deployment> and under
// the model names mapped to them. Deployments reached by their plain
// names are not known without asking Azure's management API.
func (c config) models(context.Context) ([]provider.Model, error) {
	seen := map[string]bool{}
	var out []provider.Model
	add := func(id string) {
		if !seen[id] {
			seen[id] = true
			out = append(out, provider.Model{ID: id, OwnedBy: "azure"})
		}
	}
	for model, d := range c.deployments {
		add(modelPrefix + d)
		add(model)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func configure(cfg provider.Config) (*compat.Setup, error) {
	c, err := parseConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &compat.Setup{Check: c.check, ListModels: c.models}
	if missing := missingSettings(c); missing != nil {
		s.NotReady = missing
		return s, nil
	}
	client := openaicompat.NewHTTPClient(openaicompat.ClientOptions{
		DialTimeout:         c.connectTimeout,
		TLSHandshakeTimeout: c.connectTimeout,
		MaxIdleConnsPerHost: c.maxIdleConnsPerHost,
	})
	s.Upstream, err = openaicompat.NewUpstream(openaicompat.UpstreamOptions{
		Client:     client,
		URL:        c.url,
		SetHeaders: c.setHeaders,
		Timeout:    c.timeout,
		UserAgent:  "loom-provider-azure/" + version,
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// missingSettings is the answer to every call when the endpoint or the key
// is missing: Loom starts anyway, and clients learn what to set.
func missingSettings(c config) *openaicompat.LocalError {
	var what, vars []string
	if c.endpoint == "" {
		what, vars = append(what, "endpoint"), append(vars, "AZURE_OPENAI_ENDPOINT")
	}
	if c.apiKey == "" {
		what, vars = append(what, "api_key"), append(vars, "AZURE_OPENAI_API_KEY")
	}
	if len(what) == 0 {
		return nil
	}
	return &openaicompat.LocalError{
		// 503, not 401: the client's key is fine; the gateway is not set up.
		Status:  http.StatusServiceUnavailable,
		Message: "The azure provider has no " + strings.Join(what, " and no ") + " configured (set " + strings.Join(vars, " and ") + ").",
		Type:    "server_error",
		Code:    "provider_not_configured",
	}
}
