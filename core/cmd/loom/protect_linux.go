package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// protectProcess makes Loom's process non-dumpable. Processes of the same
// user, plugins among them, can then no longer read its memory or its
// environment (/proc/<pid>/mem, /proc/<pid>/environ, which hold the master
// key, the admin token, the store DSN and every provider's secrets) nor
// attach a debugger to it; only root (CAP_SYS_PTRACE) still can. Core
// dumps, which would hold the same secrets, are off too. It reports
// whether the platform has such a switch.
func protectProcess() (bool, error) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return true, fmt.Errorf("prctl PR_SET_DUMPABLE: %w", err)
	}
	return true, nil
}
