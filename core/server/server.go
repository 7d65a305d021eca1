// Package server is Loom's HTTP front: routes, middleware (request id,
// recovery, access log, authentication) and the lifecycle of the listener.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/mux"
	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/apierror"
	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/dashboard/web"
	"github.com/loom-runtime/loom/core/router"
)

// Pinger reports whether the store is reachable (for /readyz).
type Pinger interface {
	Ping(ctx context.Context) error
}

// Options are the server's dependencies and limits.
type Options struct {
	Store     Pinger
	Auth      *auth.Authenticator
	Router    *router.Router
	Providers Providers
	Logger    hclog.Logger
	// MaxBodyBytes bounds request bodies (413 beyond). Default 10 MiB.
	MaxBodyBytes int64
	// BodyMemoryBytes bounds the request bodies held at once (default
	// 128 MiB); one tenant may hold TenantSharePercent of it (default 25).
	BodyMemoryBytes    int64
	TenantSharePercent int
	// Recorder takes every authenticated request's trace.
	Recorder Recorder
	// HoldDone (sync durability): a stream's final [DONE] waits for its trace.
	HoldDone bool
	// MaxTraceBodyBytes caps a captured stream (longer ones are flagged truncated).
	MaxTraceBodyBytes int64
	// ConfigHash identifies the loaded configuration in traces.
	ConfigHash string
	// ReadHeaderTimeout stops slow-header clients; IdleTimeout closes idle
	// keep-alive connections. Neither limits a long response stream.
	ReadHeaderTimeout time.Duration
	IdleTimeout       time.Duration
	// BodyTimeout is the longest pause allowed while a client sends a
	// request body (each read restarts it); it never limits a response.
	BodyTimeout time.Duration
	// ShutdownTimeout bounds how long in-flight requests may finish after
	// the serving context ends.
	ShutdownTimeout time.Duration
	// Dashboard, when set, mounts the dashboard API (untraced, with its own
	// authentication) on the root router.
	Dashboard Dashboard
	// Metrics observes every traced request (nil: not observed).
	Metrics RequestObserver
	// MetricsHandler serves /metrics; it and /debug/pprof/ require
	// Authorization: Bearer AdminToken, and are off without an admin token.
	MetricsHandler http.Handler
	AdminToken     string
}

// RequestObserver records finished requests (metrics.Metrics).
type RequestObserver interface {
	// ObserveRequest: overhead < 0 means no upstream call happened.
	ObserveRequest(tenant, model, status string, total, overhead time.Duration)
}

// Dashboard is an API that registers its own routes (dashboard.API).
type Dashboard interface {
	Register(r *mux.Router)
}

// Server serves Loom's HTTP API.
type Server struct {
	o       Options
	log     hclog.Logger
	router  *mux.Router
	handler http.Handler
	models  *modelsCache
	bodies  *budget

	// inflight counts traced requests still running; forced is set when
	// shutdown's deadline passed and remaining requests are being cut.
	inflight sync.WaitGroup
	forced   atomic.Bool
}

// New builds the routes.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	s := &Server{o: o, log: o.Logger, router: mux.NewRouter(),
		models: &modelsCache{ttl: 5 * time.Minute, entries: map[string]modelsEntry{}},
		bodies: newBudget(o.BodyMemoryBytes, o.TenantSharePercent)}
	r := s.router
	r.NotFoundHandler = handle(s.notFound)
	r.MethodNotAllowedHandler = handle(s.methodNotAllowed)

	r.Handle("/healthz", handle(s.healthz)).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/readyz", handle(s.readyz)).Methods(http.MethodGet, http.MethodHead)

	v1 := r.PathPrefix("/v1").Subrouter()
	v1.NotFoundHandler = r.NotFoundHandler
	v1.MethodNotAllowedHandler = r.MethodNotAllowedHandler
	v1.Use(s.authenticate)
	s.v1Route(v1, "/models", "models", s.listModels, http.MethodGet)
	s.v1Route(v1, "/chat/completions", "chat.completions", s.chatCompletions, http.MethodPost)
	s.v1Route(v1, "/embeddings", "embeddings", s.embeddings, http.MethodPost)
	// Unknown /v1 paths are answered after authentication, like OpenAI does,
	// and traced like every authenticated request.
	v1.PathPrefix("/").Handler(s.traced("", func(w http.ResponseWriter, r *http.Request, c *capture) error {
		c.rec.Endpoint = r.URL.Path
		return s.notFound(w, r)
	}))
	if o.Dashboard != nil {
		o.Dashboard.Register(r)
	}
	// Operations endpoints, behind the admin token.
	if o.MetricsHandler != nil {
		r.Handle("/metrics", s.adminOnly(o.MetricsHandler)).Methods(http.MethodGet)
	}
	pp := http.NewServeMux()
	pp.HandleFunc("/debug/pprof/", pprof.Index)
	pp.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	pp.HandleFunc("/debug/pprof/profile", pprof.Profile)
	pp.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	pp.HandleFunc("/debug/pprof/trace", pprof.Trace)
	r.PathPrefix("/debug/pprof/").Handler(s.adminOnly(pp))
	// The dashboard's web UI, embedded in the binary.
	r.Handle("/dashboard", http.RedirectHandler("/dashboard/", http.StatusMovedPermanently))
	r.PathPrefix("/dashboard/").Handler(web.Handler())
	s.handler = s.requestID(s.accessLog(s.recover(r)))
	return s
}

// route registers h for path and methods, and a 405 for other methods (a
// catch-all route after it would otherwise turn them into 404s).
func (s *Server) route(r *mux.Router, path string, h http.Handler, methods ...string) {
	r.Handle(path, h).Methods(methods...)
	r.Handle(path, handle(s.methodNotAllowed))
}

// v1Route registers a traced /v1 endpoint, and a traced 405 for other methods.
func (s *Server) v1Route(r *mux.Router, path, endpoint string, h tracedFunc, methods ...string) {
	r.Handle(path, s.traced(endpoint, h)).Methods(methods...)
	r.Handle(path, s.traced(endpoint, func(w http.ResponseWriter, r *http.Request, _ *capture) error {
		return s.methodNotAllowed(w, r)
	}))
}

// Handler returns the root handler: every request gets a request id, an
// access log line and panic recovery, whether or not a route matches.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers on ln until ctx ends, then stops accepting and lets
// in-flight requests finish for up to ShutdownTimeout.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hard, cut := context.WithCancel(context.WithoutCancel(ctx))
	defer cut()
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: s.o.ReadHeaderTimeout,
		IdleTimeout:       s.o.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          s.log.Named("http").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
		// Request contexts live until the shutdown deadline, then are all
		// cancelled: requests cut that way are traced as "shutdown".
		BaseContext: func(net.Listener) context.Context { return hard },
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down: no new connections; waiting for in-flight requests", "timeout", s.o.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.o.ShutdownTimeout)
	defer cancel()
	err := hs.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		s.log.Warn("shutdown deadline passed; cutting the remaining requests")
		s.forced.Store(true)
		cut()
		err = hs.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", serr)
	}
	// Close does not wait for handlers: wait for every traced request to
	// hand its trace over, so the recorder flushes them all.
	waited := make(chan struct{})
	go func() { s.inflight.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		s.log.Error("requests still running 10s after shutdown was forced; their traces may be missing")
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// handlerFunc is a handler that returns its error; handle writes it.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

func handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			writeError(w, err)
		}
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return apierror.Internal(fmt.Errorf("encode response: %w", err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := s.o.Store.Ping(ctx); err != nil {
		return &apierror.Error{Status: http.StatusServiceUnavailable, Type: apierror.TypeServer,
			Code: "store_unavailable", Message: "The store is not reachable.", Err: err}
	}
	return writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) error {
	return apierror.UnknownURL(r)
}

func (s *Server) methodNotAllowed(w http.ResponseWriter, r *http.Request) error {
	return apierror.MethodNotAllowed(r)
}

// model is an entry of GET /v1/models, in OpenAI's shape.
type model struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

type requestIDKey struct{}

// RequestID returns the request id assigned by the server.
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// requestID gives every request a UUIDv7, returned as x-request-id.
func (s *Server) requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := uuid.NewV7()
		if err != nil {
			id = uuid.New()
		}
		sid := id.String()
		w.Header()["X-Request-Id"] = []string{sid}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, sid)))
	})
}

func (s *Server) recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil || v == http.ErrAbortHandler {
				if v != nil {
					panic(v)
				}
				return
			}
			s.log.Error("handler panicked", "request_id", RequestID(r.Context()), "panic", v, "stack", string(debug.Stack()))
			rec, ok := w.(*recorder)
			if ok && rec.wroteHeader {
				panic(http.ErrAbortHandler) // too late for an error body: cut the connection
			}
			writeError(w, apierror.Internal(fmt.Errorf("panic: %v", v)))
		}()
		next.ServeHTTP(w, r)
	})
}

// adminOnly lets through requests bearing the admin token; without an
// admin token configured the endpoint does not exist.
func (s *Server) adminOnly(next http.Handler) http.Handler {
	admin := auth.NewAdminToken(s.o.AdminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !admin.Enabled() {
			writeError(w, apierror.New(http.StatusNotFound, apierror.TypeInvalidRequest, "unknown_url",
				"This endpoint needs LOOM_ADMIN_TOKEN to be set."))
			return
		}
		if !admin.Match(r) {
			writeError(w, apierror.New(http.StatusUnauthorized, apierror.TypeInvalidRequest, "invalid_api_key",
				"This endpoint needs Authorization: Bearer <LOOM_ADMIN_TOKEN>."))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// authenticate resolves the request's API key to a tenant; failures are
// answered in the OpenAI error format.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.o.Auth.Authenticate(r.Context(), r)
		if err != nil {
			writeError(w, err)
			return
		}
		if rec, ok := w.(*recorder); ok {
			rec.principal = &p
		}
		next.ServeHTTP(w, r.WithContext(auth.WithPrincipal(r.Context(), p)))
	})
}

// accessLog logs one line per request. It never logs headers (they carry keys).
func (s *Server) accessLog(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(rec, r)
		status := rec.status
		if r.Context().Err() != nil && !rec.wroteHeader {
			status = 499 // client went away before an answer
		}
		args := []any{"method", r.Method, "path", r.URL.Path, "status", status,
			"duration_ms", float64(time.Since(start).Microseconds()) / 1000, "bytes", rec.bytes,
			"request_id", RequestID(r.Context())}
		if p := rec.principal; p != nil {
			args = append(args, "tenant", p.TenantName, "key", p.KeyPrefix)
		}
		switch {
		case rec.err != nil && rec.err.Status >= 500:
			s.log.Error("request", append(args, "error", rec.err.Error())...)
		case rec.err != nil:
			s.log.Info("request", append(args, "error_code", rec.err.Code)...)
		default:
			s.log.Info("request", args...)
		}
	})
}

// recorder captures the status and size of a response and forwards
// Flush and Unwrap so streaming keeps working through it.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
	err         *apierror.Error
	principal   *auth.Principal
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Flush() {
	r.wroteHeader = true
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
