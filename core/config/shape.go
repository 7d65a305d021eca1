package config

import (
	"fmt"
	"maps"
	"slices"
)

// This file is the one place that knows how HCL v1 hands a file over. Load
// parses with koanf's HCL parser with flattening off (hcl.Parser(false)) and
// reads the result with Koanf.Raw; nothing is flattened into key paths, so
// the order of repeated blocks survives. The shapes are (pinned by
// TestRawShape):
//
//	listen = "x"                       "listen": "x"  (also int, float64, bool)
//	xs = [1, 2]                        "xs": []any{1, 2}
//	store { driver = "sqlite" }        "store": []map[string]any{{"driver": "sqlite"}}
//	route { … }  route { … }           "route": []map[string]any{{…}, {…}}  (file order)
//	provider "a" { … }  provider "b" { … }
//	                                   "provider": []map[string]any{
//	                                       {"a": []map[string]any{{…}}},
//	                                       {"b": []map[string]any{{…}}},
//	                                   }  (file order, duplicates kept)
//
// So a block is always a list with one map per occurrence, and a labelled
// block is a one-key map from the label to a one-element block list. Inside
// an HCL list, an object is a plain map[string]any. An unlabelled block of a
// labelled kind (provider { plugin = "x" }) looks like a map whose values are
// not block lists, which is how it is told apart. A key repeated inside one
// block (a = 1 a = 2) is silently resolved by HCL v1 to the last value.

// asBlocks returns the bodies of the blocks v stands for, in file order, and
// whether v is a block at all.
func asBlocks(v any) ([]map[string]any, bool) {
	bodies, ok := v.([]map[string]any)
	return bodies, ok
}

// labelled is one `kind "label" { body }` block.
type labelled struct {
	label string
	body  map[string]any
}

// asLabelled returns the labelled blocks v stands for, in file order, and
// how many of its blocks had no (or more than one) label. ok is false when v
// is not a block at all.
//
// HCL v1 decodes `provider { settings { … } }` exactly like
// `provider "settings" { … }`, so a label equal to one of the keys the
// block's body allows (bodyKeys) is taken for a missing label: such names
// are reserved.
func asLabelled(v any, bodyKeys []string) (blocks []labelled, unlabelled int, ok bool) {
	bodies, ok := asBlocks(v)
	if !ok {
		return nil, 0, false
	}
	for _, m := range bodies {
		if len(m) != 1 {
			unlabelled++
			continue
		}
		for label, inner := range m {
			ib, isBlock := asBlocks(inner)
			if !isBlock || len(ib) != 1 || slices.Contains(bodyKeys, label) {
				unlabelled++
				continue
			}
			blocks = append(blocks, labelled{label: label, body: ib[0]})
		}
	}
	return blocks, unlabelled, true
}

// plainValue turns a decoded free-form value (a provider's settings) into
// plain JSON-like Go values: a single nested block becomes a map, a block
// repeated n > 1 times becomes a list of n maps, lists are converted
// element-wise and scalars are kept.
func plainValue(v any) any {
	switch v := v.(type) {
	case []map[string]any:
		if len(v) == 1 {
			return plainMap(v[0])
		}
		out := make([]any, len(v))
		for i, m := range v {
			out[i] = plainMap(m)
		}
		return out
	case map[string]any:
		return plainMap(v)
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = plainValue(e)
		}
		return out
	default:
		return v
	}
}

func plainMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = plainValue(v)
	}
	return out
}

// describe names the kind of a decoded value for "expected X, got Y" messages.
func describe(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case string:
		return fmt.Sprintf("string %q", v)
	case int, int64, float64:
		return fmt.Sprintf("number %v", v)
	case bool:
		return fmt.Sprintf("bool %v", v)
	case []any:
		return "a list"
	case []map[string]any, map[string]any:
		return "a block"
	default:
		return fmt.Sprintf("%T", v)
	}
}

// sortedKeys returns m's keys in order, so problems are found deterministically.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
