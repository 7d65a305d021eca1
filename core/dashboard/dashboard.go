// Package dashboard is the JSON API behind Loom's web dashboard, mounted
// under /api/v1 (the contract is API.md in this directory): trace listings
// and details with decrypted bodies, analytics, a live tail over
// Server-Sent Events, and tenant administration.
//
// Isolation: a request acts as one tenant (its API key) or as the admin
// (LOOM_ADMIN_TOKEN). Every handler derives the store.Scope it queries with
// from that identity alone — a client can never name a tenant id, and only
// the admin may narrow its view to a tenant by name — and the store enforces
// the scope in its queries. Rows handed back are checked against the scope
// once more before anything is decrypted or written out.
package dashboard

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/store"
)

// Options are the API's dependencies.
type Options struct {
	Store   store.Store
	Auth    *auth.Authenticator
	Keyring *seal.Keyring
	// AdminToken is LOOM_ADMIN_TOKEN. Empty: admin access is impossible.
	AdminToken string
	Logger     hclog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// LivePoll is how often the live tail polls the store. Default 1s.
	LivePoll time.Duration
	// KeepAlive is the interval of the live tail's keep-alive comments. Default 15s.
	KeepAlive time.Duration
	// LiveLookback is how far back (in created_at, which is when a request
	// started) the live tail keeps looking for traces stored late: long
	// streams, batched or spooled writes, other replicas. Default 2 minutes.
	LiveLookback time.Duration
	// LiveMaxPerTenant bounds the live tails open at once for one tenant
	// (its keys together), and for the admin token. Default 10.
	LiveMaxPerTenant int
	// LiveMaxTotal bounds the live tails open at once in all. Default 100.
	LiveMaxTotal int
}

// API serves /api/v1.
type API struct {
	o     Options
	log   hclog.Logger
	now   func() time.Time
	admin auth.AdminToken

	// Live tail tuning (rows per store read, reads per poll).
	livePage, livePages int
	hub                 *liveHub

	closeOnce sync.Once
	closed    chan struct{}
}

// New returns the API.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.LivePoll <= 0 {
		o.LivePoll = time.Second
	}
	if o.KeepAlive <= 0 {
		o.KeepAlive = 15 * time.Second
	}
	if o.LiveLookback <= 0 {
		o.LiveLookback = 2 * time.Minute
	}
	if o.LiveMaxPerTenant <= 0 {
		o.LiveMaxPerTenant = defaultLiveMaxPerTenant
	}
	if o.LiveMaxTotal <= 0 {
		o.LiveMaxTotal = defaultLiveMaxTotal
	}
	a := &API{o: o, log: o.Logger, now: o.Now, admin: auth.NewAdminToken(o.AdminToken),
		livePage: 500, livePages: 10, closed: make(chan struct{})}
	a.hub = newLiveHub(a, o.LiveMaxPerTenant, o.LiveMaxTotal)
	return a
}

// Close ends every live tail and stops their pollers (call it when the
// server starts shutting down, so open dashboards do not hold the shutdown
// up). Other endpoints keep working.
func (a *API) Close() {
	a.closeOnce.Do(func() {
		close(a.closed)
		a.hub.close()
	})
}

// Register mounts every route under /api/v1 on r. Unknown paths are 404
// and other methods 405, before authentication, in the OpenAI envelope.
func (a *API) Register(r *mux.Router) {
	api := r.PathPrefix("/api/v1").Subrouter()
	api.NotFoundHandler = a.handle(notFound)
	api.MethodNotAllowedHandler = a.handle(methodNotAllowed)

	a.route(api, "/traces", map[string]handlerFunc{http.MethodGet: a.listTraces})
	a.route(api, "/traces/live", map[string]handlerFunc{http.MethodGet: a.live})
	a.route(api, "/traces/{id}", map[string]handlerFunc{http.MethodGet: a.getTrace})
	a.route(api, "/analytics/summary", map[string]handlerFunc{http.MethodGet: a.summary})
	a.route(api, "/analytics/timeseries", map[string]handlerFunc{http.MethodGet: a.timeseries})
	a.route(api, "/admin/tenants", map[string]handlerFunc{
		http.MethodGet: adminOnly(a.listTenants), http.MethodPost: adminOnly(a.createTenant)})
	a.route(api, "/admin/tenants/{name}/keys", map[string]handlerFunc{http.MethodPost: adminOnly(a.createKey)})
	a.route(api, "/admin/keys/{id}", map[string]handlerFunc{http.MethodDelete: adminOnly(a.revokeKey)})
	api.PathPrefix("/").Handler(a.handle(notFound))
}

// handlerFunc answers an authenticated request; a returned error is
// written in the OpenAI envelope.
type handlerFunc func(w http.ResponseWriter, r *http.Request, c caller) error

// route registers the methods of path, each behind authentication, and a
// 405 for every other method.
func (a *API) route(api *mux.Router, path string, methods map[string]handlerFunc) {
	for method, h := range methods {
		api.Handle(path, a.handle(a.authenticated(h))).Methods(method)
	}
	api.Handle(path, a.handle(methodNotAllowed))
}

func (a *API) handle(h func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Everything here is tenant data or credentials: never cache it.
		w.Header().Set("Cache-Control", "no-store")
		if err := h(w, r); err != nil {
			e := apierror.Write(w, err)
			if e.Status >= 500 {
				a.log.Error("dashboard request failed", "method", r.Method, "path", r.URL.Path, "error", e.Error())
			}
		}
	})
}

func notFound(w http.ResponseWriter, r *http.Request) error { return apierror.UnknownURL(r) }

func methodNotAllowed(w http.ResponseWriter, r *http.Request) error {
	return apierror.MethodNotAllowed(r)
}

// caller is who a request acts as: the admin, or one tenant through its key.
type caller struct {
	admin      bool
	tenantID   string
	tenantName string
}

// authenticated resolves the caller, then runs h.
func (a *API) authenticated(h handlerFunc) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		c, err := a.authenticate(r)
		if err != nil {
			return err
		}
		return h(w, r, c)
	}
}

// authenticate: the admin token in Authorization: Bearer (auth.AdminToken),
// else a tenant API key through the authenticator.
func (a *API) authenticate(r *http.Request) (caller, error) {
	if a.admin.Match(r) {
		return caller{admin: true}, nil
	}
	p, err := a.o.Auth.Authenticate(r.Context(), r)
	if err != nil {
		return caller{}, err
	}
	if p.TenantID == "" {
		return caller{}, apierror.Internal(errors.New("authenticated principal without a tenant"))
	}
	return caller{tenantID: p.TenantID, tenantName: p.TenantName}, nil
}

func adminOnly(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, c caller) error {
		if !c.admin {
			return errAdminOnly("")
		}
		return h(w, r, c)
	}
}

func errAdminOnly(param string) error {
	msg := "This endpoint needs the admin token (LOOM_ADMIN_TOKEN); a tenant API key cannot use it."
	if param != "" {
		msg = "Only the admin token may choose a tenant with '" + param + "'; a tenant API key always sees its own tenant."
	}
	return &apierror.Error{Status: http.StatusForbidden, Type: apierror.TypeInvalidRequest, Code: "admin_only", Param: param, Message: msg}
}

// view is what a request may see: the store scope and the names of the
// tenants in it.
type view struct {
	scope store.Scope
	names *namer
}

// viewOf builds the scope of a request from its caller only. A tenant key
// sees its own tenant; the query parameter tenant is refused (403) rather
// than ignored, so a client never believes it is looking at another
// tenant. The admin sees every tenant, or the one ?tenant= names.
func (a *API) viewOf(r *http.Request, c caller) (view, error) {
	name := r.URL.Query().Get("tenant")
	if !c.admin {
		if name != "" {
			return view{}, errAdminOnly("tenant")
		}
		return view{scope: store.TenantScope(c.tenantID), names: fixedNames(c.tenantID, c.tenantName)}, nil
	}
	if name == "" {
		return view{scope: store.Scope{All: true}, names: &namer{a: a, all: true}}, nil
	}
	t, err := a.o.Store.TenantByName(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return view{}, &apierror.Error{Status: http.StatusNotFound, Type: apierror.TypeInvalidRequest,
			Code: "tenant_not_found", Param: "tenant", Message: fmt.Sprintf("No tenant is called %q.", name)}
	}
	if err != nil {
		return view{}, apierror.Internal(fmt.Errorf("tenant by name: %w", err))
	}
	return view{scope: store.TenantScope(t.ID), names: fixedNames(t.ID, t.Name)}, nil
}

// allows reports whether a row of tenantID belongs in the scope: a second
// wall behind the store's own filtering.
func (v view) allows(tenantID string) bool {
	return v.scope.All || (v.scope.TenantID != "" && tenantID == v.scope.TenantID)
}

// namer maps tenant ids to names for the rows of a view.
type namer struct {
	a      *API
	all    bool
	failed bool // loading failed during the current listing
	names  map[string]string
}

func fixedNames(id, name string) *namer { return &namer{names: map[string]string{id: name}} }

// name returns the tenant's name. In the admin's all-tenant view the list
// is loaded on first use and reloaded when an id is missing (a tenant
// created since); an id still missing then is remembered as nameless. A
// failed load is not retried until summaries starts the next listing: the
// ids not yet named stay nameless, and a store outage costs one call per
// listing rather than one per row.
func (n *namer) name(ctx context.Context, id string) string {
	if name, ok := n.names[id]; ok || !n.all || n.failed {
		return name
	}
	ts, err := n.a.o.Store.ListTenants(ctx)
	if err != nil {
		n.a.log.Warn("could not list tenants for trace names", "error", err)
		n.failed = true
		return ""
	}
	n.names = make(map[string]string, len(ts)+1)
	for _, t := range ts {
		n.names[t.ID] = t.Name
	}
	if _, ok := n.names[id]; !ok {
		n.names[id] = ""
	}
	return n.names[id]
}

// writeJSON writes v with status.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return apierror.Internal(fmt.Errorf("encode response: %w", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

// invalid is a 400 invalid_value for a query or body parameter.
func invalid(param, format string, args ...any) error {
	return &apierror.Error{Status: http.StatusBadRequest, Type: apierror.TypeInvalidRequest,
		Code: "invalid_value", Param: param, Message: fmt.Sprintf(format, args...)}
}
