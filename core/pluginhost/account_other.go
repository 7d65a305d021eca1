//go:build !unix

package pluginhost

import "os/exec"

// runAsSupported is false: Go starts processes as another user on Unix only.
const runAsSupported = false

func runAs(*exec.Cmd, *account) {}
