package main

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/store/backend"
)

// configError marks an invalid configuration.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }

func (c *cli) loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path, c.env)
	if err != nil {
		return nil, configError{err}
	}
	return cfg, nil
}

func (c *cli) logger(cfg *config.Config) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "loom",
		Level:      hclog.LevelFromString(cfg.Log.Level),
		JSONFormat: cfg.Log.Format == "json",
		Output:     c.stderr,
	})
}

// openStore opens the configured store and applies pending migrations.
func (c *cli) openStore(ctx context.Context, cfg *config.Config, log hclog.Logger) (store.Store, error) {
	st, err := backend.Open(ctx, cfg.Store.Driver, cfg.Store.DSN, cfg.Store.MaxConns, log.Named("store"))
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", cfg.Store.Driver, err)
	}
	if err := st.Migrate(ctx); err != nil {
		st.Close()
		return nil, fmt.Errorf("migrate %s store: %w", cfg.Store.Driver, err)
	}
	return st, nil
}

// withStore runs fn against the store of the config named by the flags.
// Admin commands log only warnings and errors, so their stdout stays clean.
func (c *cli) withStore(ctx context.Context, f *flags, fn func(st store.Store) error) error {
	cfg, err := c.loadConfig(*f.config)
	if err != nil {
		return err
	}
	log := c.logger(cfg)
	log.SetLevel(hclog.Warn)
	st, err := c.openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

func (c *cli) migrate(ctx context.Context, args []string) error {
	f := c.newFlags("migrate")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	return c.withStore(ctx, f, func(store.Store) error {
		fmt.Fprintln(c.stdout, "migrations applied")
		return nil
	})
}

func (c *cli) tenant(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("tenant needs a subcommand: create, list, disable, enable, delete")
	}
	sub, args := args[0], args[1:]
	f := c.newFlags("tenant " + sub)
	switch sub {
	case "create":
		pos, err := f.parse(args, 1, "NAME")
		if err != nil {
			return err
		}
		if err := validTenantName(pos[0]); err != nil {
			return err
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			t, err := st.CreateTenant(ctx, pos[0])
			if errors.Is(err, store.ErrConflict) {
				return fmt.Errorf("tenant %q already exists", pos[0])
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "created tenant %s (%s)\n", t.Name, t.ID)
			return nil
		})
	case "list":
		if _, err := f.parse(args, 0); err != nil {
			return err
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			ts, err := st.ListTenants(ctx)
			if err != nil {
				return err
			}
			shreds, err := st.TenantShreds(ctx)
			if err != nil {
				return err
			}
			pending := map[string]bool{}
			for _, sh := range shreds {
				pending[sh.TenantID] = sh.Pending()
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATUS\tCREATED\tID")
			for _, t := range ts {
				status := string(t.Status)
				if pending[t.ID] {
					status += " (shred pending: rotate the master key and destroy the old one)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, status, stamp(&t.CreatedAt), t.ID)
			}
			return tw.Flush()
		})
	case "disable", "enable":
		pos, err := f.parse(args, 1, "NAME")
		if err != nil {
			return err
		}
		status := store.TenantDisabled
		if sub == "enable" {
			status = store.TenantActive
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			t, err := tenantByName(ctx, st, pos[0])
			if err != nil {
				return err
			}
			if err := st.SetTenantStatus(ctx, t.ID, status); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "tenant %s is %s (running gateways notice within the auth cache TTL)\n", t.Name, status)
			return nil
		})
	case "delete":
		return c.deleteTenant(ctx, f, args)
	default:
		return usagef("unknown tenant subcommand %q", sub)
	}
}

func (c *cli) key(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("key needs a subcommand: create, list, revoke")
	}
	sub, args := args[0], args[1:]
	f := c.newFlags("key " + sub)
	switch sub {
	case "create":
		tenant := f.String("tenant", "", "tenant name (required)")
		label := f.String("label", "", "a label to recognise the key by")
		if _, err := f.parse(args, 0); err != nil {
			return err
		}
		if *tenant == "" {
			return usagef("key create needs --tenant NAME")
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			t, err := tenantByName(ctx, st, *tenant)
			if err != nil {
				return err
			}
			k, plain, err := auth.CreateKey(ctx, st, t.ID, *label)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "created key %s (%s…) for tenant %s; it is shown once, keep it now:\n%s\n",
				k.ID, k.Prefix, t.Name, plain)
			return nil
		})
	case "list":
		tenant := f.String("tenant", "", "tenant name (required)")
		if _, err := f.parse(args, 0); err != nil {
			return err
		}
		if *tenant == "" {
			return usagef("key list needs --tenant NAME")
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			t, err := tenantByName(ctx, st, *tenant)
			if err != nil {
				return err
			}
			keys, err := st.ListAPIKeys(ctx, t.ID)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tPREFIX\tLABEL\tCREATED\tLAST USED\tREVOKED")
			for _, k := range keys {
				fmt.Fprintf(tw, "%s\t%s…\t%s\t%s\t%s\t%s\n", k.ID, k.Prefix, k.Label,
					stamp(&k.CreatedAt), stamp(k.LastUsedAt), stamp(k.RevokedAt))
			}
			return tw.Flush()
		})
	case "revoke":
		pos, err := f.parse(args, 1, "ID")
		if err != nil {
			return err
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			k, err := st.RevokeAPIKey(ctx, pos[0], time.Now())
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("no API key has id %q", pos[0])
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked key %s (%s…) at %s (running gateways notice within the auth cache TTL)\n",
				k.ID, k.Prefix, stamp(k.RevokedAt))
			return nil
		})
	default:
		return usagef("unknown key subcommand %q", sub)
	}
}

func tenantByName(ctx context.Context, st store.Store, name string) (store.Tenant, error) {
	t, err := st.TenantByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return t, fmt.Errorf("no tenant is called %q", name)
	}
	return t, err
}

func validTenantName(name string) error {
	if err := auth.ValidateTenantName(name); err != nil {
		return usagef("%v", err)
	}
	return nil
}

func stamp(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
