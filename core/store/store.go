// Package store is Loom's persistence boundary: one interface, implemented
// by an embedded SQLite database (the zero-setup default) and by PostgreSQL.
//
// Every method that touches tenant data takes the tenant as a parameter and
// scopes its query by it; handlers never filter rows themselves.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors every implementation returns (wrapped) so callers can branch with errors.Is.
var (
	// ErrNotFound: the row does not exist (or is not visible to the tenant asked for).
	ErrNotFound = errors.New("not found")
	// ErrConflict: a unique constraint would be violated (duplicate tenant name, key hash).
	ErrConflict = errors.New("already exists")
	// ErrWrongMasterKey: a data key is wrapped, or a rotation starts, under
	// a master key that is not the store's current one (a retired key, or
	// another key altogether).
	ErrWrongMasterKey = errors.New("not the store's current master key")
)

// TenantStatus is the lifecycle state of a tenant.
type TenantStatus string

const (
	TenantActive   TenantStatus = "active"
	TenantDisabled TenantStatus = "disabled"
)

// Tenant is one customer or team whose traffic and traces are kept apart from
// every other tenant's.
type Tenant struct {
	ID        string // UUID
	Name      string
	Status    TenantStatus
	CreatedAt time.Time
}

// APIKey is the stored half of a tenant API key. The key itself is never
// stored: only its SHA-256 and a short display prefix.
type APIKey struct {
	ID         string // UUID
	TenantID   string
	Label      string
	Prefix     string   // e.g. "loom_4fQx9a"; enough to recognise a key in a list
	Hash       [32]byte // SHA-256 of the full key
	CreatedAt  time.Time
	LastUsedAt *time.Time
	RevokedAt  *time.Time
}

// KeyMatch is the result of looking a key hash up: the key row and its tenant.
type KeyMatch struct {
	Key    APIKey
	Tenant Tenant
}

// Store is implemented by store/sqlite and store/postgres. Implementations
// are safe for concurrent use.
type Store interface {
	// Migrate applies every embedded migration not yet applied. It is
	// idempotent and safe to call from several processes at once.
	Migrate(ctx context.Context) error
	// Ping reports whether the database is reachable.
	Ping(ctx context.Context) error
	// Close releases the connections.
	Close() error

	// CreateTenant creates an active tenant; ErrConflict if the name is taken.
	CreateTenant(ctx context.Context, name string) (Tenant, error)
	// TenantByName returns the tenant called name; ErrNotFound otherwise.
	TenantByName(ctx context.Context, name string) (Tenant, error)
	// ListTenants returns every tenant ordered by name.
	ListTenants(ctx context.Context) ([]Tenant, error)
	// SetTenantStatus changes a tenant's status; ErrNotFound if it does not exist.
	SetTenantStatus(ctx context.Context, tenantID string, status TenantStatus) error

	// CreateAPIKey stores a new key for k.TenantID. ID and CreatedAt are
	// filled in when empty. ErrConflict if the hash exists; ErrNotFound if the
	// tenant does not.
	CreateAPIKey(ctx context.Context, k APIKey) (APIKey, error)
	// ListAPIKeys returns the tenant's keys, newest first.
	ListAPIKeys(ctx context.Context, tenantID string) ([]APIKey, error)
	// RevokeAPIKey marks a key revoked (once; later calls keep the first
	// time). ErrNotFound if no key has that id.
	RevokeAPIKey(ctx context.Context, keyID string, at time.Time) (APIKey, error)
	// KeyByHash returns the key with that SHA-256 and its tenant, revoked or
	// not (the caller decides); ErrNotFound otherwise.
	KeyByHash(ctx context.Context, hash [32]byte) (KeyMatch, error)
	// TouchAPIKeys records last use for several keys at once (the auth layer
	// batches these so the hot path never writes).
	TouchAPIKeys(ctx context.Context, lastUsed map[string]time.Time) error

	TraceStore
	DashboardStore
}

// TenantDeleted is the status of a tenant deleted with its keys shredded:
// its traces stay (so history verifies) but can no longer be decrypted.
const TenantDeleted TenantStatus = "deleted"

// Sealed is one encrypted field of a trace: AES-256-GCM ciphertext (tag
// included) under the tenant's data key of KeyVersion (stored per trace),
// with its own random 96-bit nonce. A nil Ciphertext means the field is absent.
type Sealed struct {
	Nonce      []byte
	Ciphertext []byte
}

// Trace is one request as recorded: insert-only, idempotent on ID.
// Bodies are sealed; everything else is plaintext metadata for filtering.
type Trace struct {
	ID        string // UUIDv7, Loom's own (never a provider's id)
	TenantID  string
	RequestID string
	// Endpoint is "chat.completions", "embeddings", "models" or the path of an unknown endpoint.
	Endpoint         string
	Stream           bool
	RequestedModel   string
	UpstreamModel    string
	ProviderInstance string
	PluginName       string
	PluginVersion    string
	// Status names the outcome: ok, upstream_error, upstream_timeout,
	// upstream_unreachable, plugin_failure, client_disconnect,
	// stream_failure, rejected, shutdown.
	Status       string
	HTTPStatus   int
	ErrorMessage string

	// KeyVersion is the tenant data-key version the bodies are sealed with.
	KeyVersion int
	// Request is the request body exactly as received.
	Request Sealed
	// Response is the response body as returned (non-stream), or the SSE
	// stream as relayed to the client, byte for byte ("data: …\n\n" events).
	Response Sealed
	// Message is the assembled final message for display (stream only).
	Message Sealed

	// Token counts; nil when unknown.
	PromptTokens       *int64
	CompletionTokens   *int64
	TotalTokens        *int64
	CachedPromptTokens *int64
	ReasoningTokens    *int64
	// UsageSource is "provider", "estimated" or "none".
	UsageSource string
	// CostMicros is the cost in micro-dollars; nil when the model has no price.
	CostMicros   *int64
	PriceVersion string
	// ReportedModel is the model the upstream's answer names; "" when it
	// named none (or there was no answer).
	ReportedModel string
	// PricedModel is the name whose price gave CostMicros: ReportedModel,
	// or UpstreamModel when the catalog has no price for ReportedModel; ""
	// when CostMicros is nil.
	PricedModel string
	// RequestTruncated and ResponseTruncated: the sealed body is the start
	// of the body, cut at trace.max_body_bytes.
	RequestTruncated, ResponseTruncated bool

	// Latencies in microseconds. TTFB and upstream ones are nil when they did not happen.
	LatencyUS      int64
	TTFBUS         *int64
	UpstreamUS     *int64
	UpstreamTTFBUS *int64
	OverheadUS     int64
	ConfigHash     string
	CreatedAt      time.Time

	// Hash chain: each recorder instance chains its own traces.
	ChainID  string
	ChainSeq int64  // 1, 2, 3, … within the chain
	PrevHash []byte // Hash of the previous trace of the chain; 32 zero bytes for the first
	Hash     []byte // SHA-256 over PrevHash and the canonical encoding of this row
	// CanonicalVersion names the canonical encoding Hash was computed with
	// (core/trace: 1 for rows written before ReportedModel and PricedModel
	// existed, 2 since). At least 1.
	CanonicalVersion int
}

// TenantKey is one version of a tenant's data key, wrapped by the master key.
type TenantKey struct {
	TenantID  string
	Version   int
	Wrapped   []byte // AES-256-GCM ciphertext of the 32-byte data key
	Nonce     []byte
	CreatedAt time.Time
	// MasterKeyID identifies the master key that wraps it (seal.MasterKeyID:
	// 16 lower-case hex digits, never the key). Empty on rows written
	// before Loom recorded master keys; the first rotation sets it.
	MasterKeyID string
}

// MasterKey is a master key the store has seen, known by its identifier
// only. At most one is current (RetiredAt nil); every data key stored is
// wrapped under it.
type MasterKey struct {
	ID           string
	RegisteredAt time.Time
	// RetiredAt is when a rotation rewrapped every data key away from it.
	RetiredAt *time.Time
}

// TenantShred records the crypto-shredding of a tenant. Deleting the
// wrapped data keys does not erase them from database backups, WAL or
// (on PostgreSQL) dead rows, where they stay wrapped under the master key
// of the time; the shred is complete once that master key is retired by a
// rotation (and, what Loom cannot check, destroyed).
type TenantShred struct {
	TenantID string
	// ShreddedAt is nil for a tenant shredded before Loom recorded shreds
	// (KeyVersions and MasterKeyID are then unknown too).
	ShreddedAt *time.Time
	// KeyVersions is how many data key versions were deleted; a shred that
	// deleted none is complete at once.
	KeyVersions int
	// MasterKeyID wrapped the deleted keys; empty when not recorded.
	MasterKeyID string
	// CompletedAt is when the first master key rotation after the shred
	// retired that key; nil while the shred is pending.
	CompletedAt *time.Time
}

// Pending reports whether the shredded keys may still be recovered from a
// backup with the current master key.
func (s TenantShred) Pending() bool { return s.CompletedAt == nil }

// MasterKeyRotation is one master key rotation, written by RotateMasterKey
// in one transaction.
type MasterKeyRotation struct {
	From, To string // master key ids: the retiring key and its successor
	// Rewrapped is every stored key version, rewrapped under To
	// (MasterKeyID To). Only Wrapped, Nonce and MasterKeyID are written.
	Rewrapped []TenantKey
	// Added are new data key versions wrapped under To (optional).
	Added []TenantKey
	At    time.Time
}

// Chain summarises one recorder's hash chain.
type Chain struct {
	ID        string
	StartedAt time.Time
	Host      string
}

// Tombstone records trace rows removed by retention, so chains that lost
// their beginning still verify: the chain continues from LastHash.
type Tombstone struct {
	ID        string
	Partition string // what was dropped (PostgreSQL partition name, or a month on SQLite)
	ChainID   string
	Rows      int64
	FirstSeq  int64
	LastSeq   int64
	LastHash  []byte
	CreatedAt time.Time
}

// TraceStore is the append-only history. Every read of trace content is
// scoped by tenant, except the chain walk used by verification, which reads
// ciphertext and metadata only.
type TraceStore interface {
	// InsertTraces writes a batch in one transaction; rows whose ID exists
	// are skipped (a replay cannot duplicate). Returns how many were new.
	InsertTraces(ctx context.Context, traces []Trace) (int, error)
	// StartChain records a new recorder chain.
	StartChain(ctx context.Context, c Chain) error
	// Chains lists every chain, oldest first.
	Chains(ctx context.Context) ([]Chain, error)
	// ChainTraces returns up to limit traces of a chain with ChainSeq > afterSeq, in order.
	ChainTraces(ctx context.Context, chainID string, afterSeq int64, limit int) ([]Trace, error)
	// Trace returns one trace of the tenant; ErrNotFound for another tenant's id.
	Trace(ctx context.Context, tenantID, id string) (Trace, error)
	// CountTraces counts the tenant's traces.
	CountTraces(ctx context.Context, tenantID string) (int64, error)
	// TraceIDs lists the tenant's trace ids, oldest first (for tests and audits).
	TraceIDs(ctx context.Context, tenantID string) ([]string, error)

	// AddTenantKey stores a new key version; ErrConflict if that version
	// exists; ErrNotFound if the tenant does not exist or is deleted;
	// ErrWrongMasterKey unless k.MasterKeyID is the current master key. When
	// no master key is recorded yet, k.MasterKeyID becomes the current one.
	AddTenantKey(ctx context.Context, k TenantKey) error
	// TenantKeys returns the tenant's key versions, oldest first.
	TenantKeys(ctx context.Context, tenantID string) ([]TenantKey, error)
	// AllTenantKeys returns every tenant's key versions.
	AllTenantKeys(ctx context.Context) ([]TenantKey, error)
	// RotateMasterKey rewraps every data key under a new master key, in one
	// transaction that also adds r.Added, retires r.From, makes r.To
	// current and completes every pending shred; it returns the shreds it
	// completed. Nothing changes if it fails: ErrWrongMasterKey when r.From
	// is not the current master key, ErrConflict when r.To was used before
	// or r.Rewrapped is not exactly the stored key versions (a key was
	// added or deleted meanwhile) or an added version exists.
	RotateMasterKey(ctx context.Context, r MasterKeyRotation) ([]TenantShred, error)
	// MasterKeys lists the master keys the store has seen: the retired
	// ones in the order they were retired, then the current one.
	MasterKeys(ctx context.Context) ([]MasterKey, error)
	// ShredTenant deletes every key version of the tenant, marks it deleted
	// and records the shred (at: when; zero means now), in one transaction.
	// Its traces stay, unreadable once the shred completes. Shredding a
	// deleted tenant again changes nothing and returns the first record.
	ShredTenant(ctx context.Context, tenantID string, at time.Time) (TenantShred, error)
	// TenantShreds lists every shred: those recorded before Loom kept
	// their time first, then by time, ties by tenant id.
	TenantShreds(ctx context.Context) ([]TenantShred, error)

	// EnsurePartitions creates the trace partitions for the months up to
	// `ahead` after now (PostgreSQL; a no-op on SQLite).
	EnsurePartitions(ctx context.Context, now time.Time, ahead int) error
	// ApplyRetention removes every trace created before `before`, whole
	// months at a time, writing a tombstone per (partition, chain) first.
	ApplyRetention(ctx context.Context, before time.Time) ([]Tombstone, error)
	// Tombstones lists the tombstones, oldest first.
	Tombstones(ctx context.Context) ([]Tombstone, error)
}

// Scope says whose traces a dashboard query may see: one tenant, or — for
// the admin token only — every tenant. The zero Scope sees nothing.
type Scope struct {
	TenantID string
	All      bool
}

// TenantScope is the scope of one tenant.
func TenantScope(tenantID string) Scope { return Scope{TenantID: tenantID} }

// TraceFilter narrows a trace listing. Zero fields do not filter.
type TraceFilter struct {
	Model        string // requested model, exact
	Status       string
	Provider     string // provider instance
	Stream       *bool
	From, To     time.Time // created_at in [From, To)
	MinLatencyUS int64
}

// TraceCursor is a position in the newest-first order (created_at, id):
// a listing continues with the traces strictly before it, so new traces
// arriving meanwhile never shift a page.
type TraceCursor struct {
	CreatedAt time.Time
	ID        string
}

// TraceSummary is a trace without its bodies, for listings.
type TraceSummary struct {
	ID, TenantID, RequestID, Endpoint       string
	Stream                                  bool
	RequestedModel, UpstreamModel, Provider string
	Status                                  string
	HTTPStatus                              int
	ErrorMessage                            string
	PromptTokens, CompletionTokens          *int64
	TotalTokens, CachedPromptTokens         *int64
	UsageSource                             string
	CostMicros                              *int64
	LatencyUS, OverheadUS                   int64
	TTFBUS, UpstreamUS                      *int64
	CreatedAt                               time.Time
}

// Percentiles of a latency distribution, in microseconds.
type Percentiles struct{ P50, P95, P99 int64 }

// Aggregate is what the analytics report for a set of traces. Errors are
// traces whose status is not "ok".
type Aggregate struct {
	Requests, Errors                            int64
	PromptTokens, CompletionTokens, TotalTokens int64
	CachedPromptTokens                          int64
	CostMicros                                  int64 // sum over priced traces
	Latency, Overhead                           Percentiles
}

// ModelAggregate is an Aggregate for one requested model.
type ModelAggregate struct {
	Model string
	Aggregate
}

// Bucket is one interval of a time series.
type Bucket struct {
	Start                   time.Time
	Requests, Errors        int64
	TotalTokens, CostMicros int64
	LatencyP50, LatencyP95  int64 // microseconds
}

// DashboardStore answers the dashboard. Every method takes the scope and
// enforces it in the query itself; on PostgreSQL row-level security is a
// second wall (the scope is set per transaction).
type DashboardStore interface {
	// ListTraces returns up to limit summaries, newest first, strictly
	// before `before` when given.
	ListTraces(ctx context.Context, s Scope, f TraceFilter, before *TraceCursor, limit int) ([]TraceSummary, error)
	// TracesSince returns up to limit summaries created strictly after
	// `after`, oldest first (the live tail).
	TracesSince(ctx context.Context, s Scope, after TraceCursor, limit int) ([]TraceSummary, error)
	// ScopedTrace returns one whole trace within the scope; ErrNotFound otherwise.
	ScopedTrace(ctx context.Context, s Scope, id string) (Trace, error)
	// Summary aggregates the traces created in [from, to), overall and per
	// requested model, the models ordered by requests (most first), ties by name.
	Summary(ctx context.Context, s Scope, from, to time.Time) (Aggregate, []ModelAggregate, error)
	// Timeseries aggregates [from, to) in buckets of the given width (aligned to it, UTC).
	Timeseries(ctx context.Context, s Scope, from, to time.Time, bucket time.Duration) ([]Bucket, error)
}
