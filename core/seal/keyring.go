package seal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

// KeyStore is the part of the store the keyring needs (store.Store
// satisfies it).
type KeyStore interface {
	AddTenantKey(ctx context.Context, k store.TenantKey) error
	TenantKeys(ctx context.Context, tenantID string) ([]store.TenantKey, error)
	AllTenantKeys(ctx context.Context) ([]store.TenantKey, error)
	RotateMasterKey(ctx context.Context, r store.MasterKeyRotation) ([]store.TenantShred, error)
	ShredTenant(ctx context.Context, tenantID string, at time.Time) (store.TenantShred, error)
}

// tenantLister is optionally implemented by the KeyStore (store.Store does).
// The keyring uses it only to explain a refused key (see Keyring.deleted).
type tenantLister interface {
	ListTenants(ctx context.Context) ([]store.Tenant, error)
}

// DefaultRefresh is how long the keyring trusts what it last read of a
// tenant's keys before reading them again: a Rotate or Shred done by another
// Loom process is seen within this time.
const DefaultRefresh = 10 * time.Second

// retryInterval is how soon the store is asked again after a failed
// refresh, while the keys already cached stay in use.
const retryInterval = time.Second

// Option configures a Keyring.
type Option func(*Keyring)

// WithClock replaces time.Now (tests).
func WithClock(now func() time.Time) Option {
	return func(k *Keyring) { k.now = now }
}

// WithRefresh sets how long a tenant's key list is cached (DefaultRefresh
// if d <= 0).
func WithRefresh(d time.Duration) Option {
	return func(k *Keyring) {
		if d > 0 {
			k.refresh = d
		}
	}
}

// Keyring hands out tenants' data keys: it creates, unwraps and caches them
// and opens sealed fields. Safe for concurrent use, and by several Loom
// processes sharing one store.
//
// Cache: every tenant's key list (wrapped rows) is read from the store at
// most once per refresh interval, and each version is unwrapped at most once
// and kept, with its cipher, until the tenant is shredded. Current and Open
// on a cached tenant take no lock and allocate nothing but Open's output;
// when the interval has passed, one caller re-reads the store while the
// others keep using the cached keys. If the store cannot be read, cached
// keys stay in use (the store is retried about once a second); only what
// needs the store (a tenant's first key, Rotate, an uncached version)
// fails.
//
// Tenant ids are authenticated byte for byte: always pass them in the
// canonical form the store returns (lower-case UUID text).
type Keyring struct {
	master  master
	ks      KeyStore
	now     func() time.Time
	refresh time.Duration
	tenants sync.Map // tenant id → *tenantState
}

// tenantState is the keyring's view of one tenant.
type tenantState struct {
	// mu serialises every store access and cache change for the tenant, so
	// concurrent misses cost one store read and one unwrap, not many.
	mu sync.Mutex
	// sawKeys: some read found at least one key. A later read finding none
	// means another process shredded the tenant (keys are only ever deleted
	// by shredding). Guarded by mu.
	sawKeys bool
	// snap is replaced, never modified, so readers need no lock.
	snap atomic.Pointer[snapshot]
}

// snapshot is an immutable view of a tenant's keys.
type snapshot struct {
	expires  time.Time               // read the store again after this
	shredded bool                    // final: never expires
	rows     map[int]store.TenantKey // wrapped rows as last read
	keys     map[int]*TenantKey      // versions unwrapped so far
	latest   int                     // highest version in rows; 0: none
	current  *TenantKey              // keys[latest] once unwrapped
}

// NewKeyring returns a keyring whose data keys are wrapped under master (32
// bytes). master is not retained: the caller may zero it afterwards.
func NewKeyring(master []byte, ks KeyStore, opts ...Option) (*Keyring, error) {
	m, err := loadMaster(master)
	if err != nil {
		return nil, err
	}
	if ks == nil {
		return nil, errors.New("seal: nil key store")
	}
	k := &Keyring{master: m, ks: ks, now: time.Now, refresh: DefaultRefresh}
	for _, o := range opts {
		o(k)
	}
	return k, nil
}

// MasterKeyID returns the identifier of the keyring's master key
// (MasterKeyID).
func (k *Keyring) MasterKeyID() string { return k.master.id }

func (k *Keyring) state(tenantID string) *tenantState {
	if v, ok := k.tenants.Load(tenantID); ok {
		return v.(*tenantState)
	}
	v, _ := k.tenants.LoadOrStore(tenantID, new(tenantState))
	return v.(*tenantState)
}

// Current returns the tenant's current (highest) key version, creating
// version 1 on first use. Seal new traces with it and record its Version.
// A rotation done by another process is seen within the refresh interval.
// For a shredded tenant it fails with ErrShredded (which also matches
// ErrNoKey) and creates nothing.
func (k *Keyring) Current(ctx context.Context, tenantID string) (*TenantKey, error) {
	if tenantID == "" {
		return nil, errors.New("seal: current key: empty tenant id")
	}
	st := k.state(tenantID)
	if s := st.snap.Load(); s != nil {
		if s.shredded {
			return nil, shreddedError("current key", tenantID)
		}
		if s.current != nil {
			if k.now().Before(s.expires) {
				return s.current, nil
			}
			// Stale: refresh, unless another goroutine already is; then
			// keep using the cached key meanwhile rather than queue.
			if !st.mu.TryLock() {
				return s.current, nil
			}
		} else {
			st.mu.Lock()
		}
	} else {
		st.mu.Lock()
	}
	defer st.mu.Unlock()
	s, _, err := k.loadLocked(ctx, tenantID, st, false)
	if err != nil {
		return nil, err
	}
	if s.shredded {
		return nil, shreddedError("current key", tenantID)
	}
	if s.latest > 0 {
		_, tk, err := k.unwrapLocked(tenantID, st, s, s.latest)
		return tk, err
	}
	// No key yet: create version 1. If another process creates it first,
	// AddTenantKey fails with ErrConflict and its key is used instead.
	tk, err := k.addLocked(ctx, tenantID, st, s, 1)
	if !errors.Is(err, store.ErrConflict) {
		return tk, err
	}
	s, _, err = k.loadLocked(ctx, tenantID, st, true)
	if err != nil {
		return nil, err
	}
	if s.shredded || s.latest == 0 {
		return nil, fmt.Errorf("seal: current key: tenant %s: key v1 conflicted but no key is stored: %w", tenantID, ErrNoKey)
	}
	_, tk, err = k.unwrapLocked(tenantID, st, s, s.latest)
	return tk, err
}

// Rotate adds the tenant's next key version and returns it: this process
// seals with it from now on, other processes within the refresh interval.
// Older versions keep opening older traces. If another process adds the
// same version at the same moment, that version is used and returned.
func (k *Keyring) Rotate(ctx context.Context, tenantID string) (int, error) {
	if tenantID == "" {
		return 0, errors.New("seal: rotate: empty tenant id")
	}
	st := k.state(tenantID)
	st.mu.Lock()
	defer st.mu.Unlock()
	s, _, err := k.loadLocked(ctx, tenantID, st, true)
	if err != nil {
		return 0, err
	}
	if s.shredded {
		return 0, shreddedError("rotate", tenantID)
	}
	v := s.latest + 1
	tk, err := k.addLocked(ctx, tenantID, st, s, v)
	if err == nil {
		return tk.Version(), nil
	}
	if !errors.Is(err, store.ErrConflict) {
		return 0, err
	}
	s, _, err = k.loadLocked(ctx, tenantID, st, true)
	if err != nil {
		return 0, err
	}
	if s.shredded || s.latest < v {
		return 0, fmt.Errorf("seal: rotate: tenant %s: key v%d conflicted but is not stored: %w", tenantID, v, ErrNoKey)
	}
	if _, _, err := k.unwrapLocked(tenantID, st, s, s.latest); err != nil {
		return 0, err
	}
	return s.latest, nil
}

// Open decrypts a sealed field of a trace of tenantID sealed with key
// version (the trace's KeyVersion). An absent field (nil Ciphertext) opens
// to nil without error; an empty body opens to an empty, non-nil slice.
// Errors: ErrNoKey (and ErrShredded) when the key version does not exist,
// ErrOpen when the field fails authentication, ErrUnwrap when the key does
// not unwrap under the master key.
func (k *Keyring) Open(ctx context.Context, tenantID string, version int, traceID, field string, s store.Sealed) ([]byte, error) {
	if s.Ciphertext == nil {
		return nil, nil
	}
	tk, err := k.key(ctx, tenantID, version)
	if err != nil {
		return nil, err
	}
	out, err := tk.open(traceID, field, s)
	if err != nil {
		return nil, fmt.Errorf("seal: open tenant %s trace %s field %s (key v%d): %w", tenantID, traceID, field, version, err)
	}
	return out, nil
}

// key returns the tenant's key of version, reading the store when it is not
// cached, when the cache is stale, or when the version is newer than the
// cache knows (another process rotated).
func (k *Keyring) key(ctx context.Context, tenantID string, version int) (*TenantKey, error) {
	if tenantID == "" {
		return nil, errors.New("seal: open: empty tenant id")
	}
	if version < 1 {
		return nil, fmt.Errorf("seal: open: tenant %s key v%d: %w", tenantID, version, ErrNoKey)
	}
	st := k.state(tenantID)
	if s := st.snap.Load(); s != nil {
		if s.shredded {
			return nil, shreddedError("open", tenantID)
		}
		if tk := s.keys[version]; tk != nil {
			if k.now().Before(s.expires) {
				return tk, nil
			}
			if !st.mu.TryLock() { // another goroutine is refreshing
				return tk, nil
			}
		} else {
			st.mu.Lock()
		}
	} else {
		st.mu.Lock()
	}
	defer st.mu.Unlock()
	s, fresh, err := k.loadLocked(ctx, tenantID, st, false)
	if err != nil {
		return nil, err
	}
	if _, ok := s.rows[version]; !ok && !s.shredded && !fresh {
		if s, _, err = k.loadLocked(ctx, tenantID, st, true); err != nil {
			return nil, err
		}
	}
	if s.shredded {
		return nil, shreddedError("open", tenantID)
	}
	_, tk, err := k.unwrapLocked(tenantID, st, s, version)
	return tk, err
}

// Shred deletes every key version of the tenant from the store, marks the
// tenant deleted and records the shred (store.ShredTenant), then drops this
// keyring's cached keys. No key the store holds opens the tenant's traces
// any more, but copies of the deleted rows in backups and WAL still unwrap
// with this master key: the shred is pending (store.TenantShreds) until
// RotateMaster retires that key and the key is destroyed. Other keyrings
// (processes) notice within their refresh interval; until then they can
// still open traces of the tenant with keys they had cached.
func (k *Keyring) Shred(ctx context.Context, tenantID string) error {
	if tenantID == "" {
		return errors.New("seal: shred: empty tenant id")
	}
	st := k.state(tenantID)
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, err := k.ks.ShredTenant(ctx, tenantID, k.now()); err != nil {
		return fmt.Errorf("seal: shred tenant %s: %w", tenantID, err)
	}
	st.snap.Store(&snapshot{shredded: true})
	return nil
}

// loadLocked returns the tenant's snapshot, reading the store if the cached
// one is stale or force is set; fresh reports whether it was just read.
// st.mu must be held.
func (k *Keyring) loadLocked(ctx context.Context, tenantID string, st *tenantState, force bool) (s *snapshot, fresh bool, err error) {
	old := st.snap.Load()
	now := k.now()
	if old != nil && (old.shredded || (!force && now.Before(old.expires))) {
		return old, false, nil
	}
	rows, err := k.ks.TenantKeys(ctx, tenantID)
	if err != nil {
		if !force && old != nil && len(old.rows) > 0 {
			// The store is unreachable: keep sealing and opening with the
			// keys already known, and try the store again a little later.
			s = old.with(func(n *snapshot) { n.expires = now.Add(min(k.refresh, retryInterval)) })
			st.snap.Store(s)
			return s, false, nil
		}
		return nil, false, fmt.Errorf("seal: read keys of tenant %s: %w", tenantID, err)
	}
	if len(rows) == 0 && st.sawKeys {
		// Keys are only ever deleted by shredding.
		s = &snapshot{shredded: true}
		st.snap.Store(s)
		return s, true, nil
	}
	s = &snapshot{
		expires: now.Add(k.refresh),
		rows:    make(map[int]store.TenantKey, len(rows)),
		keys:    make(map[int]*TenantKey, len(rows)),
	}
	for _, r := range rows {
		if r.Version < 1 {
			continue
		}
		s.rows[r.Version] = r
		s.latest = max(s.latest, r.Version)
		// A version keeps its data key for life (a master key rotation
		// rewraps it, the key inside stays), so unwrapped keys carry over.
		if old != nil && old.keys[r.Version] != nil {
			s.keys[r.Version] = old.keys[r.Version]
		}
	}
	if len(s.rows) > 0 {
		st.sawKeys = true
	}
	s.current = s.keys[s.latest]
	st.snap.Store(s)
	return s, true, nil
}

// unwrapLocked returns version from s, unwrapping and caching it (in a new
// snapshot) if needed. st.mu must be held and s be st's current snapshot.
func (k *Keyring) unwrapLocked(tenantID string, st *tenantState, s *snapshot, version int) (*snapshot, *TenantKey, error) {
	if tk := s.keys[version]; tk != nil {
		return s, tk, nil
	}
	row, ok := s.rows[version]
	if !ok {
		return s, nil, fmt.Errorf("seal: tenant %s key v%d: %w", tenantID, version, ErrNoKey)
	}
	tk, err := k.master.unwrapKey(tenantID, row)
	if err != nil {
		return s, nil, err
	}
	return k.publishLocked(st, s, row, tk), tk, nil
}

// with returns a copy of s changed by f (maps copied, so f may modify them).
func (s *snapshot) with(f func(n *snapshot)) *snapshot {
	n := &snapshot{
		expires: s.expires,
		rows:    make(map[int]store.TenantKey, len(s.rows)+1),
		keys:    make(map[int]*TenantKey, len(s.keys)+1),
	}
	for v, r := range s.rows {
		n.rows[v] = r
	}
	for v, t := range s.keys {
		n.keys[v] = t
	}
	f(n)
	for v := range n.rows {
		n.latest = max(n.latest, v)
	}
	n.current = n.keys[n.latest]
	return n
}

// publishLocked stores a copy of s with row and its unwrapped key added.
func (k *Keyring) publishLocked(st *tenantState, s *snapshot, row store.TenantKey, tk *TenantKey) *snapshot {
	n := s.with(func(n *snapshot) {
		n.rows[row.Version] = row
		n.keys[row.Version] = tk
	})
	st.snap.Store(n)
	return n
}

// addLocked creates, wraps and stores data key version v of the tenant and
// caches it. The store's ErrConflict (version exists) is returned wrapped.
// st.mu must be held and s be st's current snapshot.
func (k *Keyring) addLocked(ctx context.Context, tenantID string, st *tenantState, s *snapshot, v int) (*TenantKey, error) {
	dk := make([]byte, KeySize)
	defer clear(dk)
	if _, err := rand.Read(dk); err != nil {
		return nil, fmt.Errorf("seal: new data key: %w", err)
	}
	wrapped, nonce, err := k.master.wrap(tenantID, v, dk)
	if err != nil {
		return nil, err
	}
	tk, err := newTenantKey(tenantID, v, dk)
	if err != nil {
		return nil, err
	}
	row := store.TenantKey{TenantID: tenantID, Version: v, Wrapped: wrapped, Nonce: nonce, CreatedAt: k.now().UTC(),
		MasterKeyID: k.master.id}
	if err := k.ks.AddTenantKey(ctx, row); err != nil {
		if errors.Is(err, store.ErrNotFound) && k.deleted(ctx, tenantID) {
			st.snap.Store(&snapshot{shredded: true})
			return nil, shreddedError("create key", tenantID)
		}
		if errors.Is(err, store.ErrWrongMasterKey) {
			return nil, fmt.Errorf("seal: store key v%d of tenant %s: master key %s is not the one the store's keys are wrapped under "+
				"(was it rotated away with keys rotate-master?): %w", v, tenantID, k.master.id, err)
		}
		return nil, fmt.Errorf("seal: store key v%d of tenant %s: %w", v, tenantID, err)
	}
	st.sawKeys = true
	k.publishLocked(st, s, row, tk)
	return tk, nil
}

// deleted reports whether the store lists the tenant as deleted. It runs
// only when the store refused a new key with ErrNotFound — the store refuses
// keys for a deleted tenant (and for an unknown one) — to tell the caller
// ErrShredded rather than a bare not-found.
func (k *Keyring) deleted(ctx context.Context, tenantID string) bool {
	tl, ok := k.ks.(tenantLister)
	if !ok {
		return false
	}
	ts, err := tl.ListTenants(ctx)
	if err != nil {
		return false
	}
	for _, t := range ts {
		if t.ID == tenantID {
			return t.Status == store.TenantDeleted
		}
	}
	return false
}
