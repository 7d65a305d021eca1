//go:build !unix

package pluginhost

import (
	"os"
	"os/exec"
)

// runAsSupported is false: Go starts processes as another user on Unix only.
const runAsSupported = false

func runAs(*exec.Cmd, *account) {}

func owner(os.FileInfo) (uid, gid uint32, ok bool) { return 0, 0, false }
