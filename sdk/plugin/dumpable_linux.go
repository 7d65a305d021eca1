package plugin

import (
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// protectProcess makes the plugin process non-dumpable: other processes
// of its user, other plugins among them, cannot read its memory (where
// the secrets Configure receives live) or attach a debugger to it.
func protectProcess(log hclog.Logger) {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		log.Warn("the plugin could not make itself non-dumpable: processes of its user can read its memory", "error", err)
		return
	}
	log.Debug("the plugin is not dumpable: processes of its user cannot read its memory")
}
