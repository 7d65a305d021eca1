// Command loom-provider-openai is Loom's provider plugin for the OpenAI API
// (and any server that speaks it at a base_url of its own).
package main

import "github.com/loom-runtime/loom/sdk/plugin"

func main() {
	plugin.Serve(newProvider())
}
