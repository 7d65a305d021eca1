// Package pluginhost launches and supervises the provider plugin processes:
// one process per configured provider instance, configured at start,
// restarted with backoff when it dies, and killed when Loom exits.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	goplugin "github.com/hashicorp/go-plugin"

	"github.com/loom-runtime/loom/core/config"
	"github.com/loom-runtime/loom/sdk/plugin"
	"github.com/loom-runtime/loom/sdk/provider"
)

// BinaryPrefix is how plugin binaries are named: loom-provider-<plugin>.
const BinaryPrefix = "loom-provider-"

// ErrPluginFailed wraps every error that means the plugin process, not the
// upstream, failed: it crashed, is restarting, or broke the protocol.
var ErrPluginFailed = errors.New("provider plugin failed")

// Options tune the host.
type Options struct {
	// PluginsDir holds the plugin binaries.
	PluginsDir string
	// LogLevel is passed to plugins (their logs come back through Logger).
	LogLevel string
	Logger   hclog.Logger
	// StartTimeout bounds a plugin's handshake and configuration. Default 15s.
	StartTimeout time.Duration
	// RestartWait bounds how long a call waits for a restarting plugin. Default 10s.
	RestartWait time.Duration
	// PollInterval is how often process liveness is checked. Default 100ms.
	PollInterval time.Duration
}

// Host owns the plugin processes.
type Host struct {
	o         Options
	log       hclog.Logger
	instances map[string]*Instance
	order     []string
	launcher  *launcher
	stop      context.CancelFunc
	wg        sync.WaitGroup
}

// Start launches one process per provider instance in cfg and configures
// it. If any instance cannot start, every process started so far is killed
// and the error names the instance. A provider's User is checked before
// any process starts: a user Loom cannot start processes as (Loom is not
// root, the user does not exist or is root) is a *config.Errors naming
// the setting.
func Start(ctx context.Context, providers []config.Provider, o Options) (*Host, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 15 * time.Second
	}
	if o.RestartWait <= 0 {
		o.RestartWait = 10 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 100 * time.Millisecond
	}
	accts, err := accounts(providers, os.Geteuid(), systemUsers)
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		var asRoot []string
		for _, p := range providers {
			if accts[p.Name] == nil {
				asRoot = append(asRoot, p.Name)
			}
		}
		if len(asRoot) > 0 {
			o.Logger.Warn("plugins run as root and can read Loom's memory, environment and files: set plugin_user to run them as an unprivileged user", "providers", asRoot)
		}
	}
	sctx, stop := context.WithCancel(context.Background())
	h := &Host{o: o, log: o.Logger, instances: make(map[string]*Instance), stop: stop, launcher: newLauncher(o.Logger)}
	for _, p := range providers {
		inst, err := h.newInstance(p, accts[p.Name])
		if err == nil {
			err = inst.start(ctx)
		}
		if err != nil {
			if inst != nil {
				inst.kill()
			}
			h.Close()
			return nil, fmt.Errorf("provider %q: %w", p.Name, err)
		}
		h.instances[p.Name] = inst
		h.order = append(h.order, p.Name)
		h.wg.Add(1)
		go func() { defer h.wg.Done(); inst.supervise(sctx) }()
	}
	return h, nil
}

// Instance returns the running instance called name.
func (h *Host) Instance(name string) (*Instance, bool) {
	i, ok := h.instances[name]
	return i, ok
}

// Instances returns the instances in configuration order.
func (h *Host) Instances() []*Instance {
	out := make([]*Instance, 0, len(h.order))
	for _, n := range h.order {
		out = append(out, h.instances[n])
	}
	return out
}

// Close kills every plugin process and waits for the supervisors to stop.
// It is safe to call more than once.
func (h *Host) Close() {
	h.stop()
	h.wg.Wait()
	for _, inst := range h.instances {
		inst.kill()
	}
	h.launcher.close()
}

func (h *Host) newInstance(p config.Provider, acct *account) (*Instance, error) {
	path := filepath.Join(h.o.PluginsDir, BinaryPrefix+p.Plugin)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("plugin binary %s not found (run `make build`, or set plugins_dir / LOOM_PLUGINS_DIR): %w", path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	settings, err := json.Marshal(p.Settings)
	if err != nil {
		return nil, fmt.Errorf("encode settings: %w", err)
	}
	if p.Settings == nil {
		settings = []byte("{}")
	}
	var pin []byte
	if p.SHA256 != "" {
		if pin, err = hex.DecodeString(p.SHA256); err != nil {
			return nil, fmt.Errorf("sha256 pin: %w", err)
		}
	}
	secrets := make(map[string]string, len(p.Secrets))
	for k, v := range p.Secrets {
		secrets[k] = v
	}
	inst := &Instance{
		name: p.Name, plugin: p.Plugin, path: abs, pin: pin, host: h, acct: acct,
		log: h.log.Named(p.Name),
		cfg: provider.Config{Instance: p.Name, Settings: settings, Secrets: secrets},
	}
	if acct != nil {
		if err := acct.mayExecute(abs); err != nil {
			return nil, fmt.Errorf("plugin binary: %w", err)
		}
		if inst.tmpDir, err = privateTempDir(p.Name, acct); err != nil {
			return nil, err
		}
	}
	return inst, nil
}

// privateTempDir creates the temporary directory of a plugin running as
// acct: mode 0700, owned by acct. The plugin gets it as TMPDIR, and
// go-plugin's server creates its Unix socket there, so neither depends on
// a shared directory the plugin user may not be able to write.
func privateTempDir(instance string, acct *account) (string, error) {
	base, err := filepath.Abs(os.TempDir())
	if err != nil {
		return "", fmt.Errorf("temporary directory for the plugin: %w", err)
	}
	if err := acct.maySearch(base); err != nil {
		return "", fmt.Errorf("temporary directory for the plugin, in Loom's (TMPDIR): %w", err)
	}
	dir, err := os.MkdirTemp(base, "loom-plugin-"+instance+"-")
	if err != nil {
		return "", fmt.Errorf("temporary directory for the plugin: %w", err)
	}
	if err := os.Chown(dir, int(acct.uid), int(acct.gid)); err != nil {
		os.Remove(dir)
		return "", fmt.Errorf("temporary directory for the plugin: give it to user %q: %w", acct.name, err)
	}
	return dir, nil
}

// Instance is one supervised plugin process.
type Instance struct {
	name, plugin, path string
	pin                []byte
	cfg                provider.Config
	host               *Host
	log                hclog.Logger
	// acct is the user the process runs as (nil: Loom's own), and tmpDir
	// its private temporary directory then.
	acct   *account
	tmpDir string

	mu     sync.Mutex
	gen    *generation // current process; nil while restarting
	ready  chan struct{}
	closed bool

	restarts atomic.Int64
}

// generation is one process of an instance.
type generation struct {
	client *goplugin.Client
	prov   provider.Provider
	info   provider.Info
	failed atomic.Bool
}

// Name is the instance name from loom.hcl.
func (i *Instance) Name() string { return i.name }

// Plugin is the plugin name (the binary's suffix).
func (i *Instance) Plugin() string { return i.plugin }

// Restarts counts how often the process was restarted after dying.
func (i *Instance) Restarts() int64 { return i.restarts.Load() }

// Info returns what the running plugin reported at start.
func (i *Instance) Info() provider.Info {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.gen == nil {
		return provider.Info{Name: i.plugin}
	}
	return i.gen.info
}

// Pid is the plugin process id (0 while restarting), for tests and ops.
func (i *Instance) Pid() int {
	i.mu.Lock()
	g := i.gen
	i.mu.Unlock()
	if g == nil {
		return 0
	}
	rc := g.client.ReattachConfig()
	if rc == nil {
		return 0
	}
	return rc.Pid
}

func (i *Instance) start(ctx context.Context) error {
	g, err := i.launch(ctx)
	if err != nil {
		return err
	}
	i.mu.Lock()
	i.gen = g
	i.ready = make(chan struct{})
	close(i.ready)
	i.mu.Unlock()
	if i.acct != nil {
		i.log.Info("plugin started", "plugin", g.info.Name, "version", g.info.Version, "pid", i.Pid(), "user", i.acct.name, "uid", i.acct.uid)
	} else {
		i.log.Info("plugin started", "plugin", g.info.Name, "version", g.info.Version, "pid", i.Pid())
	}
	return nil
}

// launch starts a process, checks its protocol and configures it.
func (i *Instance) launch(ctx context.Context) (*generation, error) {
	cmd := exec.Command(i.path)
	// A minimal environment: the master key, store DSN, admin token and
	// provider secrets never reach a plugin through its environment.
	// Secrets for this instance are sent over the protocol by Configure.
	cmd.Env = []string{"LOOM_PLUGIN_LOG_LEVEL=" + i.host.o.LogLevel}
	if addr := os.Getenv(plugin.PprofAddrEnv); addr != "" {
		cmd.Env = append(cmd.Env, plugin.PprofAddrEnv+"="+addr) // profiling, off by default
	}
	cmd.Dir = filepath.Dir(i.path)
	setParentDeathSignal(cmd)
	if i.acct != nil {
		cmd.Env = append(cmd.Env, "TMPDIR="+i.tmpDir)
		runAs(cmd, i.acct)
	}
	cc := &goplugin.ClientConfig{
		HandshakeConfig:  plugin.Handshake,
		VersionedPlugins: plugin.VersionedPlugins(),
		Cmd:              cmd,
		SkipHostEnv:      true,
		AllowedProtocols: []goplugin.Protocol{goplugin.ProtocolGRPC},
		AutoMTLS:         true,
		Logger:           i.log,
		StartTimeout:     i.host.o.StartTimeout,
		GRPCDialOptions:  plugin.GRPCDialOptions(),
	}
	if i.pin != nil {
		cc.SecureConfig = &goplugin.SecureConfig{Checksum: i.pin, Hash: sha256.New()}
	}
	client := goplugin.NewClient(cc)
	fail := func(err error) (*generation, error) {
		client.Kill()
		return nil, err
	}
	var rpc goplugin.ClientProtocol
	var err error
	i.host.launcher.run(func() { rpc, err = client.Client() })
	if err != nil {
		if errors.Is(err, goplugin.ErrChecksumsDoNotMatch) {
			return fail(fmt.Errorf("plugin binary %s does not match its sha256 pin", i.path))
		}
		if i.acct != nil && errors.Is(err, fs.ErrPermission) {
			return fail(fmt.Errorf("start plugin %s as user %q: %w (that user must be able to read and execute the binary and search every directory above it)", i.path, i.acct.name, err))
		}
		return fail(fmt.Errorf("start plugin %s: %w", i.path, err))
	}
	prov, err := plugin.Dispense(rpc)
	if err != nil {
		return fail(fmt.Errorf("dispense plugin: %w", err))
	}
	cctx, cancel := context.WithTimeout(ctx, i.host.o.StartTimeout)
	defer cancel()
	info, err := prov.Info(cctx)
	if err != nil {
		return fail(fmt.Errorf("plugin info: %w", err))
	}
	if info.ProtocolVersion != provider.ProtocolVersion {
		return fail(fmt.Errorf("plugin %s speaks protocol %d, Loom speaks %d", info.Name, info.ProtocolVersion, provider.ProtocolVersion))
	}
	if err := prov.Configure(cctx, i.cfg); err != nil {
		return fail(fmt.Errorf("configure: %w", err))
	}
	return &generation{client: client, prov: prov, info: info}, nil
}

// supervise restarts the process when it dies, with exponential backoff.
func (i *Instance) supervise(ctx context.Context) {
	backoff := 100 * time.Millisecond
	const maxBackoff = 10 * time.Second
	t := time.NewTicker(i.host.o.PollInterval)
	defer t.Stop()
	healthySince := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		i.mu.Lock()
		g := i.gen
		i.mu.Unlock()
		if g != nil && !g.client.Exited() && !g.failed.Load() {
			if time.Since(healthySince) > time.Minute {
				backoff = 100 * time.Millisecond
			}
			continue
		}
		// The process is gone (or broke the protocol): fail over to a new one.
		i.mu.Lock()
		if i.gen != nil {
			i.gen = nil
			i.ready = make(chan struct{})
		}
		i.mu.Unlock()
		if g != nil {
			i.log.Error("plugin process exited; restarting", "backoff", backoff)
			g.client.Kill()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		ng, err := i.launch(ctx)
		if err != nil {
			i.log.Error("plugin restart failed", "error", err, "next_attempt_in", 2*backoff)
			backoff = min(2*backoff, maxBackoff)
			continue
		}
		i.restarts.Add(1)
		i.mu.Lock()
		if i.closed {
			i.mu.Unlock()
			ng.client.Kill()
			return
		}
		i.gen = ng
		close(i.ready)
		i.mu.Unlock()
		healthySince = time.Now()
		i.log.Info("plugin restarted", "restarts", i.restarts.Load())
	}
}

func (i *Instance) kill() {
	i.mu.Lock()
	i.closed = true
	g := i.gen
	i.gen = nil
	i.mu.Unlock()
	if g != nil {
		g.client.Kill()
	}
	if i.tmpDir != "" {
		if err := os.RemoveAll(i.tmpDir); err != nil {
			i.log.Warn("temporary directory of the plugin not removed", "dir", i.tmpDir, "error", err)
		}
	}
}

// current returns the running generation, waiting for a restart to finish
// (up to RestartWait or ctx).
func (i *Instance) current(ctx context.Context) (*generation, error) {
	var deadline <-chan time.Time
	for {
		i.mu.Lock()
		g, ready, closed := i.gen, i.ready, i.closed
		i.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("%w: provider %q is shut down", ErrPluginFailed, i.name)
		}
		if g != nil && !g.failed.Load() {
			return g, nil
		}
		if deadline == nil {
			t := time.NewTimer(i.host.o.RestartWait)
			defer t.Stop()
			deadline = t.C
		}
		var recheck <-chan time.Time
		if g != nil {
			// Flagged as failed, but the supervisor has not replaced it yet
			// (ready is still closed for it): look again shortly rather
			// than spin.
			ready, recheck = nil, time.After(10*time.Millisecond)
		}
		select {
		case <-ready:
		case <-recheck:
		case <-deadline:
			return nil, fmt.Errorf("%w: the %q plugin for provider %q is restarting; retry shortly", ErrPluginFailed, i.plugin, i.name)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// classify turns a call error into ErrPluginFailed when the plugin is at
// fault, flagging the generation so the supervisor replaces it promptly.
func (i *Instance) classify(ctx context.Context, g *generation, err error) error {
	if err == nil || errors.Is(err, provider.ErrUnsupported) {
		return err
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if plugin.IsPluginGone(err) {
		g.failed.Store(true)
		return fmt.Errorf("%w: the %q plugin process for provider %q exited during the request; Loom is restarting it", ErrPluginFailed, i.plugin, i.name)
	}
	return fmt.Errorf("%w: provider %q: %v", ErrPluginFailed, i.name, err)
}

// ChatCompletions calls the plugin.
func (i *Instance) ChatCompletions(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	g, err := i.current(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := g.prov.ChatCompletions(ctx, req)
	return resp, i.classify(ctx, g, err)
}

// ChatCompletionsStream calls the plugin.
func (i *Instance) ChatCompletionsStream(ctx context.Context, req *provider.Request, out provider.StreamSender) (*provider.StreamEnd, error) {
	g, err := i.current(ctx)
	if err != nil {
		return nil, err
	}
	end, err := g.prov.ChatCompletionsStream(ctx, req, out)
	return end, i.classify(ctx, g, err)
}

// Embeddings calls the plugin.
func (i *Instance) Embeddings(ctx context.Context, req *provider.Request) (*provider.Response, error) {
	g, err := i.current(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := g.prov.Embeddings(ctx, req)
	return resp, i.classify(ctx, g, err)
}

// ListModels calls the plugin.
func (i *Instance) ListModels(ctx context.Context) ([]provider.Model, error) {
	g, err := i.current(ctx)
	if err != nil {
		return nil, err
	}
	models, err := g.prov.ListModels(ctx)
	return models, i.classify(ctx, g, err)
}
