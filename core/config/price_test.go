package config

import (
	"math"
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestParseUSD(t *testing.T) {
	good := map[string]int64{
		"2.50":                 2_500_000,
		"0.075":                75_000,
		"10":                   10_000_000,
		"0":                    0,
		"0.000001":             1,
		"9223372036854.775807": math.MaxInt64,
	}
	for s, want := range good {
		if got, err := ParseUSD(s); err != nil || got != want {
			t.Errorf("ParseUSD(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "-1", "+1", "1e3", ".5", "5.", "1,000", " 2.5", "0.0000001", "9223372036854.775808"} {
		if got, err := ParseUSD(s); err == nil {
			t.Errorf("ParseUSD(%q) = %d, want an error", s, got)
		}
	}
}

func TestPriceText(t *testing.T) {
	tests := []struct {
		v    any
		want string
	}{
		{"2.50", "2.50"},
		{2.5, "2.5"},
		{0.1, "0.1"},
		{0.075, "0.075"},
		{1.25, "1.25"},
		{10, "10"},
		{int64(3), "3"},
		{100.0, "100"},
		{1e-7, "0.0000001"}, // then refused by ParseUSD
	}
	for _, tt := range tests {
		if got, err := priceText(tt.v); err != nil || got != tt.want {
			t.Errorf("priceText(%v) = %q, %v; want %q", tt.v, got, err, tt.want)
		}
	}
	if _, err := priceText(true); err == nil {
		t.Errorf("priceText(true) succeeded")
	}
}

func TestPricingBlock(t *testing.T) {
	c := mustLoad(t, goodFile("trace_pricing.hcl"), nil)
	epoch := time.Unix(0, 0).UTC()
	want := []Price{
		{Model: "gpt-4o", Input: "2.50", Output: "10.00", CachedInput: "1.25", Effective: time.Date(2024, 10, 2, 0, 0, 0, 0, time.UTC)},
		{Model: "gpt-4o", Input: "5", Output: "15", Effective: time.Date(2024, 5, 13, 0, 0, 0, 0, time.UTC)},
		{Model: "gpt-4.1-mini", Input: "0.4", Output: "1.6", CachedInput: "0.1", Effective: epoch},
		{Model: "text-embedding-3-small", Input: "0.02", Output: "0", Effective: epoch},
		{Model: "azure/prod-gpt4o", Input: "2.750001", Output: "11", Effective: epoch},
	}
	if !reflect.DeepEqual(c.Pricing, want) {
		t.Errorf("Pricing =\n%+v\nwant\n%+v", c.Pricing, want)
	}
	wantTrace := Trace{Durability: DurabilitySync, SpoolDir: "/var/spool/loom", SpoolMaxBytes: 5_000_000_000,
		QueueSize: 2000, TenantSharePercent: 25, BatchSize: 100, BatchInterval: 250 * time.Millisecond, MaxBodyBytes: 65536, ShutdownTimeout: 90 * time.Second}
	if c.Trace != wantTrace {
		t.Errorf("Trace = %+v, want %+v", c.Trace, wantTrace)
	}
}

func TestPricingChangesHash(t *testing.T) {
	a := mustLoad(t, goodFile("minimal.hcl"), nil)
	b := mustLoad(t, goodFile("trace_pricing.hcl"), nil)
	if a.Hash == b.Hash {
		t.Errorf("pricing and trace blocks did not change the hash")
	}
}

func TestModelBlockKeys(t *testing.T) {
	got := modelBlockKeys([]string{"a", "b", "a", "c", "a"})
	want := []string{"pricing.model.a[0]", "pricing.model.b", "pricing.model.a[1]", "pricing.model.c", "pricing.model.a[2]"}
	if !slices.Equal(got, want) {
		t.Errorf("modelBlockKeys = %q, want %q", got, want)
	}
}
