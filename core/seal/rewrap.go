package seal

import (
	"context"
	"errors"
	"fmt"

	"github.com/loom-runtime/loom/core/store"
)

// RewrapAll rotates the master key: it unwraps every tenant's every data key
// with oldMaster, wraps it with newMaster under a fresh nonce, and writes
// them all in one RewrapTenantKeys call (one transaction). It returns the
// number of keys rewrapped. The data keys themselves do not change, so no
// trace is touched and every trace still opens with a keyring on newMaster.
//
// If any key does not unwrap with oldMaster, RewrapAll fails with ErrUnwrap
// before writing anything. Run it with no Loom process serving: a process
// still on the old master key could add a key after the keys were read (it
// would stay wrapped under the old key), and would fail to unwrap keys it
// has not cached yet once they are rewrapped.
func RewrapAll(ctx context.Context, ks KeyStore, oldMaster, newMaster []byte) (int, error) {
	if ks == nil {
		return 0, errors.New("seal: rewrap: nil key store")
	}
	om, err := loadMaster(oldMaster)
	if err != nil {
		return 0, fmt.Errorf("seal: rewrap: old master key: %w", err)
	}
	nm, err := loadMaster(newMaster)
	if err != nil {
		return 0, fmt.Errorf("seal: rewrap: new master key: %w", err)
	}
	rows, err := ks.AllTenantKeys(ctx)
	if err != nil {
		return 0, fmt.Errorf("seal: rewrap: read keys: %w", err)
	}
	out := make([]store.TenantKey, 0, len(rows))
	for _, r := range rows {
		dk, err := om.unwrap(r.TenantID, r.Version, r.Wrapped, r.Nonce)
		if err != nil {
			if probe, perr := nm.unwrap(r.TenantID, r.Version, r.Wrapped, r.Nonce); perr == nil {
				clear(probe)
				return 0, fmt.Errorf("seal: rewrap: nothing changed: tenant %s key v%d is already wrapped under the new master key (was RewrapAll already run?): %w",
					r.TenantID, r.Version, ErrUnwrap)
			}
			return 0, fmt.Errorf("seal: rewrap: nothing changed: tenant %s key v%d: %w", r.TenantID, r.Version, ErrUnwrap)
		}
		wrapped, nonce, err := nm.wrap(r.TenantID, r.Version, dk)
		clear(dk)
		if err != nil {
			return 0, fmt.Errorf("seal: rewrap: nothing changed: %w", err)
		}
		r.Wrapped, r.Nonce = wrapped, nonce
		out = append(out, r)
	}
	if len(out) == 0 {
		return 0, nil
	}
	if err := ks.RewrapTenantKeys(ctx, out); err != nil {
		return 0, fmt.Errorf("seal: rewrap: write %d keys: %w", len(out), err)
	}
	return len(out), nil
}
