//go:build loomfault

package fault

import "net/http"

// Header names the point at which a request wants the handler to panic.
const Header = "X-Loom-Fault"

// Point panics when r names it in its X-Loom-Fault header.
func Point(r *http.Request, name string) {
	if r.Header.Get(Header) == name {
		panic("injected fault at " + name)
	}
}

// Tap returns tap, or, when r names the point, a tap that panics once the
// second event of the stream has been relayed.
func Tap(r *http.Request, name string, tap func([]byte)) func([]byte) {
	if r.Header.Get(Header) != name {
		return tap
	}
	n := 0
	return func(b []byte) {
		tap(b)
		if n++; n == 2 {
			panic("injected fault at " + name)
		}
	}
}
