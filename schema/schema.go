// Package schema holds Loom's versioned SQL migrations, one set per database dialect.
//
// Migrations live in migrations/<dialect>/NNNN_name.sql. NNNN is the version:
// a positive integer, unique within the dialect, applied in ascending order.
// Each file is applied once, inside the same transaction that records it in
// the schema_migrations table, so adding a table is adding the next file to
// both dialect directories. Applied files must never be edited.
package schema

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strconv"
)

// Dialects with a migration set.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

//go:embed migrations
var migrations embed.FS

// Migration is one versioned SQL file.
type Migration struct {
	Version int    // from the file name's numeric prefix
	Name    string // the rest of the file name, without ".sql"
	SQL     string // the file's contents
}

var fileName = regexp.MustCompile(`^([0-9]+)_([a-z0-9_]+)\.sql$`)

// FS returns the migration files of dialect ("sqlite" or "postgres"), at the
// root of the returned file system.
func FS(dialect string) (fs.FS, error) {
	switch dialect {
	case SQLite, Postgres:
	default:
		return nil, fmt.Errorf("schema: unknown dialect %q (want %q or %q)", dialect, SQLite, Postgres)
	}
	return fs.Sub(migrations, path.Join("migrations", dialect))
}

// Migrations returns the migrations of dialect ordered by version. It fails on
// a file whose name is not NNNN_name.sql or on a version used twice.
func Migrations(dialect string) ([]Migration, error) {
	fsys, err := FS(dialect)
	if err != nil {
		return nil, err
	}
	return Parse(fsys)
}

// Parse reads the migration files at the root of fsys, ordered by version.
// Migrations uses it on the embedded sets; it is exported for tests and tools
// that check a directory of migrations.
func Parse(fsys fs.FS) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("schema: read migrations: %w", err)
	}
	var out []Migration
	seen := make(map[int]string)
	for _, e := range entries {
		if e.IsDir() {
			return nil, fmt.Errorf("schema: unexpected directory %q among migrations", e.Name())
		}
		m := fileName.FindStringSubmatch(e.Name())
		if m == nil {
			return nil, fmt.Errorf("schema: migration file %q is not named NNNN_name.sql", e.Name())
		}
		v, err := strconv.Atoi(m[1])
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("schema: migration file %q has an invalid version", e.Name())
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("schema: migrations %q and %q share version %d", prev, e.Name(), v)
		}
		seen[v] = e.Name()
		body, err := fs.ReadFile(fsys, e.Name())
		if err != nil {
			return nil, fmt.Errorf("schema: read %s: %w", e.Name(), err)
		}
		out = append(out, Migration{Version: v, Name: m[2], SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}
