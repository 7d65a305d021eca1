package config

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/knadh/koanf/parsers/hcl"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// Defaults for settings the file and the environment leave out.
const (
	defaultListen            = "127.0.0.1:8080"
	defaultPluginsDir        = "bin/plugins"
	defaultDriver            = DriverSQLite
	defaultSQLiteDSN         = ".loom/loom.db"
	defaultMaxConns          = 16
	defaultReadHeaderTimeout = 10 * time.Second
	defaultBodyTimeout       = 30 * time.Second
	defaultIdleTimeout       = 120 * time.Second
	defaultMaxBodyBytes      = 10 << 20
	defaultBodyMemoryBytes   = 128 << 20
	defaultMemoryTargetBytes = 64 << 20
	defaultShutdownTimeout   = 30 * time.Second
	defaultCacheTTL          = 5 * time.Second
	defaultCacheSize         = 10000
	defaultLogLevel          = "info"
	defaultLogFormat         = "text"
	defaultDurability        = DurabilityAsync
	defaultSpoolDir          = ".loom/spool"
	defaultSpoolMaxBytes     = 1 << 30
	defaultQueueSize         = 10000
	defaultTenantShare       = 25
	defaultBatchSize         = 500
	defaultBatchInterval     = 5 * time.Millisecond
	defaultTraceBodyBytes    = 8 << 20
	defaultTraceShutdown     = 10 * time.Second
)

// Store drivers.
const (
	DriverSQLite   = "sqlite"
	DriverPostgres = "postgres"
)

// Load reads the HCL file at path, applies LOOM_… overrides from env, resolves
// provider secrets and LOOM_MASTER_KEY / LOOM_ADMIN_TOKEN from env, applies
// defaults and validates. On any problem it returns a *Errors listing every
// problem. env is os.LookupEnv in production; a nil env reads nothing.
//
// An environment variable set to the empty string counts as unset, both for
// LOOM_… overrides and for provider secrets.
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	if env == nil {
		env = func(string) (string, bool) { return "", false }
	}
	lookup := func(name string) (string, bool) {
		v, ok := env(name)
		return v, ok && v != ""
	}

	col := newCollector(path)
	raw, err := readFile(path)
	if err != nil {
		col.add("", fileErrorMessage(err))
		return nil, col.err()
	}

	c := defaults()
	// Decode into a Dev block whether or not the file has one, so the dev
	// settings have somewhere to go; it is dropped again below if unused.
	c.Dev = &Dev{}
	d := decoder{col: col, byPath: make(map[string]setting), explicit: make(map[string]bool)}
	for _, s := range schema() {
		d.byPath[s.path] = s
	}
	d.top(raw, c)
	d.environment(c, lookup)
	if !d.hasDev {
		c.Dev = nil
	}

	// Defaults that depend on other settings.
	if !d.explicit["store.dsn"] && c.Store.Driver == DriverSQLite {
		c.Store.DSN = defaultSQLiteDSN
	}
	for i := range c.Providers {
		p := &c.Providers[i]
		if !d.explicitPlugin[i] {
			p.Plugin = p.Name
		}
		if p.UserKey == "" && c.PluginUser != "" {
			p.User, p.UserKey, p.UserOrigin = c.PluginUser, "plugin_user", col.origin("plugin_user")
		}
		resolveSecrets(p, lookup)
	}

	validate(c, col, d.explicit)
	if err := col.err(); err != nil {
		return nil, err
	}

	c.File = path
	norm, err := c.Normalised()
	if err != nil {
		return nil, fmt.Errorf("normalise config: %w", err)
	}
	sum := sha256.Sum256(norm)
	c.Hash = hex.EncodeToString(sum[:])
	return c, nil
}

// readFile loads path through koanf's HCL (v1) parser and returns the raw,
// unflattened tree (see shape.go for what it looks like).
func readFile(path string) (map[string]any, error) {
	k := koanf.New(".")
	if err := k.Load(file.Provider(path), hcl.Parser(false)); err != nil {
		return nil, err
	}
	return k.Raw(), nil
}

// fileErrorMessage is the message for a file that cannot be read or parsed.
// The path is left out of read errors since the Problem names the file.
func fileErrorMessage(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Op + ": " + pe.Err.Error()
	}
	msg := err.Error()
	if strings.Contains(msg, "map must have string keys") {
		// HCL v1's decoder says this when one key is used both for a
		// labelled block and for an unlabelled block or a plain value.
		msg += ` (is a block given both with and without a name, as in provider "a" { } and provider { }?)`
	}
	return msg
}

func defaults() *Config {
	return &Config{
		Listen:     defaultListen,
		PluginsDir: defaultPluginsDir,
		Store:      Store{Driver: defaultDriver, MaxConns: defaultMaxConns},
		Server: Server{
			ReadHeaderTimeout: defaultReadHeaderTimeout,
			BodyTimeout:       defaultBodyTimeout,
			IdleTimeout:       defaultIdleTimeout,
			MaxBodyBytes:      defaultMaxBodyBytes,
			BodyMemoryBytes:   defaultBodyMemoryBytes,
			ShutdownTimeout:   defaultShutdownTimeout,
			MemoryTargetBytes: defaultMemoryTargetBytes,
		},
		Auth: Auth{CacheTTL: defaultCacheTTL, CacheSize: defaultCacheSize},
		Log:  Log{Level: defaultLogLevel, Format: defaultLogFormat},
		Trace: Trace{
			Durability:         defaultDurability,
			SpoolDir:           defaultSpoolDir,
			SpoolMaxBytes:      defaultSpoolMaxBytes,
			QueueSize:          defaultQueueSize,
			TenantSharePercent: defaultTenantShare,
			BatchSize:          defaultBatchSize,
			BatchInterval:      defaultBatchInterval,
			MaxBodyBytes:       defaultTraceBodyBytes,
			ShutdownTimeout:    defaultTraceShutdown,
		},
		Providers: []Provider{},
		Tenants:   []TenantRoutes{},
		Pricing:   []Price{},
	}
}

// decoder turns the raw tree into a Config, recording shape and type problems.
// Problems with the values themselves are left to validate.
type decoder struct {
	col    *collector
	byPath map[string]setting
	// explicit holds the fixed-schema paths set by the file or environment.
	explicit map[string]bool
	// explicitPlugin[i] is whether provider i names its plugin.
	explicitPlugin []bool
	hasDev         bool
}

// The keys allowed in provider, tenant, route, pricing and model blocks.
func providerKeys() []string { return []string{"env", "plugin", "settings", "sha256", "user"} }
func tenantKeys() []string   { return []string{"route"} }
func routeKeys() []string    { return []string{"match", "model", "provider"} }
func pricingKeys() []string  { return []string{"model"} }
func modelKeys() []string    { return []string{"cached_input", "effective", "input", "output"} }

func (d *decoder) top(raw map[string]any, c *Config) {
	blocks := make(map[string]bool)
	for path := range d.byPath {
		if b := blockOf(path); b != "" {
			blocks[b] = true
		}
	}
	for _, key := range sortedKeys(raw) {
		v := raw[key]
		switch {
		case key == "provider":
			d.providers(v, c)
		case key == "tenant":
			d.tenants(v, c)
		case key == "pricing":
			d.pricing(v, c)
		case blocks[key]:
			bodies, ok := asBlocks(v)
			if !ok {
				d.col.add(key, "expected a block, got "+describe(v))
				continue
			}
			if len(bodies) > 1 {
				d.col.add(key, fmt.Sprintf("block given %d times; give it once", len(bodies)))
			}
			if key == "dev" {
				d.hasDev = true
			}
			for _, body := range bodies {
				for _, name := range sortedKeys(body) {
					d.setting(key+"."+name, body[name], c)
				}
			}
		case strings.Contains(key, "."):
			// HCL v1 reads `store.driver = "x"` as the key "store.driver";
			// settings are only accepted in their block.
			msg := "unknown setting"
			if block, name, _ := strings.Cut(key, "."); blocks[block] {
				msg += fmt.Sprintf("; write it as %s { %s = … }", block, name)
			}
			d.col.add(key, msg)
		default:
			d.setting(key, v, c)
		}
	}
}

// setting decodes the file value v of the fixed-schema setting at path.
func (d *decoder) setting(path string, v any, c *Config) {
	s, ok := d.byPath[path]
	if !ok {
		d.unknown(path, d.siblings(path))
		return
	}
	if s.envOnly {
		d.col.add(path, "is a secret and must not be in the file; set "+envName(path)+" instead")
		return
	}
	if err := setFromFile(s.field(c), v); err != nil {
		d.col.add(path, err.Error())
		return
	}
	d.explicit[path] = true
}

// siblings returns the keys allowed next to path: its block's settings, or,
// at the top, the top-level settings and block names.
func (d *decoder) siblings(path string) []string {
	block := blockOf(path)
	var out []string
	seen := make(map[string]bool)
	for p, s := range d.byPath {
		if s.envOnly {
			continue
		}
		name := p
		if block != "" {
			rest, ok := strings.CutPrefix(p, block+".")
			if !ok {
				continue
			}
			name = rest
		} else if b := blockOf(p); b != "" {
			name = b
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	if block == "" {
		out = append(out, "provider", "tenant", "pricing")
	}
	return out
}

// unknown reports the unknown setting at path, suggesting the closest of
// the allowed names.
func (d *decoder) unknown(path string, allowed []string) {
	msg := "unknown setting"
	name := path[strings.LastIndex(path, ".")+1:]
	if s := suggest(name, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.col.add(path, msg)
}

// environment applies the LOOM_… overrides.
func (d *decoder) environment(c *Config, lookup func(string) (string, bool)) {
	for _, s := range schema() {
		name := envName(s.path)
		v, ok := lookup(name)
		if !ok {
			continue
		}
		key := s.path
		if s.envOnly {
			key = ""
		}
		if blockOf(s.path) == "dev" && !d.hasDev {
			d.col.addEnv(name, key, "the file has no dev block; dev settings can only be overridden, not switched on, from the environment")
			continue
		}
		if err := setFromEnv(s.field(c), v); err != nil {
			d.col.addEnv(name, key, err.Error())
			continue
		}
		d.explicit[s.path] = true
		d.col.fromEnv[s.path] = name
	}
}

func (d *decoder) providers(v any, c *Config) {
	blocks, unlabelled, ok := asLabelled(v, providerKeys())
	if !ok {
		d.col.add("provider", "expected a block, got "+describe(v))
		return
	}
	if unlabelled > 0 {
		d.col.add("provider", `every provider block needs a name, e.g. provider "openai" { … }`)
	}
	for _, b := range blocks {
		prefix := "provider." + b.label
		p := Provider{
			Name:     b.label,
			Settings: map[string]any{},
			Env:      map[string]string{},
			Secrets:  map[string]string{},
		}
		explicitPlugin := false
		for _, key := range sortedKeys(b.body) {
			v := b.body[key]
			path := prefix + "." + key
			switch key {
			case "plugin":
				if err := setFromFile(&p.Plugin, v); err != nil {
					d.col.add(path, err.Error())
					continue
				}
				explicitPlugin = true
			case "sha256":
				if err := setFromFile(&p.SHA256, v); err != nil {
					d.col.add(path, err.Error())
				}
				p.SHA256 = strings.ToLower(p.SHA256)
			case "user":
				if err := setFromFile(&p.User, v); err != nil {
					d.col.add(path, err.Error())
					continue
				}
				p.UserKey, p.UserOrigin = path, d.col.file
			case "settings":
				bodies := d.singleBlock(path, v)
				for _, body := range bodies {
					for k, sv := range body {
						p.Settings[k] = plainValue(sv)
					}
				}
			case "env":
				// A setting may appear both in settings and in env: the
				// plugin gets the environment value when the variable is
				// set and the settings value otherwise.
				for _, body := range d.singleBlock(path, v) {
					for _, setting := range sortedKeys(body) {
						var name string
						if err := setFromFile(&name, body[setting]); err != nil {
							d.col.add(path+"."+setting, err.Error()+" (an environment variable name)")
							continue
						}
						p.Env[setting] = name
					}
				}
			default:
				d.unknown(path, providerKeys())
			}
		}
		c.Providers = append(c.Providers, p)
		d.explicitPlugin = append(d.explicitPlugin, explicitPlugin)
	}
}

// singleBlock returns the bodies of the block v at path, reporting a value
// that is not a block or a block given more than once.
func (d *decoder) singleBlock(path string, v any) []map[string]any {
	bodies, ok := asBlocks(v)
	if !ok {
		d.col.add(path, "expected a block, got "+describe(v))
		return nil
	}
	if len(bodies) > 1 {
		d.col.add(path, fmt.Sprintf("block given %d times; give it once", len(bodies)))
	}
	return bodies
}

func (d *decoder) tenants(v any, c *Config) {
	blocks, unlabelled, ok := asLabelled(v, tenantKeys())
	if !ok {
		d.col.add("tenant", "expected a block, got "+describe(v))
		return
	}
	if unlabelled > 0 {
		d.col.add("tenant", `every tenant block needs a name, e.g. tenant "default" { … }`)
	}
	for _, b := range blocks {
		prefix := "tenant." + b.label
		t := TenantRoutes{Tenant: b.label, Routes: []Route{}}
		for _, key := range sortedKeys(b.body) {
			v := b.body[key]
			if key != "route" {
				d.unknown(prefix+"."+key, tenantKeys())
				continue
			}
			bodies, ok := asBlocks(v)
			if !ok {
				d.col.add(prefix+".route", "expected a block, got "+describe(v))
				continue
			}
			for i, body := range bodies {
				t.Routes = append(t.Routes, d.route(fmt.Sprintf("%s.route[%d]", prefix, i), body))
			}
		}
		c.Tenants = append(c.Tenants, t)
	}
}

func (d *decoder) route(prefix string, body map[string]any) Route {
	var r Route
	for _, key := range sortedKeys(body) {
		var field *string
		switch key {
		case "match":
			field = &r.Match
		case "provider":
			field = &r.Provider
		case "model":
			field = &r.Model
		default:
			d.unknown(prefix+"."+key, routeKeys())
			continue
		}
		if err := setFromFile(field, body[key]); err != nil {
			d.col.add(prefix+"."+key, err.Error())
		}
	}
	return r
}

// resolveSecrets fills p.Secrets from the variables p.Env names that are set.
// An unset variable is not an error here: the plugin knows whether it needs it.
func resolveSecrets(p *Provider, lookup func(string) (string, bool)) {
	for setting, name := range p.Env {
		if !validEnvName(name) {
			continue // reported by validate
		}
		if v, ok := lookup(name); ok {
			p.Secrets[setting] = v
		}
	}
}

// pricing decodes the pricing block: model "name" { … } blocks, in file
// order. A model may have several blocks (a price history).
func (d *decoder) pricing(v any, c *Config) {
	var models []labelled
	for _, body := range d.singleBlock("pricing", v) {
		for _, key := range sortedKeys(body) {
			if key != "model" {
				d.unknown("pricing."+key, pricingKeys())
				continue
			}
			blocks, unlabelled, ok := asLabelled(body[key], modelKeys())
			if !ok {
				d.col.add("pricing.model", "expected a block, got "+describe(body[key]))
				continue
			}
			if unlabelled > 0 {
				d.col.add("pricing.model", `every model block needs the model's name, e.g. model "gpt-4o" { … }`)
			}
			models = append(models, blocks...)
		}
	}
	labels := make([]string, len(models))
	for i, b := range models {
		labels[i] = b.label
	}
	for i, key := range modelBlockKeys(labels) {
		c.Pricing = append(c.Pricing, d.price(key, models[i]))
	}
}

// modelBlockKeys returns the problem keys of the pricing block's model
// blocks, given their labels in file order: "pricing.model.gpt-4o", or, for
// a model given in several blocks, "pricing.model.gpt-4o[0]",
// "pricing.model.gpt-4o[1]" and so on (counting from 0, in file order).
func modelBlockKeys(labels []string) []string {
	count := make(map[string]int)
	for _, l := range labels {
		count[l]++
	}
	seen := make(map[string]int)
	keys := make([]string, len(labels))
	for i, l := range labels {
		keys[i] = "pricing.model." + l
		if count[l] > 1 {
			keys[i] += fmt.Sprintf("[%d]", seen[l])
			seen[l]++
		}
	}
	return keys
}

func (d *decoder) price(prefix string, b labelled) Price {
	p := Price{Model: b.label, Effective: defaultEffective}
	for _, key := range sortedKeys(b.body) {
		v := b.body[key]
		path := prefix + "." + key
		var field *string
		switch key {
		case "input":
			field = &p.Input
		case "output":
			field = &p.Output
		case "cached_input":
			field = &p.CachedInput
		case "effective":
			t, err := parseEffective(v)
			if err != nil {
				d.col.add(path, err.Error())
				continue
			}
			p.Effective = t
			continue
		default:
			d.unknown(path, modelKeys())
			continue
		}
		s, err := priceText(v)
		if err != nil {
			d.col.add(path, err.Error())
			continue
		}
		*field = s
	}
	return p
}
