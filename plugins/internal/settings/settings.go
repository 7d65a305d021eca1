// Package settings reads a provider plugin's configuration: the settings
// block of its loom.hcl provider (JSON) with the secrets Loom resolved from
// the environment laid over it, checked against the settings the plugin
// knows, with every problem reported by setting name.
package settings

import (
	"encoding/json"
	"fmt"
	"math"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/loom-runtime/loom/sdk/provider"
)

// Values are a provider's settings. Getters record problems instead of
// returning them; Err reports them all at once.
type Values struct {
	m        map[string]any
	secret   map[string]bool // names whose value came from Secrets: never shown
	problems []string
}

// Parse reads cfg: Settings (a JSON object, possibly empty) and Secrets,
// which override settings of the same name (an empty secret counts as
// unset). Names outside known are problems; a Settings value that is not a
// JSON object is an error.
func Parse(cfg provider.Config, known ...string) (*Values, error) {
	v := &Values{m: map[string]any{}, secret: map[string]bool{}}
	if s := strings.TrimSpace(string(cfg.Settings)); s != "" && s != "null" {
		if err := json.Unmarshal(cfg.Settings, &v.m); err != nil {
			return nil, fmt.Errorf("settings: expected a JSON object: %w", err)
		}
		if v.m == nil {
			v.m = map[string]any{}
		}
	}
	for k, s := range cfg.Secrets {
		if s != "" {
			v.m[k] = s
			v.secret[k] = true
		}
	}
	var unknown []string
	for k := range v.m {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	for _, k := range unknown {
		msg := fmt.Sprintf("setting %q: unknown setting", k)
		if s := closest(k, known); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		} else {
			sorted := slices.Clone(known)
			sort.Strings(sorted)
			msg += " (known: " + strings.Join(sorted, ", ") + ")"
		}
		v.problems = append(v.problems, msg)
	}
	return v, nil
}

// Err returns every problem found so far, in one error, or nil.
func (v *Values) Err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(v.problems, "; "))
}

// Invalid records that setting name is invalid, for err's reason.
func (v *Values) Invalid(name string, err error) {
	v.problem(name, "%v", err)
}

func (v *Values) problem(name, format string, args ...any) {
	v.problems = append(v.problems, fmt.Sprintf("setting %q: ", name)+fmt.Sprintf(format, args...))
}

// Has reports whether the setting is given.
func (v *Values) Has(name string) bool {
	_, ok := v.m[name]
	return ok
}

// String returns a string setting, or def when it is not given.
func (v *Values) String(name, def string) string {
	raw, ok := v.m[name]
	if !ok {
		return def
	}
	s, ok := raw.(string)
	if !ok {
		v.problem(name, "expected a string, got %s", v.describe(name, raw))
		return def
	}
	return s
}

// URL returns an absolute http or https URL setting without trailing
// slashes, or def. example shows a good value in messages. Messages never
// repeat a value's user name, query or fragment, nor one that does not
// parse.
func (v *Values) URL(name, def, example string) string {
	raw, ok := v.m[name]
	if !ok {
		return def
	}
	s, ok := raw.(string)
	if !ok {
		v.problem(name, "expected a URL such as %q, got %s", example, v.describe(name, raw))
		return def
	}
	s = strings.TrimRight(strings.TrimSpace(s), "/")
	u, err := url.Parse(s)
	switch {
	case err != nil || s == "":
		v.problem(name, "not a URL: want an absolute http or https URL such as %q", example)
	case u.Scheme != "https" && u.Scheme != "http" || u.Host == "":
		v.problem(name, "invalid URL %q: want an absolute http or https URL such as %q", shown(u), example)
	case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
		v.problem(name, "invalid URL %q: no query, fragment or user name allowed", shown(u))
	default:
		return s
	}
	return def
}

// shown is u without user name, query and fragment: fit for messages.
func shown(u *url.URL) string {
	return (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path, RawPath: u.RawPath}).String()
}

// Duration returns a positive duration setting ("30s", "10m"), or def.
func (v *Values) Duration(name string, def time.Duration) time.Duration {
	raw, ok := v.m[name]
	if !ok {
		return def
	}
	s, ok := raw.(string)
	if !ok {
		v.problem(name, `expected a duration string such as "30s" or "10m", got %s`, v.describe(name, raw))
		return def
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		v.problem(name, `invalid duration %s: use a positive number and a unit, e.g. "30s" or "10m"`, v.describe(name, s))
		return def
	}
	return d
}

// PositiveInt returns a positive integer setting (a number, or a string of
// digits as secrets are), or def.
func (v *Values) PositiveInt(name string, def int) int {
	raw, ok := v.m[name]
	if !ok {
		return def
	}
	var f float64
	switch x := raw.(type) {
	case float64:
		f = x
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			v.problem(name, "expected a positive integer, got %s", v.describe(name, raw))
			return def
		}
		f = float64(n)
	default:
		v.problem(name, "expected a positive integer, got %s", v.describe(name, raw))
		return def
	}
	if f < 1 || f != math.Trunc(f) || f > math.MaxInt32 {
		v.problem(name, "expected a positive integer, got %s", v.describe(name, raw))
		return def
	}
	return int(f)
}

// StringMap returns a setting holding a map of strings: a nested block
// (`name { key = "value" }`), which arrives as an object or, an HCL v1
// quirk, as a list of objects (one per block; they are merged), or a
// string holding a JSON object, as a secret would. Nil when not given.
func (v *Values) StringMap(name string) map[string]string {
	raw, ok := v.m[name]
	if !ok {
		return nil
	}
	if s, ok := raw.(string); ok {
		var m map[string]any
		if err := json.Unmarshal([]byte(s), &m); err != nil {
			v.problem(name, `expected a block of name = "value" pairs or a JSON object, got a string that is not a JSON object`)
			return nil
		}
		raw = m
	}
	var objects []map[string]any
	switch x := raw.(type) {
	case map[string]any:
		objects = []map[string]any{x}
	case []any:
		for _, e := range x {
			m, ok := e.(map[string]any)
			if !ok {
				v.problem(name, `expected a block of name = "value" pairs, got a list holding %s`, v.describe(name, e))
				return nil
			}
			objects = append(objects, m)
		}
	default:
		v.problem(name, `expected a block of name = "value" pairs, got %s`, v.describe(name, raw))
		return nil
	}
	out := map[string]string{}
	for _, m := range objects {
		for k, e := range m {
			s, ok := e.(string)
			if !ok || s == "" {
				v.problem(name+"."+k, "expected a non-empty string, got %s", v.describe(name, e))
				continue
			}
			if prev, dup := out[k]; dup && prev != s {
				v.problem(name+"."+k, "given twice, with different values")
				continue
			}
			out[k] = s
		}
	}
	return out
}

// describe is describe(x), unless the value of setting name came from the
// environment: a secret is never repeated in a message.
func (v *Values) describe(name string, x any) string {
	if v.secret[name] {
		return "the value from the environment"
	}
	return describe(x)
}

// describe names a JSON value for "expected X, got Y" messages.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", x)
	case float64:
		return "number " + strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		return fmt.Sprintf("boolean %v", x)
	case []any:
		return "a list"
	case map[string]any:
		return "a block"
	}
	return fmt.Sprintf("%T", v)
}

// closest returns the known name nearest to name when it is a likely typo
// (edit distance at most 2), or "".
func closest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := distance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
