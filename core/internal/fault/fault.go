//go:build !loomfault

// Package fault marks the places on the request path where tests inject
// failures. In a normal build a point does nothing and costs nothing; a
// build with the loomfault tag (the test suite's) panics at the point a
// request names in its X-Loom-Fault header.
package fault

import "net/http"

// Point is where a test build may panic; here it does nothing.
func Point(*http.Request, string) {}

// Tap returns tap, the hook that sees each relayed stream event; a test
// build may make it panic mid-stream.
func Tap(_ *http.Request, _ string, tap func([]byte)) func([]byte) { return tap }
