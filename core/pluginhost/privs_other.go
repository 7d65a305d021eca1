//go:build !linux

package pluginhost

import "github.com/hashicorp/go-hclog"

// restrictLauncher is Linux-only (no_new_privs is a Linux attribute).
func restrictLauncher(hclog.Logger) {}
