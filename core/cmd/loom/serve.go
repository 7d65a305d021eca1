package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/dashboard"
	"github.com/loom-runtime/loom/core/metrics"
	"github.com/loom-runtime/loom/core/pluginhost"
	"github.com/loom-runtime/loom/core/pricing"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/seal"
	"github.com/loom-runtime/loom/core/server"
	"github.com/loom-runtime/loom/core/store"
	"github.com/loom-runtime/loom/core/trace"
	"github.com/loom-runtime/loom/sdk/gctune"
)

func (c *cli) serve(ctx context.Context, args []string) error {
	f := c.newFlags("serve")
	if _, err := f.parse(args, 0); err != nil {
		return err
	}
	cfg, err := c.loadConfig(*f.config)
	if err != nil {
		return err
	}
	log := c.logger(cfg)
	log.Info("starting loom", "version", version, "config", cfg.File, "config_hash", cfg.Hash[:12])
	switch p := c.protection; {
	case p.err != nil:
		log.Warn("loom could not make itself non-dumpable: processes of its user, plugins among them, can read its memory and environment", "error", p.err)
	case p.supported:
		log.Debug("loom is not dumpable: processes of its user, plugins among them, cannot read its memory or environment")
	}
	defer c.paceGC(cfg, log)()

	masterKey, err := c.masterKey(cfg, log)
	if err != nil {
		return err
	}
	catalog, err := pricing.New(cfg.Pricing)
	if err != nil {
		return fmt.Errorf("price catalog: %w", err)
	}

	st, err := c.openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("store ready", "driver", cfg.Store.Driver)

	if err := c.bootstrapDevTenant(ctx, cfg, st, log); err != nil {
		return err
	}
	keyring, err := seal.NewKeyring(masterKey, st)
	if err != nil {
		return err
	}
	if err := checkMasterKey(ctx, st, keyring.MasterKeyID()); err != nil {
		return err
	}
	if err := preloadKeys(ctx, st, keyring); err != nil {
		return err
	}
	warnPendingShreds(ctx, st, log)
	rec, err := trace.Start(ctx, trace.Options{
		Store:         st,
		Keyring:       keyring,
		Pricing:       catalog,
		Logger:        log.Named("trace"),
		SpoolDir:      cfg.Trace.SpoolDir,
		SpoolMaxBytes: cfg.Trace.SpoolMaxBytes,
		QueueSize:     cfg.Trace.QueueSize,
		TenantShare:   cfg.Trace.TenantSharePercent,
		BatchSize:     cfg.Trace.BatchSize,
		BatchInterval: cfg.Trace.BatchInterval,
		Durability:    cfg.Trace.Durability,
	})
	if err != nil {
		return err
	}
	defer func() {
		// After the server has stopped: every request has handed its trace over.
		fctx, cancel := context.WithTimeout(context.Background(), cfg.Trace.ShutdownTimeout)
		defer cancel()
		if err := rec.Close(fctx); err != nil {
			log.Error("traces not flushed at shutdown", "error", err)
		} else {
			log.Info("traces flushed", "chain", rec.ChainID())
		}
	}()

	host, err := pluginhost.Start(ctx, cfg.Providers, pluginhost.Options{
		PluginsDir: cfg.PluginsDir,
		LogLevel:   cfg.Log.Level,
		Logger:     log.Named("plugin"),
	})
	if errs := (*config.Errors)(nil); errors.As(err, &errs) {
		return configError{err} // a plugin user Loom cannot start processes as
	}
	if err != nil {
		return err
	}
	defer host.Close() // every exit path of serve kills the plugin processes
	for _, inst := range host.Instances() {
		info := inst.Info()
		log.Info("provider ready", "provider", inst.Name(), "plugin", info.Name, "version", info.Version)
	}

	authn := auth.New(st, auth.Options{
		CacheTTL:  cfg.Auth.CacheTTL,
		CacheSize: cfg.Auth.CacheSize,
		Logger:    log.Named("auth"),
	})
	var wg sync.WaitGroup
	authCtx, stopAuth := context.WithCancel(context.WithoutCancel(ctx))
	wg.Add(1)
	go func() { defer wg.Done(); authn.Run(authCtx) }()
	defer func() { stopAuth(); wg.Wait() }()

	dash := dashboard.New(dashboard.Options{
		Store:      st,
		Auth:       authn,
		Keyring:    keyring,
		AdminToken: cfg.AdminToken,
		Logger:     log.Named("dashboard"),
	})
	// Live tails end as soon as shutdown starts, so they do not hold it up.
	stopDash := context.AfterFunc(ctx, dash.Close)
	defer stopDash()

	mx := metrics.New()
	mx.WatchRecorder(func() metrics.RecorderStats {
		st := rec.Stats()
		return metrics.RecorderStats{QueueDepth: st.QueueDepth, SpoolBytes: st.SpoolBytes, Written: st.Written, Spooled: st.Spooled, Failed: st.Failed, Untraced: st.Untraced}
	})
	for _, inst := range host.Instances() {
		mx.WatchPlugin(inst.Name(), inst.Restarts)
	}
	srv := server.New(server.Options{
		Store:              st,
		Auth:               authn,
		Router:             router.New(cfg),
		Providers:          hostProviders{host},
		MaxBodyBytes:       cfg.Server.MaxBodyBytes,
		BodyMemoryBytes:    cfg.Server.BodyMemoryBytes,
		TenantSharePercent: cfg.Trace.TenantSharePercent,
		Recorder:           rec,
		Metrics:            mx,
		MetricsHandler:     mx.Handler(),
		AdminToken:         cfg.AdminToken,
		HoldDone:           cfg.Trace.Durability == trace.Sync,
		MaxTraceBodyBytes:  cfg.Trace.MaxBodyBytes,
		ConfigHash:         cfg.Hash,
		Logger:             log.Named("http"),
		ReadHeaderTimeout:  cfg.Server.ReadHeaderTimeout,
		IdleTimeout:        cfg.Server.IdleTimeout,
		BodyTimeout:        cfg.Server.BodyTimeout,
		ShutdownTimeout:    cfg.Server.ShutdownTimeout,
		Dashboard:          dash,
	})
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	log.Info("listening", "address", "http://"+ln.Addr().String())
	if err := srv.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// paceGC starts the garbage-collector pacing of server.memory_target_bytes
// (see sdk/gctune) unless GOGC or GOMEMLIMIT is set: an operator's own
// setting wins. The returned func stops it and restores the previous GOGC.
func (c *cli) paceGC(cfg *config.Config, log hclog.Logger) (stop func()) {
	target := cfg.Server.MemoryTargetBytes
	if name := gctune.SetByEnvironment(c.env); name != "" {
		log.Info("garbage collector left to the environment", "variable", name)
		return func() {}
	}
	if target <= 0 {
		return func() {}
	}
	p := gctune.Policy{Target: uint64(target), MinPercent: gcMinPercent, MaxPercent: gcMaxPercent}
	log.Debug("garbage collector paced", "memory_target_bytes", target, "min_percent", p.MinPercent, "max_percent", p.MaxPercent)
	return gctune.Start(p)
}

// The GOGC bounds of Loom's pacing. Loom's live heap is small while it
// relays short requests; 400 then collects a quarter as often as Go's
// default, which shows in tail latency. With thousands of open streams,
// 10 keeps the heap within a tenth of what is live: at 1,000 slow streams
// collecting then costs about 10 % of a core.
const (
	gcMinPercent = 10
	gcMaxPercent = 400
)

// masterKey returns LOOM_MASTER_KEY, or in development the key in
// dev.master_key_file (generated on first run).
func (c *cli) masterKey(cfg *config.Config, log hclog.Logger) ([]byte, error) {
	if cfg.MasterKey != nil {
		return cfg.MasterKey, nil
	}
	if cfg.Dev == nil || cfg.Dev.MasterKeyFile == "" {
		return nil, fmt.Errorf("LOOM_MASTER_KEY is not set: set it to 32 random bytes, base64 or hex " +
			"(e.g. `openssl rand -base64 32`); it encrypts every tenant's traces")
	}
	key, created, err := loadOrCreateDevKey(cfg.Dev.MasterKeyFile)
	if err != nil {
		return nil, err
	}
	verb := "using"
	if created {
		verb = "generated"
	}
	fmt.Fprintf(c.stderr, "\n"+
		"  ************************************************************************\n"+
		"  *  WARNING: %s a DEVELOPMENT master key from %s\n"+
		"  *  It protects every trace and sits next to the data: fine on a laptop,\n"+
		"  *  never in production. Set LOOM_MASTER_KEY and remove the dev block.\n"+
		"  ************************************************************************\n\n",
		verb, cfg.Dev.MasterKeyFile)
	log.Warn("development master key in use", "file", cfg.Dev.MasterKeyFile, "generated", created)
	return key, nil
}

// hostProviders exposes the plugin host's instances to the server.
type hostProviders struct{ h *pluginhost.Host }

func (p hostProviders) Provider(name string) (server.Provider, bool) {
	inst, ok := p.h.Instance(name)
	if !ok {
		return nil, false
	}
	return inst, true
}

// checkMasterKey refuses a master key that is not the store's current one:
// a retired key (rotated away by keys rotate-master) or another key.
func checkMasterKey(ctx context.Context, st store.Store, id string) error {
	mks, err := st.MasterKeys(ctx)
	if err != nil {
		return err
	}
	for _, m := range mks {
		switch {
		case m.ID == id && m.RetiredAt != nil:
			return fmt.Errorf("LOOM_MASTER_KEY is master key %s, retired by keys rotate-master at %s: start Loom with the new key, and destroy this one",
				id, stamp(m.RetiredAt))
		case m.RetiredAt == nil && m.ID != id:
			return fmt.Errorf("LOOM_MASTER_KEY is master key %s, but the store's data keys are wrapped under master key %s", id, m.ID)
		}
	}
	return nil
}

// warnPendingShreds logs a warning while shredded tenants' keys can still
// be recovered from backups with the master key in use.
func warnPendingShreds(ctx context.Context, st store.Store, log hclog.Logger) {
	shreds, err := st.TenantShreds(ctx)
	if err != nil {
		log.Warn("cannot list tenant shreds", "error", err)
		return
	}
	n := 0
	for _, sh := range shreds {
		if sh.Pending() {
			n++
		}
	}
	if n > 0 {
		log.Warn("shreds pending: shredded tenants' data keys in database backups and WAL still unwrap with this master key; "+
			"rotate it (loom keys rotate-master) and destroy the old one", "tenants", n)
	}
}

// preloadKeys unwraps every active tenant's current data key (creating the
// first one where missing), so traces can still be sealed and spooled if
// the store goes away later.
func preloadKeys(ctx context.Context, st store.Store, kr *seal.Keyring) error {
	tenants, err := st.ListTenants(ctx)
	if err != nil {
		return fmt.Errorf("preload tenant keys: %w", err)
	}
	for _, t := range tenants {
		if t.Status != store.TenantActive {
			continue
		}
		if _, err := kr.Current(ctx, t.ID); err != nil {
			return fmt.Errorf("tenant %s: data key: %w", t.Name, err)
		}
	}
	return nil
}
