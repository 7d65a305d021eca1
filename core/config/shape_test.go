package config

import (
	"path/filepath"
	"reflect"
	"testing"
)

// TestRawShape pins what koanf's HCL (v1) parser hands Load, which shape.go
// relies on: every block is a list of maps, one per occurrence in file
// order; a labelled block is a one-key map from its label to such a list.
func TestRawShape(t *testing.T) {
	raw, err := readFile(filepath.Join("testdata", "shape", "two_routes.hcl"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"listen": "127.0.0.1:8080",
		"store":  []map[string]any{{"driver": "sqlite"}},
		"provider": []map[string]any{
			{"zeta": []map[string]any{{
				"settings": []map[string]any{{
					"deployments": []map[string]any{{"gpt-4o": "my-deploy"}},
				}},
			}}},
			{"alpha": []map[string]any{{}}},
		},
		"tenant": []map[string]any{
			{"default": []map[string]any{{
				"route": []map[string]any{
					{"match": "b*", "provider": "zeta"},
					{"match": "a*", "provider": "alpha", "model": "x-*"},
				},
			}}},
		},
	}
	if !reflect.DeepEqual(raw, want) {
		t.Errorf("raw shape changed:\n got %#v\nwant %#v", raw, want)
	}
}

func TestAsLabelled(t *testing.T) {
	body := map[string]any{"plugin": "x"}
	tests := []struct {
		name           string
		v              any
		wantLabels     []string
		wantUnlabelled int
		wantOK         bool
	}{
		{
			name: "labelled in order",
			v: []map[string]any{
				{"b": []map[string]any{body}},
				{"a": []map[string]any{body}},
				{"b": []map[string]any{body}},
			},
			wantLabels: []string{"b", "a", "b"},
			wantOK:     true,
		},
		{
			name:           "unlabelled with a scalar",
			v:              []map[string]any{{"plugin": "x"}},
			wantUnlabelled: 1,
			wantOK:         true,
		},
		{
			name:           "unlabelled with several keys",
			v:              []map[string]any{{"plugin": "x", "sha256": "y"}},
			wantUnlabelled: 1,
			wantOK:         true,
		},
		{
			name:           "unlabelled with only a nested block reads as a reserved label",
			v:              []map[string]any{{"settings": []map[string]any{{"a": 1}}}},
			wantUnlabelled: 1,
			wantOK:         true,
		},
		{name: "not a block", v: "openai"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blocks, unlabelled, ok := asLabelled(tt.v, providerKeys())
			var labels []string
			for _, b := range blocks {
				labels = append(labels, b.label)
			}
			if !reflect.DeepEqual(labels, tt.wantLabels) || unlabelled != tt.wantUnlabelled || ok != tt.wantOK {
				t.Errorf("asLabelled = %q, %d, %v; want %q, %d, %v",
					labels, unlabelled, ok, tt.wantLabels, tt.wantUnlabelled, tt.wantOK)
			}
		})
	}
}

func TestPlainValue(t *testing.T) {
	in := []map[string]any{{
		"one":  []map[string]any{{"a": 1}},
		"many": []map[string]any{{"a": 1}, {"a": 2}},
		"list": []any{map[string]any{"b": []map[string]any{{"c": true}}}, 3},
		"s":    "x",
	}}
	want := map[string]any{
		"one":  map[string]any{"a": 1},
		"many": []any{map[string]any{"a": 1}, map[string]any{"a": 2}},
		"list": []any{map[string]any{"b": map[string]any{"c": true}}, 3},
		"s":    "x",
	}
	if got := plainValue(in); !reflect.DeepEqual(got, want) {
		t.Errorf("plainValue = %#v, want %#v", got, want)
	}
}
