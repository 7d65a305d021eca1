package seal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/internal/testdb"
	"github.com/loom-runtime/loom/core/store"
)

// backend is a KeyStore to run the keyring tests against, and a way to
// create a tenant in it.
type backend struct {
	name string
	open func(t *testing.T) (KeyStore, func(t *testing.T, name string) string)
}

var backends = []backend{
	{"sqlite", openSQLite},
	{"mem", func(t *testing.T) (KeyStore, func(*testing.T, string) string) {
		return newMemStore(), func(_ *testing.T, name string) string { return "id-" + name }
	}},
}

// openSQLite opens a migrated SQLite store in t.TempDir().
func openSQLite(t *testing.T) (KeyStore, func(*testing.T, string) string) {
	t.Helper()
	ctx := context.Background()
	st := testdb.SQLite(t)
	return st, func(t *testing.T, name string) string {
		t.Helper()
		tn, err := st.CreateTenant(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		return tn.ID
	}
}

func forEachBackend(t *testing.T, f func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			ks, nt := b.open(t)
			f(t, ks, nt)
		})
	}
}

func newKeyring(t *testing.T, master []byte, ks KeyStore, opts ...Option) *Keyring {
	t.Helper()
	k, err := NewKeyring(master, ks, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCurrent(t *testing.T, k *Keyring, tenantID string) *TenantKey {
	t.Helper()
	tk, err := k.Current(context.Background(), tenantID)
	if err != nil {
		t.Fatalf("Current(%s): %v", tenantID, err)
	}
	return tk
}

func mustSeal(t *testing.T, tk *TenantKey, traceID, field string, body []byte) store.Sealed {
	t.Helper()
	s, err := tk.Seal(traceID, field, body)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// sealedTrace is a field sealed for a test, with what it takes to open it.
type sealedTrace struct {
	tenant, trace, field string
	version              int
	body                 []byte
	s                    store.Sealed
}

func sealTrace(t *testing.T, k *Keyring, tenant, trace string, body []byte) sealedTrace {
	t.Helper()
	tk := mustCurrent(t, k, tenant)
	return sealedTrace{tenant, trace, FieldRequest, tk.Version(), body, mustSeal(t, tk, trace, FieldRequest, body)}
}

func (st sealedTrace) open(k *Keyring) ([]byte, error) {
	return k.Open(context.Background(), st.tenant, st.version, st.trace, st.field, st.s)
}

func mustOpen(t *testing.T, k *Keyring, st sealedTrace) {
	t.Helper()
	got, err := st.open(k)
	if err != nil {
		t.Fatalf("open %s/%s v%d: %v", st.tenant, st.trace, st.version, err)
	}
	if !bytes.Equal(got, st.body) {
		t.Fatalf("open %s/%s v%d: body changed", st.tenant, st.trace, st.version)
	}
}

func versions(t *testing.T, ks KeyStore, tenantID string) []int {
	t.Helper()
	rows, err := ks.TenantKeys(context.Background(), tenantID)
	if err != nil {
		t.Fatal(err)
	}
	var vs []int
	for _, r := range rows {
		vs = append(vs, r.Version)
	}
	return vs
}

func TestKeyringRoundTrip(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		master := randomBytes(t, KeySize)
		k := newKeyring(t, master, ks)
		tenant := newTenant(t, "acme")
		tk := mustCurrent(t, k, tenant)
		if tk.Version() != 1 || tk.TenantID() != tenant {
			t.Fatalf("first key: tenant %s v%d, want %s v1", tk.TenantID(), tk.Version(), tenant)
		}
		if got := versions(t, ks, tenant); !slices.Equal(got, []int{1}) {
			t.Fatalf("stored versions %v, want [1]", got)
		}
		// A second keyring (another process) on the same store and master
		// opens what the first sealed.
		k2 := newKeyring(t, master, ks)
		for _, b := range bodies(t) {
			t.Run(b.name, func(t *testing.T) {
				st := sealTrace(t, k, tenant, "trace-"+b.name, b.body)
				mustOpen(t, k, st)
				mustOpen(t, k2, st)
			})
		}
		// An absent field opens to nil, no error, even without a key.
		got, err := k.Open(ctx, tenant, 7, "t", FieldMessage, store.Sealed{})
		if got != nil || err != nil {
			t.Fatalf("absent field: %q, %v; want nil, nil", got, err)
		}
		if got := versions(t, ks, tenant); !slices.Equal(got, []int{1}) {
			t.Fatalf("stored versions %v, want [1]", got)
		}
	})
}

func TestKeyringOpenErrors(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		master := randomBytes(t, KeySize)
		k := newKeyring(t, master, ks)
		a, b := newTenant(t, "a"), newTenant(t, "b")
		good := sealTrace(t, k, a, "trace-1", []byte("prompt of tenant a"))
		mustCurrent(t, k, b) // b has its own v1

		moved := func(f func(*sealedTrace)) sealedTrace { c := good; f(&c); return c }
		tests := []struct {
			name string
			st   sealedTrace
			want error
		}{
			{"row moved to tenant b (b's own v1)", moved(func(s *sealedTrace) { s.tenant = b }), ErrOpen},
			{"other trace id", moved(func(s *sealedTrace) { s.trace = "trace-2" }), ErrOpen},
			{"other field", moved(func(s *sealedTrace) { s.field = FieldResponse }), ErrOpen},
			{"ciphertext bit", moved(func(s *sealedTrace) { s.s.Ciphertext = flip(s.s.Ciphertext, 1) }), ErrOpen},
			{"tag bit", moved(func(s *sealedTrace) { s.s.Ciphertext = flip(s.s.Ciphertext, len(s.s.Ciphertext)-2) }), ErrOpen},
			{"nonce bit", moved(func(s *sealedTrace) { s.s.Nonce = flip(s.s.Nonce, 11) }), ErrOpen},
			{"version never created", moved(func(s *sealedTrace) { s.version = 2 }), ErrNoKey},
			{"version zero", moved(func(s *sealedTrace) { s.version = 0 }), ErrNoKey},
			{"unknown tenant", moved(func(s *sealedTrace) { s.tenant = "00000000-0000-4000-8000-000000000000" }), ErrNoKey},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := tc.st.open(k)
				if !errors.Is(err, tc.want) {
					t.Fatalf("err %v, want %v", err, tc.want)
				}
				other := ErrOpen
				if tc.want == ErrOpen {
					other = ErrNoKey
				}
				if errors.Is(err, other) {
					t.Fatalf("err %v matches both ErrOpen and ErrNoKey", err)
				}
				if got != nil {
					t.Fatal("data returned with an error")
				}
			})
		}
		mustOpen(t, k, good)
		if got := versions(t, ks, a); !slices.Equal(got, []int{1}) {
			t.Fatalf("opening created keys: %v", got)
		}
	})
}

// TestWrappedKeyMoved: a wrapped key row copied to another tenant, or to
// another version, does not unwrap there.
func TestWrappedKeyMoved(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		master := randomBytes(t, KeySize)
		k := newKeyring(t, master, ks)
		a, b := newTenant(t, "a"), newTenant(t, "b")
		st := sealTrace(t, k, a, "trace-1", []byte("a's secret"))
		rows, err := ks.TenantKeys(ctx, a)
		if err != nil || len(rows) != 1 {
			t.Fatalf("keys of a: %v, %v", rows, err)
		}
		// Copy a's v1 to b's v1 and to a's v2.
		toB := rows[0]
		toB.TenantID = b
		if err := ks.AddTenantKey(ctx, toB); err != nil {
			t.Fatal(err)
		}
		toV2 := rows[0]
		toV2.Version = 2
		if err := ks.AddTenantKey(ctx, toV2); err != nil {
			t.Fatal(err)
		}

		k2 := newKeyring(t, master, ks) // nothing cached
		if _, err := k2.Current(ctx, b); !errors.Is(err, ErrUnwrap) {
			t.Errorf("b's Current with a's key: %v, want ErrUnwrap", err)
		}
		moved := st
		moved.tenant = b
		if _, err := moved.open(k2); !errors.Is(err, ErrUnwrap) {
			t.Errorf("open a's trace as b with a's key copied to b: %v, want ErrUnwrap", err)
		}
		if _, err := k2.Current(ctx, a); !errors.Is(err, ErrUnwrap) {
			t.Errorf("a's Current (v2 is a's v1 copied): %v, want ErrUnwrap", err)
		}
		asV2 := st
		asV2.version = 2
		if _, err := asV2.open(k2); !errors.Is(err, ErrUnwrap) {
			t.Errorf("open as v2: %v, want ErrUnwrap", err)
		}
		// The genuine row still works.
		mustOpen(t, k2, st)
	})
}

func TestWrongMasterKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		k := newKeyring(t, randomBytes(t, KeySize), ks)
		a := newTenant(t, "a")
		st := sealTrace(t, k, a, "trace-1", []byte("x"))

		wrong := newKeyring(t, randomBytes(t, KeySize), ks)
		_, err := st.open(wrong)
		if !errors.Is(err, ErrUnwrap) || errors.Is(err, ErrOpen) || errors.Is(err, ErrNoKey) {
			t.Fatalf("open with the wrong master key: %v, want ErrUnwrap only", err)
		}
		if _, err := wrong.Current(ctx, a); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("Current with the wrong master key: %v, want ErrUnwrap", err)
		}
		t.Logf("error reads: %v", err)
		// Nothing was created or changed by the failed attempts.
		if got := versions(t, ks, a); !slices.Equal(got, []int{1}) {
			t.Fatalf("versions %v, want [1]", got)
		}
		mustOpen(t, k, st)
	})
}

func TestRotation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		master := randomBytes(t, KeySize)
		clock := newFakeClock()
		k1 := newKeyring(t, master, ks, WithClock(clock.Now))
		k2 := newKeyring(t, master, ks, WithClock(clock.Now)) // another process
		a, b := newTenant(t, "a"), newTenant(t, "b")

		v1 := sealTrace(t, k1, a, "trace-1", []byte("sealed with v1"))
		bv1 := sealTrace(t, k1, b, "trace-b", []byte("tenant b"))
		if v1.version != 1 {
			t.Fatalf("first version %d", v1.version)
		}
		if got := mustCurrent(t, k2, a).Version(); got != 1 {
			t.Fatalf("k2 current %d, want 1", got)
		}

		n, err := k1.Rotate(ctx, a)
		if err != nil || n != 2 {
			t.Fatalf("Rotate: %d, %v; want 2", n, err)
		}
		v2 := sealTrace(t, k1, a, "trace-2", []byte("sealed with v2"))
		if v2.version != 2 {
			t.Fatalf("after Rotate, new seals use v%d, want v2", v2.version)
		}
		mustOpen(t, k1, v1)
		mustOpen(t, k1, v2)
		// k2 still seals with v1 until its cache expires...
		if got := mustCurrent(t, k2, a).Version(); got != 1 {
			t.Fatalf("k2 current %d before the refresh interval, want 1 (cached)", got)
		}
		// ...but opens v2 traces at once (an unknown version is looked up).
		mustOpen(t, k2, v2)
		clock.Advance(DefaultRefresh + time.Second)
		if got := mustCurrent(t, k2, a).Version(); got != 2 {
			t.Fatalf("k2 current %d after the refresh interval, want 2", got)
		}
		mustOpen(t, k2, v1)

		// Rotating through k2 now; k1 (cache just refreshed) sees v3 after
		// the interval.
		if got := mustCurrent(t, k1, a).Version(); got != 2 {
			t.Fatalf("k1 current %d, want 2", got)
		}
		if n, err := k2.Rotate(ctx, a); err != nil || n != 3 {
			t.Fatalf("k2 Rotate: %d, %v; want 3", n, err)
		}
		if got := mustCurrent(t, k1, a).Version(); got != 2 {
			t.Fatalf("k1 current %d, want 2 (cached)", got)
		}
		clock.Advance(DefaultRefresh + time.Second)
		if got := mustCurrent(t, k1, a).Version(); got != 3 {
			t.Fatalf("k1 current %d, want 3", got)
		}
		for _, st := range []sealedTrace{v1, v2, sealTrace(t, k1, a, "trace-3", []byte("v3")), bv1} {
			mustOpen(t, k1, st)
			mustOpen(t, k2, st)
		}
		if got := versions(t, ks, a); !slices.Equal(got, []int{1, 2, 3}) {
			t.Fatalf("versions of a: %v", got)
		}
		if got := versions(t, ks, b); !slices.Equal(got, []int{1}) {
			t.Fatalf("rotating a touched b: %v", got)
		}
		// Rotating a tenant with no key yet creates v1.
		c := newTenant(t, "c")
		if n, err := k1.Rotate(ctx, c); err != nil || n != 1 {
			t.Fatalf("Rotate of a fresh tenant: %d, %v", n, err)
		}
	})
}

// TestCacheRefresh: a cached tenant costs no store read within the refresh
// interval and one after it.
func TestCacheRefresh(t *testing.T) {
	ms := newMemStore()
	clock := newFakeClock()
	k := newKeyring(t, randomBytes(t, KeySize), ms, WithClock(clock.Now), WithRefresh(time.Minute))
	st := sealTrace(t, k, "a", "trace-1", []byte("x"))
	before := ms.reads.Load()
	for range 100 {
		mustCurrent(t, k, "a")
		mustOpen(t, k, st)
	}
	if n := ms.reads.Load() - before; n != 0 {
		t.Fatalf("%d store reads within the refresh interval, want 0", n)
	}
	clock.Advance(time.Minute)
	for range 100 {
		mustCurrent(t, k, "a")
		mustOpen(t, k, st)
	}
	if n := ms.reads.Load() - before; n != 1 {
		t.Fatalf("%d store reads after the interval, want 1", n)
	}
}

// TestStoreOutage: with the store unreachable, cached keys keep sealing
// and opening (the recorder preloads keys for this), the store is retried
// about once per retry interval, and what needs the store fails.
func TestStoreOutage(t *testing.T) {
	ctx := context.Background()
	ms := newMemStore()
	clock := newFakeClock()
	k := newKeyring(t, randomBytes(t, KeySize), ms, WithClock(clock.Now))
	st := sealTrace(t, k, "a", "trace-1", []byte("x"))

	ms.down.Store(true)
	clock.Advance(DefaultRefresh + time.Second)
	before := ms.reads.Load()
	for range 10 {
		if got := mustCurrent(t, k, "a").Version(); got != 1 {
			t.Fatalf("current v%d", got)
		}
		mustOpen(t, k, st)
	}
	if n := ms.reads.Load() - before; n != 1 {
		t.Fatalf("%d store reads during the outage, want 1 (then wait for the retry interval)", n)
	}
	clock.Advance(retryInterval)
	mustCurrent(t, k, "a")
	if n := ms.reads.Load() - before; n != 2 {
		t.Fatalf("%d store reads after the retry interval, want 2", n)
	}
	if _, err := k.Current(ctx, "b"); !errors.Is(err, errDown) {
		t.Fatalf("Current of an uncached tenant: %v, want the store's error", err)
	}
	if _, err := k.Rotate(ctx, "a"); !errors.Is(err, errDown) {
		t.Fatalf("Rotate: %v, want the store's error", err)
	}
	if _, err := k.Open(ctx, "a", 2, "trace-2", FieldRequest, st.s); !errors.Is(err, errDown) {
		t.Fatalf("Open of an unknown version: %v, want the store's error", err)
	}

	ms.down.Store(false)
	clock.Advance(retryInterval)
	if _, err := k.Rotate(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got := mustCurrent(t, k, "a").Version(); got != 2 {
		t.Fatalf("current v%d after recovery, want 2", got)
	}
	mustOpen(t, k, st)
}

func TestRotateMaster(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		oldM, newM := randomBytes(t, KeySize), randomBytes(t, KeySize)
		k := newKeyring(t, oldM, ks)
		var sealed []sealedTrace
		for _, name := range []string{"a", "b", "c"} {
			id := newTenant(t, name)
			sealed = append(sealed, sealTrace(t, k, id, "t1-"+name, []byte("v1 body of "+name)))
			if name != "c" {
				if _, err := k.Rotate(ctx, id); err != nil {
					t.Fatal(err)
				}
				sealed = append(sealed, sealTrace(t, k, id, "t2-"+name, []byte("v2 body of "+name)))
			}
		}
		before, err := ks.AllTenantKeys(ctx)
		if err != nil || len(before) != 5 {
			t.Fatalf("AllTenantKeys: %d keys, %v", len(before), err)
		}
		oldID, newID := mustID(t, oldM), mustID(t, newM)
		for _, r := range before {
			if r.MasterKeyID != oldID {
				t.Errorf("%s v%d stored under master key %q, want %s", r.TenantID, r.Version, r.MasterKeyID, oldID)
			}
		}

		rot, err := RotateMaster(ctx, ks, oldM, newM, RotateOptions{})
		if err != nil || rot.Rewrapped != 5 || rot.NewDataKeys != 0 || rot.From != oldID || rot.To != newID {
			t.Fatalf("RotateMaster: %+v, %v; want 5 rewrapped from %s to %s", rot, err, oldID, newID)
		}
		after, err := ks.AllTenantKeys(ctx)
		if err != nil || len(after) != 5 {
			t.Fatalf("AllTenantKeys: %d keys, %v", len(after), err)
		}
		om, _ := loadMaster(oldM)
		nm, _ := loadMaster(newM)
		for _, r := range after {
			if _, err := om.unwrap(r.TenantID, r.Version, r.Wrapped, r.Nonce); !errors.Is(err, ErrUnwrap) {
				t.Errorf("%s v%d still unwraps with the old master key", r.TenantID, r.Version)
			}
			dk, err := nm.unwrap(r.TenantID, r.Version, r.Wrapped, r.Nonce)
			if err != nil {
				t.Errorf("%s v%d: %v", r.TenantID, r.Version, err)
			}
			if r.MasterKeyID != newID {
				t.Errorf("%s v%d: master key %q after the rotation, want %s", r.TenantID, r.Version, r.MasterKeyID, newID)
			}
			i := slices.IndexFunc(before, func(b store.TenantKey) bool { return b.TenantID == r.TenantID && b.Version == r.Version })
			if i < 0 {
				t.Fatalf("%s v%d appeared", r.TenantID, r.Version)
			}
			old, _ := om.unwrap(r.TenantID, r.Version, before[i].Wrapped, before[i].Nonce)
			if !bytes.Equal(dk, old) {
				t.Errorf("%s v%d: the data key changed", r.TenantID, r.Version)
			}
			if bytes.Equal(r.Nonce, before[i].Nonce) {
				t.Errorf("%s v%d: nonce reused", r.TenantID, r.Version)
			}
		}

		// A fresh keyring on the new master opens everything; one on the
		// old master opens nothing (the running one still has its cache)
		// and may not add keys any more.
		kNew := newKeyring(t, newM, ks)
		kOld := newKeyring(t, oldM, ks)
		for _, st := range sealed {
			mustOpen(t, kNew, st)
			mustOpen(t, k, st)
			if _, err := st.open(kOld); !errors.Is(err, ErrUnwrap) {
				t.Errorf("old master opens %s after the rotation: %v", st.trace, err)
			} else if !strings.Contains(err.Error(), newID) {
				t.Errorf("the error does not name the master key the row is wrapped under: %v", err)
			}
		}
		if _, err := kOld.Rotate(ctx, sealed[0].tenant); !errors.Is(err, store.ErrWrongMasterKey) {
			t.Errorf("a keyring on the retired master key added a key: %v, want ErrWrongMasterKey", err)
		}

		// Running it again: nothing unwraps with the "old" key any more.
		if _, err := RotateMaster(ctx, ks, oldM, newM, RotateOptions{}); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("second RotateMaster: %v, want ErrUnwrap", err)
		} else {
			t.Logf("second run: %v", err)
		}
		// Back to the retired key: refused, even though every key unwraps.
		if _, err := RotateMaster(ctx, ks, newM, oldM, RotateOptions{}); !errors.Is(err, store.ErrConflict) {
			t.Fatalf("rotation back to the retired master key: %v, want ErrConflict", err)
		}

		// Atomicity: corrupt one key (through a store-level rotation to a
		// third master key); rotating on to a fourth must fail and leave
		// every row as it was.
		thirdM := randomBytes(t, KeySize)
		third, _ := loadMaster(thirdM)
		var corrupt store.TenantKey
		r := store.MasterKeyRotation{From: newID, To: third.id}
		for i, row := range after {
			dk, err := nm.unwrap(row.TenantID, row.Version, row.Wrapped, row.Nonce)
			if err != nil {
				t.Fatal(err)
			}
			row.Wrapped, row.Nonce, _ = third.wrap(row.TenantID, row.Version, dk)
			row.MasterKeyID = third.id
			if i == 2 {
				row.Wrapped = flip(row.Wrapped, 0)
				corrupt = row
			}
			r.Rewrapped = append(r.Rewrapped, row)
		}
		if _, err := ks.RotateMasterKey(ctx, r); err != nil {
			t.Fatal(err)
		}
		snapshot, _ := ks.AllTenantKeys(ctx)
		if _, err := RotateMaster(ctx, ks, thirdM, randomBytes(t, KeySize), RotateOptions{NewDataKeys: true}); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("RotateMaster with a corrupt key: %v, want ErrUnwrap", err)
		} else {
			t.Logf("corrupt key: %v", err)
		}
		now, _ := ks.AllTenantKeys(ctx)
		if !sameKeys(snapshot, now) {
			t.Fatal("a failed RotateMaster changed keys")
		}
		// Every trace of the other tenants still opens with the third master.
		k3 := newKeyring(t, thirdM, ks)
		for _, st := range sealed {
			if st.tenant == corrupt.TenantID && st.version == corrupt.Version {
				if _, err := st.open(k3); !errors.Is(err, ErrUnwrap) {
					t.Errorf("trace under the corrupt key: %v, want ErrUnwrap", err)
				}
				continue
			}
			mustOpen(t, k3, st)
		}
	})
}

// With NewDataKeys, every tenant with keys gets the next version, wrapped
// under the new master key, in the same transaction: new traces use it,
// old ones keep opening.
func TestRotateMasterNewDataKeys(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		oldM, newM := randomBytes(t, KeySize), randomBytes(t, KeySize)
		clock := newFakeClock()
		k := newKeyring(t, oldM, ks, WithClock(clock.Now))
		a, b := newTenant(t, "a"), newTenant(t, "b")
		newTenant(t, "c") // no key yet: gets none
		var sealed []sealedTrace
		sealed = append(sealed, sealTrace(t, k, a, "a1", []byte("a v1")))
		if _, err := k.Rotate(ctx, a); err != nil {
			t.Fatal(err)
		}
		sealed = append(sealed, sealTrace(t, k, a, "a2", []byte("a v2")), sealTrace(t, k, b, "b1", []byte("b v1")))
		rot, err := RotateMaster(ctx, ks, oldM, newM, RotateOptions{NewDataKeys: true, Now: clock.Now})
		if err != nil || rot.Rewrapped != 3 || rot.NewDataKeys != 2 {
			t.Fatalf("RotateMaster: %+v, %v; want 3 rewrapped, 2 new data keys", rot, err)
		}
		kNew := newKeyring(t, newM, ks, WithClock(clock.Now))
		for tenant, want := range map[string]int{a: 3, b: 2} {
			tk := mustCurrent(t, kNew, tenant)
			if tk.Version() != want {
				t.Errorf("tenant %s: current v%d after the rotation, want v%d", tenant, tk.Version(), want)
			}
			rows, _ := ks.TenantKeys(ctx, tenant)
			last := rows[len(rows)-1]
			if last.MasterKeyID != rot.To || !last.CreatedAt.Equal(clock.Now()) {
				t.Errorf("tenant %s: new key under %q created %s, want %s at %s", tenant, last.MasterKeyID, last.CreatedAt, rot.To, clock.Now())
			}
			// A new data key, not a copy of an old one.
			st := sealTrace(t, kNew, tenant, "new-"+tenant, []byte("new"))
			old := st
			old.version = want - 1
			if _, err := old.open(kNew); !errors.Is(err, ErrOpen) {
				t.Errorf("tenant %s: a trace of the new version opens with the previous one: %v", tenant, err)
			}
			mustOpen(t, kNew, st)
		}
		for _, st := range sealed {
			mustOpen(t, kNew, st)
		}
	})
}

// A shred is pending until the next rotation, which completes it.
func TestShredCompletesWithRotation(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		oldM, newM := randomBytes(t, KeySize), randomBytes(t, KeySize)
		clock := newFakeClock()
		k := newKeyring(t, oldM, ks, WithClock(clock.Now))
		a, b := newTenant(t, "a"), newTenant(t, "b")
		sealTrace(t, k, a, "a1", []byte("a"))
		st := sealTrace(t, k, b, "b1", []byte("b"))
		backup, err := ks.TenantKeys(ctx, a) // what a backup keeps
		if err != nil || len(backup) != 1 {
			t.Fatalf("keys of a: %v, %v", backup, err)
		}
		if err := k.Shred(ctx, a); err != nil {
			t.Fatal(err)
		}
		sh, err := ks.ShredTenant(ctx, a, time.Time{}) // again: the first record
		if err != nil {
			t.Fatal(err)
		}
		if !sh.Pending() || sh.KeyVersions != 1 || sh.MasterKeyID != mustID(t, oldM) || !sh.ShreddedAt.Equal(clock.Now()) {
			t.Fatalf("Shred = %+v; want pending, 1 key under %s at %s", sh, mustID(t, oldM), clock.Now())
		}
		// The backup's copy still unwraps with the master key in use.
		om, _ := loadMaster(oldM)
		if _, err := om.unwrapKey(a, backup[0]); err != nil {
			t.Fatalf("the backup's copy does not unwrap before the rotation: %v", err)
		}
		clock.Advance(time.Hour)
		rot, err := RotateMaster(ctx, ks, oldM, newM, RotateOptions{Now: clock.Now})
		if err != nil || len(rot.Completed) != 1 || rot.Completed[0].TenantID != a || !rot.Completed[0].CompletedAt.Equal(clock.Now()) {
			t.Fatalf("RotateMaster = %+v, %v; want the shred of %s completed at %s", rot, err, a, clock.Now())
		}
		// With the old master key destroyed, the backup's copy is noise.
		nm, _ := loadMaster(newM)
		if _, err := nm.unwrapKey(a, backup[0]); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("the backup's copy unwraps under the new master key: %v", err)
		}
		mustOpen(t, newKeyring(t, newM, ks), st)
	})
}

func mustID(t *testing.T, master []byte) string {
	t.Helper()
	id, err := MasterKeyID(master)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func sameKeys(a, b []store.TenantKey) bool {
	key := func(k store.TenantKey) string {
		return fmt.Sprintf("%s/%d/%x/%x", k.TenantID, k.Version, k.Wrapped, k.Nonce)
	}
	var as, bs []string
	for _, k := range a {
		as = append(as, key(k))
	}
	for _, k := range b {
		bs = append(bs, key(k))
	}
	slices.Sort(as)
	slices.Sort(bs)
	return slices.Equal(as, bs)
}

func TestRotateMasterEmptyStore(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, _ func(*testing.T, string) string) {
		oldM, newM := randomBytes(t, KeySize), randomBytes(t, KeySize)
		rot, err := RotateMaster(context.Background(), ks, oldM, newM, RotateOptions{NewDataKeys: true})
		if rot.Rewrapped != 0 || rot.NewDataKeys != 0 || err != nil {
			t.Fatalf("RotateMaster on no keys: %+v, %v", rot, err)
		}
		// The store now knows the new key as current: the old one cannot
		// rotate it again, nor can the same key be the new one.
		if _, err := RotateMaster(context.Background(), ks, oldM, randomBytes(t, KeySize), RotateOptions{}); !errors.Is(err, store.ErrWrongMasterKey) {
			t.Errorf("rotating from the retired key: %v, want ErrWrongMasterKey", err)
		}
		if _, err := RotateMaster(context.Background(), ks, newM, newM, RotateOptions{}); err == nil {
			t.Error("rotating to the same key: no error")
		}
	})
}

// MasterKeyID is a keyed hash: stable for a key, different across keys,
// and not the key's bytes.
func TestMasterKeyID(t *testing.T) {
	a, b := randomBytes(t, KeySize), randomBytes(t, KeySize)
	ida, idb := mustID(t, a), mustID(t, b)
	if ida != mustID(t, a) || ida == idb || len(ida) != 16 || strings.Contains(fmt.Sprintf("%x", a), ida) {
		t.Errorf("MasterKeyID: %s, %s", ida, idb)
	}
	// Pinned (computed independently with openssl dgst -sha256 -mac HMAC):
	// the store holds these, so they must never change.
	if got := mustID(t, make([]byte, KeySize)); got != "730a2a6eef64d15c" {
		t.Errorf("MasterKeyID(zero key) = %s; the identifier of a key must never change", got)
	}
	if _, err := MasterKeyID(make([]byte, 31)); err == nil {
		t.Error("MasterKeyID of 31 bytes: no error")
	}
	if k := newKeyring(t, a, newMemStore()); k.MasterKeyID() != ida {
		t.Errorf("Keyring.MasterKeyID = %s, want %s", k.MasterKeyID(), ida)
	}
}

func TestShred(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		master := randomBytes(t, KeySize)
		clock := newFakeClock()
		k := newKeyring(t, master, ks, WithClock(clock.Now))
		other := newKeyring(t, master, ks, WithClock(clock.Now)) // another process, keys cached
		a, b := newTenant(t, "a"), newTenant(t, "b")
		v1 := sealTrace(t, k, a, "trace-1", []byte("to be forgotten"))
		if _, err := k.Rotate(ctx, a); err != nil {
			t.Fatal(err)
		}
		v2 := sealTrace(t, k, a, "trace-2", []byte("also forgotten"))
		keep := sealTrace(t, k, b, "trace-b", []byte("b stays"))
		mustOpen(t, other, v1)
		mustOpen(t, other, v2)

		if err := k.Shred(ctx, a); err != nil {
			t.Fatal(err)
		}
		if got := versions(t, ks, a); len(got) != 0 {
			t.Fatalf("keys left after shred: %v", got)
		}
		// knows: the keyring saw the tenant's keys before, so Open can tell
		// it was shredded; otherwise Open only reports ErrNoKey.
		checkShredded := func(t *testing.T, k *Keyring, knows bool) {
			t.Helper()
			for _, st := range []sealedTrace{v1, v2} {
				got, err := st.open(k)
				if !errors.Is(err, ErrNoKey) || errors.Is(err, ErrShredded) != knows || errors.Is(err, ErrOpen) || got != nil {
					t.Errorf("open v%d after shred: %q, %v; want ErrNoKey (and ErrShredded: %v)", st.version, got, err, knows)
				}
			}
			tk, err := k.Current(ctx, a)
			if !errors.Is(err, ErrShredded) || !errors.Is(err, ErrNoKey) || tk != nil {
				t.Errorf("Current after shred: %v, %v; want ErrShredded", tk, err)
			}
			if _, err := k.Rotate(ctx, a); !errors.Is(err, ErrShredded) {
				t.Errorf("Rotate after shred: %v; want ErrShredded", err)
			}
			if got := versions(t, ks, a); len(got) != 0 {
				t.Fatalf("keys created after shred: %v", got)
			}
		}
		t.Run("same keyring", func(t *testing.T) { checkShredded(t, k, true) })
		t.Run("other keyring after refresh", func(t *testing.T) {
			// Within the interval the other process still has its cache
			// (documented); after it, the shred is seen.
			clock.Advance(DefaultRefresh + time.Second)
			checkShredded(t, other, true)
		})
		t.Run("fresh keyring", func(t *testing.T) {
			// Never saw the tenant's keys: the store refuses a new key
			// and lists the tenant as deleted.
			checkShredded(t, newKeyring(t, master, ks), false)
		})
		// Tenant b is untouched.
		mustOpen(t, k, keep)
		mustOpen(t, other, keep)
		if got := mustCurrent(t, k, b).Version(); got != 1 {
			t.Fatalf("b's key version %d", got)
		}
	})
}

// TestConcurrentFirstUse: many goroutines on two keyrings (two processes)
// ask for a fresh tenant's key at once; exactly one v1 is stored and every
// seal opens with both keyrings.
func TestConcurrentFirstUse(t *testing.T) {
	forEachBackend(t, func(t *testing.T, ks KeyStore, newTenant func(*testing.T, string) string) {
		ctx := context.Background()
		master := randomBytes(t, KeySize)
		krs := []*Keyring{newKeyring(t, master, ks), newKeyring(t, master, ks)}
		for round := range 3 {
			tenant := newTenant(t, fmt.Sprintf("fresh-%d", round))
			const workers = 16
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				results []sealedTrace
				errs    []error
				start   = make(chan struct{})
			)
			for i := range workers {
				wg.Go(func() {
					<-start
					k := krs[i%2]
					tk, err := k.Current(ctx, tenant)
					var st sealedTrace
					if err == nil {
						trace := fmt.Sprintf("trace-%d", i)
						body := []byte(fmt.Sprintf("body %d", i))
						var s store.Sealed
						s, err = tk.Seal(trace, FieldRequest, body)
						st = sealedTrace{tenant, trace, FieldRequest, tk.Version(), body, s}
					}
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						errs = append(errs, err)
						return
					}
					results = append(results, st)
				})
			}
			close(start)
			wg.Wait()
			if len(errs) > 0 {
				t.Fatalf("Current: %v", errs)
			}
			if got := versions(t, ks, tenant); !slices.Equal(got, []int{1}) {
				t.Fatalf("stored versions %v, want exactly [1]", got)
			}
			for _, st := range results {
				if st.version != 1 {
					t.Fatalf("sealed with v%d", st.version)
				}
				mustOpen(t, krs[0], st)
				mustOpen(t, krs[1], st)
				mustOpen(t, newKeyring(t, master, ks), st)
			}
		}
	})
}

// TestConcurrentUse exercises Current, Seal, Open and Rotate together under
// the race detector.
func TestConcurrentUse(t *testing.T) {
	ks := newMemStore()
	master := randomBytes(t, KeySize)
	clock := newFakeClock()
	k := newKeyring(t, master, ks, WithClock(clock.Now))
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			tenant := fmt.Sprintf("t%d", g%3)
			for i := range 200 {
				tk, err := k.Current(ctx, tenant)
				if err != nil {
					t.Error(err)
					return
				}
				trace := fmt.Sprintf("g%d-%d", g, i)
				s, err := tk.Seal(trace, FieldResponse, []byte(trace))
				if err != nil {
					t.Error(err)
					return
				}
				if got, err := k.Open(ctx, tenant, tk.Version(), trace, FieldResponse, s); err != nil || string(got) != trace {
					t.Errorf("open: %q, %v", got, err)
					return
				}
				switch {
				case g == 0 && i%50 == 0:
					if _, err := k.Rotate(ctx, tenant); err != nil {
						t.Error(err)
					}
				case g == 1 && i%20 == 0:
					clock.Advance(DefaultRefresh)
				}
			}
		})
	}
	wg.Wait()
}

func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	ctx := context.Background()
	k := newKeyring(t, randomBytes(t, KeySize), newMemStore())
	body := randomBytes(t, 2048)
	st := sealTrace(t, k, "a", "trace-1", body)
	tk := mustCurrent(t, k, "a")
	if n := testing.AllocsPerRun(100, func() { k.Current(ctx, "a") }); n != 0 {
		t.Errorf("Current (cached): %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { tk.Seal("trace-1", FieldRequest, body) }); n != 1 {
		t.Errorf("Seal: %v allocations, want 1 (nonce and ciphertext together)", n)
	}
	if n := testing.AllocsPerRun(100, func() { st.open(k) }); n != 1 {
		t.Errorf("Open: %v allocations, want 1 (the plaintext)", n)
	}
	empty := mustSeal(t, tk, "trace-1", FieldMessage, nil)
	if n := testing.AllocsPerRun(100, func() { k.Open(ctx, "a", 1, "trace-1", FieldMessage, empty) }); n != 0 {
		t.Errorf("Open of an empty body: %v allocations, want 0", n)
	}
}
