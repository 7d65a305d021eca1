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
}
