package plugin

import (
	"os"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/loom-runtime/loom/sdk/gctune"
	"github.com/loom-runtime/loom/sdk/provider"
)

// LogLevelEnv names the environment variable that sets the plugin's log
// level: trace, debug, info (the default), warn or error.
const LogLevelEnv = "LOOM_PLUGIN_LOG_LEVEL"

// Serve serves p to Loom and returns only when Loom ends the plugin
// (normally Loom kills the process). Call it from main, and write nothing
// to stdout before: go-plugin's handshake line must be the first line
// there, and after the handshake go-plugin takes over stdout and stderr.
//
// Logs: Serve logs JSON lines (hclog's format, which Loom parses and
// merges into its own log) on stderr, at the level named by
// LOOM_PLUGIN_LOG_LEVEL (default info), and makes that logger hclog's
// default, so a provider can log with hclog.L(). Never log secrets or
// request bodies above debug level.
//
// Run by hand, without Loom's handshake environment, the binary prints an
// explanation to stderr and exits with status 1.
//
// On Linux, Serve first makes the process non-dumpable (prctl
// PR_SET_DUMPABLE): other processes of the plugin's user, other plugins
// among them, cannot read its memory or environment, where the secrets
// Configure receives live, nor attach a debugger; only root can.
func Serve(p provider.Provider, opts ...ServeOption) {
	cfg := serveConfig{}
	for _, o := range opts {
		o.applyServe(&cfg)
	}
	if cfg.logger == nil {
		cfg.logger = defaultLogger()
		hclog.SetDefault(cfg.logger)
	}
	if cfg.test == nil {
		protectProcess(cfg.logger)
		setGCDefaults()
		if addr := os.Getenv(PprofAddrEnv); addr != "" {
			servePprof(addr, cfg.logger)
		}
	}
	goplugin.Serve(&goplugin.ServeConfig{
		HandshakeConfig:  Handshake,
		VersionedPlugins: versionedPlugins(p),
		GRPCServer:       newGRPCServer,
		Logger:           cfg.logger,
		Test:             cfg.test,
	})
}

// DefaultGCPolicy paces a plugin process's garbage collector (see
// sdk/gctune), unless its environment sets GOGC or GOMEMLIMIT (Loom
// starts plugins with a minimal environment, so for them it applies).
//
// A plugin relays: while it serves short requests its live heap is small
// and most of what it allocates is garbage within a request. Go's default
// (collect when the heap doubles, from 4 MiB) then collects many times a
// second, which shows in tail latency; 400 % collects a quarter as often.
// With thousands of open streams the buffers and stacks they hold are
// live; past the 32 MiB target the heap grows by only a tenth of that.
// A fixed memory limit instead makes the collector run back to back once
// the streams need more than the limit.
var DefaultGCPolicy = gctune.Policy{Target: 32 << 20, MinPercent: 10, MaxPercent: 400}

func setGCDefaults() {
	if gctune.SetByEnvironment(os.LookupEnv) != "" {
		return
	}
	gctune.Start(DefaultGCPolicy)
}

func defaultLogger() hclog.Logger {
	level := hclog.LevelFromString(os.Getenv(LogLevelEnv))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       "provider",
		Level:      level,
		Output:     os.Stderr,
		JSONFormat: true,
	})
}

// ServeOption changes how Serve runs.
type ServeOption interface {
	applyServe(*serveConfig)
}

type serveConfig struct {
	logger hclog.Logger
	test   *goplugin.ServeTestConfig
}

type serveOptionFunc func(*serveConfig)

func (f serveOptionFunc) applyServe(c *serveConfig) { f(c) }

// WithLogger makes Serve log with l instead of its JSON logger on stderr.
// l should write JSON lines to stderr for Loom to parse them. hclog's
// default logger is left alone.
func WithLogger(l hclog.Logger) ServeOption {
	return serveOptionFunc(func(c *serveConfig) { c.logger = l })
}

// WithTestConfig serves in go-plugin's test mode, inside the calling
// process: no handshake cookie check, no handshake line, stdout and stderr
// left alone; the reattach configuration is sent on c.ReattachConfigCh for
// a goplugin.ClientConfig.Reattach, and serving ends when c.Context ends.
// For tests; a plugin's main never uses it.
func WithTestConfig(c *goplugin.ServeTestConfig) ServeOption {
	return serveOptionFunc(func(sc *serveConfig) { sc.test = c })
}
