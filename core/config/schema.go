package config

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// setting is one scalar of the fixed schema.
type setting struct {
	// path is the setting's place in the file: "listen", "store.driver".
	path string
	// field points into c at the value: *string, *int, *int64,
	// *time.Duration, or *[]byte (a master key).
	field func(c *Config) any
	// envOnly settings are secrets: they may only come from the
	// environment, never from the file.
	envOnly bool
}

// schema lists every scalar setting of the fixed schema. It is the single
// source for the file's known keys and for the LOOM_… variable names.
// The dev fields require c.Dev to be non-nil.
func schema() []setting {
	return []setting{
		{path: "listen", field: func(c *Config) any { return &c.Listen }},
		{path: "plugins_dir", field: func(c *Config) any { return &c.PluginsDir }},
		{path: "plugin_user", field: func(c *Config) any { return &c.PluginUser }},

		{path: "store.driver", field: func(c *Config) any { return &c.Store.Driver }},
		{path: "store.dsn", field: func(c *Config) any { return &c.Store.DSN }},
		{path: "store.max_conns", field: func(c *Config) any { return &c.Store.MaxConns }},

		{path: "server.read_header_timeout", field: func(c *Config) any { return &c.Server.ReadHeaderTimeout }},
		{path: "server.body_timeout", field: func(c *Config) any { return &c.Server.BodyTimeout }},
		{path: "server.idle_timeout", field: func(c *Config) any { return &c.Server.IdleTimeout }},
		{path: "server.max_body_bytes", field: func(c *Config) any { return &c.Server.MaxBodyBytes }},
		{path: "server.body_memory_bytes", field: func(c *Config) any { return &c.Server.BodyMemoryBytes }},
		{path: "server.shutdown_timeout", field: func(c *Config) any { return &c.Server.ShutdownTimeout }},
		{path: "server.memory_target_bytes", field: func(c *Config) any { return &c.Server.MemoryTargetBytes }},

		{path: "auth.cache_ttl", field: func(c *Config) any { return &c.Auth.CacheTTL }},
		{path: "auth.cache_size", field: func(c *Config) any { return &c.Auth.CacheSize }},

		{path: "log.level", field: func(c *Config) any { return &c.Log.Level }},
		{path: "log.format", field: func(c *Config) any { return &c.Log.Format }},

		{path: "trace.durability", field: func(c *Config) any { return &c.Trace.Durability }},
		{path: "trace.spool_dir", field: func(c *Config) any { return &c.Trace.SpoolDir }},
		{path: "trace.spool_max_bytes", field: func(c *Config) any { return &c.Trace.SpoolMaxBytes }},
		{path: "trace.queue_size", field: func(c *Config) any { return &c.Trace.QueueSize }},
		{path: "trace.tenant_share_percent", field: func(c *Config) any { return &c.Trace.TenantSharePercent }},
		{path: "trace.batch_size", field: func(c *Config) any { return &c.Trace.BatchSize }},
		{path: "trace.batch_interval", field: func(c *Config) any { return &c.Trace.BatchInterval }},
		{path: "trace.max_body_bytes", field: func(c *Config) any { return &c.Trace.MaxBodyBytes }},
		{path: "trace.shutdown_timeout", field: func(c *Config) any { return &c.Trace.ShutdownTimeout }},

		{path: "dev.master_key_file", field: func(c *Config) any { return &c.Dev.MasterKeyFile }},
		{path: "dev.bootstrap_tenant", field: func(c *Config) any { return &c.Dev.BootstrapTenant }},

		{path: "master_key", field: func(c *Config) any { return &c.MasterKey }, envOnly: true},
		{path: "admin_token", field: func(c *Config) any { return &c.AdminToken }, envOnly: true},
	}
}

// envName is the environment variable that overrides the setting at path:
// LOOM_ + the path upper-cased, with "." as "_".
func envName(path string) string {
	return "LOOM_" + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// EnvVars returns, sorted, every LOOM_… environment variable Load reads
// (provider secrets, whose names the file chooses, are not included).
func EnvVars() []string {
	var names []string
	for _, s := range schema() {
		names = append(names, envName(s.path))
	}
	slices.Sort(names)
	return names
}

// blockOf returns the block a setting path lives in ("store" for
// "store.driver"), or "" for a top-level setting.
func blockOf(path string) string {
	block, _, ok := strings.Cut(path, ".")
	if !ok {
		return ""
	}
	return block
}

// expected names what a setting's field accepts, for messages.
func expected(field any) string {
	switch field.(type) {
	case *string:
		return "a string"
	case *int, *int64:
		return "an integer"
	case *time.Duration:
		return `a duration such as "5s"`
	default:
		return "a value"
	}
}

// setFromFile stores the decoded file value v in field, reporting a wrong
// type or an unparsable value as an error.
func setFromFile(field, v any) error {
	wrong := fmt.Errorf("expected %s, got %s", expected(field), describe(v))
	switch f := field.(type) {
	case *string:
		s, ok := v.(string)
		if !ok {
			return wrong
		}
		*f = s
	case *int:
		n, ok := fileInt(v)
		if !ok {
			return wrong
		}
		*f = int(n)
	case *int64:
		n, ok := fileInt(v)
		if !ok {
			return wrong
		}
		*f = n
	case *time.Duration:
		s, ok := v.(string)
		if !ok {
			return wrong
		}
		d, err := parseDuration(s)
		if err != nil {
			return err
		}
		*f = d
	default:
		return fmt.Errorf("cannot be set in the file")
	}
	return nil
}

// fileInt accepts an HCL integer, or a float with no fractional part (HCL v1
// reads 1e7 as a float).
func fileInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case float64:
		if n != math.Trunc(n) || n < math.MinInt64 || n >= math.MaxInt64 {
			return 0, false
		}
		return int64(n), true
	}
	return 0, false
}

// setFromEnv parses the environment value s into field.
func setFromEnv(field any, s string) error {
	switch f := field.(type) {
	case *string:
		*f = s
	case *int:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, strconv.IntSize)
		if err != nil {
			return fmt.Errorf("expected an integer, got %q", s)
		}
		*f = int(n)
	case *int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return fmt.Errorf("expected an integer, got %q", s)
		}
		*f = n
	case *time.Duration:
		d, err := parseDuration(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		*f = d
	case *[]byte:
		key, err := DecodeMasterKey(s)
		if err != nil {
			return err
		}
		*f = key
	default:
		return fmt.Errorf("cannot be set from the environment")
	}
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf(`invalid duration %q: use a number and a unit, e.g. "5s" or "2m"`, s)
	}
	return d, nil
}
