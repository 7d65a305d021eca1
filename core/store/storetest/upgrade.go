package storetest

import (
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

// CheckShredUpgrade checks the upgrade to migration 4 (master keys and
// shreds). s must be migrated up to version 3 only, and implement Execer
// and Dialecter: a tenant shredded before the upgrade is recorded as a
// pending shred of unknown time, keys written before it carry no master key
// id until the first rotation, which completes that shred.
func CheckShredUpgrade(t *testing.T, s store.Store) {
	t.Helper()
	ctx := t.Context()
	exec := s.(Execer)
	pg := s.(Dialecter).Dialect() == "postgres"
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	d := mustTenant(t, s, "initech")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	legacy := func(tenantID string) store.TenantKey {
		t.Helper()
		k := newTenantKey(t, tenantID, 1, base)
		k.MasterKeyID = ""
		q := `INSERT INTO tenant_keys (tenant_id, version, wrapped, nonce, created_at) VALUES (?, ?, ?, ?, ?)`
		var at any = base.UnixNano()
		if pg {
			q = `INSERT INTO tenant_keys (tenant_id, version, wrapped, nonce, created_at) VALUES ($1, $2, $3, $4, $5)`
			at = base
		}
		if err := exec.ExecRaw(ctx, q, k.TenantID, k.Version, k.Wrapped, k.Nonce, at); err != nil {
			t.Fatalf("legacy key: %v", err)
		}
		return k
	}
	a1 := legacy(a.ID)
	legacy(b.ID)
	legacy(d.ID)
	// globex is shredded the way Loom did before version 4.
	ph := "?"
	if pg {
		ph = "$1"
	}
	for _, q := range []string{`UPDATE tenants SET status = 'deleted' WHERE id = ` + ph, `DELETE FROM tenant_keys WHERE tenant_id = ` + ph} {
		if err := exec.ExecRaw(ctx, q, b.ID); err != nil {
			t.Fatalf("legacy shred: %v", err)
		}
	}

	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate from version 3: %v", err)
	}
	wantB := store.TenantShred{TenantID: b.ID}
	if got, err := s.TenantShreds(ctx); err != nil {
		t.Fatal(err)
	} else {
		checkShreds(t, "TenantShreds after the upgrade", got, []store.TenantShred{wantB})
	}
	if got, _ := s.TenantKeys(ctx, a.ID); len(got) == 1 {
		checkKeys(t, "legacy key after the upgrade", got, []store.TenantKey{a1})
	} else {
		t.Fatalf("acme has %d keys after the upgrade, want 1", len(got))
	}
	if mks, err := s.MasterKeys(ctx); err != nil || len(mks) != 0 {
		t.Fatalf("MasterKeys after the upgrade = %+v, %v; want none", mks, err)
	}
	// The first new key registers the master key; a tenant shredded now has
	// its legacy keys recorded under it.
	a2 := newTenantKey(t, a.ID, 2, base)
	if err := s.AddTenantKey(ctx, a2); err != nil {
		t.Fatal(err)
	}
	at := base.Add(time.Hour)
	dsh, err := s.ShredTenant(ctx, d.ID, at)
	if err != nil {
		t.Fatal(err)
	}
	wantD := store.TenantShred{TenantID: d.ID, ShreddedAt: &at, KeyVersions: 1, MasterKeyID: masterA}
	checkShreds(t, "shred of legacy keys", []store.TenantShred{dsh}, []store.TenantShred{wantD})
	// The first rotation completes both shreds and labels every key.
	rot := base.Add(2 * time.Hour)
	done, err := s.RotateMasterKey(ctx, store.MasterKeyRotation{From: masterA, To: masterB, At: rot,
		Rewrapped: []store.TenantKey{rewrapped(t, a1, masterB), rewrapped(t, a2, masterB)}})
	if err != nil {
		t.Fatal(err)
	}
	wantB.CompletedAt, wantD.CompletedAt = &rot, &rot
	checkShreds(t, "shreds completed by the first rotation", done, []store.TenantShred{wantB, wantD})
	for _, k := range mustKeys(t, s, a.ID) {
		if k.MasterKeyID != masterB {
			t.Errorf("acme key v%d after the rotation: master key %q, want %s", k.Version, k.MasterKeyID, masterB)
		}
	}
}
