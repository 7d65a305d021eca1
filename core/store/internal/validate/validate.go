// Package validate holds the input checks and normalisations every store implementation shares.
package validate

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
)

// ID returns the canonical lower-case form of a UUID string, and false when s
// is not a UUID (callers treat such an id as matching no row).
func ID(s string) (string, bool) {
	u, err := uuid.Parse(s)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// NewID returns a fresh random UUID in canonical form.
func NewID() string { return uuid.NewString() }

// Time returns t in UTC truncated to the microsecond, the precision every
// store keeps, so what a write returns equals what a later read returns.
func Time(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// TimePtr is Time for optional times.
func TimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	v := Time(*t)
	return &v
}

// Status reports an error unless s is a known tenant status.
func Status(s store.TenantStatus) error {
	switch s {
	case store.TenantActive, store.TenantDisabled:
		return nil
	}
	return fmt.Errorf("invalid tenant status %q", s)
}

// TenantName reports an error for a name no tenant may have.
func TenantName(name string) error {
	if name == "" {
		return fmt.Errorf("empty tenant name")
	}
	return nil
}

// HashLen is the length of a trace hash (SHA-256).
const HashLen = 32

// TraceColumns lists the traces columns, the same in both dialects, in the
// order each store's traceArgs writes them and its scanTrace reads them.
// Every store.Trace field has one column (Sealed fields two: nonce, ct).
const TraceColumns = `id, tenant_id, request_id, endpoint, stream, requested_model, upstream_model,
	provider_instance, plugin_name, plugin_version, status, http_status, error_message, key_version,
	request_nonce, request_ct, response_nonce, response_ct, message_nonce, message_ct,
	prompt_tokens, completion_tokens, total_tokens, cached_prompt_tokens, reasoning_tokens,
	usage_source, cost_micros, price_version, reported_model, priced_model,
	request_truncated, response_truncated, latency_us, ttfb_us, upstream_us, upstream_ttfb_us,
	overhead_us, config_hash, created_at, chain_id, chain_seq, prev_hash, hash, canonical_version`

// TraceColumnNames is TraceColumns as a slice.
var TraceColumnNames = func() []string {
	names := strings.Split(TraceColumns, ",")
	for i := range names {
		names[i] = strings.TrimSpace(names[i])
	}
	return names
}()

// IsTraceColumn reports whether name is one of TraceColumns.
func IsTraceColumn(name string) bool { return slices.Contains(TraceColumnNames, name) }

// Trace checks a trace before insertion and returns it normalised: canonical
// (lower-case) ids and CreatedAt in UTC at microsecond precision. Nothing
// else changes; a caller that hashes rows in that form (as the recorder
// does) reads back exactly what it hashed. Text fields must be valid UTF-8
// without NUL bytes, so that both stores keep them.
func Trace(t store.Trace) (store.Trace, error) {
	id, ok := ID(t.ID)
	if !ok {
		return t, fmt.Errorf("trace id %q is not a UUID", t.ID)
	}
	tenant, ok := ID(t.TenantID)
	if !ok {
		return t, fmt.Errorf("trace %s: tenant id %q is not a UUID", id, t.TenantID)
	}
	chain, ok := ID(t.ChainID)
	if !ok {
		return t, fmt.Errorf("trace %s: chain id %q is not a UUID", id, t.ChainID)
	}
	t.ID, t.TenantID, t.ChainID = id, tenant, chain
	if t.ChainSeq < 1 {
		return t, fmt.Errorf("trace %s: chain sequence %d, want >= 1", t.ID, t.ChainSeq)
	}
	if len(t.PrevHash) != HashLen || len(t.Hash) != HashLen {
		return t, fmt.Errorf("trace %s: prev hash is %d bytes and hash %d, want %d", t.ID, len(t.PrevHash), len(t.Hash), HashLen)
	}
	if t.CreatedAt.IsZero() {
		return t, fmt.Errorf("trace %s: zero CreatedAt", t.ID)
	}
	if t.CanonicalVersion < 1 {
		return t, fmt.Errorf("trace %s: canonical version %d, want >= 1", t.ID, t.CanonicalVersion)
	}
	for _, f := range []struct{ name, v string }{
		{"request id", t.RequestID}, {"endpoint", t.Endpoint}, {"requested model", t.RequestedModel},
		{"upstream model", t.UpstreamModel}, {"provider instance", t.ProviderInstance},
		{"plugin name", t.PluginName}, {"plugin version", t.PluginVersion}, {"status", t.Status},
		{"error message", t.ErrorMessage}, {"usage source", t.UsageSource},
		{"price version", t.PriceVersion}, {"reported model", t.ReportedModel},
		{"priced model", t.PricedModel}, {"config hash", t.ConfigHash},
	} {
		if err := Text(f.v); err != nil {
			return t, fmt.Errorf("trace %s: %s: %w", t.ID, f.name, err)
		}
	}
	t.CreatedAt = Time(t.CreatedAt)
	return t, nil
}

// Text reports an error unless s can be stored as text by every store:
// valid UTF-8 without NUL bytes (PostgreSQL's text type refuses both).
func Text(s string) error {
	if !utf8.ValidString(s) {
		return errors.New("not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return errors.New("contains a NUL byte")
	}
	return nil
}

// Traces applies Trace to a batch, returning a new slice.
func Traces(in []store.Trace) ([]store.Trace, error) {
	out := make([]store.Trace, len(in))
	for i, t := range in {
		var err error
		if out[i], err = Trace(t); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// TenantKey checks a key version and returns it normalised (a zero
// CreatedAt becomes now).
func TenantKey(k store.TenantKey) (store.TenantKey, error) {
	raw := k.TenantID
	var ok bool
	if k.TenantID, ok = ID(k.TenantID); !ok {
		return k, fmt.Errorf("tenant %q: %w", raw, store.ErrNotFound)
	}
	if k.Version < 1 {
		return k, fmt.Errorf("tenant %s: key version %d, want >= 1", k.TenantID, k.Version)
	}
	if len(k.Wrapped) == 0 || len(k.Nonce) == 0 {
		return k, fmt.Errorf("tenant %s key version %d: empty wrapped key or nonce", k.TenantID, k.Version)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	k.CreatedAt = Time(k.CreatedAt)
	if !MasterKeyID(k.MasterKeyID) {
		return k, fmt.Errorf("tenant %s key version %d: master key id %q is not 16 lower-case hex digits", k.TenantID, k.Version, k.MasterKeyID)
	}
	return k, nil
}

// MasterKeyID reports whether s has the form of a master key identifier:
// 16 lower-case hex digits.
func MasterKeyID(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// SameVersions reports an ErrConflict error unless want holds exactly the
// (tenant, version) pairs of stored: the keys a rotation rewraps must be
// every key stored when it commits.
func SameVersions(stored, want []store.TenantKey) error {
	type tv struct {
		tenant  string
		version int
	}
	in := make(map[tv]bool, len(want))
	for _, k := range want {
		in[tv{k.TenantID, k.Version}] = true
	}
	for _, k := range stored {
		if !in[tv{k.TenantID, k.Version}] {
			return fmt.Errorf("tenant %s key version %d is stored but not rewrapped (a key was added meanwhile; run the rotation again with no Loom serving): %w",
				k.TenantID, k.Version, store.ErrConflict)
		}
	}
	if len(stored) != len(want) {
		return fmt.Errorf("%d key versions rewrapped, %d stored (a tenant was shredded meanwhile?): %w", len(want), len(stored), store.ErrConflict)
	}
	return nil
}

// SortShreds puts shreds in store.TenantShreds order: those of unknown
// time first, then by time, ties by tenant id.
func SortShreds(sh []store.TenantShred) {
	slices.SortFunc(sh, func(a, b store.TenantShred) int {
		switch {
		case a.ShreddedAt == nil && b.ShreddedAt != nil:
			return -1
		case a.ShreddedAt != nil && b.ShreddedAt == nil:
			return 1
		case a.ShreddedAt != nil && !a.ShreddedAt.Equal(*b.ShreddedAt):
			return a.ShreddedAt.Compare(*b.ShreddedAt)
		}
		return strings.Compare(a.TenantID, b.TenantID)
	})
}

// Rotation checks a master key rotation and returns it normalised: every
// key valid and wrapped under r.To, no (tenant, version) twice, At in the
// stores' precision (a zero At becomes now).
func Rotation(r store.MasterKeyRotation) (store.MasterKeyRotation, error) {
	if !MasterKeyID(r.From) || !MasterKeyID(r.To) {
		return r, fmt.Errorf("master key ids %q → %q: want 16 lower-case hex digits each", r.From, r.To)
	}
	if r.From == r.To {
		return r, fmt.Errorf("master key %s: the new master key is the old one: %w", r.To, store.ErrConflict)
	}
	if r.At.IsZero() {
		r.At = time.Now()
	}
	r.At = Time(r.At)
	type tv struct {
		tenant  string
		version int
	}
	seen := make(map[tv]bool, len(r.Rewrapped)+len(r.Added))
	norm := func(in []store.TenantKey) ([]store.TenantKey, error) {
		out := make([]store.TenantKey, len(in))
		for i, k := range in {
			k, err := TenantKey(k)
			if err != nil {
				return nil, err
			}
			if k.MasterKeyID != r.To {
				return nil, fmt.Errorf("tenant %s key version %d: wrapped under master key %s, not the new one %s", k.TenantID, k.Version, k.MasterKeyID, r.To)
			}
			if seen[tv{k.TenantID, k.Version}] {
				return nil, fmt.Errorf("tenant %s key version %d: given twice: %w", k.TenantID, k.Version, store.ErrConflict)
			}
			seen[tv{k.TenantID, k.Version}] = true
			out[i] = k
		}
		return out, nil
	}
	var err error
	if r.Rewrapped, err = norm(r.Rewrapped); err != nil {
		return r, err
	}
	if r.Added, err = norm(r.Added); err != nil {
		return r, err
	}
	return r, nil
}

// Chain checks a chain and returns it normalised (a zero StartedAt becomes now).
func Chain(c store.Chain) (store.Chain, error) {
	raw := c.ID
	var ok bool
	if c.ID, ok = ID(c.ID); !ok {
		return c, fmt.Errorf("chain id %q is not a UUID", raw)
	}
	if c.StartedAt.IsZero() {
		c.StartedAt = time.Now()
	}
	c.StartedAt = Time(c.StartedAt)
	return c, nil
}

// NewTimeID returns a fresh UUIDv7 (time-ordered) in canonical form.
func NewTimeID() string {
	u, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return u.String()
}

// MonthStart returns the first instant of t's calendar month, UTC.
func MonthStart(t time.Time) time.Time {
	t = t.UTC()
	return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// RetentionCutoff returns the instant before which retention removes traces
// when asked to remove those created before `before`: only whole months are
// removed, so it is the start of before's month (before itself when it is
// the first instant of a month).
func RetentionCutoff(before time.Time) time.Time { return MonthStart(before) }

// PartitionName is the PostgreSQL trace partition holding the month that
// starts at month: traces_yYYYYmMM.
func PartitionName(month time.Time) string {
	month = month.UTC()
	return fmt.Sprintf("traces_y%04dm%02d", month.Year(), int(month.Month()))
}

// ParsePartitionName is the inverse of PartitionName.
func ParsePartitionName(name string) (time.Time, bool) {
	var y, m int
	if len(name) != len("traces_y0000m00") {
		return time.Time{}, false
	}
	if _, err := fmt.Sscanf(name, "traces_y%4dm%2d", &y, &m); err != nil || m < 1 || m > 12 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(m), 1, 0, 0, 0, 0, time.UTC)
	if PartitionName(t) != name {
		return time.Time{}, false
	}
	return t, true
}

// MonthLabel names the month starting at month as SQLite tombstones do: YYYY-MM.
func MonthLabel(month time.Time) string {
	month = month.UTC()
	return fmt.Sprintf("%04d-%02d", month.Year(), int(month.Month()))
}
