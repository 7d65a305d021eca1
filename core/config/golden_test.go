package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// noEnv is an environment with nothing set.
func noEnv(string) (string, bool) { return "", false }

// mapEnv is an environment holding exactly m.
func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := m[name]
		return v, ok
	}
}

// golden compares got with the file at path, or rewrites it under -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatalf("write golden: %v", err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run go test -update to create it): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run go test -update if the change is intended)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

// hclFiles lists the .hcl files in dir, failing if there are none.
func hclFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.hcl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no .hcl files in %s (err %v)", dir, err)
	}
	return files
}

func TestGoodFiles(t *testing.T) {
	for _, path := range hclFiles(t, filepath.Join("testdata", "good")) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			c, err := Load(path, noEnv)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got, err := c.Normalised()
			if err != nil {
				t.Fatalf("Normalised: %v", err)
			}
			golden(t, strings.TrimSuffix(path, ".hcl")+".golden.json", got)

			sum := sha256.Sum256(got)
			if want := hex.EncodeToString(sum[:]); c.Hash != want {
				t.Errorf("Hash = %q, want sha256 of Normalised %q", c.Hash, want)
			}
			if c.File != path {
				t.Errorf("File = %q, want %q", c.File, path)
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	for _, path := range hclFiles(t, filepath.Join("testdata", "bad")) {
		t.Run(filepath.Base(path), func(t *testing.T) {
			c, err := Load(path, noEnv)
			if err == nil {
				t.Fatalf("Load succeeded, want problems; config:\n%+v", c)
			}
			if c != nil {
				t.Errorf("Load returned a config along with an error")
			}
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want *Errors: %v", err, err)
			}
			for _, p := range errs.Problems {
				if p.File != path {
					t.Errorf("problem %q names file %q, want %q", p, p.File, path)
				}
			}
			golden(t, strings.TrimSuffix(path, ".hcl")+".golden.txt", []byte(err.Error()+"\n"))
		})
	}
}

// TestRepoDefaultFile keeps the loom.hcl shipped at the repository root valid.
func TestRepoDefaultFile(t *testing.T) {
	path := filepath.Join("..", "..", "loom.hcl")
	c, err := Load(path, noEnv)
	if err != nil {
		t.Fatalf("Load(%s): %v", path, err)
	}
	if len(c.Providers) == 0 || len(c.RouteTable(DefaultTenant)) == 0 {
		t.Errorf("default config has %d providers and %d default routes, want some of each",
			len(c.Providers), len(c.RouteTable(DefaultTenant)))
	}
}

// TestGoodDefaultIsRepoCopy keeps testdata/good/default.hcl a copy of the
// repository's loom.hcl, so its golden documents what actually ships.
func TestGoodDefaultIsRepoCopy(t *testing.T) {
	repo, err := os.ReadFile(filepath.Join("..", "..", "loom.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	copied, err := os.ReadFile(filepath.Join("testdata", "good", "default.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(repo, copied) {
		t.Errorf("testdata/good/default.hcl differs from loom.hcl: copy it over and run go test -update")
	}
}

func TestMissingFile(t *testing.T) {
	path := filepath.Join("testdata", "does-not-exist.hcl")
	_, err := Load(path, noEnv)
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error is %T, want *Errors: %v", err, err)
	}
	want := []Problem{{File: path, Message: "open: no such file or directory"}}
	if len(errs.Problems) != 1 || errs.Problems[0] != want[0] {
		t.Errorf("problems = %q, want %q", errs.Problems, want)
	}
}
