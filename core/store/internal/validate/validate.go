// Package validate holds the input checks and normalisations every store implementation shares.
package validate

import (
	"fmt"
	"time"

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
