package schema

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestMigrationsBothDialectsMatch(t *testing.T) {
	lite, err := Migrations(SQLite)
	if err != nil {
		t.Fatal(err)
	}
	pg, err := Migrations(Postgres)
	if err != nil {
		t.Fatal(err)
	}
	if len(lite) == 0 {
		t.Fatal("no sqlite migrations")
	}
	if len(lite) != len(pg) {
		t.Fatalf("sqlite has %d migrations, postgres %d: every version needs both dialects", len(lite), len(pg))
	}
	for i := range lite {
		if lite[i].Version != pg[i].Version || lite[i].Name != pg[i].Name {
			t.Errorf("migration %d: sqlite %04d_%s, postgres %04d_%s", i, lite[i].Version, lite[i].Name, pg[i].Version, pg[i].Name)
		}
		if strings.TrimSpace(lite[i].SQL) == "" || strings.TrimSpace(pg[i].SQL) == "" {
			t.Errorf("migration %04d_%s is empty", lite[i].Version, lite[i].Name)
		}
	}
	if lite[0].Version != 1 || lite[0].Name != "tenants_and_keys" {
		t.Errorf("first migration = %04d_%s, want 0001_tenants_and_keys", lite[0].Version, lite[0].Name)
	}
}

func TestUnknownDialect(t *testing.T) {
	if _, err := Migrations("mysql"); err == nil {
		t.Fatal("Migrations(mysql): want error")
	}
	if _, err := FS(""); err == nil {
		t.Fatal("FS(\"\"): want error")
	}
}

func TestParseOrdersNumerically(t *testing.T) {
	fsys := fstest.MapFS{
		"10_ten.sql":   {Data: []byte("select 10;")},
		"0002_two.sql": {Data: []byte("select 2;")},
		"9_nine.sql":   {Data: []byte("select 9;")},
		"0001_one.sql": {Data: []byte("select 1;")},
	}
	ms, err := Parse(fsys)
	if err != nil {
		t.Fatal(err)
	}
	var got []int
	for _, m := range ms {
		got = append(got, m.Version)
	}
	want := []int{1, 2, 9, 10}
	if len(got) != len(want) {
		t.Fatalf("versions = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("versions = %v, want %v", got, want)
		}
	}
	if ms[0].Name != "one" || ms[0].SQL != "select 1;" {
		t.Errorf("first = %+v", ms[0])
	}
}

func TestParseRejects(t *testing.T) {
	cases := map[string]fstest.MapFS{
		"duplicate version": {
			"0001_a.sql": {Data: []byte("x")},
			"1_b.sql":    {Data: []byte("x")},
		},
		"bad name":     {"create_tables.sql": {Data: []byte("x")}},
		"not sql":      {"0001_a.txt": {Data: []byte("x")}},
		"zero version": {"0000_a.sql": {Data: []byte("x")}},
		"directory":    {"0001_a/x.sql": {Data: []byte("x")}},
	}
	for name, fsys := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse(fsys); err == nil {
				t.Fatal("want error")
			}
		})
	}
}
