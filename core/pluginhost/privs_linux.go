package pluginhost

import (
	"github.com/hashicorp/go-hclog"
	"golang.org/x/sys/unix"
)

// restrictLauncher sets no_new_privs on the calling thread, the launcher's.
// The kernel keeps it across fork and execve, so no plugin process, nor
// anything a plugin runs, can gain privileges through a set-user-ID binary
// or file capabilities. The attribute belongs to a thread, not to the
// process: it is set on the one thread that starts every plugin.
func restrictLauncher(log hclog.Logger) {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		log.Warn("plugins start without no_new_privs: they could gain privileges through set-user-ID binaries", "error", err)
		return
	}
	log.Debug("plugins start with no_new_privs", "launcher_thread", unix.Gettid())
}
