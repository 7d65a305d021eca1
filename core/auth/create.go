package auth

import (
	"context"
	"fmt"

	"github.com/loom-runtime/loom/core/store"
)

// KeyCreator is the part of the store CreateKey needs.
type KeyCreator interface {
	CreateAPIKey(ctx context.Context, k store.APIKey) (store.APIKey, error)
}

// CreateKey makes a new key for the tenant and stores its hash and display
// prefix; the plain key is returned once and never stored. Store errors
// (store.ErrNotFound for an unknown tenant) are returned wrapped.
func CreateKey(ctx context.Context, st KeyCreator, tenantID, label string) (store.APIKey, string, error) {
	plain, err := NewKey()
	if err != nil {
		return store.APIKey{}, "", err
	}
	k, err := st.CreateAPIKey(ctx, store.APIKey{
		TenantID: tenantID, Label: label, Prefix: DisplayPrefix(plain), Hash: HashKey(plain),
	})
	if err != nil {
		return store.APIKey{}, "", fmt.Errorf("create key: %w", err)
	}
	return k, plain, nil
}

// ValidateTenantName reports why name cannot name a tenant: a tenant name
// has 1 to 64 characters, lower-case letters, digits, '-' and '_' (not
// first), so it is safe in URLs, logs and shell commands.
func ValidateTenantName(name string) error {
	if name == "" || len(name) > 64 {
		return fmt.Errorf("a tenant name has 1 to 64 characters")
	}
	for i, r := range name {
		ok := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || (i > 0 && (r == '-' || r == '_'))
		if !ok {
			return fmt.Errorf("tenant name %q: use lower-case letters, digits, '-' and '_' (not first)", name)
		}
	}
	return nil
}
