package seal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

// memStore is an in-memory KeyStore with the semantics the store
// documents, plus counters; it lets the keyring logic be tested without a
// database and benchmarked without one.
type memStore struct {
	mu      sync.Mutex
	keys    map[string][]store.TenantKey
	deleted map[string]bool
	current string          // current master key id; "" before the first key
	retired map[string]bool // retired master key ids
	shreds  map[string]*store.TenantShred

	reads atomic.Int64 // TenantKeys calls
	down  atomic.Bool  // every call fails, as if the database were unreachable
}

var errDown = errors.New("database unreachable")

func newMemStore() *memStore {
	return &memStore{keys: map[string][]store.TenantKey{}, deleted: map[string]bool{},
		retired: map[string]bool{}, shreds: map[string]*store.TenantShred{}}
}

func cloneKey(k store.TenantKey) store.TenantKey {
	k.Wrapped = slices.Clone(k.Wrapped)
	k.Nonce = slices.Clone(k.Nonce)
	return k
}

func (m *memStore) AddTenantKey(_ context.Context, k store.TenantKey) error {
	if m.down.Load() {
		return errDown
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.current == "" && !m.retired[k.MasterKeyID] {
		m.current = k.MasterKeyID
	}
	if k.MasterKeyID != m.current {
		return fmt.Errorf("add tenant key: master key %s: %w", k.MasterKeyID, store.ErrWrongMasterKey)
	}
	if m.deleted[k.TenantID] {
		return fmt.Errorf("add tenant key: tenant %s is deleted: %w", k.TenantID, store.ErrNotFound)
	}
	for _, e := range m.keys[k.TenantID] {
		if e.Version == k.Version {
			return fmt.Errorf("add tenant key: %w", store.ErrConflict)
		}
	}
	m.keys[k.TenantID] = append(m.keys[k.TenantID], cloneKey(k))
	slices.SortFunc(m.keys[k.TenantID], func(a, b store.TenantKey) int { return a.Version - b.Version })
	return nil
}

func (m *memStore) TenantKeys(_ context.Context, tenantID string) ([]store.TenantKey, error) {
	m.reads.Add(1)
	if m.down.Load() {
		return nil, errDown
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.TenantKey
	for _, k := range m.keys[tenantID] {
		out = append(out, cloneKey(k))
	}
	return out, nil
}

func (m *memStore) AllTenantKeys(_ context.Context) ([]store.TenantKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.TenantKey
	for _, ks := range m.keys {
		for _, k := range ks {
			out = append(out, cloneKey(k))
		}
	}
	return out, nil
}

func (m *memStore) RotateMasterKey(_ context.Context, r store.MasterKeyRotation) ([]store.TenantShred, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	// Check everything first: all or nothing.
	if m.current != "" && m.current != r.From {
		return nil, fmt.Errorf("rotate: from %s: %w", r.From, store.ErrWrongMasterKey)
	}
	if r.To == r.From || r.To == m.current || m.retired[r.To] {
		return nil, fmt.Errorf("rotate: to %s: %w", r.To, store.ErrConflict)
	}
	n := 0
	for _, ks := range m.keys {
		n += len(ks)
	}
	if n != len(r.Rewrapped) {
		return nil, fmt.Errorf("rotate: %d keys stored, %d rewrapped: %w", n, len(r.Rewrapped), store.ErrConflict)
	}
	has := func(k store.TenantKey) bool {
		return slices.ContainsFunc(m.keys[k.TenantID], func(e store.TenantKey) bool { return e.Version == k.Version })
	}
	for _, k := range r.Rewrapped {
		if !has(k) || k.MasterKeyID != r.To {
			return nil, fmt.Errorf("rotate tenant %s v%d: %w", k.TenantID, k.Version, store.ErrConflict)
		}
	}
	for _, k := range r.Added {
		if has(k) || k.MasterKeyID != r.To || m.deleted[k.TenantID] {
			return nil, fmt.Errorf("rotate: add tenant %s v%d: %w", k.TenantID, k.Version, store.ErrConflict)
		}
	}
	for _, k := range r.Rewrapped {
		ks := m.keys[k.TenantID]
		for i := range ks {
			if ks[i].Version == k.Version {
				ks[i].Wrapped = slices.Clone(k.Wrapped)
				ks[i].Nonce = slices.Clone(k.Nonce)
				ks[i].MasterKeyID = k.MasterKeyID
			}
		}
	}
	for _, k := range r.Added {
		m.keys[k.TenantID] = append(m.keys[k.TenantID], cloneKey(k))
	}
	m.retired[r.From] = true
	m.current = r.To
	var done []store.TenantShred
	for _, sh := range m.shreds {
		if sh.CompletedAt == nil {
			at := r.At
			sh.CompletedAt = &at
			done = append(done, *sh)
		}
	}
	return done, nil
}

// ListTenants lists the deleted tenants (the only ones the keyring asks about).
func (m *memStore) ListTenants(_ context.Context) ([]store.Tenant, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []store.Tenant
	for id := range m.deleted {
		out = append(out, store.Tenant{ID: id, Name: id, Status: store.TenantDeleted})
	}
	return out, nil
}

func (m *memStore) ShredTenant(_ context.Context, tenantID string, at time.Time) (store.TenantShred, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if sh := m.shreds[tenantID]; sh != nil {
		return *sh, nil
	}
	sh := &store.TenantShred{TenantID: tenantID, ShreddedAt: &at, KeyVersions: len(m.keys[tenantID])}
	if sh.KeyVersions > 0 {
		sh.MasterKeyID = m.current
	} else {
		sh.CompletedAt = &at
	}
	m.shreds[tenantID] = sh
	delete(m.keys, tenantID)
	m.deleted[tenantID] = true
	return *sh, nil
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
