package config

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"time"
	"unicode"
)

var (
	// namePattern is what provider, tenant and plugin names must match.
	namePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	// envNamePattern is what an environment variable name must match.
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	// sha256Pattern is a hex SHA-256 digest.
	sha256Pattern = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)
	// userPattern is what a plugin user must match: a user name or a uid.
	userPattern = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]*$`)
)

const nameRule = `use lower-case letters, digits, "-" and "_", starting with a letter or digit`

func validEnvName(s string) bool { return envNamePattern.MatchString(s) }

// validate checks the values of a decoded config. explicit holds the
// fixed-schema paths that the file or the environment set.
func validate(c *Config, col *collector, explicit map[string]bool) {
	col.decodingDone()
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		col.check("listen", fmt.Sprintf("must be host:port, got %q", c.Listen))
	}
	if c.PluginsDir == "" {
		col.check("plugins_dir", "must not be empty")
	}
	if c.PluginUser != "" {
		checkUser(col, "plugin_user", c.PluginUser)
	}

	switch c.Store.Driver {
	case DriverSQLite:
		if c.Store.DSN == "" {
			col.check("store.dsn", "must not be empty")
		}
	case DriverPostgres:
		if c.Store.DSN == "" {
			col.check("store.dsn", `required when store.driver is "postgres"`)
		}
	default:
		col.check("store.driver", fmt.Sprintf(`must be %q or %q, got %q`, DriverSQLite, DriverPostgres, c.Store.Driver))
	}
	positive(col, "store.max_conns", int64(c.Store.MaxConns))

	positiveDuration(col, "server.read_header_timeout", c.Server.ReadHeaderTimeout)
	positiveDuration(col, "server.body_timeout", c.Server.BodyTimeout)
	positiveDuration(col, "server.idle_timeout", c.Server.IdleTimeout)
	positive(col, "server.max_body_bytes", c.Server.MaxBodyBytes)
	positive(col, "server.body_memory_bytes", c.Server.BodyMemoryBytes)
	positiveDuration(col, "server.shutdown_timeout", c.Server.ShutdownTimeout)
	if c.Server.MemoryTargetBytes < 0 {
		col.check("server.memory_target_bytes", fmt.Sprintf("must be 0 (Go's defaults) or a number of bytes, got %d", c.Server.MemoryTargetBytes))
	}

	positiveDuration(col, "auth.cache_ttl", c.Auth.CacheTTL)
	positive(col, "auth.cache_size", int64(c.Auth.CacheSize))

	oneOf(col, "log.level", c.Log.Level, "trace", "debug", "info", "warn", "error")
	oneOf(col, "log.format", c.Log.Format, "text", "json")

	oneOf(col, "trace.durability", c.Trace.Durability, DurabilityAsync, DurabilitySync)
	if c.Trace.SpoolDir == "" {
		col.check("trace.spool_dir", "must not be empty")
	}
	positive(col, "trace.spool_max_bytes", c.Trace.SpoolMaxBytes)
	positive(col, "trace.queue_size", int64(c.Trace.QueueSize))
	if p := c.Trace.TenantSharePercent; p < 1 || p > 100 {
		col.check("trace.tenant_share_percent", fmt.Sprintf("must be a percentage from 1 to 100, got %d", p))
	}
	positive(col, "trace.batch_size", int64(c.Trace.BatchSize))
	positiveDuration(col, "trace.batch_interval", c.Trace.BatchInterval)
	positive(col, "trace.max_body_bytes", c.Trace.MaxBodyBytes)
	positiveDuration(col, "trace.shutdown_timeout", c.Trace.ShutdownTimeout)

	if c.Dev != nil {
		if explicit["dev.master_key_file"] && c.Dev.MasterKeyFile == "" {
			col.check("dev.master_key_file", "must not be empty")
		}
		if t := c.Dev.BootstrapTenant; t != "" && !namePattern.MatchString(t) {
			col.check("dev.bootstrap_tenant", fmt.Sprintf("invalid tenant name %q: %s", t, nameRule))
		}
	}

	providers := validateProviders(c, col)
	validateTenants(c, col, providers)
	validatePricing(c, col)
}

// validatePricing checks the pricing block's model prices.
func validatePricing(c *Config, col *collector) {
	models := make([]string, len(c.Pricing))
	for i, p := range c.Pricing {
		models[i] = p.Model
	}
	keys := modelBlockKeys(models)
	seen := make(map[string]bool)
	for i, p := range c.Pricing {
		key := keys[i]
		if p.Model == "" || strings.ContainsFunc(p.Model, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			col.check(key, fmt.Sprintf("invalid model name %q: must not be empty or contain white space", p.Model))
		}
		for _, f := range []struct {
			name, value string
			required    bool
		}{{"input", p.Input, true}, {"output", p.Output, true}, {"cached_input", p.CachedInput, false}} {
			switch _, err := ParseUSD(f.value); {
			case f.value == "" && f.required:
				col.check(key+"."+f.name, "required (US dollars per 1M tokens, such as \"2.50\")")
			case f.value != "" && err != nil:
				col.check(key+"."+f.name, err.Error())
			}
		}
		// Model names are matched case-insensitively. A block whose date
		// could not be read is left out: its date is only the default.
		if col.decodeFailed(key + ".effective") {
			continue
		}
		date := p.Effective.Format(EffectiveDateLayout)
		id := strings.ToLower(p.Model) + " " + date
		switch {
		case !seen[id]:
			seen[id] = true
		case p.Effective.Equal(defaultEffective):
			col.check(key, "priced more than once without an effective date; give each model block of a model its own effective date")
		default:
			col.check(key, fmt.Sprintf("priced more than once from %s; give each model block of a model its own effective date", date))
		}
	}
}

// validateProviders checks the providers and returns the defined names.
func validateProviders(c *Config, col *collector) []string {
	count := make(map[string]int)
	var names []string
	for _, p := range c.Providers {
		key := "provider." + p.Name
		count[p.Name]++
		if count[p.Name] == 2 {
			col.check(key, "defined more than once")
		}
		if count[p.Name] > 1 {
			continue
		}
		names = append(names, p.Name)
		if !namePattern.MatchString(p.Name) {
			col.check(key, fmt.Sprintf("invalid provider name %q: %s", p.Name, nameRule))
		}
		// A plugin left to default to the name is covered by the name check.
		if p.Plugin != p.Name && !namePattern.MatchString(p.Plugin) {
			col.check(key+".plugin", fmt.Sprintf("invalid plugin name %q: %s", p.Plugin, nameRule))
		}
		if p.SHA256 != "" && !sha256Pattern.MatchString(p.SHA256) {
			col.check(key+".sha256", fmt.Sprintf("must be 64 hex digits, got %q", p.SHA256))
		}
		if p.UserKey == key+".user" {
			checkUser(col, p.UserKey, p.User)
		}
		for _, setting := range sortedKeys(p.Env) {
			if name := p.Env[setting]; !validEnvName(name) {
				col.check(key+".env."+setting, fmt.Sprintf("%q is not a valid environment variable name", name))
			}
		}
	}
	return names
}

func validateTenants(c *Config, col *collector, providers []string) {
	defined := make(map[string]bool, len(providers))
	for _, name := range providers {
		defined[name] = true
	}
	count := make(map[string]int)
	for _, t := range c.Tenants {
		key := "tenant." + t.Tenant
		count[t.Tenant]++
		if count[t.Tenant] == 2 {
			col.check(key, "defined more than once")
		}
		if count[t.Tenant] > 1 {
			continue
		}
		if !namePattern.MatchString(t.Tenant) {
			col.check(key, fmt.Sprintf("invalid tenant name %q: %s", t.Tenant, nameRule))
		}
		for i, r := range t.Routes {
			rkey := fmt.Sprintf("%s.route[%d]", key, i)
			switch {
			case r.Match == "":
				col.check(rkey+".match", "required")
			case globProblem(r.Match) != "":
				col.check(rkey+".match", globProblem(r.Match))
			case strings.Contains(r.Model, "*") && !strings.Contains(r.Match, "*"):
				col.check(rkey+".model", fmt.Sprintf(`%q uses "*" but match %q has none`, r.Model, r.Match))
			}
			switch {
			case r.Provider == "":
				col.check(rkey+".provider", "required")
			case !defined[r.Provider]:
				msg := fmt.Sprintf("provider %q is not defined", r.Provider)
				if s := suggest(r.Provider, providers); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				col.check(rkey+".provider", msg)
			}
		}
	}
}

// globProblem says what is wrong with a route's match pattern, or returns "".
// Only "*" (any run of characters, possibly empty) is a wildcard; the other
// characters shell globs treat specially are refused rather than matched
// literally, so a pattern never means something other than it seems to.
func globProblem(pattern string) string {
	if i := strings.IndexAny(pattern, `?[]{}\`); i >= 0 {
		return fmt.Sprintf(`invalid glob %q: only "*" is a wildcard; %q is not allowed`, pattern, pattern[i:i+1])
	}
	if strings.ContainsFunc(pattern, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Sprintf("invalid glob %q: contains white space or control characters", pattern)
	}
	return ""
}

// checkUser checks the plugin user setting at key: a user name or a
// numeric uid. Whether the user exists is checked when Loom starts the
// plugins, on the machine they run on.
func checkUser(col *collector, key, user string) {
	switch {
	case user == "":
		col.check(key, "must not be empty; leave it out to run the plugin as plugin_user, or as Loom's own user")
	case !userPattern.MatchString(user):
		col.check(key, fmt.Sprintf(`invalid user %q: a user name (letters, digits, ".", "-" and "_", not starting with "." or "-") or a numeric uid`, user))
	}
}

func positive(col *collector, key string, n int64) {
	if n <= 0 {
		col.check(key, fmt.Sprintf("must be positive, got %d", n))
	}
}

func positiveDuration(col *collector, key string, d time.Duration) {
	if d <= 0 {
		col.check(key, fmt.Sprintf("must be positive, got %s", d))
	}
}

func oneOf(col *collector, key, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	quoted := make([]string, len(allowed))
	for i, a := range allowed {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	col.check(key, fmt.Sprintf("must be one of %s; got %q", strings.Join(quoted, ", "), got))
}

// suggest returns the candidate closest to name when it is close enough to
// be a likely typo, or "".
func suggest(name string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		d := editDistance(name, c)
		limit := 2
		if len(c) <= 4 {
			limit = 1
		}
		if d > limit || d == 0 {
			continue
		}
		if bestDist < 0 || d < bestDist || (d == bestDist && c < best) {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance: insertions,
// deletions, substitutions and transpositions of adjacent bytes.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}
