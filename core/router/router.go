// Package router maps a tenant's requested model to a provider instance and
// the model to ask it for, from the route tables in loom.hcl.
package router

import (
	"regexp"
	"strings"

	"github.com/loom-runtime/loom/core/config"
)

// Target is where a request goes.
type Target struct {
	// Provider is the provider instance name.
	Provider string
	// Model is the upstream model: the requested one, or the route's rewrite.
	Model string
	// Route is the matching route's pattern, for traces and logs.
	Route string
}

// Router holds compiled route tables. It is immutable and safe for concurrent use.
type Router struct {
	tables   map[string][]route
	fallback []route // the "default" tenant's table
}

type route struct {
	pattern  string
	provider string
	rewrite  string // "" keeps the requested model
	m        matcher
}

// New compiles the route tables of cfg (already validated by config.Load).
func New(cfg *config.Config) *Router {
	r := &Router{tables: make(map[string][]route)}
	for _, t := range cfg.Tenants {
		compiled := make([]route, 0, len(t.Routes))
		for _, rt := range t.Routes {
			compiled = append(compiled, route{pattern: rt.Match, provider: rt.Provider, rewrite: rt.Model, m: compile(rt.Match)})
		}
		if t.Tenant == config.DefaultTenant {
			r.fallback = compiled
		}
		if len(compiled) > 0 {
			r.tables[t.Tenant] = compiled
		}
	}
	return r
}

// Route returns the first route of the tenant's table (or the default
// table) whose pattern matches model.
func (r *Router) Route(tenant, model string) (Target, bool) {
	table, ok := r.tables[tenant]
	if !ok {
		table = r.fallback
	}
	for _, rt := range table {
		star, ok := rt.m.match(model)
		if !ok {
			continue
		}
		up := model
		if rt.rewrite != "" {
			up = strings.Replace(rt.rewrite, "*", star, 1)
		}
		return Target{Provider: rt.provider, Model: up, Route: rt.pattern}, true
	}
	return Target{}, false
}

// Reachable is one provider a tenant can reach and how client-facing model
// ids map to its models.
type Reachable struct {
	Provider string
	// ClientID turns a provider's model id into the id a client sends to
	// reach it through this route; ok is false when the route cannot reach it.
	ClientID func(providerModel string) (id string, ok bool)
}

// Reachable lists, in route order, the routes of the tenant's table.
func (r *Router) Reachable(tenant string) []Reachable {
	table, ok := r.tables[tenant]
	if !ok {
		table = r.fallback
	}
	out := make([]Reachable, 0, len(table))
	for _, rt := range table {
		rt := rt
		out = append(out, Reachable{Provider: rt.provider, ClientID: func(m string) (string, bool) {
			if _, ok := rt.m.match(m); ok && rt.rewrite == "" {
				return m, true
			}
			// A route that strips a prefix ("echo/*" → "*") exposes m under the prefix.
			if rt.rewrite == "*" && strings.Count(rt.pattern, "*") == 1 {
				return strings.Replace(rt.pattern, "*", m, 1), true
			}
			return "", false
		}})
	}
	return out
}

// matcher matches a glob in which "*" matches any run of characters; it
// also returns what the first "*" matched.
type matcher struct {
	exact          string
	prefix, suffix string
	single         bool // exactly one "*": prefix*suffix
	re             *regexp.Regexp
}

func compile(pattern string) matcher {
	switch strings.Count(pattern, "*") {
	case 0:
		return matcher{exact: pattern}
	case 1:
		i := strings.IndexByte(pattern, '*')
		return matcher{single: true, prefix: pattern[:i], suffix: pattern[i+1:]}
	}
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return matcher{re: regexp.MustCompile(`^` + parts[0] + `(.*?)` + strings.Join(parts[1:], `.*`) + `$`)}
}

func (m matcher) match(s string) (string, bool) {
	switch {
	case m.single:
		if len(s) >= len(m.prefix)+len(m.suffix) && strings.HasPrefix(s, m.prefix) && strings.HasSuffix(s, m.suffix) {
			return s[len(m.prefix) : len(s)-len(m.suffix)], true
		}
		return "", false
	case m.re != nil:
		sub := m.re.FindStringSubmatch(s)
		if sub == nil {
			return "", false
		}
		return sub[1], true
	default:
		return "", s == m.exact
	}
}
