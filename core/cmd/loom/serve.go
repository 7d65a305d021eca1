package main

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/loom-runtime/loom/core/auth"
	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/core/pluginhost"
	"github.com/loom-runtime/loom/core/router"
	"github.com/loom-runtime/loom/core/server"
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

	masterKey, err := c.masterKey(cfg, log)
	if err != nil {
		return err
	}
	_ = masterKey // sealing of trace bodies arrives with the tracing work; the key is validated now

	st, err := c.openStore(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	log.Info("store ready", "driver", cfg.Store.Driver)

	if err := c.bootstrapDevTenant(ctx, cfg, st, log); err != nil {
		return err
	}

	host, err := pluginhost.Start(ctx, cfg.Providers, pluginhost.Options{
		PluginsDir: cfg.PluginsDir,
		LogLevel:   cfg.Log.Level,
		Logger:     log.Named("plugin"),
	})
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

	srv := server.New(server.Options{
		Store:             st,
		Auth:              authn,
		Router:            router.New(cfg),
		Providers:         hostProviders{host},
		MaxBodyBytes:      cfg.Server.MaxBodyBytes,
		Logger:            log.Named("http"),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout,
		IdleTimeout:       cfg.Server.IdleTimeout,
		ShutdownTimeout:   cfg.Server.ShutdownTimeout,
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
