package config

import (
	"encoding/json"
	"time"
)

// Config is Loom's validated configuration: loom.hcl, then LOOM_… environment
// overrides, then secrets resolved from the environment variables the file names.
type Config struct {
	// Listen is the HTTP listen address (LOOM_LISTEN).
	Listen string `json:"listen"`
	// PluginsDir holds the loom-provider-<name> binaries (LOOM_PLUGINS_DIR).
	// Relative paths are resolved against the working directory.
	PluginsDir string `json:"plugins_dir"`
	// PluginUser is the user the plugin processes run as (LOOM_PLUGIN_USER):
	// a name or a numeric uid, empty for Loom's own user. A provider's own
	// user setting wins over it; Provider.User holds the outcome.
	PluginUser string `json:"plugin_user,omitempty"`

	Store  Store  `json:"store"`
	Server Server `json:"server"`
	Auth   Auth   `json:"auth"`
	Log    Log    `json:"log"`
	Trace  Trace  `json:"trace"`
	// Dev is set only when the file has a dev block: development conveniences
	// that must never be on in production.
	Dev *Dev `json:"dev,omitempty"`

	// Providers are the provider instances, in file order.
	Providers []Provider `json:"providers"`
	// Tenants are the per-tenant route tables, in file order. The tenant named
	// "default" applies to tenants without their own block.
	Tenants []TenantRoutes `json:"tenants"`

	// Pricing are the price overrides of the pricing block, in file order:
	// they add models to the embedded price catalog or replace its prices.
	Pricing []Price `json:"pricing"`

	// MasterKey is LOOM_MASTER_KEY decoded (32 bytes), nil when unset.
	MasterKey []byte `json:"-"`
	// AdminToken is LOOM_ADMIN_TOKEN, empty when unset.
	AdminToken string `json:"-"`

	// File is the path the configuration was read from.
	File string `json:"-"`
	// Hash is the hex SHA-256 of the normalised configuration (secrets
	// excluded); traces record it so one can tell which config served a request.
	Hash string `json:"-"`
}

// Store selects and addresses the database.
type Store struct {
	// Driver is "sqlite" or "postgres" (LOOM_STORE_DRIVER).
	Driver string `json:"driver"`
	// DSN is a file path (sqlite) or a connection string (postgres) (LOOM_STORE_DSN).
	DSN string `json:"dsn"`
	// MaxConns bounds the PostgreSQL pool (ignored by sqlite).
	MaxConns int `json:"max_conns"`
}

// Server holds HTTP server limits.
type Server struct {
	// ReadHeaderTimeout stops slow-header clients without limiting long streams.
	ReadHeaderTimeout time.Duration `json:"read_header_timeout"`
	// BodyTimeout is the longest a client may pause while sending a request
	// body (each read restarts it), so a stalled upload cannot hold a
	// request open; it never limits the response or a stream.
	BodyTimeout time.Duration `json:"body_timeout"`
	// IdleTimeout closes idle keep-alive connections.
	IdleTimeout time.Duration `json:"idle_timeout"`
	// MaxBodyBytes is the largest request body accepted (413 beyond).
	MaxBodyBytes int64 `json:"max_body_bytes"`
	// BodyMemoryBytes bounds the request bodies being read or served at
	// once; one tenant may hold trace.tenant_share_percent of it.
	BodyMemoryBytes int64 `json:"body_memory_bytes"`
	// ShutdownTimeout is how long in-flight requests may run after SIGTERM.
	ShutdownTimeout time.Duration `json:"shutdown_timeout"`
	// MemoryTargetBytes paces the garbage collector: collections start
	// when Loom's Go memory reaches it, but never after the heap grows by
	// less than a tenth of what is live (sdk/gctune). 0 leaves Go's
	// defaults; the GOGC and GOMEMLIMIT environment variables win over it.
	MemoryTargetBytes int64 `json:"memory_target_bytes"`
}

// Auth tunes the API key cache.
type Auth struct {
	// CacheTTL is how long a looked-up key (valid or not) is trusted; a
	// revoked key or disabled tenant stops working within it.
	CacheTTL time.Duration `json:"cache_ttl"`
	// CacheSize bounds the number of cached keys.
	CacheSize int `json:"cache_size"`
}

// Log configures hclog.
type Log struct {
	Level  string `json:"level"`  // trace|debug|info|warn|error
	Format string `json:"format"` // text|json
}

// Dev holds development-only conveniences used by `make run`.
type Dev struct {
	// MasterKeyFile: when LOOM_MASTER_KEY is unset, the master key is read
	// from this file, generated (mode 0600) on first run.
	MasterKeyFile string `json:"master_key_file"`
	// BootstrapTenant: when the store has no tenant, create this one and print
	// a key for it.
	BootstrapTenant string `json:"bootstrap_tenant"`
}

// Provider is one provider instance: a plugin process configured with
// settings from the file and secrets from the environment.
type Provider struct {
	// Name is the instance name (the block label); routes refer to it.
	Name string `json:"name"`
	// Plugin is the plugin binary's name: loom-provider-<Plugin>. Defaults to Name.
	Plugin string `json:"plugin"`
	// SHA256 optionally pins the plugin binary (hex).
	SHA256 string `json:"sha256,omitempty"`
	// User is the user the plugin process runs as: the provider's own user
	// setting, else plugin_user; empty for Loom's own user. Only root can
	// start a process as another user, which core/pluginhost checks.
	User string `json:"user,omitempty"`
	// UserKey is the setting User came from ("provider.<name>.user" or
	// "plugin_user") and UserOrigin where that was set (the file, or
	// "NAME (environment)"), so a problem found when Loom starts the
	// plugin can name them as Load's problems do. Empty when User is.
	UserKey    string `json:"-"`
	UserOrigin string `json:"-"`
	// Settings are the plain settings passed to the plugin.
	Settings map[string]any `json:"settings"`
	// Env maps a setting name to the environment variable that holds its
	// value. Values found there override Settings and are treated as secrets.
	Env map[string]string `json:"env"`
	// Secrets are the resolved values of Env that were set (never logged).
	Secrets map[string]string `json:"-"`
}

// TenantRoutes is the ordered route table of one tenant (or "default").
type TenantRoutes struct {
	Tenant string  `json:"tenant"`
	Routes []Route `json:"routes"`
}

// Route sends requests whose model matches Match (a glob, * matches any run
// of characters) to Provider, optionally rewriting the model.
type Route struct {
	Match    string `json:"match"`
	Provider string `json:"provider"`
	// Model, when set, is the upstream model; a "*" in it is replaced by
	// the text the first "*" of Match matched.
	Model string `json:"model,omitempty"`
}

// MarshalJSON writes durations as Go duration strings ("10s"), so the
// normalised configuration reads like the file.
func (s Server) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		ReadHeaderTimeout string `json:"read_header_timeout"`
		BodyTimeout       string `json:"body_timeout"`
		IdleTimeout       string `json:"idle_timeout"`
		MaxBodyBytes      int64  `json:"max_body_bytes"`
		BodyMemoryBytes   int64  `json:"body_memory_bytes"`
		ShutdownTimeout   string `json:"shutdown_timeout"`
		MemoryTargetBytes int64  `json:"memory_target_bytes"`
	}{s.ReadHeaderTimeout.String(), s.BodyTimeout.String(), s.IdleTimeout.String(), s.MaxBodyBytes, s.BodyMemoryBytes, s.ShutdownTimeout.String(), s.MemoryTargetBytes})
}

// MarshalJSON writes the TTL as a Go duration string.
func (a Auth) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		CacheTTL  string `json:"cache_ttl"`
		CacheSize int    `json:"cache_size"`
	}{a.CacheTTL.String(), a.CacheSize})
}

// Trace tunes how traces are written to the store.
type Trace struct {
	// Durability is DurabilityAsync (a response does not wait for its trace)
	// or DurabilitySync (a response completes only once its trace is durable).
	Durability string `json:"durability"`
	// SpoolDir holds batches of traces while the store is unreachable.
	// Relative paths are resolved against the working directory.
	SpoolDir string `json:"spool_dir"`
	// SpoolMaxBytes bounds the spool; beyond it Loom answers 503 rather than
	// serve traffic it cannot trace.
	SpoolMaxBytes int64 `json:"spool_max_bytes"`
	// QueueSize is how many traces may wait for the writer.
	QueueSize int `json:"queue_size"`
	// TenantSharePercent is the part of QueueSize one tenant may hold:
	// its requests in flight plus its traces not yet written.
	TenantSharePercent int `json:"tenant_share_percent"`
	// BatchSize is the most traces written in one store transaction.
	BatchSize int `json:"batch_size"`
	// BatchInterval is the longest a trace waits for its batch to fill.
	BatchInterval time.Duration `json:"batch_interval"`
	// MaxBodyBytes bounds a captured request or response body; a longer one
	// is truncated in the trace and flagged as such.
	MaxBodyBytes int64 `json:"max_body_bytes"`
	// ShutdownTimeout is how long flushing queued traces may take at shutdown.
	ShutdownTimeout time.Duration `json:"shutdown_timeout"`
}

// Trace durabilities.
const (
	DurabilityAsync = "async"
	DurabilitySync  = "sync"
)

// MarshalJSON writes durations as Go duration strings ("50ms").
func (t Trace) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Durability      string `json:"durability"`
		SpoolDir        string `json:"spool_dir"`
		SpoolMaxBytes   int64  `json:"spool_max_bytes"`
		QueueSize       int    `json:"queue_size"`
		TenantShare     int    `json:"tenant_share_percent"`
		BatchSize       int    `json:"batch_size"`
		BatchInterval   string `json:"batch_interval"`
		MaxBodyBytes    int64  `json:"max_body_bytes"`
		ShutdownTimeout string `json:"shutdown_timeout"`
	}{t.Durability, t.SpoolDir, t.SpoolMaxBytes, t.QueueSize, t.TenantSharePercent, t.BatchSize,
		t.BatchInterval.String(), t.MaxBodyBytes, t.ShutdownTimeout.String()})
}

// Price is one `model "name" { … }` block of the pricing block: the prices
// of a model from a day on, in US dollars per 1M tokens, as decimal strings
// with at most 6 decimals ("2.50"). A number in the file is kept as its
// shortest decimal form (2.5 becomes "2.5").
type Price struct {
	// Model is the block label, the model name as requests and the catalog
	// spell it ("gpt-4o", or an Azure deployment such as "azure/my-gpt4o").
	Model string `json:"model"`
	// Input prices prompt tokens not served from the prompt cache.
	Input string `json:"input"`
	// Output prices completion tokens, reasoning tokens included.
	Output string `json:"output"`
	// CachedInput prices cached prompt tokens; empty means at Input.
	CachedInput string `json:"cached_input,omitempty"`
	// Effective is the day (UTC) from which the prices apply; 1970-01-01
	// unless given.
	Effective time.Time `json:"-"`
}

// EffectiveDateLayout is how Price.Effective is written in the file.
const EffectiveDateLayout = time.DateOnly

// MarshalJSON writes Effective as a date ("2024-10-01").
func (p Price) MarshalJSON() ([]byte, error) {
	type plain Price
	return json.Marshal(struct {
		plain
		Effective string `json:"effective"`
	}{plain(p), p.Effective.UTC().Format(EffectiveDateLayout)})
}
