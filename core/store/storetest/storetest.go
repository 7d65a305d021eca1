// Package storetest is the conformance suite every store.Store implementation must pass.
package storetest

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/loom-runtime/loom/core/store"
)

// Run runs the conformance suite. open must return a fresh, migrated, empty
// store for each call and arrange for it to be closed (t.Cleanup); it is
// called from parallel subtests. The store must also implement Execer,
// Tamperer and Dialecter (the trace tests use them to go behind its back).
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	RunWith(t, open, Options{})
}

// Options tell the suite what the store's database role cannot do; the
// tests that need it are skipped. The zero Options: a role that can do
// everything (a superuser on PostgreSQL).
type Options struct {
	// NotSuperuser: the role cannot bypass the immutability triggers
	// (TamperTrace fails), and on PostgreSQL row-level security applies to
	// it, so a raw statement that sets no scope sees no trace.
	NotSuperuser bool
	// NotOwner: the role does not own the traces table, so retention
	// cannot drop partitions.
	NotOwner bool
}

// needs names what a test requires beyond plain reads and writes.
type needs int

const (
	needsSuperuser needs = 1 << iota
	needsOwner
)

// RunWith is Run for a store whose role lacks what o says.
func RunWith(t *testing.T, open func(t *testing.T) store.Store, o Options) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"MigrateTwiceIsNoop", testMigrateTwice},
		{"CreateTenant", testCreateTenant},
		{"CreateTenantDuplicateName", testCreateTenantDuplicate},
		{"CreateTenantEmptyName", testCreateTenantEmptyName},
		{"TenantByNameUnknown", testTenantByNameUnknown},
		{"ListTenants", testListTenants},
		{"SetTenantStatus", testSetTenantStatus},
		{"SetTenantStatusUnknown", testSetTenantStatusUnknown},
		{"SetTenantStatusInvalid", testSetTenantStatusInvalid},
		{"CreateAPIKeyFillsDefaults", testCreateKeyDefaults},
		{"CreateAPIKeyKeepsGivenFields", testCreateKeyGiven},
		{"CreateAPIKeyTimePrecision", testCreateKeyTimePrecision},
		{"CreateAPIKeyDuplicateHash", testCreateKeyDuplicateHash},
		{"CreateAPIKeyDuplicateID", testCreateKeyDuplicateID},
		{"CreateAPIKeyUnknownTenant", testCreateKeyUnknownTenant},
		{"ListAPIKeysNewestFirst", testListKeysOrder},
		{"ListAPIKeysUnknownTenant", testListKeysUnknownTenant},
		{"KeyByHash", testKeyByHash},
		{"KeyByHashSeesTenantStatus", testKeyByHashTenantStatus},
		{"KeyByHashUnknown", testKeyByHashUnknown},
		{"KeyByHashTenantIsolation", testKeyByHashIsolation},
		{"RevokeAPIKey", testRevoke},
		{"RevokeAPIKeyUnknown", testRevokeUnknown},
		{"TouchAPIKeys", testTouch},
		{"TouchAPIKeysConcurrent", testTouchConcurrent},
		{"ConcurrentWriters", testConcurrentWriters},
		{"ConcurrentDuplicateTenant", testConcurrentDuplicate},
	}
	all := make([]suiteTest, 0, len(tests)+len(traceTests)+len(dashboardTests))
	for _, tc := range tests {
		all = append(all, suiteTest{name: tc.name, fn: tc.fn})
	}
	all = append(append(all, traceTests...), dashboardTests...)
	for _, tc := range all {
		t.Run(tc.name, func(t *testing.T) {
			if o.NotSuperuser && tc.needs&needsSuperuser != 0 {
				t.Skip("needs a superuser")
			}
			if o.NotOwner && tc.needs&needsOwner != 0 {
				t.Skip("needs the owner of the traces table")
			}
			t.Parallel()
			s := open(t)
			tc.fn(t, s)
		})
	}
}

// suiteTest is one test of the suite and what it needs of the role.
type suiteTest struct {
	name  string
	fn    func(t *testing.T, s store.Store)
	needs needs
}

// sameTime reports whether a and b are the same instant at microsecond
// precision, the precision every store keeps.
func sameTime(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

func sameTimePtr(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return sameTime(*a, *b)
}

func fmtTimePtr(p *time.Time) string {
	if p == nil {
		return "nil"
	}
	return p.Format(time.RFC3339Nano)
}

func randomHash(t testing.TB) [32]byte {
	t.Helper()
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b[:])
}

func mustTenant(t testing.TB, s store.Store, name string) store.Tenant {
	t.Helper()
	tn, err := s.CreateTenant(t.Context(), name)
	if err != nil {
		t.Fatalf("CreateTenant(%q): %v", name, err)
	}
	return tn
}

func mustKey(t testing.TB, s store.Store, k store.APIKey) store.APIKey {
	t.Helper()
	got, err := s.CreateAPIKey(t.Context(), k)
	if err != nil {
		t.Fatalf("CreateAPIKey(tenant %s, label %q): %v", k.TenantID, k.Label, err)
	}
	return got
}

func newKey(t testing.TB, tenantID, label string) store.APIKey {
	t.Helper()
	return store.APIKey{TenantID: tenantID, Label: label, Prefix: "loom_" + label, Hash: randomHash(t)}
}

func checkTenant(t testing.TB, what string, got, want store.Tenant) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || got.Status != want.Status || !sameTime(got.CreatedAt, want.CreatedAt) {
		t.Errorf("%s = %+v, want %+v", what, got, want)
	}
}

func checkKey(t testing.TB, what string, got, want store.APIKey) {
	t.Helper()
	if got.ID != want.ID || got.TenantID != want.TenantID || got.Label != want.Label ||
		got.Prefix != want.Prefix || got.Hash != want.Hash || !sameTime(got.CreatedAt, want.CreatedAt) ||
		!sameTimePtr(got.LastUsedAt, want.LastUsedAt) || !sameTimePtr(got.RevokedAt, want.RevokedAt) {
		t.Errorf("%s:\n got  id=%s tenant=%s label=%q prefix=%q created=%s last_used=%s revoked=%s hash_ok=%v\n want id=%s tenant=%s label=%q prefix=%q created=%s last_used=%s revoked=%s",
			what,
			got.ID, got.TenantID, got.Label, got.Prefix, got.CreatedAt.Format(time.RFC3339Nano), fmtTimePtr(got.LastUsedAt), fmtTimePtr(got.RevokedAt), got.Hash == want.Hash,
			want.ID, want.TenantID, want.Label, want.Prefix, want.CreatedAt.Format(time.RFC3339Nano), fmtTimePtr(want.LastUsedAt), fmtTimePtr(want.RevokedAt))
	}
}

func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: error = %v, want %v", what, err, target)
	}
}

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testMigrateTwice(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	for i := range 2 {
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatalf("Migrate #%d on a migrated store: %v", i+1, err)
		}
	}
	got, err := s.TenantByName(t.Context(), "acme")
	if err != nil {
		t.Fatalf("TenantByName after Migrate: %v", err)
	}
	checkTenant(t, "tenant after re-migrate", got, tn)
	mustTenant(t, s, "globex")
}

func testCreateTenant(t *testing.T, s store.Store) {
	before := time.Now().Add(-time.Second)
	tn := mustTenant(t, s, "acme")
	after := time.Now().Add(time.Second)
	if _, err := uuid.Parse(tn.ID); err != nil {
		t.Errorf("tenant ID %q is not a UUID: %v", tn.ID, err)
	}
	if tn.Name != "acme" || tn.Status != store.TenantActive {
		t.Errorf("created tenant = %+v, want name acme, status active", tn)
	}
	if tn.CreatedAt.Before(before) || tn.CreatedAt.After(after) {
		t.Errorf("CreatedAt = %s, want about now", tn.CreatedAt)
	}
	got, err := s.TenantByName(t.Context(), "acme")
	if err != nil {
		t.Fatalf("TenantByName: %v", err)
	}
	checkTenant(t, "TenantByName", got, tn)
	other := mustTenant(t, s, "globex")
	if other.ID == tn.ID {
		t.Errorf("two tenants share ID %s", tn.ID)
	}
}

func testCreateTenantDuplicate(t *testing.T, s store.Store) {
	first := mustTenant(t, s, "acme")
	_, err := s.CreateTenant(t.Context(), "acme")
	wantErr(t, "second CreateTenant(acme)", err, store.ErrConflict)
	if err != nil && !strings.Contains(err.Error(), "create tenant") {
		t.Errorf("error %q does not name the operation", err)
	}
	// Names are case-sensitive: a different spelling is a different tenant.
	mustTenant(t, s, "ACME")
	got, err := s.TenantByName(t.Context(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	checkTenant(t, "original tenant", got, first)
}

func testCreateTenantEmptyName(t *testing.T, s store.Store) {
	_, err := s.CreateTenant(t.Context(), "")
	if err == nil {
		t.Fatal("CreateTenant(\"\"): want error")
	}
	if errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrNotFound) {
		t.Errorf("CreateTenant(\"\"): error %v should be neither ErrConflict nor ErrNotFound", err)
	}
}

func testTenantByNameUnknown(t *testing.T, s store.Store) {
	_, err := s.TenantByName(t.Context(), "nobody")
	wantErr(t, "TenantByName(nobody)", err, store.ErrNotFound)
	mustTenant(t, s, "acme")
	_, err = s.TenantByName(t.Context(), "Acme")
	wantErr(t, "TenantByName(Acme)", err, store.ErrNotFound)
}

func testListTenants(t *testing.T, s store.Store) {
	got, err := s.ListTenants(t.Context())
	if err != nil {
		t.Fatalf("ListTenants on empty store: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("ListTenants on empty store = %v, want none", got)
	}
	byName := map[string]store.Tenant{}
	for _, n := range []string{"b", "a", "c", "B", "a-2", "Z"} {
		byName[n] = mustTenant(t, s, n)
	}
	got, err = s.ListTenants(t.Context())
	if err != nil {
		t.Fatalf("ListTenants: %v", err)
	}
	var names []string
	for _, tn := range got {
		names = append(names, tn.Name)
		checkTenant(t, "listed "+tn.Name, tn, byName[tn.Name])
	}
	want := []string{"B", "Z", "a", "a-2", "b", "c"} // byte order
	if !slices.Equal(names, want) {
		t.Errorf("ListTenants names = %q, want %q", names, want)
	}
}

func testSetTenantStatus(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	other := mustTenant(t, s, "globex")
	ctx := t.Context()
	if err := s.SetTenantStatus(ctx, tn.ID, store.TenantDisabled); err != nil {
		t.Fatalf("disable: %v", err)
	}
	got, err := s.TenantByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.TenantDisabled {
		t.Errorf("status after disable = %q", got.Status)
	}
	if g, _ := s.TenantByName(ctx, "globex"); g.Status != store.TenantActive {
		t.Errorf("other tenant's status changed to %q", g.Status)
	}
	// Setting the current status again is fine.
	if err := s.SetTenantStatus(ctx, tn.ID, store.TenantDisabled); err != nil {
		t.Fatalf("disable twice: %v", err)
	}
	// IDs are UUIDs: any spelling of the same UUID names the same tenant.
	if err := s.SetTenantStatus(ctx, strings.ToUpper(tn.ID), store.TenantActive); err != nil {
		t.Fatalf("enable by upper-case id: %v", err)
	}
	got, _ = s.TenantByName(ctx, "acme")
	if got.Status != store.TenantActive {
		t.Errorf("status after enable = %q", got.Status)
	}
	list, err := s.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range list {
		if l.ID == other.ID && l.Status != store.TenantActive {
			t.Errorf("listed other tenant status = %q", l.Status)
		}
	}
}

func testSetTenantStatusUnknown(t *testing.T, s store.Store) {
	err := s.SetTenantStatus(t.Context(), uuid.NewString(), store.TenantDisabled)
	wantErr(t, "SetTenantStatus(unknown id)", err, store.ErrNotFound)
	err = s.SetTenantStatus(t.Context(), "not-a-uuid", store.TenantDisabled)
	wantErr(t, "SetTenantStatus(malformed id)", err, store.ErrNotFound)
}

func testSetTenantStatusInvalid(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	err := s.SetTenantStatus(t.Context(), tn.ID, store.TenantStatus("deleted"))
	if err == nil {
		t.Fatal("SetTenantStatus(deleted): want error")
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) {
		t.Errorf("SetTenantStatus(deleted): error %v should be neither ErrNotFound nor ErrConflict", err)
	}
	got, _ := s.TenantByName(t.Context(), "acme")
	if got.Status != store.TenantActive {
		t.Errorf("status = %q after rejected change", got.Status)
	}
}

func testCreateKeyDefaults(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	in := newKey(t, tn.ID, "ci")
	before := time.Now().Add(-time.Second)
	k := mustKey(t, s, in)
	after := time.Now().Add(time.Second)
	if _, err := uuid.Parse(k.ID); err != nil {
		t.Errorf("key ID %q is not a UUID: %v", k.ID, err)
	}
	if k.CreatedAt.Before(before) || k.CreatedAt.After(after) {
		t.Errorf("CreatedAt = %s, want about now", k.CreatedAt)
	}
	if k.TenantID != tn.ID || k.Label != "ci" || k.Prefix != "loom_ci" || k.Hash != in.Hash {
		t.Errorf("CreateAPIKey returned %+v for input %+v", k, in)
	}
	if k.LastUsedAt != nil || k.RevokedAt != nil {
		t.Errorf("new key has last_used=%s revoked=%s, want nil", fmtTimePtr(k.LastUsedAt), fmtTimePtr(k.RevokedAt))
	}
	list, err := s.ListAPIKeys(t.Context(), tn.ID)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if len(list) != 1 {
		t.Fatalf("ListAPIKeys = %d keys, want 1", len(list))
	}
	checkKey(t, "listed key", list[0], k)
	// An empty label is allowed.
	mustKey(t, s, store.APIKey{TenantID: tn.ID, Prefix: "loom_x", Hash: randomHash(t)})
}

func testCreateKeyGiven(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	in := newKey(t, tn.ID, "given")
	in.ID = uuid.NewString()
	in.CreatedAt = time.Date(2024, 2, 29, 23, 59, 58, 123456000, time.UTC)
	used := in.CreatedAt.Add(time.Hour)
	in.LastUsedAt = &used
	k := mustKey(t, s, in)
	checkKey(t, "CreateAPIKey result", k, in)
	m, err := s.KeyByHash(t.Context(), in.Hash)
	if err != nil {
		t.Fatalf("KeyByHash: %v", err)
	}
	checkKey(t, "KeyByHash", m.Key, in)
}

func testCreateKeyTimePrecision(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	loc := time.FixedZone("UTC+5:30", 5*3600+1800)
	for i, at := range []time.Time{
		time.Date(2025, 6, 1, 12, 0, 0, 123456789, loc),
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2100, 1, 1, 0, 0, 0, 1000, time.UTC),
	} {
		in := newKey(t, tn.ID, fmt.Sprint("k", i))
		in.CreatedAt = at
		k := mustKey(t, s, in)
		if !sameTime(k.CreatedAt, at) {
			t.Errorf("returned CreatedAt = %s, want %s at µs precision", k.CreatedAt.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
		}
		m, err := s.KeyByHash(t.Context(), in.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if !sameTime(m.Key.CreatedAt, at) {
			t.Errorf("stored CreatedAt = %s, want %s at µs precision", m.Key.CreatedAt.Format(time.RFC3339Nano), at.Format(time.RFC3339Nano))
		}
		if !m.Key.CreatedAt.Equal(k.CreatedAt) {
			t.Errorf("CreateAPIKey returned CreatedAt %s but a read gives %s: the write should return what is stored",
				k.CreatedAt.Format(time.RFC3339Nano), m.Key.CreatedAt.Format(time.RFC3339Nano))
		}
	}
}

func testCreateKeyDuplicateHash(t *testing.T, s store.Store) {
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	first := mustKey(t, s, newKey(t, a.ID, "first"))
	dup := newKey(t, a.ID, "dup")
	dup.Hash = first.Hash
	_, err := s.CreateAPIKey(t.Context(), dup)
	wantErr(t, "same hash, same tenant", err, store.ErrConflict)
	dup.TenantID = b.ID
	_, err = s.CreateAPIKey(t.Context(), dup)
	wantErr(t, "same hash, other tenant", err, store.ErrConflict)
	m, err := s.KeyByHash(t.Context(), first.Hash)
	if err != nil {
		t.Fatal(err)
	}
	checkKey(t, "original key", m.Key, first)
	if list, _ := s.ListAPIKeys(t.Context(), b.ID); len(list) != 0 {
		t.Errorf("other tenant has %d keys after failed create", len(list))
	}
}

func testCreateKeyDuplicateID(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	first := mustKey(t, s, newKey(t, tn.ID, "first"))
	dup := newKey(t, tn.ID, "dup")
	dup.ID = first.ID
	_, err := s.CreateAPIKey(t.Context(), dup)
	wantErr(t, "duplicate key id", err, store.ErrConflict)
}

func testCreateKeyUnknownTenant(t *testing.T, s store.Store) {
	mustTenant(t, s, "acme")
	_, err := s.CreateAPIKey(t.Context(), newKey(t, uuid.NewString(), "orphan"))
	wantErr(t, "CreateAPIKey(unknown tenant)", err, store.ErrNotFound)
	_, err = s.CreateAPIKey(t.Context(), newKey(t, "not-a-uuid", "orphan"))
	wantErr(t, "CreateAPIKey(malformed tenant id)", err, store.ErrNotFound)
	_, err = s.CreateAPIKey(t.Context(), newKey(t, "", "orphan"))
	wantErr(t, "CreateAPIKey(empty tenant id)", err, store.ErrNotFound)
}

func testListKeysOrder(t *testing.T, s store.Store) {
	a := mustTenant(t, s, "acme")
	b := mustTenant(t, s, "globex")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var want []store.APIKey
	for i, off := range []time.Duration{2 * time.Hour, -time.Hour, 0, 5 * time.Microsecond, 3 * time.Hour} {
		in := newKey(t, a.ID, fmt.Sprint("a", i))
		in.CreatedAt = base.Add(off)
		want = append(want, mustKey(t, s, in))
		// Interleave another tenant's keys.
		mustKey(t, s, newKey(t, b.ID, fmt.Sprint("b", i)))
	}
	slices.SortFunc(want, func(x, y store.APIKey) int { return y.CreatedAt.Compare(x.CreatedAt) })
	got, err := s.ListAPIKeys(t.Context(), a.ID)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("ListAPIKeys = %d keys, want %d", len(got), len(want))
	}
	for i := range want {
		checkKey(t, fmt.Sprintf("key #%d (newest first)", i), got[i], want[i])
	}
	if got, _ := s.ListAPIKeys(t.Context(), b.ID); len(got) != 5 {
		t.Errorf("other tenant has %d keys, want 5", len(got))
	}
}

func testListKeysUnknownTenant(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	mustKey(t, s, newKey(t, tn.ID, "k"))
	for _, id := range []string{uuid.NewString(), "not-a-uuid", ""} {
		got, err := s.ListAPIKeys(t.Context(), id)
		if err != nil {
			t.Errorf("ListAPIKeys(%q): %v", id, err)
		}
		if len(got) != 0 {
			t.Errorf("ListAPIKeys(%q) = %d keys, want none", id, len(got))
		}
	}
}

func testKeyByHash(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	k := mustKey(t, s, newKey(t, tn.ID, "ci"))
	m, err := s.KeyByHash(t.Context(), k.Hash)
	if err != nil {
		t.Fatalf("KeyByHash: %v", err)
	}
	checkKey(t, "KeyByHash key", m.Key, k)
	checkTenant(t, "KeyByHash tenant", m.Tenant, tn)

	// Revoked keys are still found: the caller decides.
	at := time.Now()
	if _, err := s.RevokeAPIKey(t.Context(), k.ID, at); err != nil {
		t.Fatal(err)
	}
	m, err = s.KeyByHash(t.Context(), k.Hash)
	if err != nil {
		t.Fatalf("KeyByHash(revoked): %v", err)
	}
	if !sameTimePtr(m.Key.RevokedAt, &at) {
		t.Errorf("revoked key's RevokedAt = %s, want %s", fmtTimePtr(m.Key.RevokedAt), at)
	}
}

func testKeyByHashTenantStatus(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	k := mustKey(t, s, newKey(t, tn.ID, "ci"))
	if err := s.SetTenantStatus(t.Context(), tn.ID, store.TenantDisabled); err != nil {
		t.Fatal(err)
	}
	m, err := s.KeyByHash(t.Context(), k.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if m.Tenant.Status != store.TenantDisabled {
		t.Errorf("KeyByHash tenant status = %q after disabling, want disabled", m.Tenant.Status)
	}
	if err := s.SetTenantStatus(t.Context(), tn.ID, store.TenantActive); err != nil {
		t.Fatal(err)
	}
	m, err = s.KeyByHash(t.Context(), k.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if m.Tenant.Status != store.TenantActive {
		t.Errorf("KeyByHash tenant status = %q after enabling, want active", m.Tenant.Status)
	}
}

func testKeyByHashUnknown(t *testing.T, s store.Store) {
	_, err := s.KeyByHash(t.Context(), randomHash(t))
	wantErr(t, "KeyByHash on empty store", err, store.ErrNotFound)
	tn := mustTenant(t, s, "acme")
	k := mustKey(t, s, newKey(t, tn.ID, "ci"))
	near := k.Hash
	near[31] ^= 1
	_, err = s.KeyByHash(t.Context(), near)
	wantErr(t, "KeyByHash(hash differing in one bit)", err, store.ErrNotFound)
	_, err = s.KeyByHash(t.Context(), [32]byte{})
	wantErr(t, "KeyByHash(zero hash)", err, store.ErrNotFound)
}

func testKeyByHashIsolation(t *testing.T, s store.Store) {
	tenants := []store.Tenant{mustTenant(t, s, "acme"), mustTenant(t, s, "globex"), mustTenant(t, s, "initech")}
	owner := map[[32]byte]store.Tenant{}
	keys := map[string][]store.APIKey{}
	for round := range 3 {
		for _, tn := range tenants {
			k := mustKey(t, s, newKey(t, tn.ID, fmt.Sprintf("%s-%d", tn.Name, round)))
			owner[k.Hash] = tn
			keys[tn.ID] = append(keys[tn.ID], k)
		}
	}
	for h, tn := range owner {
		m, err := s.KeyByHash(t.Context(), h)
		if err != nil {
			t.Fatalf("KeyByHash: %v", err)
		}
		if m.Tenant.ID != tn.ID || m.Key.TenantID != tn.ID || m.Tenant.Name != tn.Name {
			t.Errorf("key of %s resolved to tenant %s (%s), key tenant %s", tn.Name, m.Tenant.Name, m.Tenant.ID, m.Key.TenantID)
		}
		if m.Key.Hash != h {
			t.Errorf("KeyByHash returned a key with another hash")
		}
	}
	for _, tn := range tenants {
		list, err := s.ListAPIKeys(t.Context(), tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 3 {
			t.Errorf("tenant %s lists %d keys, want 3", tn.Name, len(list))
		}
		for _, k := range list {
			if k.TenantID != tn.ID || owner[k.Hash].ID != tn.ID {
				t.Errorf("tenant %s lists key %s of tenant %s", tn.Name, k.ID, k.TenantID)
			}
		}
	}
	// Revoking one tenant's key leaves the others' alone.
	victim := keys[tenants[0].ID][0]
	if _, err := s.RevokeAPIKey(t.Context(), victim.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, tn := range tenants[1:] {
		list, _ := s.ListAPIKeys(t.Context(), tn.ID)
		for _, k := range list {
			if k.RevokedAt != nil {
				t.Errorf("revoking %s's key revoked %s's key %s", tenants[0].Name, tn.Name, k.ID)
			}
		}
	}
}

func testRevoke(t *testing.T, s store.Store) {
	tn := mustTenant(t, s, "acme")
	k := mustKey(t, s, newKey(t, tn.ID, "ci"))
	other := mustKey(t, s, newKey(t, tn.ID, "other"))
	first := time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC)
	got, err := s.RevokeAPIKey(t.Context(), k.ID, first)
	if err != nil {
		t.Fatalf("RevokeAPIKey: %v", err)
	}
	want := k
	want.RevokedAt = &first
	checkKey(t, "RevokeAPIKey result", got, want)

	// A later revoke keeps the first time, and still succeeds.
	got, err = s.RevokeAPIKey(t.Context(), strings.ToUpper(k.ID), first.Add(time.Hour))
	if err != nil {
		t.Fatalf("second RevokeAPIKey: %v", err)
	}
	checkKey(t, "second RevokeAPIKey result", got, want)
	// So does an earlier one: the first revocation is the one that counts.
	if _, err := s.RevokeAPIKey(t.Context(), k.ID, first.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	m, err := s.KeyByHash(t.Context(), k.Hash)
	if err != nil {
		t.Fatal(err)
	}
	checkKey(t, "stored revoked key", m.Key, want)
	m, err = s.KeyByHash(t.Context(), other.Hash)
	if err != nil {
		t.Fatal(err)
	}
	if m.Key.RevokedAt != nil {
		t.Errorf("other key revoked too")
	}
}

func testRevokeUnknown(t *testing.T, s store.Store) {
	_, err := s.RevokeAPIKey(t.Context(), uuid.NewString(), time.Now())
	wantErr(t, "RevokeAPIKey(unknown id)", err, store.ErrNotFound)
	_, err = s.RevokeAPIKey(t.Context(), "not-a-uuid", time.Now())
	wantErr(t, "RevokeAPIKey(malformed id)", err, store.ErrNotFound)
	// A tenant id is not a key id.
	tn := mustTenant(t, s, "acme")
	mustKey(t, s, newKey(t, tn.ID, "ci"))
	_, err = s.RevokeAPIKey(t.Context(), tn.ID, time.Now())
	wantErr(t, "RevokeAPIKey(tenant id)", err, store.ErrNotFound)
}

func testTouch(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	k1 := mustKey(t, s, newKey(t, tn.ID, "one"))
	k2 := mustKey(t, s, newKey(t, tn.ID, "two"))
	k3 := mustKey(t, s, newKey(t, tn.ID, "three"))
	lastUsed := func(k store.APIKey) *time.Time {
		t.Helper()
		m, err := s.KeyByHash(ctx, k.Hash)
		if err != nil {
			t.Fatal(err)
		}
		return m.Key.LastUsedAt
	}

	if err := s.TouchAPIKeys(ctx, nil); err != nil {
		t.Fatalf("TouchAPIKeys(nil): %v", err)
	}
	if err := s.TouchAPIKeys(ctx, map[string]time.Time{}); err != nil {
		t.Fatalf("TouchAPIKeys(empty): %v", err)
	}

	t0 := time.Date(2025, 5, 1, 10, 0, 0, 500_000_000, time.UTC)
	// One batch, several keys; unknown and malformed ids are ignored.
	err := s.TouchAPIKeys(ctx, map[string]time.Time{
		k1.ID:                  t0,
		k2.ID:                  t0.Add(time.Minute),
		uuid.NewString():       t0,
		"not-a-uuid":           t0,
		strings.ToUpper(k3.ID): t0.Add(2 * time.Minute),
	})
	if err != nil {
		t.Fatalf("TouchAPIKeys: %v", err)
	}
	for _, c := range []struct {
		k    store.APIKey
		want time.Time
	}{{k1, t0}, {k2, t0.Add(time.Minute)}, {k3, t0.Add(2 * time.Minute)}} {
		if got := lastUsed(c.k); !sameTimePtr(got, &c.want) {
			t.Errorf("key %s last used = %s, want %s", c.k.Label, fmtTimePtr(got), c.want)
		}
	}

	// Monotonic: an earlier time never moves last_used_at back; a later one
	// moves it forward; the same time is a no-op.
	later := t0.Add(time.Hour)
	err = s.TouchAPIKeys(ctx, map[string]time.Time{
		k1.ID: t0.Add(-time.Hour),
		k2.ID: later,
		k3.ID: t0.Add(2 * time.Minute),
	})
	if err != nil {
		t.Fatalf("TouchAPIKeys: %v", err)
	}
	wants := map[string]time.Time{"one": t0, "two": later, "three": t0.Add(2 * time.Minute)}
	for _, k := range []store.APIKey{k1, k2, k3} {
		want := wants[k.Label]
		if got := lastUsed(k); !sameTimePtr(got, &want) {
			t.Errorf("key %s last used = %s, want %s", k.Label, fmtTimePtr(got), want)
		}
	}
	// Microsecond steps count.
	step := t0.Add(time.Microsecond)
	if err := s.TouchAPIKeys(ctx, map[string]time.Time{k1.ID: step}); err != nil {
		t.Fatal(err)
	}
	if got := lastUsed(k1); !sameTimePtr(got, &step) {
		t.Errorf("key one last used = %s, want %s", fmtTimePtr(got), step)
	}
	// Touching revoked keys is harmless and keeps the revocation.
	rev := time.Now()
	if _, err := s.RevokeAPIKey(ctx, k2.ID, rev); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchAPIKeys(ctx, map[string]time.Time{k2.ID: later.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	m, _ := s.KeyByHash(ctx, k2.Hash)
	if !sameTimePtr(m.Key.RevokedAt, &rev) {
		t.Errorf("touch changed revoked_at to %s", fmtTimePtr(m.Key.RevokedAt))
	}
}

func testTouchConcurrent(t *testing.T, s store.Store) {
	ctx := t.Context()
	tn := mustTenant(t, s, "acme")
	var keys []store.APIKey
	for i := range 5 {
		keys = append(keys, mustKey(t, s, newKey(t, tn.ID, fmt.Sprint("k", i))))
	}
	base := time.Date(2025, 7, 1, 0, 0, 0, 0, time.UTC)
	const workers, rounds = 6, 20
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for r := range rounds {
				batch := map[string]time.Time{}
				// Workers touch the keys in different orders and with
				// interleaved times; the largest time must win.
				for i, k := range keys {
					batch[k.ID] = base.Add(time.Duration((r*workers+w+i*7)%(workers*rounds)) * time.Second)
				}
				if err := s.TouchAPIKeys(ctx, batch); err != nil {
					t.Errorf("worker %d: TouchAPIKeys: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	want := base.Add(time.Duration(workers*rounds-1) * time.Second)
	for _, k := range keys {
		m, err := s.KeyByHash(ctx, k.Hash)
		if err != nil {
			t.Fatal(err)
		}
		if !sameTimePtr(m.Key.LastUsedAt, &want) {
			t.Errorf("key %s last used = %s, want the latest touch %s", k.Label, fmtTimePtr(m.Key.LastUsedAt), want)
		}
	}
}

func testConcurrentWriters(t *testing.T, s store.Store) {
	ctx := t.Context()
	const workers, perWorker = 8, 50
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// A reader running alongside the writers.
	var readerDone sync.WaitGroup
	readerDone.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.ListTenants(ctx); err != nil {
				t.Errorf("ListTenants during writes: %v", err)
				return
			}
		}
	})
	hashes := make([][][32]byte, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				tn, err := s.CreateTenant(ctx, fmt.Sprintf("w%d-%03d", w, i))
				if err != nil {
					t.Errorf("worker %d: CreateTenant: %v", w, err)
					return
				}
				k, err := s.CreateAPIKey(ctx, store.APIKey{TenantID: tn.ID, Label: "k", Prefix: "loom_k", Hash: randomHash(t)})
				if err != nil {
					t.Errorf("worker %d: CreateAPIKey: %v", w, err)
					return
				}
				hashes[w] = append(hashes[w], k.Hash)
			}
		})
	}
	wg.Wait()
	close(stop)
	readerDone.Wait()
	if t.Failed() {
		return
	}
	list, err := s.ListTenants(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != workers*perWorker {
		t.Fatalf("ListTenants = %d tenants, want %d", len(list), workers*perWorker)
	}
	for _, tn := range list {
		keys, err := s.ListAPIKeys(ctx, tn.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 {
			t.Errorf("tenant %s has %d keys, want 1", tn.Name, len(keys))
		}
	}
	for w, hs := range hashes {
		for i, h := range hs {
			m, err := s.KeyByHash(ctx, h)
			if err != nil {
				t.Fatalf("KeyByHash: %v", err)
			}
			if want := fmt.Sprintf("w%d-%03d", w, i); m.Tenant.Name != want {
				t.Errorf("key resolved to tenant %s, want %s", m.Tenant.Name, want)
			}
		}
	}
}

func testConcurrentDuplicate(t *testing.T, s store.Store) {
	ctx := t.Context()
	const workers = 8
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			_, errs[w] = s.CreateTenant(ctx, "contested")
		})
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, store.ErrConflict):
			t.Errorf("losing CreateTenant: error %v, want ErrConflict", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent CreateTenant calls with one name succeeded, want exactly 1", won)
	}
}
