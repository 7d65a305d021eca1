package config

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// Normalised returns c as indented JSON with a trailing newline. Secrets,
// the file path and the hash are left out, and map keys are sorted, so equal
// configurations give equal bytes; Hash is the SHA-256 of this.
func (c *Config) Normalised() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encode config: %w", err)
	}
	return buf.Bytes(), nil
}

// RouteTable returns the routes of tenant in match order, or those of the
// "default" tenant when tenant has no block or an empty one, or nil. The
// slice is shared with c and must not be modified.
func (c *Config) RouteTable(tenant string) []Route {
	var fallback []Route
	for _, t := range c.Tenants {
		switch t.Tenant {
		case tenant:
			if len(t.Routes) > 0 {
				return t.Routes
			}
		case DefaultTenant:
			fallback = t.Routes
		}
	}
	if len(fallback) == 0 {
		return nil
	}
	return fallback
}

// DefaultTenant names the route table used by tenants without their own.
const DefaultTenant = "default"

// Provider returns the provider instance called name.
func (c *Config) Provider(name string) (Provider, bool) {
	for _, p := range c.Providers {
		if p.Name == name {
			return p, true
		}
	}
	return Provider{}, false
}
