package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/store"
)

// loadOrCreateDevKey reads the development master key at path, creating it
// (32 random bytes, base64, mode 0600) if it does not exist.
func loadOrCreateDevKey(path string) (key []byte, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, false, fmt.Errorf("create directory for dev master key: %w", err)
		}
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return nil, false, fmt.Errorf("generate dev master key: %w", err)
		}
		// O_EXCL: two first runs at once must not overwrite each other's key.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return loadOrCreateDevKey(path)
		}
		if err != nil {
			return nil, false, fmt.Errorf("create dev master key: %w", err)
		}
		_, werr := f.WriteString(base64.StdEncoding.EncodeToString(raw) + "\n")
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			return nil, false, fmt.Errorf("write dev master key: %w", err)
		}
		return raw, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read dev master key: %w", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		return nil, false, fmt.Errorf("read dev master key: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, false, fmt.Errorf("dev master key %s is readable by others (mode %v): run chmod 600 %s",
			path, info.Mode().Perm(), path)
	}
	key, err = config.DecodeMasterKey(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, false, fmt.Errorf("dev master key %s: %w", path, err)
	}
	return key, false, nil
}

// bootstrapDevTenant creates dev.bootstrap_tenant with a key when the store
// has no tenant at all, and prints the key: the first run of `make run`.
func (c *cli) bootstrapDevTenant(ctx context.Context, cfg *config.Config, st store.Store, log hclog.Logger) error {
	if cfg.Dev == nil || cfg.Dev.BootstrapTenant == "" {
		return nil
	}
	ts, err := st.ListTenants(ctx)
	if err != nil {
		return fmt.Errorf("bootstrap dev tenant: %w", err)
	}
	if len(ts) > 0 {
		return nil
	}
	t, err := st.CreateTenant(ctx, cfg.Dev.BootstrapTenant)
	if errors.Is(err, store.ErrConflict) {
		return nil // another process bootstrapped it first
	}
	if err != nil {
		return fmt.Errorf("bootstrap dev tenant: %w", err)
	}
	k, plain, err := auth.CreateKey(ctx, st, t.ID, "bootstrap")
	if err != nil {
		return fmt.Errorf("bootstrap dev tenant: %w", err)
	}
	log.Info("created development tenant", "tenant", t.Name, "key_id", k.ID, "key", k.Prefix)
	fmt.Fprintf(c.stdout, "\n"+
		"  First run: created tenant %q with this API key (shown once, keep it):\n\n"+
		"    %s\n\n"+
		"  Try it:  curl -H \"Authorization: Bearer %s\" http://%s/v1/models\n\n",
		t.Name, plain, plain, cfg.Listen)
	return nil
}
