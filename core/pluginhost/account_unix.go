//go:build unix

package pluginhost

import (
	"os/exec"
	"syscall"
)

const runAsSupported = true

// runAs makes cmd start as a: its uid, primary group and groups.
func runAs(cmd *exec.Cmd, a *account) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Credential = &syscall.Credential{Uid: a.uid, Gid: a.gid, Groups: a.groups}
}
