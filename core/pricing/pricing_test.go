package pricing

import (
	"math"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/config"
)

func day(s string) time.Time {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		panic(err)
	}
	return t
}

func mustDefault(t *testing.T) *Catalog {
	t.Helper()
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var now = day("2026-11-21")

// The expected costs are worked out by hand from the catalog's prices, in
// micro-dollars (µ$); a price of P dollars per 1M tokens is P µ$ a token.
func TestCost(t *testing.T) {
	c := mustDefault(t)
	tests := []struct {
		name   string
		model  string
		at     time.Time
		usage  Usage
		want   int64
		wantOK bool
	}{
		// gpt-4o: 2.50 in, 1.25 cached, 10.00 out.
		// 1000 × 2.50 + 500 × 10.00 = 2500 + 5000.
		{"plain", "gpt-4o", now, Usage{PromptTokens: 1000, CompletionTokens: 500}, 7500, true},
		{"nothing used", "gpt-4o", now, Usage{}, 0, true},
		// 600 × 2.50 + 400 × 1.25 = 1500 + 500.
		{"cached tokens", "gpt-4o", now, Usage{PromptTokens: 1000, CachedPromptTokens: 400}, 2000, true},
		// o3 since 2025-06-10: 2.00 in, 8.00 out; the 1800 reasoning tokens
		// are inside the 2000 completion tokens: 100 × 2 + 2000 × 8.
		{"reasoning tokens", "o3", now, Usage{PromptTokens: 100, CompletionTokens: 2000}, 16200, true},
		// gpt-4o-mini: 0.15 in. 10 × 0.15 = 1.5 → 2 (half up).
		{"rounds half up", "gpt-4o-mini", now, Usage{PromptTokens: 10}, 2, true},
		// 9 × 0.15 = 1.35 → 1.
		{"rounds down below half", "gpt-4o-mini", now, Usage{PromptTokens: 9}, 1, true},
		// 3 × 0.15 + 1 × 0.075 = 0.525 → 1: rounded once, not per part
		// (0.45 → 0 plus 0.075 → 0 would give 0).
		{"rounds once", "gpt-4o-mini", now, Usage{PromptTokens: 4, CachedPromptTokens: 1}, 1, true},
		// 3 × 0.15 = 0.45 → 0.
		{"rounds to zero", "gpt-4o-mini", now, Usage{PromptTokens: 3}, 0, true},
		{"unpriced model", "my-own-model", now, Usage{PromptTokens: 1000}, 0, false},
		{"unpriced even with no tokens", "my-own-model", now, Usage{}, 0, false},
		{"before the model's first price", "gpt-5", day("2025-08-06"), Usage{PromptTokens: 1}, 0, false},
		// gpt-4o before 2024-10-02: 5.00 in, 15.00 out: 5000 + 7500.
		{"old price", "gpt-4o", day("2024-06-01"), Usage{PromptTokens: 1000, CompletionTokens: 500}, 12500, true},
		{"last second of the old price", "gpt-4o", day("2024-10-02").Add(-time.Second), Usage{PromptTokens: 1000, CompletionTokens: 500}, 12500, true},
		{"first second of the new price", "gpt-4o", day("2024-10-02"), Usage{PromptTokens: 1000, CompletionTokens: 500}, 7500, true},
		{"new price in another zone", "gpt-4o", day("2024-10-02").In(time.FixedZone("CEST", 2*3600)), Usage{PromptTokens: 1000, CompletionTokens: 500}, 7500, true},
		// o3 from 2025-04-16 to 2025-06-09: 10.00 in, 40.00 out.
		{"o3 before its price cut", "o3", day("2025-05-01"), Usage{PromptTokens: 100, CompletionTokens: 2000}, 81000, true},
		// gpt-3.5-turbo: 0.50 in, 1.50 out: 500 + 1500.
		{"azure spelling", "gpt-35-turbo", now, Usage{PromptTokens: 1000, CompletionTokens: 1000}, 2000, true},
		// gpt-3.5-turbo-16k: 3.00 in, 4.00 out.
		{"azure prefix and spelling", "azure/gpt-35-turbo-16k", now, Usage{PromptTokens: 1000, CompletionTokens: 1000}, 7000, true},
		{"dated snapshot", "gpt-4o-2024-11-20", now, Usage{PromptTokens: 1000, CompletionTokens: 500}, 7500, true},
		{"snapshot priced under its own name", "gpt-4o-2024-05-13", now, Usage{PromptTokens: 1000, CompletionTokens: 500}, 12500, true},
		// gpt-4: 30.00 in, 60.00 out.
		{"month-day snapshot", "gpt-4-0613", now, Usage{PromptTokens: 1000, CompletionTokens: 100}, 36000, true},
		// gpt-3.5-turbo-1106: 1.00 in, 2.00 out.
		{"month-day snapshot with its own price", "gpt-3.5-turbo-1106", now, Usage{PromptTokens: 1000, CompletionTokens: 1000}, 3000, true},
		// gpt-4 has no cached price: cached tokens at 30.00.
		{"no cached price", "gpt-4", now, Usage{PromptTokens: 1000, CachedPromptTokens: 1000}, 30000, true},
		// text-embedding-3-small: 0.02 in.
		{"embeddings", "text-embedding-3-small", now, Usage{PromptTokens: 1_000_000}, 20000, true},
		// text-embedding-3-large: 0.13 in. 12345 × 0.13 = 1604.85 → 1605.
		{"embeddings rounded", "text-embedding-3-large", now, Usage{PromptTokens: 12345}, 1605, true},
		// text-embedding-ada-002: 0.40 until 2023-06-13, 0.10 after.
		{"embeddings before a price cut", "text-embedding-ada-002", day("2023-01-01"), Usage{PromptTokens: 1000}, 400, true},
		{"embeddings after a price cut", "text-embedding-ada-002", now, Usage{PromptTokens: 1000}, 100, true},
		{"embeddings have no output price", "text-embedding-3-small", now, Usage{PromptTokens: 10, CompletionTokens: 1}, 0, false},
		// o1: 15.00 in, 60.00 out. 1e9 × 15 + 1e9 × 60 = 7.5e10 µ$ ($75,000).
		{"a billion tokens each way", "o1", now, Usage{PromptTokens: 1e9, CompletionTokens: 1e9}, 75_000_000_000, true},
		// 1e9 × 7.50 cached + 0 × 15.
		{"a billion cached tokens", "o1", now, Usage{PromptTokens: 1e9, CachedPromptTokens: 1e9}, 7_500_000_000, true},
		{"a cost beyond int64", "gpt-4-32k", now, Usage{PromptTokens: math.MaxInt64, CompletionTokens: math.MaxInt64}, 0, false},
		// Nonsense counts are clamped: cached beyond prompt is prompt, negatives are 0.
		{"cached beyond prompt", "gpt-4o", now, Usage{PromptTokens: 1000, CachedPromptTokens: 5000}, 1250, true},
		{"negative counts", "gpt-4o", now, Usage{PromptTokens: -5, CompletionTokens: -1, CachedPromptTokens: -3}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := c.Cost(tt.model, tt.at, tt.usage)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("Cost(%q, %s, %+v) = %d, %v; want %d, %v", tt.model, tt.at, tt.usage, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// TestNoOverflowUpToABillionTokens checks the 128-bit arithmetic against a
// simple int64 computation where the latter cannot overflow.
func TestNoOverflowUpToABillionTokens(t *testing.T) {
	c := mustDefault(t)
	for _, p := range c.Prices() {
		for _, n := range []int64{1, 999_999, 1e9} {
			u := Usage{PromptTokens: n, CachedPromptTokens: n / 3, CompletionTokens: n}
			if !p.HasOutput {
				u.CompletionTokens = 0
			}
			got, ok := p.Cost(u)
			num := (u.PromptTokens-u.CachedPromptTokens)*p.Input + u.CachedPromptTokens*p.CachedInput + u.CompletionTokens*p.Output
			if want := (num + 500_000) / 1_000_000; !ok || got != want {
				t.Errorf("%s from %s, %+v: Cost = %d, %v; want %d", p.Model, p.EffectiveFrom.Format(time.DateOnly), u, got, ok, want)
			}
		}
	}
}

func TestNormalise(t *testing.T) {
	tests := []struct {
		model string
		want  []string
	}{
		{"gpt-4o", []string{"gpt-4o"}},
		{" GPT-4o ", []string{"gpt-4o"}},
		{"gpt-4o-2024-08-06", []string{"gpt-4o-2024-08-06", "gpt-4o"}},
		{"gpt-4o-mini-2024-07-18", []string{"gpt-4o-mini-2024-07-18", "gpt-4o-mini"}},
		{"o1-2024-12-17", []string{"o1-2024-12-17", "o1"}},
		{"gpt-4-0613", []string{"gpt-4-0613", "gpt-4"}},
		{"gpt-3.5-turbo-0125", []string{"gpt-3.5-turbo-0125", "gpt-3.5-turbo"}},
		{"gpt-3.5-turbo-1106", []string{"gpt-3.5-turbo-1106", "gpt-3.5-turbo"}},
		{"gpt-4-32k-0314", []string{"gpt-4-32k-0314", "gpt-4-32k"}},
		// "-preview" is part of the name, with or without a date after it.
		{"gpt-4-turbo-preview", []string{"gpt-4-turbo-preview"}},
		{"gpt-4-1106-preview", []string{"gpt-4-1106-preview"}},
		{"o1-preview-2024-09-12", []string{"o1-preview-2024-09-12", "o1-preview"}},
		{"gpt-4o-realtime-preview-2024-12-17", []string{"gpt-4o-realtime-preview-2024-12-17", "gpt-4o-realtime-preview"}},
		// Not dates: left alone.
		{"gpt-4-32k", []string{"gpt-4-32k"}},
		{"text-embedding-3-small", []string{"text-embedding-3-small"}},
		{"model-2024-13-45", []string{"model-2024-13-45"}},
		{"model-1399", []string{"model-1399"}},
		{"model-0000", []string{"model-0000"}},
		{"model-20240806", []string{"model-20240806"}},
		// Azure.
		{"gpt-35-turbo", []string{"gpt-35-turbo", "gpt-3.5-turbo"}},
		{"gpt-35-turbo-16k", []string{"gpt-35-turbo-16k", "gpt-3.5-turbo-16k"}},
		{"gpt-35-turbo-0613", []string{"gpt-35-turbo-0613", "gpt-3.5-turbo-0613", "gpt-3.5-turbo"}},
		{"azure/gpt-4o", []string{"azure/gpt-4o", "gpt-4o"}},
		{"azure/gpt-35-turbo", []string{"azure/gpt-35-turbo", "gpt-35-turbo", "gpt-3.5-turbo"}},
		{"openai/gpt-4o-2024-08-06", []string{"openai/gpt-4o-2024-08-06", "gpt-4o-2024-08-06", "gpt-4o"}},
		{"azure/my-deployment", []string{"azure/my-deployment", "my-deployment"}},
		{"", []string{""}},
	}
	for _, tt := range tests {
		if got := Normalise(tt.model); !slices.Equal(got, tt.want) {
			t.Errorf("Normalise(%q) = %q, want %q", tt.model, got, tt.want)
		}
	}
}

func TestLookup(t *testing.T) {
	c := mustDefault(t)
	p, ok := c.Lookup("azure/gpt-4o-2024-11-20", now)
	want := Price{Model: "gpt-4o", EffectiveFrom: day("2024-10-02"), Input: 2_500_000, CachedInput: 1_250_000, HasCachedInput: true, Output: 10_000_000, HasOutput: true}
	if !ok || p != want {
		t.Errorf("Lookup = %+v, %v; want %+v", p, ok, want)
	}
	p, ok = c.Lookup("gpt-4", now)
	if !ok || p.HasCachedInput || p.CachedInput != p.Input {
		t.Errorf("gpt-4 has no cached price, so cached tokens cost the input price: %+v, %v", p, ok)
	}
	p, ok = c.Lookup("text-embedding-3-large", now)
	if !ok || p.HasOutput || p.Input != 130_000 {
		t.Errorf("text-embedding-3-large = %+v, %v", p, ok)
	}
	if _, ok := c.Lookup("gpt-4o", day("2024-05-12")); ok {
		t.Errorf("gpt-4o priced before its launch")
	}
}

// TestCatalogContents keeps the embedded catalog complete and sane.
func TestCatalogContents(t *testing.T) {
	c := mustDefault(t)
	if !regexp.MustCompile(`^\d{4}-\d{2}-\d{2}$`).MatchString(c.Version()) {
		t.Errorf("Version = %q, want a date", c.Version())
	}
	if !strings.Contains(c.Source(), "openai.com") {
		t.Errorf("Source = %q, want OpenAI's pricing page", c.Source())
	}
	chat := []string{"gpt-5", "gpt-5-mini", "gpt-5-nano", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
		"gpt-4o", "gpt-4o-mini", "o1", "o1-mini", "o3", "o3-mini", "o4-mini",
		"gpt-4-turbo", "gpt-4", "gpt-3.5-turbo"}
	for _, m := range chat {
		p, ok := c.Lookup(m, now)
		if !ok || !p.HasOutput || p.Input <= 0 || p.Output < p.Input || p.CachedInput > p.Input {
			t.Errorf("%s: %+v, %v", m, p, ok)
		}
	}
	for _, m := range []string{"text-embedding-3-small", "text-embedding-3-large", "text-embedding-ada-002"} {
		if p, ok := c.Lookup(m, now); !ok || p.HasOutput || p.Input <= 0 {
			t.Errorf("%s: %+v, %v", m, p, ok)
		}
	}
	for _, p := range c.Prices() {
		if p.Model != strings.ToLower(p.Model) || p.EffectiveFrom.After(now) {
			t.Errorf("entry %+v", p)
		}
	}
}

func TestDefaultIsShared(t *testing.T) {
	a, b := mustDefault(t), mustDefault(t)
	if a != b {
		t.Errorf("Default parsed the catalog twice")
	}
	if c, err := New(nil); err != nil || c != a {
		t.Errorf("New(nil) = %p, %v; want the default catalog %p", c, err, a)
	}
}

func TestOverrides(t *testing.T) {
	base := mustDefault(t)
	overrides := []config.Price{
		{Model: "gpt-4o", Input: "2.00", Output: "8.00", CachedInput: "0.50"},
		{Model: "my-model", Input: "1", Output: "3.5"},
		{Model: "azure/my-gpt4o", Input: "2.75", Output: "11", Effective: day("2025-01-01")},
		{Model: "Changing", Input: "1", Output: "1", Effective: day("2025-01-01")},
		{Model: "changing", Input: "2", Output: "2", Effective: day("2026-01-01")},
	}
	c, err := New(overrides)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		model  string
		at     time.Time
		usage  Usage
		want   int64
		wantOK bool
	}{
		// 600 × 2 + 400 × 0.5 + 500 × 8 = 1200 + 200 + 4000.
		{"replaced", "gpt-4o", now, Usage{PromptTokens: 1000, CachedPromptTokens: 400, CompletionTokens: 500}, 5400, true},
		// The override (from 1970) replaces the catalog's whole history.
		{"replaced history", "gpt-4o", day("2024-06-01"), Usage{PromptTokens: 1000}, 2000, true},
		{"replaced for dated snapshots too", "gpt-4o-2024-05-13", now, Usage{PromptTokens: 1000}, 2000, true},
		// 1000 × 1 + 1000 × 3.5; no cached price: cached at input.
		{"added", "my-model", now, Usage{PromptTokens: 1000, CachedPromptTokens: 500, CompletionTokens: 1000}, 4500, true},
		{"added under a provider prefix", "azure/my-gpt4o", now, Usage{PromptTokens: 1000, CompletionTokens: 1000}, 13750, true},
		{"added from a date", "azure/my-gpt4o", day("2024-12-31"), Usage{PromptTokens: 1000}, 0, false},
		{"added history, first", "changing", day("2025-06-01"), Usage{PromptTokens: 1000}, 1000, true},
		{"added history, second", "changing", now, Usage{PromptTokens: 1000}, 2000, true},
		{"untouched", "gpt-4o-mini", now, Usage{PromptTokens: 10}, 2, true},
	}
	for _, tt := range tests {
		got, ok := c.Cost(tt.model, tt.at, tt.usage)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: Cost(%q) = %d, %v; want %d, %v", tt.name, tt.model, got, ok, tt.want, tt.wantOK)
		}
	}
	// The default catalog is not changed.
	if got, _ := base.Cost("gpt-4o", now, Usage{PromptTokens: 1000}); got != 2500 {
		t.Errorf("default catalog changed: gpt-4o 1000 tokens = %d", got)
	}

	if !regexp.MustCompile(`^` + regexp.QuoteMeta(base.Version()) + `\+local\.[0-9a-f]{8}$`).MatchString(c.Version()) {
		t.Errorf("Version = %q, want %s+local.<8 hex>", c.Version(), base.Version())
	}
	if c.Source() != base.Source() {
		t.Errorf("Source changed")
	}

	// The version depends on the prices, not on how they are written or ordered.
	same := slices.Clone(overrides)
	slices.Reverse(same)
	same[len(same)-1].Input = "2.000000" // gpt-4o
	if c2, err := New(same); err != nil || c2.Version() != c.Version() {
		t.Errorf("equal overrides: version %q, %v; want %q", c2.Version(), err, c.Version())
	}
	other := slices.Clone(overrides)
	other[0].Output = "8.01"
	if c3, err := New(other); err != nil || c3.Version() == c.Version() {
		t.Errorf("other overrides: version %q, %v; want one different from %q", c3.Version(), err, c.Version())
	}
}

func TestOverrideErrors(t *testing.T) {
	for _, o := range [][]config.Price{
		{{Model: "", Input: "1", Output: "1"}},
		{{Model: "m", Input: "", Output: "1"}},
		{{Model: "m", Input: "1", Output: ""}},
		{{Model: "m", Input: "-1", Output: "1"}},
		{{Model: "m", Input: "1", Output: "1", CachedInput: "0.0000001"}},
		{{Model: "m", Input: "1", Output: "1"}, {Model: "M", Input: "2", Output: "2"}},
	} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded", o)
		}
	}
}

func TestParseUSD(t *testing.T) {
	good := map[string]int64{
		"2.50":                 2_500_000,
		"2.5":                  2_500_000,
		"0.075":                75_000,
		"10":                   10_000_000,
		"0":                    0,
		"0.000001":             1,
		"007.1":                7_100_000,
		"9223372036854.775807": math.MaxInt64,
	}
	for s, want := range good {
		if got, err := ParseUSD(s); err != nil || got != want {
			t.Errorf("ParseUSD(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "-1", "+1", "1e3", ".5", "5.", "1,000", " 2.5", "2.5 ", "0.0000001", "$2", "9223372036854.775808", "99999999999999999999"} {
		if got, err := ParseUSD(s); err == nil {
			t.Errorf("ParseUSD(%q) = %d, want an error", s, got)
		}
	}
}

func TestParseCatalogErrors(t *testing.T) {
	for _, data := range []string{
		`not json`,
		`{"version":"v","source":"s","prices":[],"extra":1}`,
		`{"source":"s","prices":[]}`,
		`{"version":"v","source":"s","prices":[{"model":"m","input":"1","effective_from":"2024-13-01"}]}`,
		`{"version":"v","source":"s","prices":[{"model":"m","input":"x","effective_from":"2024-01-01"}]}`,
		`{"version":"v","source":"s","prices":[{"model":"m","input":"1","effective_from":"2024-01-01"},{"model":"m","input":"2","effective_from":"2024-01-01"}]}`,
	} {
		if _, err := parseCatalog([]byte(data)); err == nil {
			t.Errorf("parseCatalog(%s) succeeded", data)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	c, err := New([]config.Price{{Model: "x", Input: "1", Output: "1"}})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	for range 8 {
		go func() {
			for range 1000 {
				if got, ok := c.Cost("gpt-4o-2024-08-06", now, Usage{PromptTokens: 1000}); !ok || got != 2500 {
					t.Errorf("Cost = %d, %v", got, ok)
				}
			}
			done <- true
		}()
	}
	for range 8 {
		<-done
	}
}

// TestConfigOverrides prices with overrides as the configuration loads them.
func TestConfigOverrides(t *testing.T) {
	cfg, err := config.Load("../config/testdata/good/trace_pricing.hcl", nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(cfg.Pricing)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		model string
		at    time.Time
		usage Usage
		want  int64
	}{
		// 5 in until 2024-10-02, then 2.50 in and 1.25 cached.
		{"gpt-4o", day("2024-06-01"), Usage{PromptTokens: 1000}, 5000},
		{"gpt-4o", now, Usage{PromptTokens: 1000, CachedPromptTokens: 1000}, 1250},
		// 0.4 in, 1.6 out (written as numbers).
		{"gpt-4.1-mini", now, Usage{PromptTokens: 1000, CompletionTokens: 1000}, 2000},
		// 2.750001 × 1e6 tokens = 2_750_001 µ$.
		{"azure/prod-gpt4o", now, Usage{PromptTokens: 1_000_000}, 2_750_001},
	}
	for _, tt := range tests {
		if got, ok := c.Cost(tt.model, tt.at, tt.usage); !ok || got != tt.want {
			t.Errorf("Cost(%q, %s) = %d, %v; want %d", tt.model, tt.at.Format(time.DateOnly), got, ok, tt.want)
		}
	}
}
