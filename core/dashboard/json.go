package dashboard

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/trace"
)

// timeFormat is RFC 3339 in UTC with microseconds, the precision of the store.
const timeFormat = "2006-01-02T15:04:05.000000Z07:00"

// stamp formats t in UTC with microseconds.
type stamp time.Time

func (s stamp) MarshalJSON() ([]byte, error) {
	return []byte(`"` + time.Time(s).UTC().Format(timeFormat) + `"`), nil
}

// ms converts microseconds to milliseconds (3 decimals, exactly).
func ms(us int64) float64 { return float64(us) / 1000 }

func msPtr(us *int64) *float64 {
	if us == nil {
		return nil
	}
	v := ms(*us)
	return &v
}

// usd converts micro-dollars to dollars.
func usd(micros int64) float64 { return float64(micros) / 1e6 }

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

type tokensJSON struct {
	Prompt     *int64 `json:"prompt"`
	Completion *int64 `json:"completion"`
	Total      *int64 `json:"total"`
	Cached     *int64 `json:"cached"`
}

// summaryJSON is a trace in a listing (and the first half of a detail).
type summaryJSON struct {
	ID            string     `json:"id"`
	Tenant        string     `json:"tenant"`
	RequestID     string     `json:"request_id"`
	Endpoint      string     `json:"endpoint"`
	Stream        bool       `json:"stream"`
	Model         string     `json:"model"`
	UpstreamModel string     `json:"upstream_model"`
	Provider      string     `json:"provider"`
	Status        string     `json:"status"`
	HTTPStatus    int        `json:"http_status"`
	Error         *string    `json:"error"`
	Tokens        tokensJSON `json:"tokens"`
	UsageSource   string     `json:"usage_source"`
	CostMicros    *int64     `json:"cost_micros"`
	CostUSD       *float64   `json:"cost_usd"`
	LatencyMS     float64    `json:"latency_ms"`
	TTFBMS        *float64   `json:"ttfb_ms"`
	UpstreamMS    *float64   `json:"upstream_ms"`
	OverheadMS    float64    `json:"overhead_ms"`
	CreatedAt     stamp      `json:"created_at"`
}

func summaryOf(s store.TraceSummary, tenant string) summaryJSON {
	out := summaryJSON{
		ID: s.ID, Tenant: tenant, RequestID: s.RequestID, Endpoint: s.Endpoint, Stream: s.Stream,
		Model: s.RequestedModel, UpstreamModel: s.UpstreamModel, Provider: s.Provider,
		Status: s.Status, HTTPStatus: s.HTTPStatus, Error: nullable(s.ErrorMessage),
		Tokens: tokensJSON{Prompt: s.PromptTokens, Completion: s.CompletionTokens, Total: s.TotalTokens,
			Cached: s.CachedPromptTokens},
		UsageSource: s.UsageSource, CostMicros: s.CostMicros,
		LatencyMS: ms(s.LatencyUS), TTFBMS: msPtr(s.TTFBUS), UpstreamMS: msPtr(s.UpstreamUS),
		OverheadMS: ms(s.OverheadUS), CreatedAt: stamp(s.CreatedAt),
	}
	if s.CostMicros != nil {
		v := usd(*s.CostMicros)
		out.CostUSD = &v
	}
	return out
}

// summaryOfTrace is the summary of a whole trace.
func summaryOfTrace(t *store.Trace) store.TraceSummary {
	return store.TraceSummary{
		ID: t.ID, TenantID: t.TenantID, RequestID: t.RequestID, Endpoint: t.Endpoint, Stream: t.Stream,
		RequestedModel: t.RequestedModel, UpstreamModel: t.UpstreamModel, Provider: t.ProviderInstance,
		Status: t.Status, HTTPStatus: t.HTTPStatus, ErrorMessage: t.ErrorMessage,
		PromptTokens: t.PromptTokens, CompletionTokens: t.CompletionTokens, TotalTokens: t.TotalTokens,
		CachedPromptTokens: t.CachedPromptTokens, UsageSource: t.UsageSource, CostMicros: t.CostMicros,
		LatencyUS: t.LatencyUS, OverheadUS: t.OverheadUS, TTFBUS: t.TTFBUS, UpstreamUS: t.UpstreamUS,
		CreatedAt: t.CreatedAt,
	}
}

type pluginJSON struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

type chainJSON struct {
	ID   string `json:"id"`
	Seq  int64  `json:"seq"`
	Hash string `json:"hash"`
}

// detailJSON is one whole trace.
type detailJSON struct {
	summaryJSON
	Plugin         *pluginJSON `json:"plugin"`
	PriceVersion   *string     `json:"price_version"`
	ReportedModel  *string     `json:"reported_model"`
	PricedModel    *string     `json:"priced_model"`
	PricingNote    *string     `json:"pricing_note"`
	ConfigHash     *string     `json:"config_hash"`
	KeyVersion     int         `json:"key_version"`
	UpstreamTTFBMS *float64    `json:"upstream_ttfb_ms"`
	Request        any         `json:"request"`
	Response       any         `json:"response"`
	// RequestTruncated, ResponseTruncated: the body shown is its start,
	// cut at trace.max_body_bytes.
	RequestTruncated  bool      `json:"request_truncated"`
	ResponseTruncated bool      `json:"response_truncated"`
	Message           any       `json:"message"`
	Chain             chainJSON `json:"chain"`
	Readable          bool      `json:"readable"`
	// Unreadable says why the bodies are not shown (null when readable):
	// one of the unreadable* reasons.
	Unreadable *string `json:"unreadable"`
}

// Why a trace's bodies cannot be shown. Shredding is an operator's
// decision; the other two mean the stored row does not match what Loom
// wrote, and must never be shown as if it were a shred.
const (
	// unreadableShredded: the tenant's data keys were destroyed (or the
	// trace was recorded after the tenant's deletion, its bodies discarded).
	unreadableShredded = "shredded"
	// unreadableAuthFailed: a body failed AES-GCM authentication: its
	// ciphertext, nonce or tag was altered, or it was moved from another
	// trace, field or tenant — possibly tampered.
	unreadableAuthFailed = "failed_authentication"
	// unreadableMissingKey: the trace names a data key version its tenant
	// never had, or carries sealed bodies without a key version — possibly
	// tampered.
	unreadableMissingKey = "missing_key"
)

func detailOf(t *store.Trace, tenant string) detailJSON {
	d := detailJSON{
		summaryJSON:      summaryOf(summaryOfTrace(t), tenant),
		PriceVersion:     nullable(t.PriceVersion),
		ReportedModel:    nullable(t.ReportedModel),
		PricedModel:      nullable(t.PricedModel),
		PricingNote:      nullable(pricingNote(t)),
		ConfigHash:       nullable(t.ConfigHash),
		KeyVersion:       t.KeyVersion,
		UpstreamTTFBMS:   msPtr(t.UpstreamTTFBUS),
		Chain:            chainJSON{ID: t.ChainID, Seq: t.ChainSeq, Hash: hex.EncodeToString(t.Hash)},
		RequestTruncated: t.RequestTruncated, ResponseTruncated: t.ResponseTruncated,
	}
	if t.PluginName != "" || t.PluginVersion != "" {
		d.Plugin = &pluginJSON{Name: t.PluginName, Version: t.PluginVersion}
	}
	return d
}

// pricingNote explains a trace's cost when it is not simply the price of
// the model the upstream reported: it was priced under the routed model
// because the reported one has no price, or tokens were counted but no
// name had a price. "" otherwise, and for traces recorded before Loom kept
// the reported and priced models (canonical v1), whose lookup is unknown.
func pricingNote(t *store.Trace) string {
	if t.CanonicalVersion < trace.CanonicalV2 {
		return ""
	}
	switch {
	case t.PricedModel != "" && t.ReportedModel != "" && t.PricedModel != t.ReportedModel:
		return fmt.Sprintf("priced as %s: the upstream reported %s, which has no price", t.PricedModel, t.ReportedModel)
	case t.CostMicros == nil && t.PromptTokens != nil:
		var names []string
		for _, n := range []string{t.ReportedModel, t.UpstreamModel} {
			if n != "" && !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
		if len(names) == 0 {
			return "not priced: the trace names no model"
		}
		return fmt.Sprintf("not priced: price catalog %s has no price for %s", t.PriceVersion, strings.Join(names, " or "))
	}
	return ""
}

// jsonOrString shows a body as JSON when it is JSON, else as a string; an
// absent body is null.
func jsonOrString(b []byte) any {
	switch {
	case b == nil:
		return nil
	case json.Valid(b):
		return json.RawMessage(b)
	default:
		return string(b)
	}
}

func text(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// summaries converts store rows for the view, dropping (and logging) any
// row outside its scope.
func (a *API) summaries(ctx context.Context, v view, rows []store.TraceSummary) []summaryJSON {
	out := make([]summaryJSON, 0, len(rows))
	v.names.failed = false // each listing (each live-tail poll too) may try the store once
	for _, s := range rows {
		if !v.allows(s.TenantID) {
			a.log.Error("store returned a trace outside the request's scope; dropped", "trace", s.ID)
			continue
		}
		out = append(out, summaryOf(s, v.names.name(ctx, s.TenantID)))
	}
	return out
}
