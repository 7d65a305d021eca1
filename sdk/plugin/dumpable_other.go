//go:build !linux

package plugin

import "github.com/hashicorp/go-hclog"

// protectProcess is Linux-only.
func protectProcess(hclog.Logger) {}
