package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strconv"
	"sync"

	"github.com/loom-runtime/loom/core/store"
)

// Sizes of the AES-256-GCM parameters used throughout.
const (
	KeySize   = 32 // master and data keys: AES-256
	NonceSize = 12 // 96-bit random nonces
	TagSize   = 16 // GCM authentication tag, appended to every ciphertext

	// WrappedSize is the length of store.TenantKey.Wrapped.
	WrappedSize = KeySize + TagSize
)

// Field names for the sealed bodies of a store.Trace. They are part of the
// associated data, so a trace's fields must always be sealed and opened
// under the same name.
const (
	FieldRequest  = "request"
	FieldResponse = "response"
	FieldMessage  = "message"
)

// Domain labels of the associated data (see the package documentation),
// and of the master key identifier.
const (
	keyADLabel    = "loom/tenant-key/v1"
	fieldADLabel  = "loom/trace-field/v1"
	masterIDLabel = "loom/master-key-id/v1"
)

var (
	// ErrNoKey: the tenant has no data key of the version asked for, e.g.
	// because the tenant was shredded or the trace names a version that
	// was never created.
	ErrNoKey = errors.New("no such tenant data key")
	// ErrShredded: the tenant was deleted and its keys destroyed. Errors
	// that match ErrShredded also match ErrNoKey.
	ErrShredded = errors.New("tenant keys shredded")
	// ErrOpen: a sealed field failed authentication: its ciphertext, tag or
	// nonce was altered, or it is opened as another tenant, trace or field
	// than it was sealed for.
	ErrOpen = errors.New("sealed field failed authentication")
	// ErrUnwrap: a wrapped data key failed authentication under the master
	// key: the master key is not the one the key was wrapped with, or the
	// key row was altered or moved to another tenant or version.
	ErrUnwrap = errors.New("tenant data key does not unwrap under this master key (wrong master key, or the key row was altered or moved)")
)

// shreddedError is returned for a shredded tenant; it matches both
// ErrShredded and ErrNoKey.
func shreddedError(op, tenantID string) error {
	return fmt.Errorf("seal: %s: tenant %s: %w (%w)", op, tenantID, ErrShredded, ErrNoKey)
}

// appendLP appends uint32_be(len(s)) ‖ s. Callers check fitsLP first.
func appendLP(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

func fitsLP(parts ...string) bool {
	for _, p := range parts {
		if uint64(len(p)) > math.MaxUint32 {
			return false
		}
	}
	return true
}

// appendKeyAD appends the associated data binding a wrapped data key to its
// tenant and version.
func appendKeyAD(b []byte, tenantID string, version int) []byte {
	b = append(b, keyADLabel...)
	b = append(b, 0)
	b = appendLP(b, tenantID)
	var v [20]byte
	d := strconv.AppendInt(v[:0], int64(version), 10)
	b = binary.BigEndian.AppendUint32(b, uint32(len(d)))
	return append(b, d...)
}

// appendFieldAD appends the associated data binding a sealed field to its
// tenant, trace and field name.
func appendFieldAD(b []byte, tenantID, traceID, field string) []byte {
	b = append(b, fieldADLabel...)
	b = append(b, 0)
	b = appendLP(b, tenantID)
	b = appendLP(b, traceID)
	return appendLP(b, field)
}

// KeyAD returns the associated data a wrapped data key of tenantID and
// version is bound to (documentation and audit tooling; the package uses it
// internally).
func KeyAD(tenantID string, version int) []byte {
	return appendKeyAD(nil, tenantID, version)
}

// FieldAD returns the associated data a sealed field is bound to.
func FieldAD(tenantID, traceID, field string) []byte {
	return appendFieldAD(nil, tenantID, traceID, field)
}

// adPool recycles associated-data buffers so that Seal and Open allocate
// nothing but their outputs. (A stack buffer would escape: it is passed to
// cipher.AEAD, an interface.)
var adPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 128)
	return &b
}}

// maxPooledAD keeps unusually long associated data out of the pool.
const maxPooledAD = 1 << 10

func putAD(p *[]byte, b []byte) {
	if cap(b) > maxPooledAD {
		return
	}
	*p = b[:0]
	adPool.Put(p)
}

// newAEAD builds AES-256-GCM from a 32-byte key. The key schedule is
// copied into the cipher, so the caller may zero key afterwards.
func newAEAD(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// master is the master key's AEAD, which wraps and unwraps data keys, and
// its identifier.
type master struct {
	aead cipher.AEAD
	id   string
}

func loadMaster(key []byte) (master, error) {
	id, err := MasterKeyID(key)
	if err != nil {
		return master{}, err
	}
	a, err := newAEAD(key)
	if err != nil {
		return master{}, fmt.Errorf("seal: master key: %w", err)
	}
	return master{a, id}, nil
}

// MasterKeyID returns the identifier of a 32-byte master key: the first 8
// bytes of HMAC-SHA256(key, "loom/master-key-id/v1") as 16 lower-case hex
// digits. The store records which master key wraps its data keys by this
// identifier, and messages name keys by it; it reveals nothing of the key.
func MasterKeyID(key []byte) (string, error) {
	if len(key) != KeySize {
		return "", fmt.Errorf("seal: master key must be %d bytes, got %d", KeySize, len(key))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(masterIDLabel))
	return hex.EncodeToString(mac.Sum(nil)[:8]), nil
}

// wrap encrypts the data key dk for tenantID and version under a fresh
// random nonce.
func (m master) wrap(tenantID string, version int, dk []byte) (wrapped, nonce []byte, err error) {
	if !fitsLP(tenantID) {
		return nil, nil, errors.New("seal: tenant id too long")
	}
	buf := make([]byte, NonceSize+WrappedSize)
	nonce = buf[:NonceSize:NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, fmt.Errorf("seal: random nonce: %w", err)
	}
	ad := appendKeyAD(make([]byte, 0, 64), tenantID, version)
	wrapped = m.aead.Seal(buf[NonceSize:NonceSize], nonce, dk, ad)
	return wrapped, nonce, nil
}

// unwrap decrypts a wrapped data key of tenantID and version. The caller
// owns (and should zero) the result. The error matches ErrUnwrap when the
// key fails authentication; it never contains key material.
func (m master) unwrap(tenantID string, version int, wrapped, nonce []byte) ([]byte, error) {
	if len(nonce) != NonceSize || len(wrapped) != WrappedSize || !fitsLP(tenantID) {
		return nil, fmt.Errorf("seal: tenant %s key v%d: malformed (nonce %d bytes, wrapped %d bytes): %w",
			tenantID, version, len(nonce), len(wrapped), ErrUnwrap)
	}
	ad := appendKeyAD(make([]byte, 0, 64), tenantID, version)
	dk, err := m.aead.Open(make([]byte, 0, KeySize), nonce, wrapped, ad)
	if err != nil {
		return nil, fmt.Errorf("seal: tenant %s key v%d: %w", tenantID, version, ErrUnwrap)
	}
	return dk, nil
}

// unwrapKey unwraps a stored key row into a TenantKey for tenantID (the
// tenant asked for, not the row's own TenantID field, so a row returned
// for the wrong tenant cannot authenticate), zeroing the raw key.
func (m master) unwrapKey(tenantID string, row store.TenantKey) (*TenantKey, error) {
	dk, err := m.unwrap(tenantID, row.Version, row.Wrapped, row.Nonce)
	if err != nil {
		if row.MasterKeyID != "" && row.MasterKeyID != m.id {
			return nil, fmt.Errorf("seal: tenant %s key v%d is wrapped under master key %s, this one is %s: %w",
				tenantID, row.Version, row.MasterKeyID, m.id, ErrUnwrap)
		}
		return nil, err
	}
	defer clear(dk)
	return newTenantKey(tenantID, row.Version, dk)
}

// TenantKey is one unwrapped version of a tenant's data key, ready to seal.
// It holds the AES-256-GCM cipher built from the key, not the key bytes.
// Safe for concurrent use.
type TenantKey struct {
	tenantID string
	version  int
	aead     cipher.AEAD
}

func newTenantKey(tenantID string, version int, dk []byte) (*TenantKey, error) {
	a, err := newAEAD(dk)
	if err != nil {
		return nil, fmt.Errorf("seal: tenant %s key v%d: %w", tenantID, version, err)
	}
	return &TenantKey{tenantID: tenantID, version: version, aead: a}, nil
}

// TenantID returns the tenant the key belongs to.
func (t *TenantKey) TenantID() string { return t.tenantID }

// Version returns the key version; store it in store.Trace.KeyVersion.
func (t *TenantKey) Version() int { return t.version }

// String identifies the key without revealing it.
func (t *TenantKey) String() string {
	return "seal.TenantKey{tenant " + t.tenantID + ", v" + strconv.Itoa(t.version) + "}"
}

// Seal encrypts one field of a trace under a fresh random nonce. The
// result always has a non-nil Ciphertext (16 bytes for an empty or nil
// plaintext); to record an absent field, do not call Seal and leave the
// store.Sealed zero. Nonce and Ciphertext share one allocation.
func (t *TenantKey) Seal(traceID, field string, plaintext []byte) (store.Sealed, error) {
	if !fitsLP(traceID, field) || len(plaintext) > math.MaxInt-NonceSize-TagSize {
		return store.Sealed{}, fmt.Errorf("seal: tenant %s trace %s field %s: input too long", t.tenantID, traceID, field)
	}
	buf := make([]byte, NonceSize+len(plaintext)+TagSize)
	nonce := buf[:NonceSize:NonceSize]
	if _, err := rand.Read(nonce); err != nil {
		return store.Sealed{}, fmt.Errorf("seal: random nonce: %w", err)
	}
	p := adPool.Get().(*[]byte)
	ad := appendFieldAD((*p)[:0], t.tenantID, traceID, field)
	ct := t.aead.Seal(buf[NonceSize:NonceSize], nonce, plaintext, ad)
	putAD(p, ad)
	return store.Sealed{Nonce: nonce, Ciphertext: ct}, nil
}

// open decrypts a sealed field. The caller handles absent fields.
func (t *TenantKey) open(traceID, field string, s store.Sealed) ([]byte, error) {
	if len(s.Nonce) != NonceSize || len(s.Ciphertext) < TagSize || !fitsLP(traceID, field) {
		return nil, ErrOpen
	}
	p := adPool.Get().(*[]byte)
	ad := appendFieldAD((*p)[:0], t.tenantID, traceID, field)
	// A non-nil destination so that an empty body opens to an empty,
	// non-nil slice (make of length 0 does not allocate).
	out, err := t.aead.Open(make([]byte, 0, len(s.Ciphertext)-TagSize), s.Nonce, s.Ciphertext, ad)
	putAD(p, ad)
	if err != nil {
		return nil, ErrOpen
	}
	return out, nil
}
