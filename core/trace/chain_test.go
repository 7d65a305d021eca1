package trace

import (
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

// goldenRow is a row with every field set, for pinning the canonical encodings.
func goldenRow(version int) store.Trace {
	n := func(v int64) *int64 { return &v }
	return store.Trace{
		ID: "0190a000-0000-7000-8000-000000000001", TenantID: "0190a000-0000-7000-8000-0000000000aa",
		RequestID: "0190a000-0000-7000-8000-0000000000bb", Endpoint: "chat.completions", Stream: true,
		RequestedModel: "fast", UpstreamModel: "gpt-4o", ProviderInstance: "openai", PluginName: "openai",
		PluginVersion: "1.0.0", Status: StatusOK, HTTPStatus: 200, ErrorMessage: "", KeyVersion: 3,
		Request:      store.Sealed{Nonce: []byte("nonce-req-12"), Ciphertext: []byte("ct-request")},
		Response:     store.Sealed{Nonce: []byte("nonce-rsp-12"), Ciphertext: []byte("ct-response")},
		PromptTokens: n(11), CompletionTokens: n(4), TotalTokens: n(15), CachedPromptTokens: n(3), ReasoningTokens: n(0),
		UsageSource: UsageProvider, CostMicros: n(73), PriceVersion: "2026-11-21",
		LatencyUS: 30000, TTFBUS: n(29000), UpstreamUS: n(25000), UpstreamTTFBUS: n(1000), OverheadUS: 5000,
		ConfigHash: "cfg", CreatedAt: time.Date(2026, 11, 21, 10, 0, 0, 123000, time.UTC),
		ChainID: "0190a000-0000-7000-8000-0000000000cc", ChainSeq: 7, PrevHash: ZeroHash,
		CanonicalVersion: version,
	}
}

func mustHash(t *testing.T, row *store.Trace) string {
	t.Helper()
	h, err := ChainHash(row)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h)
}

// The v1 encoding is what every trace written before v2 was hashed with:
// it must never change, or those traces stop verifying. The hash was
// computed by the recorder as it was before v2 existed.
func TestCanonicalV1Golden(t *testing.T) {
	row := goldenRow(CanonicalV1)
	if got, want := mustHash(t, &row), "8a1c402fb518ecc9d528a38a24787bdaa3fd389d11ca131477096f326f782e55"; got != want {
		t.Fatalf("v1 hash %s, want %s", got, want)
	}
}

// v2 covers what v1 does, the reported and priced models and the
// truncation flags; its hash is pinned so that it cannot change unnoticed
// either.
func TestCanonicalV2(t *testing.T) {
	row := goldenRow(CanonicalV2)
	row.ReportedModel, row.PricedModel = "gpt-4o-unlisted-preview", "gpt-4o"
	base := mustHash(t, &row)
	if want := "8a0d5b114e80ad9640e5a207f1e00b96cc561607506e7337049d95574055fd7d"; base != want {
		t.Fatalf("v2 hash %s, want %s", base, want)
	}
	v1 := goldenRow(CanonicalV1)
	empty := goldenRow(CanonicalV2)
	if mustHash(t, &v1) == mustHash(t, &empty) {
		t.Fatal("v1 and v2 encode the same row the same: the version is not hashed")
	}
	for name, change := range map[string]func(*store.Trace){
		"reported model":      func(r *store.Trace) { r.ReportedModel = "gpt-4o" },
		"priced model":        func(r *store.Trace) { r.PricedModel = "" },
		"models swapped":      func(r *store.Trace) { r.ReportedModel, r.PricedModel = r.PricedModel, r.ReportedModel },
		"boundary moved":      func(r *store.Trace) { r.ReportedModel, r.PricedModel = "gpt-4o-unlisted-previewgpt-4o", "" },
		"version lowered":     func(r *store.Trace) { r.CanonicalVersion = CanonicalV1 },
		"request truncated":   func(r *store.Trace) { r.RequestTruncated = true },
		"response truncated":  func(r *store.Trace) { r.ResponseTruncated = true },
		"a v1 field (status)": func(r *store.Trace) { r.Status = StatusStreamFailure },
	} {
		changed := row
		change(&changed)
		if h, err := ChainHash(&changed); err == nil && hex.EncodeToString(h) == base {
			t.Errorf("%s: same hash", name)
		}
	}
}

// A v1 row cannot hold the fields v1 does not cover, and a version the
// code does not know cannot be verified.
func TestCanonicalRefuses(t *testing.T) {
	for name, row := range map[string]store.Trace{
		"v1 with a priced model":   func() store.Trace { r := goldenRow(CanonicalV1); r.PricedModel = "gpt-4o"; return r }(),
		"v1 with a reported model": func() store.Trace { r := goldenRow(CanonicalV1); r.ReportedModel = "gpt-4o"; return r }(),
		"v1 with a truncated body": func() store.Trace { r := goldenRow(CanonicalV1); r.ResponseTruncated = true; return r }(),
		"version 0":                goldenRow(0),
		"version 3":                goldenRow(3),
	} {
		if _, err := ChainHash(&row); err == nil {
			t.Errorf("%s: hashed", name)
		} else if !strings.Contains(err.Error(), "canonical") && !strings.Contains(err.Error(), "changed after") {
			t.Errorf("%s: %v", name, err)
		}
	}
}
