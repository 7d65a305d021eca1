package trace

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/loom-runtime/loom/core/store"
)

func sampleRow(i int) store.Trace {
	n := int64(i)
	return store.Trace{
		ID: "0190a000-0000-7000-8000-00000000000" + string(rune('0'+i%10)), TenantID: "t", Endpoint: "chat.completions",
		Status: StatusOK, HTTPStatus: 200, KeyVersion: 1, PromptTokens: &n,
		Request:   store.Sealed{Nonce: []byte("123456789012"), Ciphertext: []byte{0, 1, 2, 255}},
		CreatedAt: time.Date(2026, 11, 21, 10, 0, 0, 123000, time.UTC), ChainID: "c", ChainSeq: n, PrevHash: ZeroHash, Hash: ZeroHash,
		CanonicalVersion: CanonicalCurrent,
	}
}

func TestSpoolRoundTrip(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	batches := [][]store.Trace{{sampleRow(1), sampleRow(2)}, {sampleRow(3)}}
	for _, b := range batches {
		if err := sp.append(b); err != nil {
			t.Fatal(err)
		}
	}
	// A crash mid-write leaves only a temporary file: it is ignored and removed.
	os.WriteFile(filepath.Join(dir, "00000000000000000099.spool.tmp"), []byte("junk"), 0o600)
	sp, err = openSpool(dir, 1<<20) // as after a restart
	if err != nil {
		t.Fatal(err)
	}
	files, _ := sp.files()
	if len(files) != 2 {
		t.Fatalf("files %v", files)
	}
	for i, f := range files {
		rows, err := sp.read(f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(rows, batches[i]) {
			t.Fatalf("batch %d: got %+v want %+v", i, rows, batches[i])
		}
	}
	if err := sp.append([]store.Trace{sampleRow(4)}); err != nil {
		t.Fatal(err)
	}
	if files2, _ := sp.files(); len(files2) != 3 || files2[2] <= files[1] {
		t.Fatalf("new file does not sort after the old ones: %v", files2)
	}
	for _, f := range files {
		if err := sp.remove(f); err != nil {
			t.Fatal(err)
		}
	}
	if sp.bytes.Load() <= 0 {
		t.Fatal("size accounting lost the remaining file")
	}
}

func TestSpoolDetectsCorruption(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openSpool(dir, 0)
	sp.append([]store.Trace{sampleRow(1)})
	files, _ := sp.files()
	path := filepath.Join(dir, files[0])
	b, _ := os.ReadFile(path)
	b[len(b)-3] ^= 0xff
	os.WriteFile(path, b, 0o600)
	if _, err := sp.read(files[0]); err == nil {
		t.Fatal("flipped byte not detected")
	}
	if err := sp.quarantine(files[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "corrupt", files[0])); err != nil {
		t.Fatal("corrupt file not kept for the operator")
	}
}

func TestSpoolLimit(t *testing.T) {
	sp, _ := openSpool(t.TempDir(), 200)
	if sp.full() {
		t.Fatal("empty spool full")
	}
	sp.append([]store.Trace{sampleRow(1), sampleRow(2)})
	if !sp.full() {
		t.Fatalf("spool of %d bytes with a 200-byte limit is not full", sp.bytes.Load())
	}
}

// A spool file left by a Loom from before canonical versions were stored
// holds rows without one: they were hashed with v1 and read back as v1,
// so they verify once replayed.
func TestSpoolRowsWithoutVersionAreV1(t *testing.T) {
	sp, err := openSpool(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	old := sampleRow(1)
	old.CanonicalVersion = CanonicalV1
	h, err := ChainHash(&old)
	if err != nil {
		t.Fatal(err)
	}
	old.Hash, old.CanonicalVersion = h, 0 // as an earlier Loom spooled it: no version
	if err := sp.append([]store.Trace{old}); err != nil {
		t.Fatal(err)
	}
	files, _ := sp.files()
	rows, err := sp.read(files[0])
	if err != nil || len(rows) != 1 {
		t.Fatalf("read: %v %d rows", err, len(rows))
	}
	if rows[0].CanonicalVersion != CanonicalV1 {
		t.Fatalf("canonical version %d, want %d", rows[0].CanonicalVersion, CanonicalV1)
	}
	if got, err := ChainHash(&rows[0]); err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("replayed row does not verify: %v", err)
	}
}
