package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/trace"
)

// errVerifyFailed makes `loom verify` exit 1 after printing its report.
var errVerifyFailed = errors.New("history does not verify")

// verify walks every hash chain and reports the first break of each.
func (c *cli) verify(ctx context.Context, args []string) error {
	f := c.newFlags("verify")
	tenant := f.String("tenant", "", "only report chains holding this tenant's traces")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	return c.withStore(ctx, f, func(st store.Store) error {
		tenantID := ""
		if *tenant != "" {
			t, err := tenantByName(ctx, st, *tenant)
			if err != nil {
				return err
			}
			tenantID = t.ID
		}
		reports, err := trace.Verify(ctx, st, tenantID)
		if err != nil {
			return err
		}
		var traces, broken int64
		for _, r := range reports {
			traces += r.Traces
			from := ""
			if r.Tombstone {
				from = " (continuing after a retention tombstone)"
			}
			if r.Break != nil {
				broken++
				fmt.Fprintf(c.stdout, "chain %s: BROKEN after %d good traces%s: %s\n", r.ChainID, r.Traces, from, r.Break)
				continue
			}
			fmt.Fprintf(c.stdout, "chain %s: %d traces verified%s\n", r.ChainID, r.Traces, from)
		}
		if broken > 0 {
			fmt.Fprintf(c.stdout, "FAILED: %d of %d chains are broken\n", broken, len(reports))
			return errVerifyFailed
		}
		fmt.Fprintf(c.stdout, "OK: %d chains, %d traces verified\n", len(reports), traces)
		return nil
	})
}

// keys manages encryption keys.
func (c *cli) keys(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usagef("keys needs a subcommand: rotate-master, rotate")
	}
	sub, args := args[0], args[1:]
	f := c.newFlags("keys " + sub)
	switch sub {
	case "rotate-master":
		if _, err := f.parse(args, 0); err != nil {
			return err
		}
		old, ok := c.env("LOOM_OLD_MASTER_KEY")
		if !ok || old == "" {
			return usagef("keys rotate-master needs the current key in LOOM_OLD_MASTER_KEY and the new one in LOOM_MASTER_KEY")
		}
		oldKey, err := config.DecodeMasterKey(old)
		if err != nil {
			return fmt.Errorf("LOOM_OLD_MASTER_KEY: %w", err)
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			cfg, _ := c.loadConfig(*f.config)
			if cfg.MasterKey == nil {
				return usagef("keys rotate-master needs the new key in LOOM_MASTER_KEY")
			}
			n, err := seal.RewrapAll(ctx, st, oldKey, cfg.MasterKey)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "rewrapped %d tenant data keys under the new master key; traces were not touched\n", n)
			return nil
		})
	case "rotate":
		tenant := f.String("tenant", "", "tenant name (required)")
		if _, err := f.parse(args, 0); err != nil {
			return err
		}
		if *tenant == "" {
			return usagef("keys rotate needs --tenant NAME")
		}
		return c.withStore(ctx, f, func(st store.Store) error {
			kr, err := c.keyring(*f.config, st)
			if err != nil {
				return err
			}
			t, err := tenantByName(ctx, st, *tenant)
			if err != nil {
				return err
			}
			v, err := kr.Rotate(ctx, t.ID)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "tenant %s: new traces use data key version %d; older traces stay readable\n", t.Name, v)
			return nil
		})
	default:
		return usagef("unknown keys subcommand %q", sub)
	}
}

// keyring opens the keyring with the master key from the environment (or,
// in development, the dev key file).
func (c *cli) keyring(path string, st store.Store) (*seal.Keyring, error) {
	cfg, err := c.loadConfig(path)
	if err != nil {
		return nil, err
	}
	key := cfg.MasterKey
	if key == nil && cfg.Dev != nil && cfg.Dev.MasterKeyFile != "" {
		if key, _, err = loadOrCreateDevKey(cfg.Dev.MasterKeyFile); err != nil {
			return nil, err
		}
	}
	if key == nil {
		return nil, errors.New("LOOM_MASTER_KEY is not set")
	}
	return seal.NewKeyring(key, st)
}

// deleteTenant crypto-shreds a tenant: its data keys are destroyed, its
// traces stay (history still verifies) but can never be decrypted again.
func (c *cli) deleteTenant(ctx context.Context, f *flags, args []string) error {
	shred := f.Bool("shred", false, "destroy the tenant's data keys (required: there is no other kind of delete)")
	pos, err := f.parse(args, 1, "NAME")
	if err != nil {
		return err
	}
	if !*shred {
		return usagef("tenant delete needs --shred: it destroys the tenant's data keys, making its traces unreadable forever")
	}
	return c.withStore(ctx, f, func(st store.Store) error {
		t, err := tenantByName(ctx, st, pos[0])
		if err != nil {
			return err
		}
		if err := st.ShredTenant(ctx, t.ID); err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "tenant %s deleted: its data keys are destroyed and its traces can no longer be decrypted; history still verifies\n", t.Name)
		return nil
	})
}

// retention removes old traces, whole months at a time, leaving tombstones.
func (c *cli) retention(ctx context.Context, args []string) error {
	if len(args) == 0 || args[0] != "apply" {
		return usagef("retention needs a subcommand: apply --older-than AGE")
	}
	f := c.newFlags("retention apply")
	age := f.String("older-than", "", "age of the traces to remove: Nd, Nmo or Ny (e.g. 12mo)")
	if _, err := f.parse(args[1:], 0); err != nil {
		return err
	}
	before, err := cutoff(time.Now(), *age)
	if err != nil {
		return usagef("--older-than: %v", err)
	}
	return c.withStore(ctx, f, func(st store.Store) error {
		tombs, err := st.ApplyRetention(ctx, before)
		if err != nil {
			return err
		}
		var rows int64
		for _, t := range tombs {
			rows += t.Rows
			fmt.Fprintf(c.stdout, "removed %s: chain %s, %d traces (seq %d–%d), last hash kept in a tombstone\n",
				t.Partition, t.ChainID, t.Rows, t.FirstSeq, t.LastSeq)
		}
		fmt.Fprintf(c.stdout, "retention: %d traces created before %s removed (whole months only)\n", rows, before.Format("2006-01-02"))
		return nil
	})
}

// cutoff parses an age like 90d, 12mo or 2y into the time that far before now.
func cutoff(now time.Time, age string) (time.Time, error) {
	age = strings.TrimSpace(age)
	for _, u := range []struct {
		suffix string
		apply  func(n int) time.Time
	}{
		{"mo", func(n int) time.Time { return now.AddDate(0, -n, 0) }},
		{"d", func(n int) time.Time { return now.AddDate(0, 0, -n) }},
		{"y", func(n int) time.Time { return now.AddDate(-n, 0, 0) }},
	} {
		if num, ok := strings.CutSuffix(age, u.suffix); ok {
			n, err := strconv.Atoi(num)
			if err != nil || n <= 0 {
				return time.Time{}, fmt.Errorf("%q: want a positive number of days (d), months (mo) or years (y)", age)
			}
			return u.apply(n), nil
		}
	}
	return time.Time{}, fmt.Errorf("%q: want e.g. 90d, 12mo or 2y", age)
}
