//go:build !linux

package pluginhost

import "os/exec"

// setParentDeathSignal is Linux-only; elsewhere plugins are killed by Close.
func setParentDeathSignal(*exec.Cmd) {}
