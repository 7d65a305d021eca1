package config

import (
	"cmp"
	"slices"
	"strings"
)

// Problem is one thing wrong with the configuration.
type Problem struct {
	// File is where the offending value came from: the path given to Load,
	// or "NAME (environment)" for a value read from environment variable NAME.
	File string
	// Key is the setting's path, e.g. "store.driver",
	// "provider.openai.sha256" or "tenant.default.route[0].match" (route
	// indexes count from 0). It is empty when the problem concerns the whole
	// file or an environment-only value such as LOOM_MASTER_KEY.
	Key string
	// Message says what is wrong, e.g. `must be "sqlite" or "postgres", got "mysql"`.
	Message string
}

// String formats p as "file: key: message" (the key is left out when empty).
func (p Problem) String() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
		b.WriteString(": ")
	}
	if p.Key != "" {
		b.WriteString(p.Key)
		b.WriteString(": ")
	}
	b.WriteString(p.Message)
	return b.String()
}

// Errors is the error Load returns: every problem found, sorted by file, then
// key, then message.
type Errors struct {
	Problems []Problem
}

// Error lists the problems, one per line.
func (e *Errors) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

func compareProblems(a, b Problem) int {
	return cmp.Or(
		cmp.Compare(a.File, b.File),
		cmp.Compare(a.Key, b.Key),
		cmp.Compare(a.Message, b.Message),
	)
}

// collector gathers problems during one Load. Problems about a fixed-schema
// setting are attributed to the environment variable that set it, if any.
type collector struct {
	file     string
	fromEnv  map[string]string // setting path -> environment variable that set it
	problems []Problem
	// decoded is how many problems decoding found; validation starts after.
	decoded int
}

func newCollector(file string) *collector {
	return &collector{file: file, fromEnv: make(map[string]string)}
}

// add records a problem with the setting at key.
func (c *collector) add(key, msg string) {
	c.problems = append(c.problems, Problem{File: c.origin(key), Key: key, Message: msg})
}

// origin is where the setting at key was set: the file, or the
// environment variable that overrode it.
func (c *collector) origin(key string) string {
	if name, ok := c.fromEnv[key]; ok {
		return envOrigin(name)
	}
	return c.file
}

// decodingDone marks the end of decoding: check looks back to here.
func (c *collector) decodingDone() { c.decoded = len(c.problems) }

// check records a problem found when validating the value of the setting at
// key, unless decoding it already failed: the value checked is then only the
// default, and a second problem would be noise.
func (c *collector) check(key, msg string) {
	if !c.decodeFailed(key) {
		c.add(key, msg)
	}
}

// decodeFailed reports whether decoding found a problem with the setting at key.
func (c *collector) decodeFailed(key string) bool {
	for _, p := range c.problems[:c.decoded] {
		if p.Key == key {
			return true
		}
	}
	return false
}

// addEnv records a problem with the value of environment variable name.
func (c *collector) addEnv(name, key, msg string) {
	c.problems = append(c.problems, Problem{File: envOrigin(name), Key: key, Message: msg})
}

// err returns the collected problems as *Errors, or nil when there are none.
func (c *collector) err() error { return NewErrors(c.problems) }

// NewErrors returns ps sorted and without repeats as *Errors, or nil when
// ps is empty. It is for problems with a loaded configuration found later,
// where Loom uses it: a plugin user that does not exist on the machine.
func NewErrors(ps []Problem) error {
	if len(ps) == 0 {
		return nil
	}
	ps = slices.Clone(ps)
	slices.SortFunc(ps, compareProblems)
	ps = slices.Compact(ps)
	return &Errors{Problems: ps}
}

func envOrigin(name string) string { return name + " (environment)" }
