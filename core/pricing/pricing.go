// Package pricing holds Loom's versioned price catalog and computes the cost
// of a request from its token usage.
//
// The catalog ships embedded (catalog.json, with its version and the source
// of its prices); loom.hcl may add models or replace their prices, and the
// catalog's version then says so ("2026-11-21+local.1a2b3c4d"), so that a
// trace records which prices it was costed with.
//
// Money is integer micro-dollars (µ$, 1e-6 USD) throughout: prices are
// parsed exactly from their decimal strings into µ$ per 1M tokens and costs
// are computed with integer arithmetic, rounded once.
package pricing

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/bits"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/loom-runtime/loom/core/config"
)

//go:embed catalog.json
var catalogJSON []byte

// Price is what a model costs from a day on. Amounts are micro-dollars per
// 1M tokens: "2.50" US dollars per 1M tokens is 2_500_000.
type Price struct {
	// Model is the catalog name the price is listed under.
	Model string
	// EffectiveFrom is when the price starts to apply.
	EffectiveFrom time.Time
	// Input prices prompt tokens that were not served from the cache.
	Input int64
	// CachedInput prices cached prompt tokens. It equals Input when the
	// catalog lists no cached price (HasCachedInput false).
	CachedInput    int64
	HasCachedInput bool
	// Output prices completion tokens, reasoning tokens included. Embedding
	// models have none (HasOutput false): completion tokens then have no
	// price.
	Output    int64
	HasOutput bool
}

// Usage is the token usage of one request, as OpenAI reports it.
type Usage struct {
	// PromptTokens are all input tokens, cached ones included.
	PromptTokens int64
	// CompletionTokens are all output tokens, reasoning tokens included.
	CompletionTokens int64
	// CachedPromptTokens are the part of PromptTokens served from the
	// prompt cache (prompt_tokens_details.cached_tokens).
	CachedPromptTokens int64
}

// Cost returns the cost of u at p in micro-dollars:
//
//	((prompt − cached) × Input + cached × CachedInput + completion × Output) / 1e6
//
// rounded half up once, at the end. Negative counts are taken as 0 and
// cached tokens beyond the prompt tokens as the prompt tokens. ok is false
// when completion tokens are used but p has no output price, and when the
// cost does not fit in an int64 (above about 9.2 trillion dollars).
//
// Bounds: the products and their sum are computed in 128 bits, so every
// int64 token count and every price ParseUSD accepts is handled without
// overflow; 1e9 tokens at 1,000,000 USD per 1M tokens is 1e15 µ$, far from
// the int64 limit of about 9.2e18 µ$.
func (p Price) Cost(u Usage) (micros int64, ok bool) {
	prompt := max(u.PromptTokens, 0)
	cached := min(max(u.CachedPromptTokens, 0), prompt)
	completion := max(u.CompletionTokens, 0)
	if completion > 0 && !p.HasOutput {
		return 0, false
	}
	var sum uint128
	sum.addProduct(uint64(prompt-cached), uint64(p.Input))
	sum.addProduct(uint64(cached), uint64(p.CachedInput))
	sum.addProduct(uint64(completion), uint64(p.Output))
	sum.add(perMillion / 2) // round half up
	if sum.hi >= perMillion {
		return 0, false // the quotient would not fit in 64 bits
	}
	q, _ := bits.Div64(sum.hi, sum.lo, perMillion)
	if q > math.MaxInt64 {
		return 0, false
	}
	return int64(q), true
}

const perMillion = 1_000_000

// uint128 is an unsigned 128-bit accumulator.
type uint128 struct{ hi, lo uint64 }

func (u *uint128) add(x uint64) {
	var carry uint64
	u.lo, carry = bits.Add64(u.lo, x, 0)
	u.hi += carry
}

// addProduct adds a×b. Three products of int64 values stay below 2^128.
func (u *uint128) addProduct(a, b uint64) {
	hi, lo := bits.Mul64(a, b)
	var carry uint64
	u.lo, carry = bits.Add64(u.lo, lo, 0)
	u.hi += hi + carry
}

// Catalog is an immutable set of prices, safe for concurrent use.
type Catalog struct {
	version string
	source  string
	// prices maps a lower-case model name to its prices, oldest first.
	prices map[string][]Price
}

// Version identifies the prices: the embedded catalog's version, followed
// by "+local." and 8 hex digits of a hash of the overrides when loom.hcl
// has a pricing block.
func (c *Catalog) Version() string { return c.version }

// Source says where the embedded catalog's prices come from and when they
// were read.
func (c *Catalog) Source() string { return c.source }

// Prices returns every price in the catalog, by model and then date.
func (c *Catalog) Prices() []Price {
	var out []Price
	for _, model := range slices.Sorted(maps.Keys(c.prices)) {
		out = append(out, c.prices[model]...)
	}
	return out
}

// Lookup returns the price of model in force at t: the latest entry whose
// EffectiveFrom is not after t. The model is found as Normalise describes;
// ok is false when the catalog does not list it, or lists it only from
// after t.
func (c *Catalog) Lookup(model string, at time.Time) (Price, bool) {
	for _, name := range candidates(model) {
		history, found := c.prices[name]
		if !found {
			continue
		}
		// The first name the catalog knows decides: a dated snapshot listed
		// under its own name is never priced as its alias.
		for i := len(history) - 1; i >= 0; i-- {
			if !history[i].EffectiveFrom.After(at) {
				return history[i], true
			}
		}
		return Price{}, false
	}
	return Price{}, false
}

// Cost returns the cost in micro-dollars of a request to model at time at
// with usage u, or ok=false when the model has no price at that time (or
// see Price.Cost). An unknown cost is never reported as 0.
func (c *Catalog) Cost(model string, at time.Time, u Usage) (micros int64, ok bool) {
	p, ok := c.Lookup(model, at)
	if !ok {
		return 0, false
	}
	return p.Cost(u)
}

// Normalise returns the names model is looked up under, in order: the name
// as given (lower-cased, trimmed); without a provider prefix ("azure/",
// "openai/": everything up to the last "/"); with Azure's "gpt-35" spelled
// "gpt-3.5"; and without a dated snapshot suffix ("-2024-08-06", or
// "-0613"-style month and day). "-preview" is part of a name and stays,
// also when a date follows it ("o1-preview-2024-09-12" is "o1-preview").
func Normalise(model string) []string {
	return candidates(model)
}

var (
	isoDateSuffix = regexp.MustCompile(`-(\d{4})-(\d{2})-(\d{2})$`)
	mmddSuffix    = regexp.MustCompile(`-(\d{2})(\d{2})$`)
)

func candidates(model string) []string {
	name := strings.ToLower(strings.TrimSpace(model))
	out := []string{name}
	addIf := func(s string) {
		if s != "" && s != out[len(out)-1] {
			out = append(out, s)
		}
	}
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		name = name[i+1:]
		addIf(name)
	}
	if rest, ok := strings.CutPrefix(name, "gpt-35"); ok {
		name = "gpt-3.5" + rest
		addIf(name)
	}
	addIf(stripSnapshot(name))
	return out
}

// stripSnapshot removes a dated snapshot suffix from name, if it has one.
func stripSnapshot(name string) string {
	if m := isoDateSuffix.FindStringSubmatchIndex(name); m != nil {
		if _, err := time.Parse(time.DateOnly, name[m[2]:m[7]]); err == nil {
			return name[:m[0]]
		}
	}
	if m := mmddSuffix.FindStringSubmatch(name); m != nil {
		month, _ := strconv.Atoi(m[1])
		day, _ := strconv.Atoi(m[2])
		if month >= 1 && month <= 12 && day >= 1 && day <= 31 {
			return name[:len(name)-len(m[0])]
		}
	}
	return name
}

// catalogFile is the embedded catalog's format.
type catalogFile struct {
	Version string      `json:"version"`
	Source  string      `json:"source"`
	Notes   []string    `json:"notes"`
	Prices  []fileEntry `json:"prices"`
}

type fileEntry struct {
	Model         string `json:"model"`
	Input         string `json:"input"`
	CachedInput   string `json:"cached_input"`
	Output        string `json:"output"`
	EffectiveFrom string `json:"effective_from"`
	Note          string `json:"note"`
}

var defaultCatalog = sync.OnceValues(func() (*Catalog, error) {
	return parseCatalog(catalogJSON)
})

// Default returns the embedded catalog. It is parsed once and shared.
func Default() (*Catalog, error) {
	return defaultCatalog()
}

// New returns the embedded catalog with overrides applied. The overrides
// for a model replace all of the catalog's prices for it and for its dated
// snapshots (several overrides for one model, with different Effective
// days, make its price history); overrides for a model the catalog lacks
// add it. With overrides the version
// becomes "<catalog version>+local.<8 hex digits>", the digits taken from a
// SHA-256 of the overrides' values, so equal prices give equal versions
// however they are written or ordered.
func New(overrides []config.Price) (*Catalog, error) {
	base, err := Default()
	if err != nil {
		return nil, err
	}
	if len(overrides) == 0 {
		return base, nil
	}
	local := make(map[string][]Price)
	for i, o := range overrides {
		effective := o.Effective
		if effective.IsZero() {
			effective = time.Unix(0, 0)
		}
		p, err := newPrice(o.Model, o.Input, o.CachedInput, o.Output, effective.UTC())
		if err != nil {
			return nil, fmt.Errorf("pricing override %d (%s): %w", i, o.Model, err)
		}
		if !p.HasOutput {
			return nil, fmt.Errorf("pricing override %d (%s): output: required", i, o.Model)
		}
		local[p.Model] = append(local[p.Model], p)
	}
	c := &Catalog{source: base.source, prices: maps.Clone(base.prices)}
	// An override of a model also governs the catalog's dated snapshots of
	// it, which would otherwise keep the catalog's price by exact match.
	for model := range base.prices {
		if alias := stripSnapshot(model); alias != model && local[alias] != nil {
			delete(c.prices, model)
		}
	}
	var all []Price
	for model, history := range local {
		if err := sortHistory(history); err != nil {
			return nil, fmt.Errorf("pricing overrides: %w", err)
		}
		c.prices[model] = history
		all = append(all, history...)
	}
	c.version = base.version + "+local." + overridesHash(all)
	return c, nil
}

// overridesHash is 8 hex digits of a SHA-256 over the overrides' values in
// a canonical order.
func overridesHash(prices []Price) string {
	slices.SortFunc(prices, func(a, b Price) int {
		if a.Model != b.Model {
			return strings.Compare(a.Model, b.Model)
		}
		return a.EffectiveFrom.Compare(b.EffectiveFrom)
	})
	var b bytes.Buffer
	for _, p := range prices {
		cached := "-"
		if p.HasCachedInput {
			cached = strconv.FormatInt(p.CachedInput, 10)
		}
		fmt.Fprintf(&b, "%s\t%s\t%d\t%s\t%d\n", p.Model, p.EffectiveFrom.UTC().Format(time.RFC3339), p.Input, cached, p.Output)
	}
	sum := sha256.Sum256(b.Bytes())
	return hex.EncodeToString(sum[:4])
}

func parseCatalog(data []byte) (*Catalog, error) {
	var f catalogFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("price catalog: %w", err)
	}
	if f.Version == "" || f.Source == "" {
		return nil, errors.New("price catalog: version and source are required")
	}
	c := &Catalog{version: f.Version, source: f.Source, prices: make(map[string][]Price)}
	for i, e := range f.Prices {
		effective, err := time.Parse(time.DateOnly, e.EffectiveFrom)
		if err != nil {
			return nil, fmt.Errorf("price catalog: prices[%d] (%s): effective_from: want a date such as 2024-10-01, got %q", i, e.Model, e.EffectiveFrom)
		}
		p, err := newPrice(e.Model, e.Input, e.CachedInput, e.Output, effective)
		if err != nil {
			return nil, fmt.Errorf("price catalog: prices[%d] (%s): %w", i, e.Model, err)
		}
		c.prices[p.Model] = append(c.prices[p.Model], p)
	}
	for _, history := range c.prices {
		if err := sortHistory(history); err != nil {
			return nil, fmt.Errorf("price catalog: %w", err)
		}
	}
	return c, nil
}

// newPrice parses one entry. input is required; cached and output may be
// empty.
func newPrice(model, input, cached, output string, effective time.Time) (Price, error) {
	p := Price{Model: strings.ToLower(strings.TrimSpace(model)), EffectiveFrom: effective}
	if p.Model == "" {
		return Price{}, errors.New("model: required")
	}
	var err error
	if p.Input, err = ParseUSD(input); err != nil {
		return Price{}, fmt.Errorf("input: %w", err)
	}
	p.CachedInput = p.Input
	if cached != "" {
		if p.CachedInput, err = ParseUSD(cached); err != nil {
			return Price{}, fmt.Errorf("cached_input: %w", err)
		}
		p.HasCachedInput = true
	}
	if output != "" {
		if p.Output, err = ParseUSD(output); err != nil {
			return Price{}, fmt.Errorf("output: %w", err)
		}
		p.HasOutput = true
	}
	return p, nil
}

// sortHistory orders one model's prices by date, refusing two on one day.
func sortHistory(history []Price) error {
	slices.SortStableFunc(history, func(a, b Price) int { return a.EffectiveFrom.Compare(b.EffectiveFrom) })
	for i := 1; i < len(history); i++ {
		if history[i].EffectiveFrom.Equal(history[i-1].EffectiveFrom) {
			return fmt.Errorf("%s: two prices effective from %s", history[i].Model, history[i].EffectiveFrom.UTC().Format(time.DateOnly))
		}
	}
	return nil
}

// ParseUSD parses a non-negative decimal amount of US dollars with at most 6
// decimals ("2.50", "0.075", "10") into micro-dollars, exactly. Signs,
// exponents, separators and white space are refused. It is the parser the
// configuration validates the pricing block with, so a price loom.hcl
// accepts is one the catalog accepts.
func ParseUSD(s string) (int64, error) {
	return config.ParseUSD(s)
}
