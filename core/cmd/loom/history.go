package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
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
		return usagef("keys needs a subcommand: rotate, rotate-master, status")
	}
	sub, args := args[0], args[1:]
	f := c.newFlags("keys " + sub)
	switch sub {
	case "rotate-master":
		rotateData := f.Bool("rotate-data-keys", false,
			"also give every tenant a new data key version for its new traces (without it the data keys stay the same, only rewrapped)")
		if _, err := f.parse(args, 0); err != nil {
			return err
		}
		return c.rotateMaster(ctx, f, *rotateData)
	case "status":
		if _, err := f.parse(args, 0); err != nil {
			return err
		}
		return c.withStore(ctx, f, func(st store.Store) error { return c.keyStatus(ctx, f, st) })
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

// rotateMaster rewraps every data key from LOOM_OLD_MASTER_KEY to
// LOOM_MASTER_KEY, completing the pending shreds, and says what the
// operator must do next: destroy the old key.
func (c *cli) rotateMaster(ctx context.Context, f *flags, rotateData bool) error {
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
		names, err := tenantNames(ctx, st)
		if err != nil {
			return err
		}
		r, err := seal.RotateMaster(ctx, st, oldKey, cfg.MasterKey, seal.RotateOptions{NewDataKeys: rotateData})
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "rewrapped %d tenant data keys under master key %s (was %s); traces were not touched\n",
			r.Rewrapped, r.To, r.From)
		if rotateData {
			fmt.Fprintf(c.stdout, "gave %d tenants a new data key version: their new traces use it, older traces keep opening with their rewrapped keys\n",
				r.NewDataKeys)
		} else {
			fmt.Fprintln(c.stdout, "the data keys themselves are unchanged (only rewrapped); add --rotate-data-keys to also give every tenant a new one for its new traces")
		}
		if len(r.Completed) > 0 {
			var who []string
			for _, sh := range r.Completed {
				who = append(who, names[sh.TenantID])
			}
			fmt.Fprintf(c.stdout, "completed %d pending shreds (%s): final once the old master key is destroyed\n",
				len(r.Completed), strings.Join(who, ", "))
		}
		fmt.Fprintf(c.stdout, "NOW: run Loom with the new LOOM_MASTER_KEY, unset LOOM_OLD_MASTER_KEY, and destroy every copy of the old master key %s "+
			"(secret stores, env files, their backups); until then it still decrypts backups and WAL taken before this rotation\n", r.From)
		return nil
	})
}

// keyStatus reports the master keys, whether LOOM_MASTER_KEY and
// LOOM_OLD_MASTER_KEY are what they should be, and every shred's state.
func (c *cli) keyStatus(ctx context.Context, f *flags, st store.Store) error {
	cfg, err := c.loadConfig(*f.config)
	if err != nil {
		return err
	}
	mks, err := st.MasterKeys(ctx)
	if err != nil {
		return err
	}
	keys, err := st.AllTenantKeys(ctx)
	if err != nil {
		return err
	}
	shreds, err := st.TenantShreds(ctx)
	if err != nil {
		return err
	}
	names, err := tenantNames(ctx, st)
	if err != nil {
		return err
	}
	current := ""
	retired := map[string]store.MasterKey{}
	for _, m := range mks {
		if m.RetiredAt == nil {
			current = m.ID
			fmt.Fprintf(c.stdout, "master key %s: current since %s\n", m.ID, stamp(&m.RegisteredAt))
		} else {
			retired[m.ID] = m
			fmt.Fprintf(c.stdout, "master key %s: retired %s; destroy every copy of it (Loom cannot check that you did)\n", m.ID, stamp(m.RetiredAt))
		}
	}
	if current == "" {
		fmt.Fprintln(c.stdout, "master key: none recorded yet (recorded with the first data key or rotation)")
	}
	under := map[string]int{}
	for _, k := range keys {
		under[k.MasterKeyID]++
	}
	fmt.Fprintf(c.stdout, "data keys: %d", len(keys))
	if n := under[""]; n > 0 {
		fmt.Fprintf(c.stdout, " (%d written before Loom recorded master keys: the next rotation labels them)", n)
	}
	for id, n := range under {
		if id != "" && id != current {
			fmt.Fprintf(c.stdout, "; %d WRAPPED UNDER %s, NOT THE CURRENT MASTER KEY", n, id)
		}
	}
	fmt.Fprintln(c.stdout)
	if cfg.MasterKey != nil {
		id, _ := seal.MasterKeyID(cfg.MasterKey)
		switch {
		case id == current || current == "":
			fmt.Fprintf(c.stdout, "LOOM_MASTER_KEY: master key %s\n", id)
		case retired[id].RetiredAt != nil:
			fmt.Fprintf(c.stdout, "LOOM_MASTER_KEY: master key %s, RETIRED: use the new key, and destroy this one\n", id)
		default:
			fmt.Fprintf(c.stdout, "LOOM_MASTER_KEY: master key %s, NOT the store's (%s)\n", id, current)
		}
	}
	if old, ok := c.env("LOOM_OLD_MASTER_KEY"); ok && old != "" {
		key, err := config.DecodeMasterKey(old)
		if err != nil {
			return fmt.Errorf("LOOM_OLD_MASTER_KEY: %w", err)
		}
		id, _ := seal.MasterKeyID(key)
		if retired[id].RetiredAt != nil {
			fmt.Fprintf(c.stdout, "LOOM_OLD_MASTER_KEY: master key %s, RETIRED: unset it and destroy every copy; shreds are final only once it is gone\n", id)
		} else {
			fmt.Fprintf(c.stdout, "LOOM_OLD_MASTER_KEY: master key %s (set for keys rotate-master)\n", id)
		}
	}
	if len(shreds) == 0 {
		fmt.Fprintln(c.stdout, "shreds: none")
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TENANT\tSHREDDED\tKEYS\tSTATE")
	for _, sh := range shreds {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", names[sh.TenantID], stamp(sh.ShreddedAt), keyCount(sh), shredState(sh, current))
	}
	return tw.Flush()
}

func keyCount(sh store.TenantShred) string {
	if sh.ShreddedAt == nil {
		return "?"
	}
	return strconv.Itoa(sh.KeyVersions)
}

// shredState says where a shred stands and what completes it.
func shredState(sh store.TenantShred, current string) string {
	switch {
	case sh.Pending():
		key := sh.MasterKeyID
		if key == "" {
			key = current
		}
		if key == "" {
			return "shred pending: rotate the master key and destroy the old one"
		}
		return "shred pending: rotate the master key and destroy the old one (" + key + ")"
	case sh.KeyVersions == 0 && sh.ShreddedAt != nil:
		return "shredded (it had no data keys: nothing to recover)"
	case sh.MasterKeyID != "":
		return "shredded, once master key " + sh.MasterKeyID + " (retired " + stamp(sh.CompletedAt) + ") is destroyed"
	default:
		return "shredded, once the master key retired " + stamp(sh.CompletedAt) + " is destroyed"
	}
}

// tenantNames maps tenant ids to names.
func tenantNames(ctx context.Context, st store.Store) (map[string]string, error) {
	ts, err := st.ListTenants(ctx)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(ts))
	for _, t := range ts {
		m[t.ID] = t.Name
	}
	return m, nil
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

// deleteTenant crypto-shreds a tenant: its data keys are deleted and its
// traces stay (history still verifies). The shred is pending until a master
// key rotation, which the output says how to do.
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
		sh, err := st.ShredTenant(ctx, t.ID, time.Now())
		if err != nil {
			return err
		}
		if !sh.Pending() {
			fmt.Fprintf(c.stdout, "tenant %s deleted: %s; history still verifies\n", t.Name, shredState(sh, ""))
			return nil
		}
		key := "the current master key"
		if sh.MasterKeyID != "" {
			key = "master key " + sh.MasterKeyID
		}
		fmt.Fprintf(c.stdout, "tenant %s deleted: its data keys are gone from the store (running gateways drop cached copies within %s), "+
			"so Loom can no longer decrypt its traces; history still verifies\n", t.Name, seal.DefaultRefresh)
		fmt.Fprintf(c.stdout, "SHRED PENDING: copies of the keys remain in database backups and WAL (and, on PostgreSQL, in dead rows), wrapped under %s, which still unwraps them. To complete the shred:\n", key)
		fmt.Fprintln(c.stdout, "  1. stop Loom and run: LOOM_OLD_MASTER_KEY=<current key> LOOM_MASTER_KEY=<new key> loom keys rotate-master")
		fmt.Fprintln(c.stdout, "  2. run Loom with the new key, and destroy every copy of the old one")
		fmt.Fprintln(c.stdout, "loom keys status lists the shreds still pending")
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

// cutoff parses an age like 90d, 12mo or 2y into the instant that far
// before now, in UTC (retention removes whole UTC months). Months and years
// are calendar months: where the day does not exist in the earlier month
// (March 31st minus one month) it is that month's last day, as in
// PostgreSQL's interval arithmetic, never a day of the month after (which
// would make retention drop a month younger than AGE).
func cutoff(now time.Time, age string) (time.Time, error) {
	now = now.UTC()
	age = strings.TrimSpace(age)
	for _, u := range []struct {
		suffix string
		apply  func(n int) time.Time
	}{
		{"mo", func(n int) time.Time { return monthsBefore(now, n) }},
		{"d", func(n int) time.Time { return now.AddDate(0, 0, -n) }},
		{"y", func(n int) time.Time { return monthsBefore(now, 12*n) }},
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

// monthsBefore returns t (UTC) n calendar months earlier, its day clamped to
// the last day of that month.
func monthsBefore(t time.Time, n int) time.Time {
	first := time.Date(t.Year(), t.Month()-time.Month(n), 1, t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
	days := time.Date(first.Year(), first.Month()+1, 0, 0, 0, 0, 0, time.UTC).Day()
	return first.AddDate(0, 0, min(t.Day(), days)-1)
}
