// Command loom-provider-echo is an example Loom provider plugin: it
// answers chat completions by repeating the user's last message, without
// calling any upstream. It shows everything a third-party provider plugin
// needs: implement provider.Provider, call plugin.Serve from main, test
// with providertest. See ../README.md.
//
// Build it as bin/plugins/loom-provider-echo:
//
//	go build -o ../../bin/plugins/loom-provider-echo .
package main

import "github.com/loom-runtime/loom/sdk/plugin"

func main() {
	// Nothing may be printed on stdout before Serve: go-plugin's handshake
	// line must be the first thing Loom reads there.
	plugin.Serve(newEcho())
}
