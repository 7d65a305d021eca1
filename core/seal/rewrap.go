package seal

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

// RotateOptions tune RotateMaster.
type RotateOptions struct {
	// NewDataKeys also gives every tenant that has data keys a new version
	// (its latest + 1) wrapped under the new master key, in the same
	// transaction. A master key rotation alone keeps every data key: only
	// their wrapping changes.
	NewDataKeys bool
	// Now replaces time.Now (tests).
	Now func() time.Time
}

// Rotation is what RotateMaster did.
type Rotation struct {
	From, To    string // master key identifiers (MasterKeyID)
	Rewrapped   int    // data key versions rewrapped under To
	NewDataKeys int    // tenants given a new data key version
	// Completed are the pending shreds this rotation completed: the keys
	// they deleted were wrapped under From or an older master key, so once
	// From is destroyed no copy of them in a backup or WAL unwraps.
	Completed []store.TenantShred
}

// RotateMaster rotates the master key: it unwraps every tenant's every data
// key with oldMaster, wraps it with newMaster under a fresh nonce, and has
// the store write them all in one transaction (store.RotateMasterKey) that
// also retires oldMaster for good and completes every pending shred. With
// opts.NewDataKeys each tenant also gets a new data key version. The data
// keys themselves do not change otherwise, so no trace is touched and
// every trace still opens with a keyring on newMaster.
//
// If any key does not unwrap with oldMaster, RotateMaster fails with
// ErrUnwrap before writing anything; if the store knows oldMaster is not
// its current master key, with store.ErrWrongMasterKey. Run it with no
// Loom process serving: a process still on the old master key fails to
// unwrap keys it has not cached once they are rewrapped, and the store
// refuses the keys it would add (store.ErrWrongMasterKey); a key added
// between the read and the write makes the rotation fail (store.ErrConflict)
// rather than leave that key behind.
func RotateMaster(ctx context.Context, ks KeyStore, oldMaster, newMaster []byte, opts RotateOptions) (Rotation, error) {
	if ks == nil {
		return Rotation{}, errors.New("seal: rotate master key: nil key store")
	}
	om, err := loadMaster(oldMaster)
	if err != nil {
		return Rotation{}, fmt.Errorf("seal: rotate master key: old master key: %w", err)
	}
	nm, err := loadMaster(newMaster)
	if err != nil {
		return Rotation{}, fmt.Errorf("seal: rotate master key: new master key: %w", err)
	}
	if om.id == nm.id {
		return Rotation{}, fmt.Errorf("seal: rotate master key: the new master key is the old one (%s)", om.id)
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	rows, err := ks.AllTenantKeys(ctx)
	if err != nil {
		return Rotation{}, fmt.Errorf("seal: rotate master key: read keys: %w", err)
	}
	r := store.MasterKeyRotation{From: om.id, To: nm.id, Rewrapped: make([]store.TenantKey, 0, len(rows)), At: now().UTC()}
	latest := map[string]int{}
	for _, row := range rows {
		dk, err := om.unwrap(row.TenantID, row.Version, row.Wrapped, row.Nonce)
		if err != nil {
			if probe, perr := nm.unwrap(row.TenantID, row.Version, row.Wrapped, row.Nonce); perr == nil {
				clear(probe)
				return Rotation{}, fmt.Errorf("seal: rotate master key: nothing changed: tenant %s key v%d is already wrapped under the new master key (was the rotation already run?): %w",
					row.TenantID, row.Version, ErrUnwrap)
			}
			return Rotation{}, fmt.Errorf("seal: rotate master key: nothing changed: tenant %s key v%d: %w", row.TenantID, row.Version, ErrUnwrap)
		}
		wrapped, nonce, err := nm.wrap(row.TenantID, row.Version, dk)
		clear(dk)
		if err != nil {
			return Rotation{}, fmt.Errorf("seal: rotate master key: nothing changed: %w", err)
		}
		row.Wrapped, row.Nonce, row.MasterKeyID = wrapped, nonce, nm.id
		r.Rewrapped = append(r.Rewrapped, row)
		latest[row.TenantID] = max(latest[row.TenantID], row.Version)
	}
	if opts.NewDataKeys {
		for tenantID, v := range latest {
			row, err := newWrappedKey(nm, tenantID, v+1, r.At)
			if err != nil {
				return Rotation{}, fmt.Errorf("seal: rotate master key: nothing changed: %w", err)
			}
			r.Added = append(r.Added, row)
		}
	}
	done, err := ks.RotateMasterKey(ctx, r)
	if err != nil {
		return Rotation{}, fmt.Errorf("seal: rotate master key %s → %s: %w", om.id, nm.id, err)
	}
	return Rotation{From: om.id, To: nm.id, Rewrapped: len(r.Rewrapped), NewDataKeys: len(r.Added), Completed: done}, nil
}

// newWrappedKey creates a random data key and returns it wrapped under m as
// version v of the tenant.
func newWrappedKey(m master, tenantID string, v int, at time.Time) (store.TenantKey, error) {
	dk := make([]byte, KeySize)
	defer clear(dk)
	if _, err := rand.Read(dk); err != nil {
		return store.TenantKey{}, fmt.Errorf("new data key: %w", err)
	}
	wrapped, nonce, err := m.wrap(tenantID, v, dk)
	if err != nil {
		return store.TenantKey{}, err
	}
	return store.TenantKey{TenantID: tenantID, Version: v, Wrapped: wrapped, Nonce: nonce, CreatedAt: at, MasterKeyID: m.id}, nil
}
