package dashboard

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
)

const (
	defaultLimit = 50
	maxLimit     = 200
	// maxFilterLen bounds the string filters (model names, statuses, providers).
	maxFilterLen = 256
)

// errTraceNotFound is the one answer for an unknown id, a malformed id and
// another tenant's id alike: the body never tells them apart.
var errTraceNotFound = apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "trace_not_found",
	"No trace with this id is visible to you.")

// Cursors: base64url (no padding) of a version byte, created_at in Unix
// microseconds (int64, big-endian) and the trace id's 16 UUID bytes.
const (
	cursorVersion = 1
	cursorLen     = 1 + 8 + 16
)

func encodeCursor(c store.TraceCursor) (string, error) {
	id, err := uuid.Parse(c.ID)
	if err != nil {
		return "", fmt.Errorf("cursor: trace id %q is not a UUID", c.ID)
	}
	var b [cursorLen]byte
	b[0] = cursorVersion
	binary.BigEndian.PutUint64(b[1:9], uint64(c.CreatedAt.UnixMicro()))
	copy(b[9:], id[:])
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// minCursorUS and maxCursorUS bound the times a cursor may carry (years 1970 to 9999).
var (
	minCursorUS = int64(0)
	maxCursorUS = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC).UnixMicro()
)

func decodeCursor(s string) (store.TraceCursor, error) {
	bad := invalid("cursor", "Invalid 'cursor': pass the next_cursor of a previous page unchanged.")
	if len(s) > 64 {
		return store.TraceCursor{}, bad
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != cursorLen || b[0] != cursorVersion {
		return store.TraceCursor{}, bad
	}
	us := int64(binary.BigEndian.Uint64(b[1:9]))
	if us < minCursorUS || us > maxCursorUS {
		return store.TraceCursor{}, bad
	}
	id, err := uuid.FromBytes(b[9:])
	if err != nil {
		return store.TraceCursor{}, bad
	}
	return store.TraceCursor{CreatedAt: time.UnixMicro(us).UTC(), ID: id.String()}, nil
}

// listQuery is a parsed GET /traces.
type listQuery struct {
	filter store.TraceFilter
	before *store.TraceCursor
	limit  int
}

func parseListQuery(q url.Values) (listQuery, error) {
	lq := listQuery{limit: defaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLimit {
			return lq, invalid("limit", "Invalid 'limit': expected an integer from 1 to %d.", maxLimit)
		}
		lq.limit = n
	}
	if v := q.Get("cursor"); v != "" {
		c, err := decodeCursor(v)
		if err != nil {
			return lq, err
		}
		lq.before = &c
	}
	for _, p := range []struct {
		name string
		dst  *string
	}{{"model", &lq.filter.Model}, {"status", &lq.filter.Status}, {"provider", &lq.filter.Provider}} {
		v := q.Get(p.name)
		if len(v) > maxFilterLen {
			return lq, invalid(p.name, "Invalid '%s': longer than %d bytes.", p.name, maxFilterLen)
		}
		*p.dst = v
	}
	if v := q.Get("stream"); v != "" {
		var b bool
		switch v {
		case "true":
			b = true
		case "false":
		default:
			return lq, invalid("stream", "Invalid 'stream': expected true or false.")
		}
		lq.filter.Stream = &b
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"from", &lq.filter.From}, {"to", &lq.filter.To}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return lq, invalid(p.name, "Invalid '%s': expected an RFC 3339 time such as 2026-11-21T10:00:00Z.", p.name)
		}
		*p.dst = t.UTC()
	}
	if !lq.filter.From.IsZero() && !lq.filter.To.IsZero() && !lq.filter.To.After(lq.filter.From) {
		return lq, invalid("to", "Invalid 'to': it must be after 'from'.")
	}
	if v := q.Get("min_latency_ms"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) || f < 0 || f > 1e12 {
			return lq, invalid("min_latency_ms", "Invalid 'min_latency_ms': expected a non-negative number of milliseconds.")
		}
		lq.filter.MinLatencyUS = int64(math.Round(f * 1000))
	}
	return lq, nil
}

type listJSON struct {
	Data       []summaryJSON `json:"data"`
	NextCursor *string       `json:"next_cursor"`
}

// listTraces: GET /traces.
func (a *API) listTraces(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := a.viewOf(r, c)
	if err != nil {
		return err
	}
	lq, err := parseListQuery(r.URL.Query())
	if err != nil {
		return err
	}
	rows, err := a.o.Store.ListTraces(r.Context(), v.scope, lq.filter, lq.before, lq.limit)
	if err != nil {
		return apierror.Internal(fmt.Errorf("list traces: %w", err))
	}
	if len(rows) > lq.limit {
		rows = rows[:lq.limit]
	}
	out := listJSON{Data: a.summaries(r.Context(), v, rows)}
	if len(rows) == lq.limit {
		// A full page: there may be more. (Keyset, so the traces arriving
		// meanwhile, all newer, never shift the next page.)
		last := rows[len(rows)-1]
		next, err := encodeCursor(store.TraceCursor{CreatedAt: last.CreatedAt, ID: last.ID})
		if err != nil {
			return apierror.Internal(err)
		}
		out.NextCursor = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

// getTrace: GET /traces/{id}.
func (a *API) getTrace(w http.ResponseWriter, r *http.Request, c caller) error {
	v, err := a.viewOf(r, c)
	if err != nil {
		return err
	}
	id, err := uuid.Parse(mux.Vars(r)["id"])
	if err != nil {
		return errTraceNotFound
	}
	t, err := a.o.Store.ScopedTrace(r.Context(), v.scope, id.String())
	if errors.Is(err, store.ErrNotFound) {
		return errTraceNotFound
	}
	if err != nil {
		return apierror.Internal(fmt.Errorf("trace %s: %w", id, err))
	}
	if !v.allows(t.TenantID) {
		// Never decrypt, never show: the store broke its scope.
		a.log.Error("store returned a trace outside the request's scope; refused", "trace", t.ID)
		return errTraceNotFound
	}
	d := detailOf(&t, v.names.name(r.Context(), t.TenantID))
	if err := a.open(r.Context(), &t, &d); err != nil {
		return apierror.Internal(err)
	}
	return writeJSON(w, http.StatusOK, d)
}

// open decrypts the bodies of t into d. A trace whose bodies cannot be
// opened is still shown, its metadata only, with the reason in
// d.Unreadable: "shredded" when its tenant was deleted and its keys
// destroyed (or the trace was recorded after the deletion, its bodies
// discarded), "failed_authentication" when a body fails AES-GCM
// authentication, and "missing_key" when the trace names a key version
// its (not deleted) tenant does not have (both logged as errors: the row
// was altered or moved). Any other failure is an error.
func (a *API) open(ctx context.Context, t *store.Trace, d *detailJSON) error {
	fields := []struct {
		name string
		s    store.Sealed
	}{{seal.FieldRequest, t.Request}, {seal.FieldResponse, t.Response}, {seal.FieldMessage, t.Message}}
	unreadable := func(reason string) error {
		d.Unreadable = &reason
		return nil
	}
	if t.KeyVersion == 0 {
		// No key: the tenant was deleted before the bodies could be
		// sealed, so there are none. Sealed bodies without a key version,
		// or no key version for a tenant that is not deleted, are not
		// something Loom writes.
		deleted, err := a.tenantDeleted(ctx, t.TenantID)
		if err != nil {
			return err
		}
		sealed := false
		for _, f := range fields {
			sealed = sealed || f.s.Ciphertext != nil
		}
		if sealed || !deleted {
			a.log.Error("a trace has no key version, yet sealed bodies or a tenant that is not deleted: the row was altered", "trace", t.ID)
			return unreadable(unreadableMissingKey)
		}
		return unreadable(unreadableShredded)
	}
	var bodies [3][]byte
	for i, f := range fields {
		b, err := a.o.Keyring.Open(ctx, t.TenantID, t.KeyVersion, t.ID, f.name, f.s)
		switch {
		case errors.Is(err, seal.ErrShredded):
			return unreadable(unreadableShredded)
		case errors.Is(err, seal.ErrNoKey):
			// A keyring that never held the tenant's keys (a process
			// started after the shred) cannot tell a shred from a key
			// that never existed; the tenant's status can.
			deleted, err := a.tenantDeleted(ctx, t.TenantID)
			if err != nil {
				return err
			}
			if deleted {
				return unreadable(unreadableShredded)
			}
			a.log.Error("a trace names a data key version its tenant does not have: the row was altered", "trace", t.ID, "key_version", t.KeyVersion)
			return unreadable(unreadableMissingKey)
		case errors.Is(err, seal.ErrOpen):
			a.log.Error("a trace body failed authentication: the row was altered or moved", "trace", t.ID, "field", f.name)
			return unreadable(unreadableAuthFailed)
		case err != nil:
			return err
		}
		bodies[i] = b
	}
	d.Readable = true
	d.Request = jsonOrString(bodies[0])
	if t.Stream {
		d.Response = text(bodies[1])
	} else {
		d.Response = jsonOrString(bodies[1])
	}
	d.Message = jsonOrString(bodies[2])
	return nil
}

// tenantDeleted reports whether the store lists the tenant as deleted.
func (a *API) tenantDeleted(ctx context.Context, tenantID string) (bool, error) {
	ts, err := a.o.Store.ListTenants(ctx)
	if err != nil {
		return false, fmt.Errorf("list tenants: %w", err)
	}
	for _, tn := range ts {
		if tn.ID == tenantID {
			return tn.Status == store.TenantDeleted, nil
		}
	}
	return false, nil
}
