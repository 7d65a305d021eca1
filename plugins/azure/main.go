// Command loom-provider-azure is Loom's provider plugin for Azure OpenAI.
package main

import "github.com/loom-runtime/loom/sdk/plugin"

func main() {
	plugin.Serve(newProvider())
}
