package auth

import (
	"context"
	"crypto/subtle"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/store"
)

// Principal is who a request acts as: a tenant, through one of its keys.
type Principal struct {
	TenantID   string
	TenantName string
	KeyID      string
	KeyPrefix  string
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the authenticated principal of a request.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// KeyStore is the part of the store the authenticator needs.
type KeyStore interface {
	KeyByHash(ctx context.Context, hash [32]byte) (store.KeyMatch, error)
	TouchAPIKeys(ctx context.Context, lastUsed map[string]time.Time) error
}

// Options tune an Authenticator.
type Options struct {
	// CacheTTL bounds how long a lookup result is reused: a revoked key or a
	// disabled tenant stops working within it. Default 5s.
	CacheTTL time.Duration
	// CacheSize bounds the number of cached keys. Default 10000.
	CacheSize int
	// TouchInterval is how often last-used times are written. Default 10s.
	TouchInterval time.Duration
	// StaleFor is how long a key that was valid keeps working while the
	// store cannot be reached. Default 15 minutes.
	StaleFor time.Duration
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger hclog.Logger
}

// Authenticator resolves API keys to principals through a cache in front of
// the store. Lookups of the same key that miss the cache at the same time
// share one store query.
type Authenticator struct {
	keys     KeyStore
	cache    *cache[[32]byte, result]
	now      func() time.Time
	log      hclog.Logger
	interval time.Duration
	staleFor time.Duration

	flightMu sync.Mutex
	flights  map[[32]byte]*flight

	touchMu sync.Mutex
	touched map[string]time.Time
}

// result is a cached lookup: a principal, or the client error to repeat.
type result struct {
	hash      [32]byte
	principal Principal
	err       *apierror.Error
	at        time.Time // when the store answered
}

type flight struct {
	done chan struct{}
	res  result
	err  error // transient store error: not cached
}

// New returns an Authenticator over keys.
func New(keys KeyStore, o Options) *Authenticator {
	if o.CacheTTL <= 0 {
		o.CacheTTL = 5 * time.Second
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 10000
	}
	if o.TouchInterval <= 0 {
		o.TouchInterval = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.StaleFor <= 0 {
		o.StaleFor = 15 * time.Minute
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &Authenticator{
		keys:     keys,
		cache:    newCache[[32]byte, result](o.CacheSize, o.CacheTTL, o.Now),
		now:      o.Now,
		log:      o.Logger,
		interval: o.TouchInterval,
		staleFor: o.StaleFor,
		flights:  make(map[[32]byte]*flight),
		touched:  make(map[string]time.Time),
	}
}

// Client-facing authentication failures. All are 401 invalid_api_key, as OpenAI answers.
func unauthorized(msg string) *apierror.Error {
	return apierror.New(http.StatusUnauthorized, apierror.TypeInvalidRequest, "invalid_api_key", msg)
}

var (
	errMissing  = unauthorized("You didn't provide an API key. Send your Loom key as 'Authorization: Bearer loom_…' (or in an 'x-api-key' or 'api-key' header).")
	errMalformd = unauthorized("Malformed API key: a Loom key starts with 'loom_' and is 54 characters long.")
	errChecksum = unauthorized("Incorrect API key provided: the key's checksum does not match (mistyped or truncated?).")
	errUnknown  = unauthorized("Incorrect API key provided.")
	errRevoked  = unauthorized("This API key has been revoked.")
	errDisabled = unauthorized("The tenant of this API key is disabled.")
)

// KeyFromRequest returns the API key a request carries: Authorization: Bearer,
// then x-api-key, then api-key (what Azure OpenAI clients send).
func KeyFromRequest(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, rest, ok := strings.Cut(strings.TrimSpace(h), " ")
		if ok && strings.EqualFold(scheme, "bearer") {
			return strings.TrimSpace(rest), true
		}
	}
	if h := r.Header.Get("X-Api-Key"); h != "" {
		return strings.TrimSpace(h), true
	}
	if h := r.Header.Get("Api-Key"); h != "" {
		return strings.TrimSpace(h), true
	}
	return "", false
}

// Authenticate resolves the key on r. Errors are *apierror.Error: 401 for a
// bad key, 503 when the store cannot be reached and the key is not cached.
func (a *Authenticator) Authenticate(ctx context.Context, r *http.Request) (Principal, error) {
	key, ok := KeyFromRequest(r)
	if !ok || key == "" {
		return Principal{}, errMissing
	}
	return a.AuthenticateKey(ctx, key)
}

// AuthenticateKey resolves a raw key.
func (a *Authenticator) AuthenticateKey(ctx context.Context, key string) (Principal, error) {
	if len(key) != KeyLength || !strings.HasPrefix(key, KeyPrefix) {
		return Principal{}, errMalformd
	}
	hash := HashKey(key)
	res, fresh, found := a.cache.lookup(hash)
	if !found {
		// Only keys that passed ParseKey reach the cache, so a cached key
		// needs no parsing: check the rest of the format on a miss only.
		switch err := ParseKey(key); {
		case errors.Is(err, ErrBadChecksum):
			return Principal{}, errChecksum
		case err != nil:
			return Principal{}, errMalformd
		}
	}
	if !fresh {
		looked, err := a.lookup(ctx, hash)
		switch {
		case err == nil:
			res = looked
		case found && res.err == nil && a.now().Sub(res.at) < a.staleFor:
			// The store is unreachable: keep serving a key that was valid
			// when last checked, for a while, rather than stop all traffic.
			// Revocations made meanwhile take effect once the store is back.
		default:
			return Principal{}, err
		}
	}
	// The cache is keyed by the hash; compare in constant time all the same
	// so no code path depends on a variable-time comparison of secrets.
	if subtle.ConstantTimeCompare(res.hash[:], hash[:]) != 1 {
		return Principal{}, errUnknown
	}
	if res.err != nil {
		return Principal{}, res.err
	}
	a.touch(res.principal.KeyID)
	return res.principal, nil
}

func (a *Authenticator) lookup(ctx context.Context, hash [32]byte) (result, error) {
	a.flightMu.Lock()
	if f, ok := a.flights[hash]; ok {
		a.flightMu.Unlock()
		select {
		case <-f.done:
			return f.res, f.err
		case <-ctx.Done():
			return result{}, ctx.Err()
		}
	}
	f := &flight{done: make(chan struct{})}
	a.flights[hash] = f
	a.flightMu.Unlock()

	f.res, f.err = a.query(hash)
	if f.err == nil {
		a.cache.put(hash, f.res)
	}
	a.flightMu.Lock()
	delete(a.flights, hash)
	a.flightMu.Unlock()
	close(f.done)
	return f.res, f.err
}

// query runs the store lookup detached from any one caller's context, so a
// caller giving up does not fail the others waiting on the same flight.
func (a *Authenticator) query(hash [32]byte) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := a.keys.KeyByHash(ctx, hash)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return result{hash: hash, err: errUnknown, at: a.now()}, nil
	case err != nil:
		a.log.Error("api key lookup failed", "error", err)
		return result{}, &apierror.Error{Status: http.StatusServiceUnavailable, Type: apierror.TypeServer,
			Code: "store_unavailable", Message: "Loom cannot verify API keys right now; retry shortly.", Err: err}
	}
	res := result{hash: m.Key.Hash, at: a.now(), principal: Principal{
		TenantID: m.Tenant.ID, TenantName: m.Tenant.Name, KeyID: m.Key.ID, KeyPrefix: m.Key.Prefix,
	}}
	switch {
	case m.Key.RevokedAt != nil:
		res.err = errRevoked
	case m.Tenant.Status != store.TenantActive:
		res.err = errDisabled
	}
	return res, nil
}

func (a *Authenticator) touch(keyID string) {
	now := a.now()
	a.touchMu.Lock()
	a.touched[keyID] = now
	a.touchMu.Unlock()
}

// Flush writes pending last-used times to the store.
func (a *Authenticator) Flush(ctx context.Context) error {
	a.touchMu.Lock()
	pending := a.touched
	a.touched = make(map[string]time.Time, len(pending))
	a.touchMu.Unlock()
	if len(pending) == 0 {
		return nil
	}
	if err := a.keys.TouchAPIKeys(ctx, pending); err != nil {
		// Put them back (keeping newer times) so the next flush retries.
		a.touchMu.Lock()
		for id, t := range pending {
			if cur, ok := a.touched[id]; !ok || t.After(cur) {
				a.touched[id] = t
			}
		}
		a.touchMu.Unlock()
		return err
	}
	return nil
}

// Run flushes last-used times every interval until ctx ends, then once more.
func (a *Authenticator) Run(ctx context.Context) {
	t := time.NewTicker(a.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := a.Flush(fctx); err != nil {
				a.log.Warn("could not record key last-used times at shutdown", "error", err)
			}
			cancel()
			return
		case <-t.C:
			if err := a.Flush(ctx); err != nil {
				a.log.Warn("could not record key last-used times", "error", err)
			}
		}
	}
}
