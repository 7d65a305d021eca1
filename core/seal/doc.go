// Package seal is Loom's encryption at rest for recorded traces: it keeps
// every tenant's prompts and responses encrypted under keys of that tenant
// only, so a database dump, a backup or a row copied between tenants reveals
// nothing, and destroying a tenant's keys ("shredding") makes its history
// permanently unreadable while the rows (and the hash chains over them) stay.
//
// It uses only the Go standard library: AES-256 in GCM mode (crypto/aes,
// crypto/cipher) with nonces from crypto/rand.
//
// # Key hierarchy
//
//	master key   32 bytes, from LOOM_MASTER_KEY; never stored by Loom
//	   │  wraps (AES-256-GCM)
//	   ▼
//	tenant data key, version 1, 2, …   32 random bytes each; stored only
//	   │                               wrapped, as store.TenantKey rows
//	   │  seals (AES-256-GCM)
//	   ▼
//	trace body fields (request, response, message)   store.Sealed values
//
// A tenant's first data key (version 1) is created on first use. Rotate adds
// version n+1, which seals every trace from then on; older versions stay to
// open older traces. A trace records the version its bodies are sealed with
// (store.Trace.KeyVersion). Key rows are cached per process and re-read
// every refresh interval (DefaultRefresh, 10 s), so a rotation made
// elsewhere is picked up that fast.
//
// # Master key rotation and shredding
//
// The store knows master keys by identifier only (MasterKeyID, an HMAC
// under the key), records which one wraps each data key, and refuses a new
// data key wrapped under any master key but its current one. RotateMaster
// re-encrypts every data key under a new master key in one transaction
// without touching a single trace, retires the old master key for good, and
// can give every tenant a new data key version at the same time
// (RotateOptions.NewDataKeys); without it the data keys stay the same.
//
// Shred deletes every data key of a tenant and marks it deleted; other Loom
// processes drop their cached keys of the tenant within the refresh
// interval. Deleting rows does not erase them: copies stay in backups, in
// the database's write-ahead log and, on PostgreSQL, in dead rows, wrapped
// under the master key of the time, and that key would unwrap them. So the
// store records the shred as pending, and the next RotateMaster completes
// it: once the retired master key is destroyed (which Loom cannot check),
// no copy of the shredded keys can be unwrapped, and the tenant's traces,
// wherever they were copied, can never be opened.
//
// Tenant ids are authenticated byte for byte: pass them in the canonical
// form the store returns (lower-case UUID text).
//
// # Wrapped data keys
//
// A store.TenantKey row holds
//
//	Nonce    12 random bytes
//	Wrapped  AES-256-GCM(key = master key, nonce = Nonce,
//	                     plaintext = the 32-byte data key,
//	                     associated data = KeyAD(tenant id, version))
//	         = 32 bytes of ciphertext followed by the 16-byte tag (48 bytes)
//
// # Sealed fields
//
// A store.Sealed value holds
//
//	Nonce       12 random bytes, fresh for every field
//	Ciphertext  AES-256-GCM(key = the tenant's data key of the trace's KeyVersion,
//	                        nonce = Nonce, plaintext = the body,
//	                        associated data = FieldAD(tenant id, trace id, field name))
//	            = len(body) bytes followed by the 16-byte tag
//
// An empty body seals to a 16-byte ciphertext (the tag alone); a nil
// Ciphertext means the field is absent and is never produced by sealing.
//
// # Associated data
//
// Both kinds of associated data are a domain label, a zero byte, then each
// part as a 4-byte big-endian length followed by the part's bytes:
//
//	KeyAD   = "loom/tenant-key/v1"  0x00  lp(tenant id)  lp(decimal version)
//	FieldAD = "loom/trace-field/v1" 0x00  lp(tenant id)  lp(trace id)  lp(field name)
//	lp(x)   = uint32_be(len(x)) ‖ x
//
// The decimal version is ASCII without sign or leading zeros ("1", "2", …).
// Length prefixes make the encoding injective whatever bytes the parts hold,
// and the labels keep the two uses apart. Consequently:
//
//   - a wrapped key copied to another tenant, or to another version of the
//     same tenant, does not unwrap (ErrUnwrap);
//   - a sealed field moved to another trace, another field, or another tenant
//     does not open (ErrOpen) — even if that tenant somehow held the same data
//     key, because the tenant id is authenticated too; and a field opened
//     under a different key version fails because the key differs;
//   - any change to a nonce, ciphertext or tag fails (ErrOpen, ErrUnwrap).
//
// # Limits
//
// Nonces are random, so one data key version should seal well under 2^32
// fields (NIST SP 800-38D); with two or three fields per trace that is more
// than a billion traces. Loom does not count seals across processes:
// rotate busy tenants' keys periodically. The master key wraps one key per
// (tenant, version) and every RotateMaster, far below that bound.
//
// Unwrapped data keys exist in memory only inside the cipher.AEAD values
// the Keyring caches. The raw key bytes are zeroed as soon as the AES key
// schedule has been built from them, but the schedule itself lives inside
// crypto/aes, which offers no way to erase it; Shred only drops the
// references and leaves the memory to the garbage collector. Go may also
// leave copies behind (stack growth copies stacks, the runtime does not zero
// freed memory, the OS may swap pages). Zeroing here reduces exposure; it is
// not a guarantee. The master key slice passed to NewKeyring or RotateMaster is
// the caller's: it is not retained (only its AES key schedule is), so the
// caller may zero it after the call.
//
// Errors never contain key material: only tenant ids, trace ids, field
// names and key versions.
package seal
