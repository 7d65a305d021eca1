package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzLoad writes fuzzed bytes as a loom.hcl and loads it with a fuzzed
// environment (env: NAME=value lines). Properties: Load never panics; it
// returns either a config or an *Errors whose every problem has a message
// and names its origin — the file, or an environment variable that was set;
// loading again gives the same result; a loaded config's Hash is the
// SHA-256 of its normalised form; and no secret (LOOM_MASTER_KEY,
// LOOM_ADMIN_TOKEN, a provider's environment variables) appears in an
// error or in the normalised config.
//
// Every variable the file names for a provider is set, to a value marked
// as secret, so the secrets are really resolved.
func FuzzLoad(f *testing.F) {
	f.Add([]byte("listen = \":8080\"\n"), "LOOM_LOG_LEVEL=debug")
	f.Add([]byte("provider \"openai\" {\n  env { api_key = \"OPENAI_API_KEY\" }\n}\n"), "LOOM_MASTER_KEY=not-a-key-s3cr3t:x")
	f.Add([]byte("store {\n  driver = \"postgres\"\n}\n"), "LOOM_STORE_DSN=postgres://u:p@db/loom\nLOOM_ADMIN_TOKEN=admin-s3cr3t:y")
	f.Fuzz(func(t *testing.T, file []byte, envText string) {
		path := filepath.Join(t.TempDir(), "loom.hcl")
		if err := os.WriteFile(path, file, 0o600); err != nil {
			t.Fatal(err)
		}
		env := make(map[string]string)
		for _, line := range strings.Split(envText, "\n") {
			if name, value, ok := strings.Cut(line, "="); ok && name != "" {
				env[name] = value
			}
		}
		lookup := func(name string) (string, bool) {
			if strings.HasPrefix(name, "LOOM_") {
				v, ok := env[name]
				return v, ok
			}
			return secretMark + name, true
		}

		c, err := Load(path, lookup)
		checkLoaded(t, path, file, env, c, err)
		c2, err2 := Load(path, lookup)
		if !reflect.DeepEqual(c, c2) || errString(err) != errString(err2) {
			t.Fatalf("loading %q twice differs:\n%+v\n%v\nthen\n%+v\n%v", file, c, err, c2, err2)
		}

		// Secrets are marked: when nothing else brings the mark in, it
		// must not come out.
		if bytes.Contains(file, []byte(secretMark)) || inOtherValue(env, secretMark) {
			return
		}
		shown := []byte(errString(err))
		if c != nil {
			shown, _ = c.Normalised()
		}
		if bytes.Contains(shown, []byte(secretMark)) {
			t.Fatalf("a secret is shown (env %q):\n%s", envText, shown)
		}
	})
}

// checkLoaded checks one Load result.
func checkLoaded(t *testing.T, path string, file []byte, env map[string]string, c *Config, err error) {
	t.Helper()
	if (c == nil) == (err == nil) {
		t.Fatalf("Load(%q) = %v, %v: want a config or an error", file, c, err)
	}
	if err != nil {
		var errs *Errors
		if !errors.As(err, &errs) || len(errs.Problems) == 0 {
			t.Fatalf("Load(%q) error %T %v, want *Errors with problems", file, err, err)
		}
		fromFile := false
		for _, p := range errs.Problems {
			if p.Message == "" {
				t.Fatalf("Load(%q): problem %+v has no message", file, p)
			}
			name, fromEnv := strings.CutSuffix(p.File, " (environment)")
			switch {
			case p.File == path:
				fromFile = true
			case !fromEnv || env[name] == "":
				t.Fatalf("Load(%q): problem %+v names neither the file nor a variable that is set", file, p)
			}
		}
		if fromFile && !strings.Contains(err.Error(), path) {
			t.Fatalf("Load(%q): error %q does not name the file", file, err)
		}
		return
	}
	if c.File != path {
		t.Fatalf("Load(%q): File %q", file, c.File)
	}
	norm, err := c.Normalised()
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(norm); c.Hash != hex.EncodeToString(sum[:]) {
		t.Fatalf("Load(%q): Hash %s is not the SHA-256 of the normalised config", file, c.Hash)
	}
}

// secretMark marks secret values: provider secrets, and LOOM_MASTER_KEY
// and LOOM_ADMIN_TOKEN values that contain it.
const secretMark = "s3cr3t:"

// inOtherValue reports whether s occurs in an environment value other
// than the secrets'.
func inOtherValue(env map[string]string, s string) bool {
	for name, v := range env {
		if name != "LOOM_MASTER_KEY" && name != "LOOM_ADMIN_TOKEN" && strings.Contains(v, s) {
			return true
		}
	}
	return false
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
