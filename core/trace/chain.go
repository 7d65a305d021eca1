package trace

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"

	"github.com/loom-runtime/loom/core/store"
)

// Canonical encodings. A row's CanonicalVersion names the one its Hash was
// computed with; the encoding starts with that version's name, so the
// format can change without old chains becoming unverifiable.
//
// The stored version can be trusted although it is a column like any other:
// a row read under another version than it was written with encodes to
// bytes starting with another name, which do not hash to its Hash. What
// needs checking is the fields an older version does not cover: a v1 row
// with a ReportedModel or PricedModel was changed after it was hashed
// (those columns did not exist then), and Canonical refuses it.
const (
	// CanonicalV1 ("loom.trace.v1") covers every field a trace had until
	// ReportedModel and PricedModel were added.
	CanonicalV1 = 1
	// CanonicalV2 ("loom.trace.v2") is v1 (under its own name) followed
	// by ReportedModel, PricedModel, RequestTruncated and ResponseTruncated.
	CanonicalV2 = 2
	// CanonicalCurrent is the version the recorder writes.
	CanonicalCurrent = CanonicalV2
)

var canonicalNames = map[int]string{CanonicalV1: "loom.trace.v1", CanonicalV2: "loom.trace.v2"}

// Canonical is the encoding the chain hashes, in the version
// t.CanonicalVersion names: every stored field but Hash (PrevHash
// included), in a fixed order, each length-prefixed, so no two different
// rows encode the same. Ciphertexts are hashed as stored: the chain
// verifies without any key, and still does after crypto-shredding. It fails
// for a version it does not know, and for a row holding a field its version
// does not cover.
func Canonical(t *store.Trace) ([]byte, error) {
	name, ok := canonicalNames[t.CanonicalVersion]
	if !ok {
		return nil, fmt.Errorf("unknown canonical version %d", t.CanonicalVersion)
	}
	if t.CanonicalVersion == CanonicalV1 && (t.ReportedModel != "" || t.PricedModel != "" || t.RequestTruncated || t.ResponseTruncated) {
		return nil, fmt.Errorf("a %s row cannot have a reported or priced model or a truncation flag: the row was changed after it was written", name)
	}
	var b bytes.Buffer
	b.Grow(256 + len(t.Request.Ciphertext) + len(t.Response.Ciphertext) + len(t.Message.Ciphertext))
	str := func(s string) { putBytes(&b, []byte(s)) }
	str(name)
	str(t.ID)
	str(t.TenantID)
	str(t.RequestID)
	str(t.Endpoint)
	putBool(&b, t.Stream)
	str(t.RequestedModel)
	str(t.UpstreamModel)
	str(t.ProviderInstance)
	str(t.PluginName)
	str(t.PluginVersion)
	str(t.Status)
	putInt(&b, int64(t.HTTPStatus))
	str(t.ErrorMessage)
	putInt(&b, int64(t.KeyVersion))
	for _, s := range []store.Sealed{t.Request, t.Response, t.Message} {
		putBool(&b, s.Ciphertext != nil)
		putBytes(&b, s.Nonce)
		putBytes(&b, s.Ciphertext)
	}
	for _, p := range []*int64{t.PromptTokens, t.CompletionTokens, t.TotalTokens, t.CachedPromptTokens, t.ReasoningTokens} {
		putOptInt(&b, p)
	}
	str(t.UsageSource)
	putOptInt(&b, t.CostMicros)
	str(t.PriceVersion)
	putInt(&b, t.LatencyUS)
	putOptInt(&b, t.TTFBUS)
	putOptInt(&b, t.UpstreamUS)
	putOptInt(&b, t.UpstreamTTFBUS)
	putInt(&b, t.OverheadUS)
	str(t.ConfigHash)
	putInt(&b, t.CreatedAt.UnixMicro())
	str(t.ChainID)
	putInt(&b, t.ChainSeq)
	putBytes(&b, t.PrevHash)
	if t.CanonicalVersion >= CanonicalV2 {
		str(t.ReportedModel)
		str(t.PricedModel)
		putBool(&b, t.RequestTruncated)
		putBool(&b, t.ResponseTruncated)
	}
	return b.Bytes(), nil
}

func putBytes(b *bytes.Buffer, p []byte) {
	var n [binary.MaxVarintLen64]byte
	b.Write(n[:binary.PutUvarint(n[:], uint64(len(p)))])
	b.Write(p)
}

func putInt(b *bytes.Buffer, v int64) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(v))
	b.Write(n[:])
}

func putBool(b *bytes.Buffer, v bool) {
	if v {
		b.WriteByte(1)
	} else {
		b.WriteByte(0)
	}
}

func putOptInt(b *bytes.Buffer, p *int64) {
	putBool(b, p != nil)
	if p != nil {
		putInt(b, *p)
	}
}

// ChainHash is SHA-256 of the canonical encoding (which includes PrevHash).
func ChainHash(t *store.Trace) ([]byte, error) {
	c, err := Canonical(t)
	if err != nil {
		return nil, err
	}
	h := sha256.Sum256(c)
	return h[:], nil
}

// ZeroHash is the PrevHash of a chain's first trace.
var ZeroHash = make([]byte, sha256.Size)

// Break describes the first place a chain stops verifying.
type Break struct {
	ChainID string
	Seq     int64
	TraceID string
	Reason  string
}

func (b Break) String() string {
	return fmt.Sprintf("chain %s, seq %d (trace %s): %s", b.ChainID, b.Seq, b.TraceID, b.Reason)
}

// ChainReport is the verification result of one chain. Positions are
// chain sequence numbers, 1-based: a chain's first trace is seq 1 (the
// first after a tombstone is its LastSeq+1).
type ChainReport struct {
	ChainID string
	// Traces counts the traces that verified: the whole chain, or those
	// before its first break (the break's own trace is not one of them).
	Traces    int64
	Tombstone bool // the chain starts after a retention tombstone
	Break     *Break
	// TenantTraces counts the traces of the tenant asked about (all when none).
	TenantTraces int64
}

// Verify walks every chain in the store and reports, per chain, the first
// break: a row whose hash does not match its content, a link to the wrong
// previous hash, or a gap in the sequence. With tenantID set, only chains
// holding that tenant's traces are reported (whole chains are still walked:
// a chain interleaves tenants).
func Verify(ctx context.Context, st store.TraceStore, tenantID string) ([]ChainReport, error) {
	chains, err := st.Chains(ctx)
	if err != nil {
		return nil, fmt.Errorf("list chains: %w", err)
	}
	tombs, err := st.Tombstones(ctx)
	if err != nil {
		return nil, fmt.Errorf("list tombstones: %w", err)
	}
	// The newest tombstone of each chain tells where its surviving rows start.
	start := map[string]store.Tombstone{}
	for _, t := range tombs {
		if cur, ok := start[t.ChainID]; !ok || t.LastSeq > cur.LastSeq {
			start[t.ChainID] = t
		}
	}
	var reports []ChainReport
	for _, c := range chains {
		rep, err := verifyChain(ctx, st, c.ID, start, tenantID)
		if err != nil {
			return nil, err
		}
		if tenantID == "" || rep.TenantTraces > 0 {
			reports = append(reports, rep)
		}
	}
	return reports, nil
}

func verifyChain(ctx context.Context, st store.TraceStore, chainID string, start map[string]store.Tombstone, tenantID string) (ChainReport, error) {
	rep := ChainReport{ChainID: chainID}
	prev, seq := ZeroHash, int64(0)
	if t, ok := start[chainID]; ok {
		prev, seq, rep.Tombstone = t.LastHash, t.LastSeq, true
	}
	const page = 1000
	after := int64(0)
	for {
		rows, err := st.ChainTraces(ctx, chainID, after, page)
		if err != nil {
			return rep, fmt.Errorf("read chain %s: %w", chainID, err)
		}
		for i := range rows {
			t := &rows[i]
			after = t.ChainSeq
			if rep.Tombstone && t.ChainSeq <= start[chainID].LastSeq {
				continue // covered by the tombstone (a partition being dropped)
			}
			if tenantID == "" || t.TenantID == tenantID {
				rep.TenantTraces++
			}
			if rep.Break != nil {
				continue // keep counting the tenant's rows; report the first break only
			}
			brk := func(reason string) {
				rep.Break = &Break{ChainID: chainID, Seq: t.ChainSeq, TraceID: t.ID, Reason: reason}
			}
			h, herr := ChainHash(t)
			switch {
			case t.ChainSeq != seq+1:
				brk(fmt.Sprintf("sequence jumps from %d to %d: traces are missing", seq, t.ChainSeq))
			case !bytes.Equal(t.PrevHash, prev):
				brk(fmt.Sprintf("links to previous hash %s, but the previous trace hashes to %s", short(t.PrevHash), short(prev)))
			case herr != nil:
				brk(herr.Error())
			case !bytes.Equal(h, t.Hash):
				brk("its content does not match its hash: the row was changed after it was written")
			default:
				rep.Traces++
			}
			prev, seq = t.Hash, t.ChainSeq
		}
		if len(rows) < page {
			break
		}
	}
	return rep, nil
}

func short(h []byte) string {
	s := hex.EncodeToString(h)
	if len(s) > 12 {
		return s[:12] + "…"
	}
	return s
}
