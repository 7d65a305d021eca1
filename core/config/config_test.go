package config

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func goodFile(name string) string { return filepath.Join("testdata", "good", name) }

// mustLoad loads path with env and fails the test on any problem.
func mustLoad(t *testing.T, path string, env map[string]string) *Config {
	t.Helper()
	c, err := Load(path, mapEnv(env))
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	return c
}

// loadProblems loads path with env and returns the problems, failing the
// test if there are none.
func loadProblems(t *testing.T, path string, env map[string]string) []Problem {
	t.Helper()
	_, err := Load(path, mapEnv(env))
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load(%s) error = %v, want *Errors", path, err)
	}
	return errs.Problems
}

func TestOrderIsFileOrder(t *testing.T) {
	c := mustLoad(t, goodFile("ordering.hcl"), nil)

	var providers []string
	for _, p := range c.Providers {
		providers = append(providers, p.Name)
	}
	if want := []string{"zeta", "alpha", "mid", "beta"}; !slices.Equal(providers, want) {
		t.Errorf("providers = %q, want %q", providers, want)
	}

	var tenants []string
	for _, tr := range c.Tenants {
		tenants = append(tenants, tr.Tenant)
	}
	if want := []string{"tenant-b", "default", "acme"}; !slices.Equal(tenants, want) {
		t.Errorf("tenants = %q, want %q", tenants, want)
	}

	routes := map[string][]string{
		"default": {"local/*", "claude-*", "gpt-4o-mini", "gpt-*", "*"},
		"acme":    {"*", "b*", "a*"},
	}
	for tenant, want := range routes {
		var got []string
		for _, r := range c.RouteTable(tenant) {
			got = append(got, r.Match)
		}
		if !slices.Equal(got, want) {
			t.Errorf("RouteTable(%q) matches = %q, want %q", tenant, got, want)
		}
	}
}

func TestRouteTable(t *testing.T) {
	own := []Route{{Match: "*", Provider: "a"}}
	def := []Route{{Match: "x*", Provider: "b"}, {Match: "*", Provider: "c"}}
	withDefault := &Config{Tenants: []TenantRoutes{
		{Tenant: "acme", Routes: own},
		{Tenant: "empty", Routes: []Route{}},
		{Tenant: DefaultTenant, Routes: def},
	}}
	noDefault := &Config{Tenants: []TenantRoutes{{Tenant: "acme", Routes: own}}}

	tests := []struct {
		name   string
		c      *Config
		tenant string
		want   []Route
	}{
		{"own routes", withDefault, "acme", own},
		{"no block falls back to default", withDefault, "other", def},
		{"empty block falls back to default", withDefault, "empty", def},
		{"default itself", withDefault, DefaultTenant, def},
		{"no default", noDefault, "other", nil},
		{"no tenants", &Config{}, "acme", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.RouteTable(tt.tenant); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("RouteTable(%q) = %v, want %v", tt.tenant, got, tt.want)
			}
		})
	}
}

func TestProvider(t *testing.T) {
	c := mustLoad(t, goodFile("default.hcl"), nil)
	p, ok := c.Provider("azure")
	if !ok || p.Name != "azure" || p.Plugin != "azure" || p.Settings["api_version"] != "2024-10-21" {
		t.Errorf("Provider(azure) = %+v, %v", p, ok)
	}
	if _, ok := c.Provider("nope"); ok {
		t.Errorf("Provider(nope) found a provider")
	}
}

func TestPluginDefaultsToName(t *testing.T) {
	c := mustLoad(t, goodFile("ordering.hcl"), nil)
	p, _ := c.Provider("mid")
	if p.Plugin != "mid" {
		t.Errorf("plugin = %q, want the name %q", p.Plugin, "mid")
	}
}

// testKey is a 32-byte key in the encodings LOOM_MASTER_KEY accepts.
var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestEnvOverrides(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		get  func(*Config) any
		want any
	}{
		{"listen", "minimal.hcl", map[string]string{"LOOM_LISTEN": ":9000"},
			func(c *Config) any { return c.Listen }, ":9000"},
		{"plugins dir", "minimal.hcl", map[string]string{"LOOM_PLUGINS_DIR": "/opt/loom/plugins"},
			func(c *Config) any { return c.PluginsDir }, "/opt/loom/plugins"},
		{"plugin user over the file", "plugin_user.hcl", map[string]string{"LOOM_PLUGIN_USER": "nobody"},
			func(c *Config) any { return c.PluginUser }, "nobody"},
		{"store driver and dsn", "minimal.hcl", map[string]string{"LOOM_STORE_DRIVER": "postgres", "LOOM_STORE_DSN": "postgres://db/loom"},
			func(c *Config) any { return c.Store }, Store{Driver: "postgres", DSN: "postgres://db/loom", MaxConns: 16}},
		{"store dsn over the file", "default.hcl", map[string]string{"LOOM_STORE_DSN": "/var/lib/loom.db"},
			func(c *Config) any { return c.Store.DSN }, "/var/lib/loom.db"},
		{"store driver over the file keeps the file's dsn", "postgres.hcl", map[string]string{"LOOM_STORE_DRIVER": "sqlite"},
			func(c *Config) any { return c.Store.DSN }, "postgres://loom@db:5432/loom?sslmode=disable"},
		{"store max conns", "minimal.hcl", map[string]string{"LOOM_STORE_MAX_CONNS": " 64 "},
			func(c *Config) any { return c.Store.MaxConns }, 64},
		{"server read header timeout", "minimal.hcl", map[string]string{"LOOM_SERVER_READ_HEADER_TIMEOUT": "3s"},
			func(c *Config) any { return c.Server.ReadHeaderTimeout }, 3 * time.Second},
		{"server body timeout", "minimal.hcl", map[string]string{"LOOM_SERVER_BODY_TIMEOUT": "45s"},
			func(c *Config) any { return c.Server.BodyTimeout }, 45 * time.Second},
		{"server idle timeout", "minimal.hcl", map[string]string{"LOOM_SERVER_IDLE_TIMEOUT": "2m"},
			func(c *Config) any { return c.Server.IdleTimeout }, 2 * time.Minute},
		{"server memory target", "minimal.hcl", map[string]string{"LOOM_SERVER_MEMORY_TARGET_BYTES": "0"},
			func(c *Config) any { return c.Server.MemoryTargetBytes }, int64(0)},
		{"server memory target default", "minimal.hcl", nil,
			func(c *Config) any { return c.Server.MemoryTargetBytes }, int64(64 << 20)},
		{"server max body bytes", "minimal.hcl", map[string]string{"LOOM_SERVER_MAX_BODY_BYTES": "1024"},
			func(c *Config) any { return c.Server.MaxBodyBytes }, int64(1024)},
		{"server body memory bytes", "minimal.hcl", map[string]string{"LOOM_SERVER_BODY_MEMORY_BYTES": "1048576"},
			func(c *Config) any { return c.Server.BodyMemoryBytes }, int64(1 << 20)},
		{"server shutdown timeout", "minimal.hcl", map[string]string{"LOOM_SERVER_SHUTDOWN_TIMEOUT": "1m30s"},
			func(c *Config) any { return c.Server.ShutdownTimeout }, 90 * time.Second},
		{"auth cache ttl", "default.hcl", map[string]string{"LOOM_AUTH_CACHE_TTL": "1s"},
			func(c *Config) any { return c.Auth.CacheTTL }, time.Second},
		{"auth cache size", "default.hcl", map[string]string{"LOOM_AUTH_CACHE_SIZE": "5"},
			func(c *Config) any { return c.Auth.CacheSize }, 5},
		{"log level", "default.hcl", map[string]string{"LOOM_LOG_LEVEL": "debug"},
			func(c *Config) any { return c.Log.Level }, "debug"},
		{"log format", "default.hcl", map[string]string{"LOOM_LOG_FORMAT": "json"},
			func(c *Config) any { return c.Log.Format }, "json"},
		{"trace durability", "minimal.hcl", map[string]string{"LOOM_TRACE_DURABILITY": "sync"},
			func(c *Config) any { return c.Trace.Durability }, "sync"},
		{"trace spool dir over the file", "default.hcl", map[string]string{"LOOM_TRACE_SPOOL_DIR": "/var/spool/loom"},
			func(c *Config) any { return c.Trace.SpoolDir }, "/var/spool/loom"},
		{"trace spool max bytes", "minimal.hcl", map[string]string{"LOOM_TRACE_SPOOL_MAX_BYTES": "2147483648"},
			func(c *Config) any { return c.Trace.SpoolMaxBytes }, int64(2 << 30)},
		{"trace queue size", "minimal.hcl", map[string]string{"LOOM_TRACE_QUEUE_SIZE": "100"},
			func(c *Config) any { return c.Trace.QueueSize }, 100},
		{"trace tenant share", "minimal.hcl", map[string]string{"LOOM_TRACE_TENANT_SHARE_PERCENT": "50"},
			func(c *Config) any { return c.Trace.TenantSharePercent }, 50},
		{"trace batch size", "minimal.hcl", map[string]string{"LOOM_TRACE_BATCH_SIZE": "20"},
			func(c *Config) any { return c.Trace.BatchSize }, 20},
		{"trace batch interval", "minimal.hcl", map[string]string{"LOOM_TRACE_BATCH_INTERVAL": "1s"},
			func(c *Config) any { return c.Trace.BatchInterval }, time.Second},
		{"trace max body bytes", "minimal.hcl", map[string]string{"LOOM_TRACE_MAX_BODY_BYTES": "4096"},
			func(c *Config) any { return c.Trace.MaxBodyBytes }, int64(4096)},
		{"trace shutdown timeout", "default.hcl", map[string]string{"LOOM_TRACE_SHUTDOWN_TIMEOUT": "1m"},
			func(c *Config) any { return c.Trace.ShutdownTimeout }, time.Minute},
		{"trace defaults", "minimal.hcl", nil,
			func(c *Config) any { return c.Trace }, Trace{
				Durability: "async", SpoolDir: ".loom/spool", SpoolMaxBytes: 1 << 30, QueueSize: 10000, TenantSharePercent: 25, BatchSize: 500,
				BatchInterval: 5 * time.Millisecond, MaxBodyBytes: 8 << 20, ShutdownTimeout: 10 * time.Second,
			}},
		{"dev master key file", "default.hcl", map[string]string{"LOOM_DEV_MASTER_KEY_FILE": "/tmp/k"},
			func(c *Config) any { return c.Dev.MasterKeyFile }, "/tmp/k"},
		{"dev bootstrap tenant", "default.hcl", map[string]string{"LOOM_DEV_BOOTSTRAP_TENANT": "acme"},
			func(c *Config) any { return c.Dev.BootstrapTenant }, "acme"},
		{"admin token", "minimal.hcl", map[string]string{"LOOM_ADMIN_TOKEN": "s3cret"},
			func(c *Config) any { return c.AdminToken }, "s3cret"},
		{"master key base64", "minimal.hcl", map[string]string{"LOOM_MASTER_KEY": base64.StdEncoding.EncodeToString(testKey)},
			func(c *Config) any { return c.MasterKey }, testKey},
		{"master key hex", "minimal.hcl", map[string]string{"LOOM_MASTER_KEY": hex.EncodeToString(testKey)},
			func(c *Config) any { return c.MasterKey }, testKey},
		{"master key unset", "minimal.hcl", nil,
			func(c *Config) any { return c.MasterKey }, []byte(nil)},
		{"empty value counts as unset", "default.hcl", map[string]string{"LOOM_LISTEN": "", "LOOM_ADMIN_TOKEN": ""},
			func(c *Config) any { return c.Listen + "|" + c.AdminToken }, "127.0.0.1:8080|"},
	}
	covered := make(map[string]bool)
	for _, tt := range tests {
		for name := range tt.env {
			covered[name] = true
		}
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, goodFile(tt.file), tt.env)
			if got := tt.get(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
	for _, name := range EnvVars() {
		if !covered[name] {
			t.Errorf("%s has no override test", name)
		}
	}
}

func TestEnvChangesHashButSecretsDoNot(t *testing.T) {
	base := mustLoad(t, goodFile("default.hcl"), nil)
	withSecrets := mustLoad(t, goodFile("default.hcl"), map[string]string{
		"LOOM_ADMIN_TOKEN": "t",
		"LOOM_MASTER_KEY":  hex.EncodeToString(testKey),
		"OPENAI_API_KEY":   "sk-test",
	})
	if withSecrets.Hash != base.Hash {
		t.Errorf("secrets changed the hash")
	}
	norm, err := withSecrets.Normalised()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(norm, []byte("sk-test")) {
		t.Errorf("Normalised contains a secret:\n%s", norm)
	}
	overridden := mustLoad(t, goodFile("default.hcl"), map[string]string{"LOOM_LISTEN": ":1"})
	if overridden.Hash == base.Hash {
		t.Errorf("LOOM_LISTEN did not change the hash")
	}
}

func TestProviderSecrets(t *testing.T) {
	c := mustLoad(t, goodFile("default.hcl"), map[string]string{
		"OPENAI_API_KEY":        "sk-test",
		"OPENAI_BASE_URL":       "", // empty: unset
		"AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com",
	})
	tests := []struct {
		provider string
		want     map[string]string
	}{
		{"openai", map[string]string{"api_key": "sk-test"}},
		{"azure", map[string]string{"endpoint": "https://x.openai.azure.com"}},
	}
	for _, tt := range tests {
		p, _ := c.Provider(tt.provider)
		if !reflect.DeepEqual(p.Secrets, tt.want) {
			t.Errorf("%s secrets = %v, want %v", tt.provider, p.Secrets, tt.want)
		}
	}
}

func TestEnvProblems(t *testing.T) {
	tests := []struct {
		name string
		file string
		env  map[string]string
		want []Problem
	}{
		{
			name: "integer",
			file: "minimal.hcl",
			env:  map[string]string{"LOOM_STORE_MAX_CONNS": "many"},
			want: []Problem{{"LOOM_STORE_MAX_CONNS (environment)", "store.max_conns", `expected an integer, got "many"`}},
		},
		{
			name: "duration",
			file: "minimal.hcl",
			env:  map[string]string{"LOOM_AUTH_CACHE_TTL": "soon"},
			want: []Problem{{"LOOM_AUTH_CACHE_TTL (environment)", "auth.cache_ttl", `invalid duration "soon": use a number and a unit, e.g. "5s" or "2m"`}},
		},
		{
			name: "invalid value names the variable",
			file: "default.hcl",
			env:  map[string]string{"LOOM_STORE_DRIVER": "mysql", "LOOM_SERVER_IDLE_TIMEOUT": "0s"},
			want: []Problem{
				{"LOOM_SERVER_IDLE_TIMEOUT (environment)", "server.idle_timeout", "must be positive, got 0s"},
				{"LOOM_STORE_DRIVER (environment)", "store.driver", `must be "sqlite" or "postgres", got "mysql"`},
			},
		},
		{
			name: "trace settings from the environment are validated",
			file: "minimal.hcl",
			env:  map[string]string{"LOOM_TRACE_DURABILITY": "eventually", "LOOM_TRACE_BATCH_SIZE": "0", "LOOM_TRACE_BATCH_INTERVAL": "often"},
			want: []Problem{
				{"LOOM_TRACE_BATCH_INTERVAL (environment)", "trace.batch_interval", `invalid duration "often": use a number and a unit, e.g. "5s" or "2m"`},
				{"LOOM_TRACE_BATCH_SIZE (environment)", "trace.batch_size", "must be positive, got 0"},
				{"LOOM_TRACE_DURABILITY (environment)", "trace.durability", `must be one of "async", "sync"; got "eventually"`},
			},
		},
		{
			name: "postgres from the environment needs a dsn",
			file: "minimal.hcl",
			env:  map[string]string{"LOOM_STORE_DRIVER": "postgres"},
			want: []Problem{{filepath.Join("testdata", "good", "minimal.hcl"), "store.dsn", `required when store.driver is "postgres"`}},
		},
		{
			name: "dev settings need a dev block",
			file: "minimal.hcl",
			env:  map[string]string{"LOOM_DEV_BOOTSTRAP_TENANT": "dev"},
			want: []Problem{{"LOOM_DEV_BOOTSTRAP_TENANT (environment)", "dev.bootstrap_tenant", "the file has no dev block; dev settings can only be overridden, not switched on, from the environment"}},
		},
		{
			name: "master key too short",
			file: "minimal.hcl",
			env:  map[string]string{"LOOM_MASTER_KEY": base64.StdEncoding.EncodeToString(testKey[:16])},
			want: []Problem{{"LOOM_MASTER_KEY (environment)", "", "must be 32 bytes, base64 or hex; got 16 bytes"}},
		},
		{
			name: "master key garbage",
			file: "minimal.hcl",
			env:  map[string]string{"LOOM_MASTER_KEY": "not a key!"},
			want: []Problem{{"LOOM_MASTER_KEY (environment)", "", "must be 32 bytes, base64 or hex; got 10 characters that are neither"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadProblems(t, goodFile(tt.file), tt.env)
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestEnvVars(t *testing.T) {
	vars := EnvVars()
	if !slices.IsSorted(vars) {
		t.Errorf("EnvVars not sorted: %q", vars)
	}
	for _, name := range []string{
		"LOOM_LISTEN", "LOOM_STORE_DRIVER", "LOOM_STORE_DSN", "LOOM_PLUGINS_DIR",
		"LOOM_MASTER_KEY", "LOOM_ADMIN_TOKEN",
		"LOOM_STORE_MAX_CONNS", "LOOM_AUTH_CACHE_TTL", "LOOM_DEV_MASTER_KEY_FILE", "LOOM_SERVER_MAX_BODY_BYTES",
	} {
		if !slices.Contains(vars, name) {
			t.Errorf("EnvVars lacks %s", name)
		}
	}
}

// TestEnvNamesUnique guards the path -> variable mapping: "." and "_" both
// become "_", so two paths could collide.
func TestEnvNamesUnique(t *testing.T) {
	seen := make(map[string]string)
	for _, s := range schema() {
		name := envName(s.path)
		if other, ok := seen[name]; ok {
			t.Errorf("%s and %s both map to %s", other, s.path, name)
		}
		seen[name] = s.path
	}
}

func TestDecodeMasterKey(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantErr string
	}{
		{"base64 std", base64.StdEncoding.EncodeToString(testKey), ""},
		{"base64 std unpadded", base64.RawStdEncoding.EncodeToString(testKey), ""},
		{"base64 url", base64.URLEncoding.EncodeToString(testKey), ""},
		{"base64 url unpadded", base64.RawURLEncoding.EncodeToString(testKey), ""},
		{"hex", hex.EncodeToString(testKey), ""},
		{"hex upper case", strings.ToUpper(hex.EncodeToString(testKey)), ""},
		{"surrounding space", " " + hex.EncodeToString(testKey) + "\n", ""},
		{"hex too short", hex.EncodeToString(testKey[:16]), "must be 32 bytes, base64 or hex; got 16 bytes"},
		{"base64 too short", base64.StdEncoding.EncodeToString(testKey[:31]), "must be 32 bytes, base64 or hex; got 31 bytes"},
		{"base64 too long", base64.StdEncoding.EncodeToString(append(testKey, 'x')), "must be 32 bytes, base64 or hex; got 33 bytes"},
		{"garbage", "correct horse battery staple", "must be 32 bytes, base64 or hex; got 28 characters that are neither"},
		{"empty", "", "must be 32 bytes, base64 or hex; got 0 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeMasterKey(tt.in)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !bytes.Equal(got, testKey) {
				t.Errorf("DecodeMasterKey = %x, %v; want %x", got, err, testKey)
			}
		})
	}
}

func TestProblemString(t *testing.T) {
	tests := []struct {
		p    Problem
		want string
	}{
		{Problem{"loom.hcl", "store.driver", `must be "sqlite" or "postgres", got "mysql"`},
			`loom.hcl: store.driver: must be "sqlite" or "postgres", got "mysql"`},
		{Problem{"loom.hcl", "", "At 1:2: bad"}, "loom.hcl: At 1:2: bad"},
		{Problem{"LOOM_STORE_DRIVER (environment)", "store.driver", "bad"}, "LOOM_STORE_DRIVER (environment): store.driver: bad"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("String() = %q, want %q", got, tt.want)
		}
	}
}

func TestErrorsSortedAndDeduplicated(t *testing.T) {
	col := newCollector("b.hcl")
	col.add("z", "second")
	col.add("a", "y")
	col.add("a", "x")
	col.addEnv("LOOM_A", "a", "m")
	col.add("a", "x")
	err := col.err()
	want := "LOOM_A (environment): a: m\nb.hcl: a: x\nb.hcl: a: y\nb.hcl: z: second"
	if err == nil || err.Error() != want {
		t.Errorf("Error() =\n%v\nwant\n%s", err, want)
	}
	if newCollector("x").err() != nil {
		t.Errorf("no problems gave a non-nil error")
	}
}

func TestNilEnv(t *testing.T) {
	if _, err := Load(goodFile("default.hcl"), nil); err != nil {
		t.Fatal(err)
	}
}

func TestSuggest(t *testing.T) {
	tests := []struct {
		name       string
		candidates []string
		want       string
	}{
		{"drvier", []string{"driver", "dsn", "max_conns"}, "driver"},
		{"mathc", []string{"match", "model", "provider"}, "match"},
		{"plugn", []string{"env", "plugin", "settings", "sha256"}, "plugin"},
		{"colour", []string{"env", "plugin"}, ""},
		{"en", []string{"env"}, "env"},
		{"xyz", []string{"env"}, ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.name, tt.candidates); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestPluginUser: plugin_user applies to every provider without a user of
// its own, and each provider remembers which setting chose its user, and
// where it was set, for the problems found when its plugin starts.
func TestPluginUser(t *testing.T) {
	file := goodFile("plugin_user.hcl")
	type got struct{ user, key, origin string }
	tests := []struct {
		name string
		env  map[string]string
		want map[string]got
	}{
		{
			name: "file",
			want: map[string]got{
				"openai":    {"loom-plugin", "plugin_user", file},
				"community": {"loom-community", "provider.community.user", file},
				"by-uid":    {"65534", "provider.by-uid.user", file},
			},
		},
		{
			name: "environment",
			env:  map[string]string{"LOOM_PLUGIN_USER": "nobody"},
			want: map[string]got{
				"openai":    {"nobody", "plugin_user", "LOOM_PLUGIN_USER (environment)"},
				"community": {"loom-community", "provider.community.user", file},
				"by-uid":    {"65534", "provider.by-uid.user", file},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustLoad(t, file, tt.env)
			for name, want := range tt.want {
				p, _ := c.Provider(name)
				if g := (got{p.User, p.UserKey, p.UserOrigin}); g != want {
					t.Errorf("provider %s: user, key, origin = %q, want %q", name, g, want)
				}
			}
		})
	}

	c := mustLoad(t, goodFile("ordering.hcl"), nil)
	for _, p := range c.Providers {
		if p.User != "" || p.UserKey != "" || p.UserOrigin != "" {
			t.Errorf("provider %s without plugin_user: user, key, origin = %q, %q, %q, want empty", p.Name, p.User, p.UserKey, p.UserOrigin)
		}
	}
	withEnv := mustLoad(t, goodFile("ordering.hcl"), map[string]string{"LOOM_PLUGIN_USER": "nobody"})
	if withEnv.Hash == c.Hash {
		t.Errorf("LOOM_PLUGIN_USER does not change the config hash")
	}
	if got := loadProblems(t, goodFile("ordering.hcl"), map[string]string{"LOOM_PLUGIN_USER": "no body"}); !slices.Equal(got, []Problem{{
		"LOOM_PLUGIN_USER (environment)", "plugin_user",
		`invalid user "no body": a user name (letters, digits, ".", "-" and "_", not starting with "." or "-") or a numeric uid`,
	}}) {
		t.Errorf("problems = %q", got)
	}
}
